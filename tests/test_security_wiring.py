"""The security log and the audit trail wired into the node (issue #7): every writer records an audit entry in
its own transaction, with who and from where; the listeners, the HTTP API and the supervisor report their
security events; `[security_log]` is read from the settings. Unit tests first, then the HTTP application
in-process, then one running node with a collector: a failed login, writes and a rate-limit trip arrive at the
collector with who/what/where, and `idnode audit` lists the HTTP writes, the CLI's prefix operations and a
load."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import socket
import tomllib
from pathlib import Path

import pytest

from resolver import settings
from resolver.config import ServeConfig
from resolver.frontend import HandleFrontend
from resolver.handle.constants import OpCode
from resolver.handle.message import ResolutionRequest, encode_request, encode_resolution_request
from resolver.handle.values import HandleValue
from resolver.http.throttle import MAX_AUTH_FAILURES
from resolver.security.config import SecurityLogConfig
from resolver.security.events import EventKind, SecurityEvents
from resolver.server.limits import ExemptNetworks, ProvenSources, SourceRateLimiter, UdpGuard
from resolver.server.stats import QueryStats
from resolver.server.supervisor import config_changes
from resolver.server.udp import HandleUdpProtocol
from resolver.server.worker import node_site
from resolver.service import ResolutionService
from resolver.templates import delete_templates, set_templates
from storage import audit, loader
from storage.audit import Actor
from storage.counters import ResolutionCounter
from storage.enterprises import add_prefix, issue_credential, set_prefix_enabled
from storage.eventqueue import SecurityQueue
from storage.jsonvalues import ValueEncoder
from storage.loader import load_files
from storage.store import Store
from storage.writes import WriteError, delete_identifier, parse_batch_item, put_batch, put_identifier
from tests.app_helpers import InProcessApp
from tests.http_helpers import call, http_node
from tests.security_helpers import PyCollector, idnode_bodies, queued, wait_for
from tests.servers import idnode

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "idnode.toml.example"
HTTP_ACTOR = Actor("300:88.100.7/ADMIN", "203.0.113.5:40122")
T0 = 1_750_000_000


def url_values(url: str) -> list[HandleValue]:
    return [HandleValue(1, "URL", url.encode(), T0)]


def record(handle: str, url: str) -> dict:
    return {"handle": handle, "values": [{"index": 1, "type": "URL", "data": url}]}


def trail(store: Store) -> list[tuple[str, str, str, str]]:
    return [(e.identity, e.source, e.operation, e.handle) for e in audit.query(store)]


@pytest.fixture()
def events(tmp_path):
    e = SecurityEvents(SecurityQueue(tmp_path / "queue", max_bytes=1 << 30, max_events=10**6))
    yield e
    e.close()


# -- the audit trail of every writer -------------------------------------------------------------------------


def test_identifier_writes_are_audited_in_their_transaction(store):
    add_prefix(store, "88.100.7", "Brake Co", actor=HTTP_ACTOR)
    a = HTTP_ACTOR
    assert put_identifier(store, "88.100.7/P-1", url_values("https://a"), actor=a) == "created"
    assert put_identifier(store, "88.100.7/P-1", url_values("https://b"), actor=a) == "replaced"
    put_identifier(store, "88.100.7/P-1", [HandleValue(2, "DESC", b"d", T0)], indexes=[2], actor=a)
    delete_identifier(store, "88.100.7/P-1", indexes=[2], actor=a)
    before = audit.count(store)
    with pytest.raises(WriteError):  # refused: no entry
        put_identifier(store, "88.100.7/P-1", url_values("https://c"), overwrite=False, actor=a)
    with pytest.raises(WriteError):  # another enterprise's prefix: no entry
        put_identifier(store, "88.100.8/P-1", url_values("https://c"), allowed_prefix=b"88.100.7", actor=a)
    assert audit.count(store) == before
    delete_identifier(store, "88.100.7/P-1", actor=a)
    encoder = ValueEncoder(T0)
    items = [
        parse_batch_item(1, record("88.100.7/B-1", "https://1"), encoder, store),
        parse_batch_item(2, {"handle": "88.100.7/B-2"}, encoder, store),  # bad: no values
        parse_batch_item(3, record("88.100.7/B-3", "https://3"), encoder, store),
    ]
    assert put_batch(store, items, actor=a).created == 2
    refused = put_batch(store, [parse_batch_item(1, record("88.100.7/B-4", "https://4"), encoder, store),
                                items[1]], atomic=True, actor=a)  # fmt: skip
    assert not refused.written
    entries = audit.query(store)
    assert [(e.operation, e.handle) for e in entries] == [
        ("prefix-add", "0.NA/88.100.7"),
        ("create", "88.100.7/P-1"),
        ("replace", "88.100.7/P-1"),
        ("update", "88.100.7/P-1"),
        ("remove-values", "88.100.7/P-1"),
        ("delete", "88.100.7/P-1"),
        ("create", "88.100.7/B-1"),
        ("create", "88.100.7/B-3"),
    ]
    assert {(e.identity, e.source) for e in entries} == {(a.identity, a.source)}
    assert entries[3].detail == {"indexes": [2]} and entries[4].detail == {"indexes": [2]}
    assert entries[0].detail["org"] == "Brake Co" and entries[0].detail["updated"] is False


def test_prefix_credential_template_and_cli_writes_are_audited(store, monkeypatch):
    monkeypatch.setattr(audit.getpass, "getuser", lambda: "alice")
    add_prefix(store, "88.100.7", "Brake Co")  # no actor: the `idnode` command's user
    set_prefix_enabled(store, "88.100.7", False, actor=HTTP_ACTOR)
    set_prefix_enabled(store, "88.100.7", True, actor=HTTP_ACTOR)
    user, _ = issue_credential(store, "88.100.7")
    document = {"prefix": "88.100.7", "scenario": "demo", "templates": [
        {"name": "part", "suffixPattern": "T-.+", "fields": [{"name": "code", "index": 2001, "type": "CODE"}]}]}  # fmt: skip
    set_templates(store, document)
    assert delete_templates(store, "88.100.7")
    assert not delete_templates(store, "88.100.7")  # nothing deleted, nothing audited
    cli, http = ("cli:alice", "cli"), (HTTP_ACTOR.identity, HTTP_ACTOR.source)
    assert trail(store) == [
        (*cli, "prefix-add", "0.NA/88.100.7"),
        (*http, "prefix-disable", "0.NA/88.100.7"),
        (*http, "prefix-enable", "0.NA/88.100.7"),
        (*cli, "credential-issue", "0.NA/88.100.7"),
        (*cli, "template-set", "0.NA/88.100.7"),
        (*cli, "template-delete", "0.NA/88.100.7"),
    ]
    issued = audit.query(store)[3]
    assert issued.detail == {"user": user, "admin_created": True, "hs_seckey": False}  # no node key given: HTTP only


def test_a_load_leaves_one_entry_per_committed_chunk(store, tmp_path, monkeypatch):
    path = tmp_path / "ids.ndjson"
    lines = [json.dumps(record(f"88.100.9/L-{n:04d}", f"https://l/{n}")) for n in range(300)]
    path.write_text("\n".join(lines) + "\n")
    monkeypatch.setattr(loader, "CHUNK_BYTES", 8 << 10)  # ~110 lines a chunk: three chunks
    load_files(store, [path], parallel=False, actor=Actor("cli:bob", "cli"))
    entries = audit.query(store)
    assert len(entries) >= 3 and {e.operation for e in entries} == {"load"}
    assert entries[0].handle == "88.100.9/L-0000" and entries[0].detail["line"] == 1
    assert entries[-1].detail["last"] == "88.100.9/L-0299"
    assert sum(e.detail["count"] for e in entries) == 300
    assert all(e.detail["file"] == str(path) and e.identity == "cli:bob" for e in entries)
    for before, after in zip(entries, entries[1:], strict=False):  # chunks follow each other line by line
        assert after.detail["line"] == before.detail["line"] + before.detail["count"]


# -- the pieces the node calls ---------------------------------------------------------------------------------


def test_a_counter_flush_hands_over_what_it_wrote(store):
    counter = ResolutionCounter("handle")
    for prefix in (b"88.100.7", b"88.100.7", b"88.100.9"):
        counter.count(prefix)
    flushed: dict[bytes, int] = {b"88.100.7": 1}
    assert counter.flush(store, into=flushed) == 3
    assert flushed == {b"88.100.7": 3, b"88.100.9": 1}


def test_the_udp_listener_reports_rate_limits_and_malformed_datagrams(tmp_path, events):
    with Store(tmp_path / "store", create=True) as store:
        service = ResolutionService(store, "88.100", node_site(ServeConfig(data_dir=tmp_path)))
        frontend = HandleFrontend(service)
        guard = UdpGuard(SourceRateLimiter(1.0, 20, ExemptNetworks([])), ProvenSources(ExemptNetworks([])),
                         10.0, None, frontend.too_large_answer)  # fmt: skip
        good = encode_request(OpCode.RESOLUTION, encode_resolution_request(ResolutionRequest(b"88.100.1/X")),
                              request_id=1, expiration=2_000_000_000)  # fmt: skip
        bad_body = good[:20] + good[20:44] + b"\xff" * 8  # a readable envelope, an unreadable body

        class Transport:
            def sendto(self, data, addr):
                pass

        async def drive():
            protocol = HandleUdpProtocol(frontend, service.refresh, QueryStats(), guard, events)
            protocol.connection_made(Transport())
            protocol.datagram_received(good, ("192.0.2.1", 1))  # answered: nothing to report
            for n in range(10):
                protocol.datagram_received(b"\x00" * 5, ("192.0.2.7", 1000 + n))  # dropped
                protocol.datagram_received(bad_body, ("192.0.2.7", 1000 + n))  # PROTOCOL_ERROR
            for _ in range(5):  # past its burst of 20: refused
                protocol.datagram_received(good, ("192.0.2.7", 999))

        asyncio.run(drive())
    found = [(e.kind, e.data.get("source"), e.data.get("transport")) for e in queued(events)]
    assert found == [
        (EventKind.MALFORMED_BURST, "192.0.2.7", "udp"),  # at the 20th
        (EventKind.RATE_LIMITED, "192.0.2.7", "udp"),  # the first trip at once, later ones counted
    ]


def test_a_reload_names_every_changed_setting():
    old = ServeConfig(data_dir=Path("/d"))
    new = ServeConfig(data_dir=Path("/d"), workers=old.workers + 1, udp_rate_burst=10.0,
                      security_log=SecurityLogConfig(collector="192.0.2.9:6514", transport="tls"))  # fmt: skip
    assert config_changes(old, new) == [
        ("workers", old.workers, old.workers + 1),
        ("udp_rate_burst", old.udp_rate_burst, 10.0),
        ("security_log.collector", "", "192.0.2.9:6514"),
        ("security_log.transport", "tcp", "tls"),
    ]


# -- settings ------------------------------------------------------------------------------------------------


def test_the_security_log_table_comes_from_file_environment_and_flags(tmp_path):
    path = tmp_path / "idnode.toml"
    path.write_text('data_dir = "/d"\n[security_log]\ncollector = "192.0.2.1:514"\nnode_id = "88.100"\n'
                    "summary_interval_s = 60\n")  # fmt: skip
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    flags = settings.read_flags(parser.parse_args(["--transport", "udp"]))
    config = settings.build_config(flags, {"IDNODE_SECURITY_LOG_NODE_ID": "88.200"}, path)
    assert config.security_log == SecurityLogConfig(
        collector="192.0.2.1:514", transport="udp", node_id="88.200", summary_interval_s=60.0
    )
    assert settings.build_config({}, {}, path).security_log.transport == "tcp"
    assert not settings.build_config({"data_dir": Path("/d")}, {}).security_log.enabled


@pytest.mark.parametrize(
    ("text", "environ", "expected"),
    [
        ('[security_log]\ncolector = "x"\n', {}, r"idnode.toml: security_log.colector: unknown setting"),
        ("[security_log]\nqueue_max_events = 1.5\n", {}, r"idnode.toml: security_log.queue_max_events: 1.5"),
        ('[security_log]\ntransport = "sctp"\n', {}, r"idnode.toml: security_log.transport: 'sctp' is not"),
        ('security_log = "on"\n', {}, r"idnode.toml: security_log: a table"),
        ("", {"IDNODE_SECURITY_LOG_TRANSPORT": "sctp"}, r"environment IDNODE_SECURITY_LOG_TRANSPORT: "),
    ],
)
def test_bad_security_log_settings_name_the_key(tmp_path, text, environ, expected):
    path = tmp_path / "idnode.toml"
    path.write_text('data_dir = "/d"\n' + text)
    with pytest.raises(settings.ConfigError, match=expected):
        settings.build_config({}, environ, path)


def test_the_example_documents_the_security_log_table_with_its_defaults():
    text = EXAMPLE.read_text(encoding="utf-8")
    head, sep, table = text.partition("\n[security_log]\n")
    assert sep and "[" not in "".join(line for line in table.splitlines() if not line.startswith("#"))
    found = dict(re.findall(r"^# ([a-z_]+) = (.+)$", table, re.M))
    defaults = SecurityLogConfig()
    assert set(found) == set(settings.table_fields("security_log"))
    for name, value in found.items():
        assert tomllib.loads(f"v = {value}")["v"] == getattr(defaults, name), name


# -- the HTTP application in-process ---------------------------------------------------------------------------


@pytest.fixture()
def app(tmp_path, events):
    with Store(tmp_path / "app", create=True) as store:
        add_prefix(store, "88.100.7", "Brake Co")
        user, secret = issue_credential(store, "88.100.7")
    application = InProcessApp(tmp_path / "app")
    application.ctx.events = events
    application.credential = (user, secret)
    yield application
    application.close()


def test_http_refusals_and_writes_reach_the_security_log_and_the_trail(app, events):
    user, secret = app.credential
    body = json.dumps({"values": [{"index": 1, "type": "URL", "data": "https://p/1"}]}).encode()
    assert app.call("PUT", "/api/handles/88.100.7/P-1", body).status == 401  # no credentials
    assert app.call("PUT", "/api/handles/88.100.7/P-1", body, auth=(user, "not-the-secret")).status == 401
    assert app.call("PUT", "/api/handles/88.100.8/P-1", body, auth=(user, secret)).status == 403
    assert app.call("PUT", "/api/handles/88.100.7/P-1", body, auth=(user, secret)).status == 201
    exists = app.call("PUT", "/api/handles/88.100.7/P-1?overwrite=false", body, auth=(user, secret))
    assert exists.status == 409
    batch = "\n".join(json.dumps(record(f"88.100.7/B-{n}", "https://b")) for n in range(2)).encode()
    assert app.call("POST", "/api/batch", batch, auth=(user, secret)).status == 200
    assert app.call("DELETE", "/api/handles/88.100.7/B-1", auth=(user, secret)).status == 200
    got = [(e.kind, e.data) for e in queued(events)]
    failures = [d for k, d in got if k is EventKind.AUTH_FAILURE]
    assert [(d["identity"], d["transport"]) for d in failures] == [
        ("", "http"),
        (user, "http"),
        (user, "http"),
    ]
    assert "wrong secret" in failures[1]["reason"] and "88.100.7/" in failures[2]["reason"]
    assert all(re.fullmatch(r"127\.0\.0\.1:\d+", d["source"]) for d in failures)
    writes = [(d["operation"], d["handle"], d["outcome"]) for k, d in got if k is EventKind.WRITE]
    assert writes == [
        ("create", "88.100.7/P-1", "ok"),
        ("put", "88.100.7/P-1", "refused"),
        ("create", "88.100.7/B-0", "ok"),
        ("create", "88.100.7/B-1", "ok"),
        ("delete", "88.100.7/B-1", "ok"),
    ]
    [source] = {d["source"] for k, d in got if k is EventKind.WRITE}
    entries = [e for e in audit.query(app.store) if e.identity == user]
    assert [(e.operation, e.handle) for e in entries] == [
        (op, h) for op, h, outcome in writes if outcome == "ok"
    ]
    assert {e.source for e in entries} == {source}


def test_login_throttling_is_reported_as_a_rate_limit(app, events):
    user, _ = app.credential
    for _ in range(MAX_AUTH_FAILURES + 30):
        if app.call("GET", "/api/whoami", auth=(user, "wrong")).status == 429:
            break
    else:
        pytest.fail("failed logins were never throttled")
    limited = [e.data for e in queued(events) if e.kind is EventKind.RATE_LIMITED]
    assert limited == [{"source": "127.0.0.1", "transport": "http", "count": 1, "window_s": 10.0}]


def test_operator_writes_over_http_are_audited_as_the_operators(app, events, tmp_path):
    from storage.enterprises import set_operator_secret

    secret = "operator-secret-1234"
    set_operator_secret(app.store, secret, actor=Actor("cli:root", "cli"))
    auth = ("operator", secret)
    assert app.call("POST", "/api/admin/prefixes", json.dumps({"prefix": "88.100.8", "org": "O"}).encode(),
                    auth=auth).status == 200  # fmt: skip
    assert app.call("POST", "/api/admin/prefixes/88.100.8/disable", auth=auth).status == 200
    entries = [e for e in audit.query(app.store) if e.identity == "operator"]
    assert [(e.operation, e.handle) for e in entries] == [
        ("prefix-add", "0.NA/88.100.8"), ("prefix-disable", "0.NA/88.100.8"),
    ]  # fmt: skip
    writes = [(e.data["identity"], e.data["operation"]) for e in queued(events) if e.kind is EventKind.WRITE]
    assert writes == [("operator", "prefix-add"), ("operator", "prefix-disable")]


# -- a running node ------------------------------------------------------------------------------------------


def udp_request(handle: str, request_id: int) -> bytes:
    body = encode_resolution_request(ResolutionRequest(handle.encode()))
    return encode_request(OpCode.RESOLUTION, body, request_id=request_id, expiration=2_000_000_000)


def test_a_running_node_reports_to_the_collector_and_audits_every_writer(tmp_path):
    data = tmp_path / "store"
    ids = tmp_path / "ids.ndjson"
    ids.write_text("".join(json.dumps(record(f"88.100.9/L-{n}", "https://l")) + "\n" for n in range(3)))
    for args in (("load", "--quiet", "--data", str(data), str(ids)),
                 ("prefix", "add", "88.100.7", "--org", "Brake Co", "--data", str(data))):  # fmt: skip
        assert idnode(*args).returncode == 0
    issued = idnode("prefix", "credential", "88.100.7", "--json", "--data", str(data))
    user, secret = json.loads(issued.stdout)["user"], json.loads(issued.stdout)["secret"]
    first, moved = PyCollector("tcp").start(), PyCollector("tcp").start()  # a reload moves to the second
    config = tmp_path / "idnode.toml"
    settings_text = (
        'rate_limit_exempt = []\nudp_rate_limit_per_s = 1.0\nudp_rate_burst = {burst}\nlog_format = "json"\n'
        '[security_log]\ncollector = "127.0.0.1:{port}"\nnode_id = "88.100"\n'
    )
    config.write_text(settings_text.format(burst=3.0, port=first.port))

    def bodies() -> list[dict]:
        return idnode_bodies(first.received()) + idnode_bodies(moved.received())

    def kinds() -> set[str]:
        return {b["event"] for b in bodies()}

    try:
        with http_node(data, workers=1, extra=("--config", str(config))) as node:
            port = node.http_port
            values = {"values": [{"index": 1, "type": "URL", "data": "https://p/1"}]}
            assert (
                call(port, "PUT", "/api/handles/88.100.7/P-1", values, auth=(user, "wrong-secret")).status
                == 401
            )
            assert call(port, "PUT", "/api/handles/88.100.7/P-1", values, auth=(user, secret)).status == 201
            assert call(port, "GET", "/api/handles/88.100.7/P-1").status == 200  # a resolution (summary)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:  # over a burst of 3: a trip
                for n in range(10):
                    udp.sendto(udp_request("88.100.9/L-1", n), (node.host, node.port))
            wait_for(
                lambda: {"auth-failure", "write", "rate-limited"} <= kinds(), what="events at the collector"
            )
            metrics = call(port, "GET", "/metrics").body.decode()
            assert re.search(r"^idnode_security_queue_events \d", metrics, re.M), metrics
            config.write_text(
                settings_text.format(burst=4.0, port=moved.port)
            )  # reported to the new collector
            node.process.send_signal(signal.SIGHUP)
            wait_for(lambda: "config-changed" in kinds(), what="the reload's config-changed events")
            assert call(port, "GET", "/api/handles/88.100.7/P-1").status == 200  # counted by the new worker
        wait_for(lambda: "resolution-summary" in kinds(), what="the summary sent at shutdown")
    finally:
        first.stop()
        moved.stop()
    by_kind: dict[str, list[dict]] = {}
    for body in bodies():
        assert body["node"] == "88.100"
        by_kind.setdefault(body["event"], []).append(body)
    [failure] = by_kind["auth-failure"]
    assert (
        failure["identity"] == user and "wrong secret" in failure["reason"] and failure["transport"] == "http"
    )
    assert re.fullmatch(r"127\.0\.0\.1:\d+", failure["source"])
    [write] = by_kind["write"]
    assert (write["identity"], write["operation"], write["handle"], write["outcome"]) == (
        user, "create", "88.100.7/P-1", "ok",
    )  # fmt: skip
    assert re.fullmatch(r"127\.0\.0\.1:\d+", write["source"])
    assert (
        by_kind["rate-limited"][0]["source"] == "127.0.0.1"
        and by_kind["rate-limited"][0]["transport"] == "udp"
    )
    assert [(c["key"], c["old"], c["new"], c["by"]) for c in by_kind["config-changed"]] == [
        ("udp_rate_burst", 3.0, 4.0, "reload"),
        ("security_log.collector", f"127.0.0.1:{first.port}", f"127.0.0.1:{moved.port}", "reload"),
    ]
    after_reload = {b["event"] for b in idnode_bodies(moved.received())}
    assert after_reload == {"config-changed", "resolution-summary"}  # the old exporter sent the rest before
    # One summary from each worker as it stopped (the one the reload replaced, the last one).
    replaced, last = [b["per_prefix"] for b in by_kind["resolution-summary"]]
    assert replaced["88.100.7"] == 1 and replaced["88.100.9"] >= 3  # HTTP, and the UDP requests admitted
    assert last == {"88.100.7": 1}
    seqs = [b["seq"] for b in bodies()]
    assert seqs == sorted(set(seqs))  # in order, none twice

    listed = idnode("audit", "--data", str(data), "--json", "--limit", "0")
    assert listed.returncode == 0, listed.stderr
    entries = [json.loads(line) for line in listed.stdout.splitlines()]
    found = [(e["operation"], e["handle"], e["identity"]) for e in entries]
    cli = next(e["identity"] for e in entries if e["operation"] == "load")
    assert cli.startswith("cli:") and {e["source"] for e in entries if e["identity"] == cli} == {"cli"}
    assert found == [
        ("load", "88.100.9/L-0", cli),
        ("prefix-add", "0.NA/88.100.7", cli),
        ("credential-issue", "0.NA/88.100.7", cli),
        ("create", "88.100.7/P-1", user),
    ]
    assert entries[0]["detail"] == {"count": 3, "last": "88.100.9/L-2", "file": str(ids), "line": 1}
    assert entries[-1]["source"] == write["source"]
