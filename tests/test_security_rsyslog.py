"""The security log upload against a real rsyslogd on loopback: each test starts its own rsyslogd (generated
configuration, own work directory and pid file, a free port, raw messages written to a file) and stops it.
Events are appended by this process and sent by `idnode seclog export` running as a process of its own, as
in production. Skipped only where rsyslogd is not installed (.ci/run installs the Debian packages rsyslog
and rsyslog-gnutls)."""

from __future__ import annotations

import signal
import subprocess

import pytest
import trustme

from resolver.security.config import SecurityLogConfig
from resolver.security.events import SecurityEvents
from resolver.security.exporter import spawn_exporter
from resolver.security.syslog import decode_message
from tests.security_helpers import (
    Rsyslogd,
    emit,
    idnode_bodies,
    rsyslog_has_gtls,
    rsyslogd_path,
    wait_for,
    written_items,
)

pytestmark = [
    pytest.mark.skipif(
        rsyslogd_path() is None,
        reason="rsyslogd not installed: apt-get install rsyslog (.ci/run installs it)",
    ),
    pytest.mark.slow,
]
needs_gtls = pytest.mark.skipif(
    not rsyslog_has_gtls(),
    reason="rsyslog's TLS driver not installed: apt-get install rsyslog-gnutls (.ci/run installs it)",
)

FAST = {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.3, "connect_timeout_s": 2.0, "send_timeout_s": 5.0}


@pytest.fixture()
def collectors():
    started: list[Rsyslogd] = []
    yield started
    for collector in started:
        collector.stop()


@pytest.fixture()
def exporters():
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a certificate for the collector (127.0.0.1) and one for the node, as PEM files."""
    directory = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("idnode-node-1.example")
    files = {
        name: str(directory / f"{name}.pem") for name in ("ca", "cert", "key", "client_cert", "client_key")
    }
    ca.cert_pem.write_to_path(files["ca"])
    server.cert_chain_pems[0].write_to_path(files["cert"])
    server.private_key_pem.write_to_path(files["key"])
    client.cert_chain_pems[0].write_to_path(files["client_cert"])
    client.private_key_pem.write_to_path(files["client_key"])
    return files


def settings(tmp_path, collector: Rsyslogd, pki: dict[str, str] | None = None) -> SecurityLogConfig:
    tls = {}
    if collector.transport == "tls":
        assert pki is not None
        tls = {"ca_file": pki["ca"], "cert_file": pki["client_cert"], "key_file": pki["client_key"]}
    return SecurityLogConfig(collector=f"127.0.0.1:{collector.port}", transport=collector.transport,
                             hostname="node-1", node_id="88.100", queue_dir=str(tmp_path / "queue"),
                             **tls, **FAST)  # fmt: skip


def items(collector: Rsyslogd) -> list[int]:
    return written_items(collector.messages())


def refusals(collector: Rsyslogd) -> int:
    """How often rsyslogd refused a peer for want of a client certificate (its own messages go to its output,
    rsyslogd.out, as it runs in the foreground with no rule of its own for them)."""
    return (collector.directory / "rsyslogd.out").read_bytes().count(b"peer did not provide a certificate")


def stop_exporter(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0


@pytest.mark.parametrize("transport", ["tcp", pytest.param("tls", marks=needs_gtls)])
def test_in_order_and_nothing_lost_across_a_collector_restart(
    tmp_path, collectors, exporters, pki, transport
):
    tls = {"ca": pki["ca"], "cert": pki["cert"], "key": pki["key"], "auth_mode": "x509/certvalid",
           "client_cert": pki["client_cert"], "client_key": pki["client_key"]}  # fmt: skip
    collector = Rsyslogd(tmp_path / "rsyslog", transport, tls=tls if transport == "tls" else None)
    collectors.append(collector.start())
    config = settings(tmp_path, collector, pki)
    events = SecurityEvents.open(config, tmp_path)
    exporter = spawn_exporter(config, tmp_path)
    exporters.append(exporter)
    try:
        emit(events, 0, 50)
        wait_for(lambda: len(items(collector)) >= 50, what="the first 50 events at rsyslogd")
        assert items(collector) == list(range(50))

        collector.stop()
        emit(events, 50, 150)  # while rsyslogd is down: they wait in the queue
        wait_for(lambda: events.queue_stats().events >= 100, timeout_s=5, what="100 queued events")
        collector.start()  # the same port, the same output file
        emit(events, 150, 200)
        wait_for(lambda: len(items(collector)) >= 200, what="all 200 events at rsyslogd")
        assert items(collector) == list(range(200))  # in order, no gap, no duplicate

        raw = next(m for m in collector.messages() if b" idnode " in m)
        message = decode_message(raw)
        assert (message.facility, message.severity, message.msgid, message.hostname) == (
            10,
            5,
            "WRITE",
            "node-1",
        )
        bodies = [b for b in idnode_bodies(collector.messages()) if b["event"] == "write"]
        assert [b["seq"] for b in bodies] == list(range(1, 201))
        stop_exporter(exporter)
        assert events.queue_stats().events == 0
    finally:
        events.close()


def test_udp(tmp_path, collectors, exporters):
    collector = Rsyslogd(tmp_path / "rsyslog", "udp")
    collectors.append(collector.start())
    config = settings(tmp_path, collector)
    events = SecurityEvents.open(config, tmp_path)
    exporters.append(spawn_exporter(config, tmp_path))
    try:
        emit(events, 0, 100)
        wait_for(lambda: len(items(collector)) >= 100, what="100 datagrams at rsyslogd")
        assert items(collector) == list(range(100))
        events.auth_failure("88.100.9", "198.51.100.7:5000", "bad secret")
        wait_for(lambda: any(b["event"] == "auth-failure" for b in idnode_bodies(collector.messages())),
                 what="the auth failure")  # fmt: skip
        stop_exporter(exporters[0])
    finally:
        events.close()


@needs_gtls
def test_tls_client_certificate_is_required(tmp_path, collectors, exporters, pki):
    """rsyslogd in x509/certvalid mode refuses a node without a certificate: nothing arrives, nothing is
    lost; given the certificate, everything arrives. That the anonymous exporter ran and tried is seen at the
    collector: rsyslogd says, each time, that it refused a peer without a certificate."""
    tls = {"ca": pki["ca"], "cert": pki["cert"], "key": pki["key"], "auth_mode": "x509/certvalid",
           "client_cert": pki["client_cert"], "client_key": pki["client_key"]}  # fmt: skip
    collector = Rsyslogd(tmp_path / "rsyslog", "tls", tls=tls)
    collectors.append(collector.start())
    full = settings(tmp_path, collector, pki)
    without_cert = SecurityLogConfig(**{**full.__dict__, "cert_file": "", "key_file": ""})
    events = SecurityEvents.open(full, tmp_path)
    try:
        emit(events, 0, 10)
        anonymous = spawn_exporter(without_cert, tmp_path, stderr=subprocess.PIPE)
        exporters.append(anonymous)
        wait_for(lambda: refusals(collector) >= 2, what="rsyslogd refusing the exporter twice (it retries)")
        assert items(collector) == []
        assert events.queue_stats().events == 10
        anonymous.send_signal(signal.SIGTERM)
        assert anonymous.wait(20) == 0
        with anonymous.stderr:
            err = anonymous.stderr.read()
        assert b"unreachable" in err and (b"refused" in err or b"closed the connection" in err)
        exporters.append(spawn_exporter(full, tmp_path))
        wait_for(lambda: len(items(collector)) >= 10, what="10 events over TLS with a client certificate")
        assert items(collector) == list(range(10))
    finally:
        events.close()
