"""Three idnode members on a real three-server NATS JetStream cluster on loopback (issue 12, items 3, 4 and 6).

Each member is a real `idnode serve` with its own store, writer and worker; the log is the JetStream stream.
The tests run in file order on one cluster (module fixtures); the faults come last. Nothing waits on a sleep:
every wait polls what a user would look at (an HTTP answer, `idnode cluster status`, the store) with a bound.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resolver.admin.crypto import Signer
from resolver.client import HandleClient
from resolver.cluster.status import READY, read_status
from resolver.handle.admin import AdminRequest
from resolver.handle.constants import OpCode, ResponseCode
from resolver.handle.values import HandleValue
from resolver.writer.client import SyncWriterClient
from storage.enterprises import add_prefix, issue_credential
from storage.entries import EntryError
from storage.handlekeys import load_node_key
from storage.store import Store
from tests.http_helpers import call
from tests.nats_cluster import nats_cluster, require_nats_server
from tests.processes import child_pids
from tests.servers import REPO, RunningNode, free_port, wait_until

pytestmark = pytest.mark.slow

REPLICATED_S = 1.0  #: issue 12: a write on one member is answered by the others within a second
CATCH_UP_S = 120.0  #: a member that missed 100,000 writes applies them well within this on a slow CI machine
RECOVER_S = 60.0  #: NATS back: writes are taken again once the client has reconnected (1 s back-off)
CATCH_UP_WRITES = 100_000
POISON_DEADLINE_S = (
    60.0  #: publishing the unappliable entry: bounded, a NATS client that hangs fails the test
)


def member_flags(nats_urls: list[str], node: str, stream: str = "IDNODE_LOG") -> tuple[str, ...]:
    return ("--http-port", str(free_port()), "--cluster-nats", ",".join(nats_urls), "--cluster-node", node,
            "--cluster-stream", stream, "--flush-interval", "0.5")  # fmt: skip


class Member:
    """One idnode member: its store directory and, while it runs, its RunningNode."""

    def __init__(self, root: Path, name: str, nats_urls: list[str], stream: str = "IDNODE_LOG"):
        self.name = name
        self.data = root / name
        self.nats_urls = nats_urls
        self.stream = stream
        self.node: RunningNode | None = None
        if not (self.data / "data.mdb").exists():
            Store(self.data, create=True).close()

    def start(self) -> Member:
        self.node = RunningNode(
            self.data, workers=1, extra=member_flags(self.nats_urls, self.name, self.stream)
        )
        return self

    def connected(self) -> Member:
        """Once the member says it has its log: a write before that is refused as 'cluster log unreachable'
        (the supervisor is READY, serving reads, while the writer still connects to NATS)."""
        wait_until(lambda: (read_status(self.data) or {}).get("state") == READY, f"{self.name} has its log")
        return self

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()
            self.node = None

    def kill(self) -> None:
        """kill -9 of the member's every process at once, as when its machine dies."""
        assert self.node is not None
        pids = {self.node.process.pid} | child_pids(self.node.process.pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.node.process.wait()
        self.node.stop()
        self.node = None

    @property
    def http(self) -> int:
        assert self.node is not None and self.node.http_port
        return self.node.http_port

    def get(self, handle: str):
        return call(self.http, "GET", f"/api/handles/{handle}")

    def writer(self) -> SyncWriterClient:
        return SyncWriterClient(self.data / "writer.sock")

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "IDNODE_CLUSTER_NATS": ",".join(self.nats_urls), "IDNODE_CLUSTER_NODE": self.name,
               "IDNODE_CLUSTER_STREAM": self.stream}  # fmt: skip
        return subprocess.run([sys.executable, "-m", "resolver.cli", *args, "--data", str(self.data)], env=env,
                              capture_output=True, text=True, cwd=REPO, timeout=120)  # fmt: skip

    def status(self) -> dict:
        done = self.cli("cluster", "status", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def put(member: Member, handle: str, url: str, auth) -> int:
    body = {"values": [{"index": 1, "type": "URL", "data": url}]}
    return call(member.http, "PUT", f"/api/handles/{handle}", body=body, auth=auth).status


def put_while_recovering(member: Member, handle: str, url: str, auth) -> int | None:
    """`put`, or None when the answer does not come in the client's time: while JetStream elects its leaders
    again a write may wait for the log (up to its publish deadline) before it is answered."""
    try:
        return put(member, handle, url, auth)
    except TimeoutError:
        return None


@pytest.fixture(scope="module")
def nats(tmp_path_factory):
    require_nats_server()
    with nats_cluster(tmp_path_factory.mktemp("nats")) as running:
        yield running


@pytest.fixture(scope="module")
def members(nats, tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    started = [Member(root, name, nats.urls) for name in ("a", "b", "c")]
    try:
        for member in started:
            member.start()
        for member in started:
            member.connected()
        yield started
    finally:
        for member in started:
            member.stop()


@pytest.fixture(scope="module")
def ent7(members):
    """An enterprise prefix and its credential, made through member a (so through the log)."""
    writer = members[0].writer()
    try:
        add_prefix(writer, "88.100.7", "Brake Co", None)
        # with a's node key, the credential is a Handle secret key too (HS_SECKEY, decrypted by a alone)
        return issue_credential(writer, "88.100.7", node_key=load_node_key(members[0].data, create=True))
    finally:
        writer.close()


def handle_create(member: Member, handle: str, secret: str):
    """CREATE_HANDLE over Handle TCP, authenticated with the enterprise's secret key: the answer message."""
    request = AdminRequest(OpCode.CREATE_HANDLE, handle, (HandleValue(1, "URL", b"https://example.com/h"),))

    async def go():
        async with HandleClient("127.0.0.1", member.node.port, tcp=True, timeout_s=30) as client:
            return await client.admin(request, Signer("88.100.7/ADMIN", 300, secret=secret.encode()))

    return asyncio.run(go())


def test_a_write_on_one_member_is_answered_by_the_others_within_a_second(members, ent7):
    a, b, c = members
    assert put(a, "88.100.7/REPLICATED-1", "https://example.com/r1", ent7) == 201
    acknowledged = time.monotonic()
    for other in (b, c):
        wait_until(lambda o=other: o.get("88.100.7/REPLICATED-1").status == 200, f"member {other.name} answers",
                   timeout_s=REPLICATED_S)  # fmt: skip
    assert time.monotonic() - acknowledged < REPLICATED_S
    assert c.get("88.100.7/REPLICATED-1").json["values"][0]["data"]["value"] == "https://example.com/r1"
    # credentials replicate too: b takes a write signed with the credential issued through a
    assert put(b, "88.100.7/REPLICATED-2", "https://example.com/r2", ent7) == 201
    wait_until(
        lambda: a.get("88.100.7/REPLICATED-2").status == 200, "a answers b's write", timeout_s=REPLICATED_S
    )
    # a Handle-protocol write goes through the same log
    assert handle_create(a, "88.100.7/HANDLE-1", ent7[1]).header.response_code == ResponseCode.SUCCESS
    wait_until(
        lambda: c.get("88.100.7/HANDLE-1").status == 200, "c answers a's Handle write", timeout_s=REPLICATED_S
    )


def test_the_node_prefix_site_lists_every_member(members):
    def site_of(member) -> str:
        answer = subprocess.run([sys.executable, "-m", "resolver.cli", "resolve", "0.NA/88.100", "--server",
                                 f"127.0.0.1:{member.node.port}"], capture_output=True, text=True, cwd=REPO,
                                timeout=30)  # fmt: skip
        return answer.stdout

    for member in members:
        wait_until(lambda m=member: all(f"TCP {o.node.port}" in site_of(m) for o in members),
                   f"{member.name}'s HS_SITE lists every member")  # fmt: skip
    listing = site_of(members[2])
    assert "server 3" in listing and "server 4" not in listing


def test_cluster_status_shows_every_member_applied_and_caught_up(members, ent7):
    a, b, c = members
    wait_until(lambda: all(row["lag"] == 0 for row in a.status()["members"]), "every member applied the log")

    def caught_up_and_applying():  # a pull request renewed now and then: sample until each member shows one
        rows = {row["node"]: row for row in c.status()["members"]}
        return rows if all(row["health"] == "applying" for row in rows.values()) else None

    rows = wait_until(caught_up_and_applying, "every member applying")
    assert set(rows) == {"a", "b", "c"} and {"a", "b", "c"} <= {r["node"] for r in a.status()["members"]}
    assert rows["c"]["this"] and not rows["a"]["this"]
    metrics = call(b.http, "GET", "/metrics").body.decode()
    assert 'idnode_cluster_lag_entries{node="b"} 0.0' in metrics
    assert 'idnode_cluster_applying{node="b"} 1.0' in metrics


def test_counters_are_kept_per_member_and_summed_everywhere(members, ent7):
    a, b, c = members
    assert put(a, "88.100.7/COUNTED", "https://example.com/counted", ent7) == 201
    wait_until(lambda: b.get("88.100.7/COUNTED").status == 200, "b has it")
    for member, times in ((a, 3), (b, 5)):
        for _ in range(times):
            assert member.get("88.100.7/COUNTED").status == 200

    def per_node():
        done = c.cli("stats", "--json")
        return json.loads(done.stdout)["resolutions"].get("per_node", {})

    wait_until(
        lambda: per_node().get("a", 0) >= 3 and per_node().get("b", 0) >= 5, "c sums a's and b's counts"
    )
    stats = json.loads(c.cli("stats", "--json").stdout)["resolutions"]
    assert stats["total"] == sum(stats["per_node"].values())


def test_a_member_stopped_for_100000_writes_is_reported_behind_and_catches_up(members, tmp_path):
    a, b, c = members
    c.stop()
    lines = "".join(
        json.dumps({"handle": f"88.100.7/BULK-{n:06d}", "values": [{"index": 1, "type": "URL",
                                                                   "data": f"https://example.com/{n}"}]}) + "\n"
        for n in range(CATCH_UP_WRITES)
    )  # fmt: skip
    source = tmp_path / "bulk.ndjson"
    source.write_text(lines)
    loaded = a.cli("load", "--quiet", str(source))
    assert loaded.returncode == 0, loaded.stderr
    behind = {row["node"]: row for row in a.status()["members"]}["c"]
    assert (
        behind["lag"] > 0 and behind["applied"] < a.status()["last_position"]
    )  # the load's entries, and more
    assert behind["health"] == "not consuming"
    c.start()
    wait_until(lambda: c.get(f"88.100.7/BULK-{CATCH_UP_WRITES - 1:06d}").status == 200, "c catches up",
               timeout_s=CATCH_UP_S)  # fmt: skip
    wait_until(lambda: (read_status(c.data) or {}).get("lag") == 0, "c reports no lag", timeout_s=CATCH_UP_S)
    with Store(c.data, readonly=True) as store, Store(a.data, readonly=True) as reference:
        assert store.count_identifiers() == reference.count_identifiers()


def test_a_new_member_from_an_empty_store_replays_the_whole_log(members, ent7, tmp_path):
    a = members[0]
    assert put(a, "88.100.7/BEFORE-D", "https://example.com/before-d", ent7) == 201
    last = a.status()["last_position"]
    d = Member(tmp_path, "d", a.nats_urls).start()
    try:
        wait_until(lambda: (read_status(d.data) or {}).get("applied", 0) >= last, "d replays the whole log",
                   timeout_s=CATCH_UP_S)  # fmt: skip
        assert d.get("88.100.7/BEFORE-D").status == 200
        with Store(d.data, readonly=True) as replayed, Store(a.data, readonly=True) as reference:
            assert replayed.prefixes().keys() == reference.prefixes().keys()
    finally:
        d.stop()
    removed = a.cli("cluster", "remove", "d")  # gone for good: out of HS_SITE, its consumer deleted
    assert removed.returncode == 0 and "consumer idnode-d deleted" in removed.stdout, removed.stderr
    assert "d" not in {row["node"] for row in a.status()["members"]}


def test_nats_away_reads_are_served_writes_refused_and_the_member_recovers(nats, members, ent7, tmp_path):
    a, b, c = members
    assert put(a, "88.100.7/BEFORE-AWAY", "https://example.com/before", ent7) == 201
    backup = tmp_path / "backup-of-a"
    assert a.cli("backup", str(backup)).returncode == 0
    recorded = json.loads((backup / "backup.json").read_text())["log_position"]
    assert 0 < recorded <= a.status()["last_position"]  # where a member restored from it starts replaying
    nats.stop()
    try:
        assert a.get("88.100.7/BEFORE-AWAY").status == 200
        refused = call(a.http, "PUT", "/api/handles/88.100.7/WHILE-AWAY", auth=ent7,
                       body={"values": [{"index": 1, "type": "URL", "data": "https://example.com/away"}]})  # fmt: skip
        assert refused.status == 503 and "cluster log unreachable" in refused.json["message"]
        assert refused.headers.get("Retry-After")
        answer = handle_create(a, "88.100.7/HANDLE-AWAY", ent7[1])
        assert answer.header.response_code == ResponseCode.SERVER_TOO_BUSY
        assert b"cluster log unreachable" in answer.body
        # a member started while NATS is away (from a's backup) serves what its store holds
        os.rename(backup, tmp_path / "e")
        e = Member(tmp_path, "e", a.nats_urls)
        e.start()
        try:
            assert e.get("88.100.7/BEFORE-AWAY").status == 200
            assert put(e, "88.100.7/E-AWAY", "https://example.com/e", ent7) == 503
        finally:
            e.stop()
    finally:
        nats.start(restart=True)
    # 201, or 200 when a try the client gave up on was applied all the same and this one replaced it
    wait_until(lambda: put_while_recovering(a, "88.100.7/AFTER-AWAY", "https://example.com/after", ent7) in (200, 201),
               "a takes writes again", timeout_s=RECOVER_S)  # fmt: skip
    wait_until(lambda: c.get("88.100.7/AFTER-AWAY").status == 200, "c applies it", timeout_s=RECOVER_S)


def test_an_entry_a_member_cannot_apply_stops_its_apply_loop_with_nothing_half_applied(nats, tmp_path):
    import asyncio

    import msgpack

    from resolver.cluster.jetstream import JetStreamLog, StreamSettings

    lone = Member(tmp_path, "p", nats.urls, stream="POISON").start().connected()
    try:
        writer = lone.writer()
        try:
            add_prefix(writer, "88.100.9", "Poison Co", None)
        finally:
            writer.close()
        applied_before = Store(lone.data, readonly=True).applied_position()

        async def publish_poison() -> int:
            log = JetStreamLog(StreamSettings(tuple(nats.urls), stream="POISON"), "test")
            await log.connect()
            try:
                unknown_kind = msgpack.packb(["no_such_kind", {}])
                return (await log.append([(None, unknown_kind, "poison")]))[0]
            finally:
                await log.close()

        poison = asyncio.run(asyncio.wait_for(publish_poison(), POISON_DEADLINE_S))
        wait_until(lambda: (read_status(lone.data) or {}).get("state") == "stopped", "the apply loop stops")
        status = read_status(lone.data)
        assert f"position {poison}" in status["problem"] and "no_such_kind" in status["problem"]
        with Store(lone.data, readonly=True) as store:
            assert store.applied_position() == poison - 1 >= applied_before
            assert b"88.100.10" not in store.prefixes()
        assert lone.get("0.NA/88.100.9").status == 200  # reads go on
        writer = lone.writer()
        try:
            with pytest.raises(EntryError, match="stopped applying"):
                add_prefix(writer, "88.100.11", "Refused Co", None)
        finally:
            writer.close()
        assert "stopped applying the log" in lone.node.output
    finally:
        lone.stop()
