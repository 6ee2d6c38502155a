"""The exporter (resolver/security/exporter.py) against syslog receivers written in Python: order, no loss
across a collector restart, back-off while it is away, TLS with and without a client certificate, UDP, the
drop report, and draining on stop. The same against a real rsyslogd is in test_security_rsyslog.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
from collections.abc import Callable, Iterator

import pytest
import trustme

from resolver.security.config import SecurityLogConfig
from resolver.security.events import SecurityEvents
from resolver.security.exporter import DRAIN_TIMEOUT_S, Exporter, exporter_command, spawn_exporter
from resolver.security.syslog import decode_message
from tests.security_helpers import PyCollector, emit, free_port, idnode_bodies, wait_for, written_items

FAST = {"reconnect_initial_s": 0.05, "reconnect_max_s": 0.2, "connect_timeout_s": 2.0, "send_timeout_s": 5.0}


def config_for(tmp_path, port: int, transport: str = "tcp", **extra) -> SecurityLogConfig:
    return SecurityLogConfig(collector=f"127.0.0.1:{port}", transport=transport, hostname="node-1",
                             node_id="88.100", queue_dir=str(tmp_path / "queue"), **{**FAST, **extra})  # fmt: skip


def items(collector: PyCollector) -> list[int]:
    return written_items(collector.received())


@contextlib.contextmanager
def exporting(
    config: SecurityLogConfig,
    tmp_path,
    *,
    queued: int = 0,
    drain_timeout_s: float = DRAIN_TIMEOUT_S,
    then: Callable[[], None] | None = None,
) -> Iterator[tuple[SecurityEvents, Exporter]]:
    """The SecurityEvents of `config` with events 0..`queued`-1 already emitted, and an Exporter thread
    draining their queue. On leaving: the exporter stops (sending for up to `drain_timeout_s`), then `then`
    runs (a collector's stop), then the events close."""
    events = SecurityEvents.open(config, tmp_path)
    emit(events, 0, queued)
    exporter = Exporter(config, tmp_path, queue=events.queue)
    exporter.start()
    try:
        yield events, exporter
    finally:
        exporter.stop(drain_timeout_s)
        if then is not None:
            then()
        events.close()


@pytest.fixture()
def collector():
    c = PyCollector("tcp").start()
    yield c
    c.stop()


def test_events_arrive_in_order_as_rfc5424(tmp_path, collector):
    config = config_for(tmp_path, collector.port)
    # more than one batch, queued before the exporter starts
    with exporting(config, tmp_path, queued=300) as (events, exporter):
        emit(events, 300, 310)
        wait_for(lambda: len(items(collector)) == 310, what="310 events")
        assert items(collector) == list(range(310))
        first = decode_message(collector.received()[0])
        assert (first.app_name, first.msgid, first.hostname, first.facility) == (
            "idnode",
            "WRITE",
            "node-1",
            10,
        )
        bodies = idnode_bodies(collector.received())
        assert [b["seq"] for b in bodies] == list(range(1, 311))
        assert bodies[0]["node"] == "88.100" and bodies[0]["source"] == "10.0.0.1:0"
        wait_for(lambda: exporter.queue.stats().events == 0, what="an empty queue")
        assert exporter.sent == 310 and exporter.failures == 0


def test_nothing_is_lost_across_a_collector_restart(tmp_path, collector):
    config = config_for(tmp_path, collector.port)
    with exporting(config, tmp_path) as (events, exporter):
        emit(events, 0, 10)
        wait_for(lambda: len(items(collector)) == 10, what="the first 10")
        collector.stop()
        emit(events, 10, 30)  # the exporter finds the connection closed, then no listener
        wait_for(lambda: exporter.failures >= 2, what="failed attempts while the collector is away")
        assert exporter.queue.stats().events == 20
        collector.start()
        emit(events, 30, 40)
        wait_for(lambda: len(items(collector)) >= 40, what="all 40")
        assert items(collector) == list(range(40))
        assert collector.connections == 2


def test_collector_away_at_start(tmp_path):
    port = free_port()
    config = config_for(tmp_path, port)
    collector = PyCollector("tcp", port)
    with exporting(config, tmp_path, queued=5, then=collector.stop) as (_, exporter):
        wait_for(lambda: exporter.failures >= 1, what="a failed connect")
        assert "ConnectionRefusedError" in exporter.last_error
        collector.start()
        wait_for(lambda: len(items(collector)) == 5, what="5 events")
        assert items(collector) == list(range(5))


def test_stop_drains_what_is_queued(tmp_path, collector):
    config = config_for(tmp_path, collector.port)
    events = SecurityEvents.open(config, tmp_path)
    exporter = Exporter(config, tmp_path, queue=events.queue)
    exporter.start()
    emit(events, 0, 1000)
    exporter.stop(drain_timeout_s=10)
    assert items(collector) == list(range(1000))
    assert events.queue_stats().events == 0
    events.close()


def test_dropped_events_are_reported(tmp_path):
    collector = PyCollector("tcp").start()
    config = config_for(tmp_path, collector.port, queue_max_events=10)
    # 15 dropped by the bound while no exporter runs
    with exporting(config, tmp_path, queued=25, then=collector.stop) as (events, _):
        assert events.dropped == 15
        wait_for(lambda: any(b["event"] == "events-dropped" for b in idnode_bodies(collector.received())),
                 what="the drop report")  # fmt: skip
        wait_for(lambda: len(items(collector)) == 10, what="the 10 kept")
        assert items(collector) == list(range(15, 25))  # the newest are kept
        bodies = idnode_bodies(collector.received())
        report = next(b for b in bodies if b["event"] == "events-dropped")
        assert report["count"] == 15 and report["total"] == 15
        assert [b["seq"] for b in bodies if b["event"] == "write"] == list(range(16, 26))  # the gap shows


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


def tls_collector(ca, tmp_path, require_client_cert: bool) -> PyCollector:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    if require_client_cert:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    return PyCollector("tcp", ssl_context=context).start()


def tls_files(ca, tmp_path) -> dict[str, str]:
    ca_file, cert_file = tmp_path / "ca.pem", tmp_path / "client.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert("idnode-node-1.example").private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    return {"ca_file": str(ca_file), "cert_file": str(cert_file)}


def test_tls_with_a_client_certificate(tmp_path, ca):
    collector = tls_collector(ca, tmp_path, require_client_cert=True)
    config = config_for(tmp_path, collector.port, "tls", **tls_files(ca, tmp_path))
    with exporting(config, tmp_path, then=collector.stop) as (events, exporter):
        emit(events, 0, 20)
        wait_for(lambda: len(items(collector)) == 20, what="20 events over TLS")
        assert items(collector) == list(range(20))
        collector.stop()
        emit(events, 20, 25)
        wait_for(lambda: exporter.failures >= 1, what="a failure while the collector is away")
        collector.start()
        wait_for(lambda: len(items(collector)) == 25, what="25 events over TLS")
        assert items(collector) == list(range(25))


def test_tls_refuses_a_collector_it_cannot_verify(tmp_path, ca):
    collector = tls_collector(ca, tmp_path, require_client_cert=False)
    other_ca = trustme.CA()
    ca_file = tmp_path / "other-ca.pem"
    other_ca.cert_pem.write_to_path(str(ca_file))
    config = config_for(tmp_path, collector.port, "tls", ca_file=str(ca_file))
    with exporting(config, tmp_path, drain_timeout_s=0, then=collector.stop) as (events, exporter):
        emit(events, 0, 3)
        wait_for(lambda: exporter.failures >= 1, what="a failed handshake")
        assert "CERTIFICATE_VERIFY_FAILED" in exporter.last_error
        assert collector.received() == [] and exporter.queue.stats().events == 3


def test_udp(tmp_path):
    collector = PyCollector("udp").start()
    config = config_for(tmp_path, collector.port, "udp")
    with exporting(config, tmp_path, then=collector.stop) as (events, _):
        emit(events, 0, 50)
        wait_for(lambda: len(items(collector)) == 50, what="50 datagrams")
        assert items(collector) == list(range(50))
        assert all(raw.startswith(b"<") for raw in collector.received())  # no octet count on UDP


def test_config_checks():
    with pytest.raises(ValueError, match="transport"):
        SecurityLogConfig(collector="x", transport="gelf")
    with pytest.raises(ValueError, match="tls"):
        SecurityLogConfig(collector="x", ca_file="/ca.pem")
    with pytest.raises(ValueError, match="port"):
        SecurityLogConfig(collector="x:99999")
    assert SecurityLogConfig(collector="[::1]:6514", transport="tls").address == ("::1", 6514)
    assert SecurityLogConfig(collector="::1", transport="tls").address == ("::1", 6514)
    assert SecurityLogConfig(collector="syslog.example", transport="udp").address == ("syslog.example", 514)
    assert SecurityLogConfig().enabled is False
    config = SecurityLogConfig.from_mapping(
        {"collector": "10.1.1.1:6514", "transport": "tls", "fsync_interval_s": 2}
    )
    assert config.fsync_interval_s == 2.0 and config.facility_code == 10
    with pytest.raises(ValueError, match="unknown"):
        SecurityLogConfig.from_mapping({"colector": "x"})
    with pytest.raises(ValueError, match="queue_max_bytes"):
        SecurityLogConfig.from_mapping({"queue_max_bytes": "64M"})
    with pytest.raises(ValueError):
        Exporter(SecurityLogConfig(), "/nonexistent")


def test_one_exporter_per_queue(tmp_path, collector):
    from resolver.security.exporter import ExporterError

    config = config_for(tmp_path, collector.port)
    first = Exporter(config, tmp_path)
    try:
        with pytest.raises(ExporterError, match=f"pid {os.getpid()}"):
            Exporter(config, tmp_path)
    finally:
        first.close()
    Exporter(config, tmp_path).close()  # free again


def test_settings_as_flags_round_trip(tmp_path):
    import argparse

    config = SecurityLogConfig(collector="10.1.1.1:6514", transport="tls", ca_file="/etc/ca.pem",
                               queue_max_events=1000, fsync_interval_s=0.5, facility="local3")  # fmt: skip
    parser = argparse.ArgumentParser()
    SecurityLogConfig.add_arguments(parser)
    assert SecurityLogConfig.from_args(parser.parse_args(config.to_args())) == config
    command = exporter_command(config, tmp_path)
    assert command[1:6] == ["-m", "resolver.cli", "seclog", "export", "--data"]


def test_exporter_process_delivers_and_drains_on_sigterm(tmp_path, collector):
    """The production path: events appended by this process, sent by `idnode seclog export` in another."""
    config = config_for(tmp_path, collector.port)
    events = SecurityEvents.open(config, tmp_path)
    emit(events, 0, 100)
    proc = spawn_exporter(config, tmp_path)
    try:
        wait_for(lambda: len(items(collector)) == 100, what="100 events from the exporter process")
        emit(events, 100, 120)
        wait_for(lambda: len(items(collector)) == 120, what="120 events")
        assert items(collector) == list(range(120))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert events.queue_stats().events == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        events.close()


def test_cli_seclog_status(tmp_path, capsys):
    from resolver.cli import main

    assert main(["seclog", "status", "--queue-dir", str(tmp_path / "none"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["exists"] is False
    config = SecurityLogConfig(collector="127.0.0.1:1", queue_max_events=3)
    events = SecurityEvents.open(config, tmp_path)
    emit(events, 0, 5)
    events.close()
    assert main(["seclog", "status", "--data", str(tmp_path), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["events"], status["dropped"], status["appended"]) == (3, 2, 5)


def test_cli_seclog_export_refuses_without_a_collector(tmp_path, capsys):
    from resolver.cli import main

    assert main(["seclog", "export", "--data", str(tmp_path)]) == 2
    assert "no collector" in capsys.readouterr().err


class Slammer:
    """A collector that accepts and closes at once, as one with a sender allow-list does to strangers."""

    def __init__(self) -> None:
        import socket
        import threading

        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.listener.close()


def test_a_collector_that_closes_at_once_loses_nothing(tmp_path):
    slammer = Slammer()
    config = config_for(tmp_path, slammer.port)
    with exporting(config, tmp_path, drain_timeout_s=0, then=slammer.close) as (events, exporter):
        emit(events, 0, 5)
        wait_for(lambda: exporter.failures >= 2, what="refused attempts")
        assert "closed the connection" in exporter.last_error
        assert events.queue_stats().events == 5 and exporter.sent == 0


def test_tls_without_the_client_certificate_the_collector_wants_loses_nothing(tmp_path, ca):
    """TLS 1.3 finishes the client's handshake before the server checks its certificate: the exporter must
    notice the refusal before it counts anything as sent."""
    collector = tls_collector(ca, tmp_path, require_client_cert=True)
    files = tls_files(ca, tmp_path)
    config = config_for(tmp_path, collector.port, "tls", ca_file=files["ca_file"])
    with exporting(config, tmp_path, drain_timeout_s=0, then=collector.stop) as (events, exporter):
        emit(events, 0, 5)
        wait_for(lambda: exporter.failures >= 2, what="refused handshakes")
        assert events.queue_stats().events == 5 and exporter.sent == 0
        assert collector.received() == []


def test_cli_export_settings_from_the_config_file_and_flags(tmp_path):
    from resolver.cli import build_parser
    from resolver.cli_security import _export_settings

    path = tmp_path / "idnode.toml"
    path.write_text(
        f'data_dir = "{tmp_path / "data"}"\nworkers = 2\n\n[security_log]\ncollector = "10.0.0.9:6514"\n'
        'transport = "tls"\nqueue_max_events = 1000\n'
    )
    args = build_parser().parse_args(["seclog", "export", "--config", str(path), "--facility", "local4"])
    config, data_dir = _export_settings(args)
    assert data_dir == tmp_path / "data"
    assert (config.collector, config.transport, config.queue_max_events, config.facility) == (
        "10.0.0.9:6514", "tls", 1000, "local4",
    )  # fmt: skip
