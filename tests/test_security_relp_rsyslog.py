"""The security log upload over RELP against a real rsyslogd (imrelp) on loopback, the exporter running as
`idnode seclog export` in a process of its own, as in production. The collector is stopped (SIGSTOP) while
events keep coming, then killed (SIGKILL) and started again on the same port: every event must arrive, and
only the ones it had not acknowledged may arrive twice. Over plain TCP the same trial loses what the
stopped collector's kernel had acknowledged. Skipped where rsyslogd or its RELP input is not installed
(.ci/run installs the Debian packages rsyslog and rsyslog-relp)."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import Counter

import pytest
import trustme

from resolver.security.config import SecurityLogConfig
from resolver.security.events import SecurityEvents
from resolver.security.exporter import spawn_exporter
from resolver.security.relp import DEFAULT_WINDOW
from tests.security_helpers import Rsyslogd, emit, idnode_bodies, rsyslog_has_relp, rsyslogd_path, wait_for

pytestmark = [
    pytest.mark.skipif(
        rsyslogd_path() is None or not rsyslog_has_relp(),
        reason="rsyslogd with imrelp not installed: apt-get install rsyslog rsyslog-relp (.ci/run installs them)",
    ),
    pytest.mark.slow,
]

STOPPED_S = 20.0  #: how long the collector stays stopped: what the issue's trial did
PRODUCE_EVERY_S = 0.05  #: the producer appends a batch this often, the collector stopped or not
PRODUCE_BATCH = 10  #: events per batch: ~200 a second, thousands while the collector is stopped
FAST = {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.5, "connect_timeout_s": 2.0, "send_timeout_s": 3.0}


@pytest.fixture()
def collectors():
    started: list[Rsyslogd] = []
    yield started
    for collector in started:
        if collector.proc is not None and collector.proc.poll() is None:
            collector.proc.send_signal(signal.SIGCONT)  # a stopped one would not see SIGTERM
        collector.stop()


@pytest.fixture()
def exporters():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def settings(tmp_path, collector: Rsyslogd, **extra) -> SecurityLogConfig:
    return SecurityLogConfig(collector=f"127.0.0.1:{collector.port}", transport=collector.transport,
                             hostname="node-1", node_id="88.100", queue_dir=str(tmp_path / "queue"),
                             **FAST, **extra)  # fmt: skip


class Producer:
    """Appends write events 0, 1, 2, ... in batches from a thread of its own until stopped."""

    def __init__(self, events: SecurityEvents):
        self.events = events
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(PRODUCE_EVERY_S):
            emit(self.events, self.count, self.count + PRODUCE_BATCH)
            self.count += PRODUCE_BATCH


def seqs_of(collector: Rsyslogd) -> list[int]:
    """The `seq` of every write event rsyslogd wrote, in file order; each is checked to carry its event (the
    seq of event n is n + 1: nothing else is queued)."""
    bodies = [b for b in idnode_bodies(collector.messages()) if b["event"] == "write"]
    for body in bodies:
        assert body["handle"] == f"88.100.7/ITEM-{body['seq'] - 1}", body
    return [b["seq"] for b in bodies]


def test_nothing_lost_when_the_collector_hangs_then_dies(tmp_path, collectors, exporters):
    collector = Rsyslogd(tmp_path / "rsyslog", "relp")
    collectors.append(collector.start())
    config = settings(tmp_path, collector)
    events = SecurityEvents.open(config, tmp_path)
    exporters.append(spawn_exporter(config, tmp_path))
    try:
        with Producer(events) as producer:
            wait_for(lambda: len(seqs_of(collector)) >= 500, what="500 events at rsyslogd")
            collector.pause()
            time.sleep(STOPPED_S)  # the scenario, not a wait for readiness: events keep coming meanwhile
            collector.kill()
            unacknowledged_at_kill = {seq for seq, _ in events.queue.peek(10**7, 1 << 34)}
            before_kill = Counter(seqs_of(collector))
            restarted_at = producer.count
            collector.start()  # the same port and output file
            wait_for(lambda: max(seqs_of(collector)) > restarted_at, timeout_s=30,
                     what="events produced after the restart at rsyslogd")  # fmt: skip
        produced = producer.count
        wait_for(lambda: len(set(seqs_of(collector))) >= produced, timeout_s=30, what="every event")
        seqs = seqs_of(collector)
        assert sorted(set(seqs)) == list(range(1, produced + 1))  # every event produced, no gap
        repeated = {seq for seq, n in Counter(seqs).items() if n > 1}
        # Repeats are events rsyslogd wrote before it stopped and had not acknowledged when it was killed:
        # at most the window of them, each written once before the kill and once after.
        assert repeated <= unacknowledged_at_kill & set(before_kill)
        assert len(repeated) <= DEFAULT_WINDOW
        assert all(n <= 2 for n in Counter(seqs).values())
        # The stop was long enough to matter: thousands waited in the queue through it.
        assert len(unacknowledged_at_kill) > 1000
        exporters[0].send_signal(signal.SIGTERM)
        assert exporters[0].wait(20) == 0
        assert events.queue_stats().events == 0
    finally:
        events.close()


def test_relp_over_tls_with_a_client_certificate(tmp_path, collectors, exporters):
    ca = trustme.CA()
    files = {
        name: str(tmp_path / f"{name}.pem") for name in ("ca", "cert", "key", "client_cert", "client_key")
    }
    server, client = ca.issue_cert("127.0.0.1"), ca.issue_cert("idnode-node-1.example")
    ca.cert_pem.write_to_path(files["ca"])
    server.cert_chain_pems[0].write_to_path(files["cert"])
    server.private_key_pem.write_to_path(files["key"])
    client.cert_chain_pems[0].write_to_path(files["client_cert"])
    client.private_key_pem.write_to_path(files["client_key"])
    collector = Rsyslogd(tmp_path / "rsyslog", "relp-tls", tls=files)
    collectors.append(collector.start())
    config = settings(tmp_path, collector, ca_file=files["ca"], cert_file=files["client_cert"],
                      key_file=files["client_key"])  # fmt: skip
    events = SecurityEvents.open(config, tmp_path)
    exporters.append(spawn_exporter(config, tmp_path))
    try:
        emit(events, 0, 300)
        wait_for(lambda: events.queue_stats().events == 0, what="300 events acknowledged over RELP/TLS")
        assert seqs_of(collector) == list(range(1, 301))
    finally:
        events.close()
