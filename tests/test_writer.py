"""The node's writer (resolver/writer/): HTTP writes, `idnode` commands and loads go through it while a node
serves the store and are answered once applied; workers never write (their snapshots renew on a timer); a
writer that is down or stuck is a clear 503, never a hang; and a writer killed with -9 during a stream of
writes loses no acknowledged write and applies nothing twice (counters included)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import socket
import struct
import threading
from pathlib import Path

import msgpack
import pytest

from bench.datagen import Dataset
from resolver.client import HandleClient
from resolver.writer.client import WriterClient, WriterUnavailable
from resolver.writer.protocol import decode_request, encode_answer
from storage.counters import totals
from storage.enterprises import add_prefix, issue_credential
from storage.entries import decode_entry, ok
from storage.log import EmbeddedLog
from storage.store import Store
from tests.app_helpers import InProcessApp
from tests.http_helpers import basic, call, http_node
from tests.processes import child_pids, is_writer, node_writer
from tests.servers import idnode, wait_until

DATASET = Dataset(2000, 1, "88.100", 8)  # the demo store (tests/conftest.py)
URL = [{"index": 1, "type": "URL", "data": "https://example.com/x"}]
CLIENTS = 4
KILLS = 2
DEADLINE_S = 60.0


def logged_positions(store: Store) -> list[int]:
    return [position for position, _ in EmbeddedLog(store).entries_after(0)]


# -- a writer that only records, for what the commands send ---------------------------------------------------


class RecordingWriter:
    """A stand-in writer on `path`: records each request's entries and payloads and the sender's pid, and
    answers every entry `ok(answer)` without applying anything (or never answers, with `mute`). `observe`:
    a function of the sender's pid, called while the sender waits for the answer (so it is still there);
    its results are in `observed`."""

    def __init__(self, path: Path, answer=None, mute: bool = False, observe=None):
        self.path = path
        self.answer = answer
        self.mute = mute
        self.observe = observe
        self.observed: list = []
        self.requests: list[tuple[list[bytes], list | None, int]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        pid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        with conn:
            while True:
                header = self._read(conn, 4)
                if header is None:
                    return
                request_id, entries, payloads = decode_request(self._read(conn, struct.unpack(">I", header)[0]))
                self.requests.append((entries, payloads, pid))
                if self.observe is not None:
                    self.observed.append(self.observe(pid))
                if not self.mute:
                    answer = self.answer(entries) if callable(self.answer) else self.answer
                    conn.sendall(encode_answer(request_id, [ok(answer)] * len(entries)))

    @staticmethod
    def _read(conn: socket.socket, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def kinds(self) -> list[str]:
        return [decode_entry(e)[0] for entries, _, _ in self.requests for e in entries]

    def close(self) -> None:
        self.sock.close()


def test_commands_send_their_entries_to_a_serving_writer(demo_store_copy):
    before = Store(demo_store_copy)
    applied = before.applied_position()
    before.close()
    writer = RecordingWriter(demo_store_copy / "writer.sock", answer=Store and None)
    try:
        result = idnode("template", "delete", "88.100.1", "--data", str(demo_store_copy))
        assert result.returncode == 2  # the stand-in answers None: "no templates", as a writer would
        assert writer.kinds() == ["delete_templates"]
    finally:
        writer.close()
    with Store(demo_store_copy) as store:  # nothing applied here: the command only sent its entry
        assert store.applied_position() == applied


def test_a_load_into_a_served_store_sends_its_chunks_by_reference_at_low_priority(demo_store_copy, demo_ndjson):
    writer = RecordingWriter(demo_store_copy / "writer.sock", answer=0)
    try:
        result = idnode("load", "--quiet", "--data", str(demo_store_copy), str(demo_ndjson))
        assert result.returncode == 0, result.stderr
    finally:
        writer.close()
    assert writer.kinds()[-1] == "load_done" and set(writer.kinds()[:-1]) == {"load_chunk"}
    entries, payloads, pid = writer.requests[0]
    _, args = decode_entry(entries[0])
    assert args["ref"]["begin"] == 0 and args["ref"]["end"] > 0 and "items" not in args  # by reference
    assert len(entries[0]) < 1000  # a chunk's entry is small; its records travel beside it (never logged)
    assert payloads is not None and len(payloads[0][0]) > 0
    assert sum(len(p[0][0]) for _, p, _ in writer.requests if p) == 2000


def nice_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def test_nice_of_a_process_sending_to_the_writer_is_the_loaders(demo_store_copy, demo_ndjson):
    writer = RecordingWriter(demo_store_copy / "writer.sock", answer=lambda entries: 0, observe=nice_of)
    try:
        assert idnode("load", "--quiet", "--data", str(demo_store_copy), str(demo_ndjson)).returncode == 0
    finally:
        writer.close()
    assert writer.observed and all(n == 10 for n in writer.observed)  # a served store's load runs at nice 10


def allowed_cpus(pid: int) -> set[str]:
    """The CPU lists the threads of `pid` may run on, as /proc/PID/task/*/status says them."""
    lists = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                lists.add(line.split()[1])
    return lists


TWO_CPUS = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="a core budget needs 2 CPUs to split")


@TWO_CPUS
def test_a_load_into_a_served_store_runs_on_the_writers_cpus(demo_store_copy, demo_ndjson):
    last = str(max(os.sched_getaffinity(0)))
    writer = RecordingWriter(demo_store_copy / "writer.sock", answer=lambda entries: 0, observe=allowed_cpus)
    try:
        env = {**os.environ, "IDNODE_WRITER_CPUS": last}  # as `idnode serve` was started with it
        loaded = idnode("load", "--quiet", "--data", str(demo_store_copy), str(demo_ndjson), env=env)
        assert loaded.returncode == 0, loaded.stderr
    finally:
        writer.close()
    assert writer.observed and all(cpus == {last} for cpus in writer.observed)


def test_a_load_on_cpus_this_machine_lacks_is_refused_naming_them(demo_store_copy, demo_ndjson):
    refused = idnode("load", "--quiet", "--cpus", "4096", "--data", str(demo_store_copy), str(demo_ndjson))
    assert refused.returncode == 2 and "--cpus: CPU 4096 is not available here" in refused.stderr


# -- the writer unavailable -------------------------------------------------------------------------------------


def _put(app: InProcessApp, auth) -> object:
    return app.call("PUT", "/api/handles/88.100.7/NEW", json.dumps({"values": URL}).encode(), auth=auth)


@pytest.fixture()
def credentialed(demo_store_copy):
    with Store(demo_store_copy) as store:
        add_prefix(store, "88.100.7", "Brakes Ltd")
        user, secret = issue_credential(store, "88.100.7")
    return demo_store_copy, (user, secret)


def test_a_write_without_a_writer_is_a_clear_503(credentialed, tmp_path):
    store_dir, auth = credentialed
    app = InProcessApp(store_dir)
    try:
        app.ctx.writer = WriterClient(tmp_path / "nobody.sock", connect_wait_s=0.2)
        reply = _put(app, auth)
        assert reply.status == 503 and reply.headers["Retry-After"] == "1"
        assert reply.json["message"].startswith("writer unavailable, retry")
        assert app.store.get("88.100.7/NEW") is None
    finally:
        app.close()


def test_a_write_to_a_stuck_writer_is_a_503_after_the_timeout(credentialed, tmp_path):
    store_dir, auth = credentialed
    stuck = RecordingWriter(tmp_path / "stuck.sock", mute=True)
    app = InProcessApp(store_dir)
    try:
        app.ctx.writer = WriterClient(stuck.path, timeout_s=0.5)
        reply = _put(app, auth)
        assert reply.status == 503 and "no answer within 0.5 s" in reply.json["message"]
        assert stuck.kinds() == ["put_identifier"]  # it was sent, and never answered
    finally:
        app.close()
        stuck.close()


def test_the_async_client_refuses_when_nothing_listens(tmp_path):
    async def go():
        client = WriterClient(tmp_path / "none.sock", connect_wait_s=0.1)
        try:
            await client.submit([b"x"])
        finally:
            await client.close()

    with pytest.raises(WriterUnavailable, match="writer unavailable, retry"):
        asyncio.run(go())


# -- a real node ----------------------------------------------------------------------------------------------


def reader_txnids(store: Store) -> dict[int, int]:
    """pid -> the transaction id its read snapshot holds (LMDB's reader table; '-' slots are free)."""
    out = {}
    for line in store.env.readers().splitlines()[1:]:
        fields = line.split()
        if len(fields) == 3 and fields[2] != "-":
            out[int(fields[0])] = int(fields[2])
    return out


def test_writes_go_through_the_writer_and_an_idle_worker_renews_its_snapshot(credentialed):
    store_dir, auth = credentialed
    with http_node(store_dir, workers=1) as node:
        writer = wait_until(lambda: node_writer(node.process.pid), "the writer")
        worker = next(pid for pid in child_pids(node.process.pid) if not is_writer(pid))
        put = call(node.http_port, "PUT", "/api/handles/88.100.7/VIA-WRITER", auth=auth, body={"values": URL})
        assert put.status == 201
        assert call(node.http_port, "GET", "/api/handles/88.100.7/VIA-WRITER").status == 200  # read your write
        result = idnode("prefix", "add", "88.100.70", "--org", "Late Co", "--data", str(store_dir))
        assert result.returncode == 0, result.stderr
        with Store(store_dir, readonly=True) as store:
            last = store.env.info()["last_txnid"]
            kinds = [decode_entry(e)[0] for _, e in EmbeddedLog(store).entries_after(0)]
            assert kinds[-2:] == ["put_identifier", "add_prefix"]
            # No request reaches the worker now; its snapshot moves on by itself (every housekeeping pass).
            wait_until(lambda: reader_txnids(store).get(worker, 0) >= last, "the idle worker's snapshot to renew")
            assert writer not in reader_txnids(store)  # the writer holds no long read snapshot
        assert node.stop() == 0


@TWO_CPUS
def test_a_core_budget_keeps_the_workers_and_the_writer_on_cpus_of_their_own(credentialed):
    store_dir, auth = credentialed
    first, second = (str(cpu) for cpu in sorted(os.sched_getaffinity(0))[:2])
    with http_node(store_dir, workers=1, extra=("--worker-cpus", first, "--writer-cpus", second)) as node:
        put = call(node.http_port, "PUT", "/api/handles/88.100.7/BUDGET", auth=auth, body={"values": URL})
        assert put.status == 201  # a worker's write crosses to the writer's CPU and is answered
        writer = node_writer(node.process.pid)
        worker = next(pid for pid in child_pids(node.process.pid) if not is_writer(pid))
        assert allowed_cpus(writer) == {second}  # every thread: the one committing too
        assert allowed_cpus(worker) == {first}
        assert node.stop() == 0


def test_kill_9_of_the_writer_loses_no_acknowledged_write_and_applies_nothing_twice(credentialed):
    store_dir, auth = credentialed
    outcomes: dict[int, int | str] = {}
    numbers = iter(range(1_000_000))
    lock = threading.Lock()
    stop = threading.Event()
    resolved = [0]

    def writes(port: int) -> None:
        while not stop.is_set():
            with lock:
                number = next(numbers)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=DEADLINE_S)
            try:
                conn.request("PUT", f"/api/handles/88.100.7/K-{number}", body=json.dumps({"values": URL}),
                             headers={"Authorization": basic(*auth), "Content-Type": "application/json"})  # fmt: skip
                response = conn.getresponse()
                response.read()
                outcomes[number] = response.status
            except (OSError, http.client.HTTPException) as exc:
                outcomes[number] = type(exc).__name__
            finally:
                conn.close()

    async def resolutions(node) -> None:
        async with HandleClient(node.host, node.port, tcp=True, timeout_s=10) as client:
            while not stop.is_set():
                assert (await client.resolve(DATASET.handle_at(5))).ok
                resolved[0] += 1

    with Store(store_dir) as store:
        counted_before = totals(store, "resolutions")[0]
    with http_node(store_dir, workers=2) as node:
        threads = [threading.Thread(target=writes, args=(node.http_port,)) for _ in range(CLIENTS)]
        threads.append(threading.Thread(target=lambda: asyncio.run(resolutions(node))))
        for thread in threads:
            thread.start()
        try:
            for _ in range(KILLS):
                done = sum(1 for s in list(outcomes.values()) if s in (200, 201))
                wait_until(lambda d=done: sum(1 for s in list(outcomes.values()) if s in (200, 201)) >= d + 20,
                           "writes to be acknowledged", timeout_s=DEADLINE_S)  # fmt: skip
                victim = wait_until(lambda: node_writer(node.process.pid), "the writer")
                os.kill(victim, signal.SIGKILL)  # writes are in flight: four clients put back to back
                wait_until(lambda v=victim: node_writer(node.process.pid) not in (None, v), "a new writer")
            done = sum(1 for s in list(outcomes.values()) if s in (200, 201))
            wait_until(lambda: sum(1 for s in list(outcomes.values()) if s in (200, 201)) >= done + 20,
                       "writes after the kills", timeout_s=DEADLINE_S)  # fmt: skip
        finally:
            stop.set()
            for thread in threads:
                thread.join(DEADLINE_S)
        assert node.stop() == 0
    statuses = dict(outcomes)
    acknowledged = {n for n, s in statuses.items() if s in (200, 201)}
    # Anything else is unacknowledged: 503 "writer unavailable, retry" while it restarted, never another error.
    assert all(s in (200, 201, 503) for s in statuses.values()), statuses
    with Store(store_dir) as store:
        held = {int(re.fullmatch(rb"88\.100\.7/K-(\d+)", k).group(1))
                for k, _ in store.iter_records(b"88.100.7/K-") if k.startswith(b"88.100.7/K-")}  # fmt: skip
        assert acknowledged <= held, f"acknowledged and lost: {sorted(acknowledged - held)[:10]}"
        assert held <= set(statuses)
        # Each identifier was created once and counted once (an entry applied twice would count it again).
        under = sum(1 for k, _ in store.iter_records(b"88.100.7/") if k.startswith(b"88.100.7/"))
        assert totals(store, "registrations")[1]["88.100.7"] == under
        positions = logged_positions(store)
        assert positions == list(range(positions[0], positions[-1] + 1)) and positions[-1] == store.applied_position()
        # Every resolution answered was counted exactly once, though counter deltas were resent across kills.
        assert totals(store, "resolutions")[0] - counted_before == resolved[0]
    result = idnode("check", "--data", str(store_dir))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_load_into_a_serving_node_goes_through_its_writer(demo_store_copy, tmp_path):
    more = tmp_path / "more.ndjson"
    assert idnode("gen", "--count", "3000", "--seed", "5", "--prefix", "88.101", "-o", str(more)).returncode == 0
    with http_node(demo_store_copy, workers=1) as node:
        result = idnode("load", "--quiet", "--data", str(demo_store_copy), str(more))
        assert result.returncode == 0, result.stderr
        assert "the store holds 5,000" in result.stderr

        async def resolve():
            async with HandleClient(node.host, node.port, timeout_s=5) as client:
                return await client.resolve(Dataset(3000, 5, "88.101", 32).handle_at(2999))

        # Answered by a worker that never wrote, once it has picked the new prefixes up (within a second).
        wait_until(lambda: asyncio.run(resolve()).ok, "the loaded identifiers to resolve")
        assert node.stop() == 0
    with Store(demo_store_copy) as store:
        kinds = [decode_entry(e)[0] for _, e in EmbeddedLog(store).entries_after(0)]
        loaded = [k for k in kinds if k.startswith("load_")]
        assert loaded[-2:] == ["load_chunk", "load_done"]
        assert store.applied_position() == logged_positions(store)[-1]
    assert idnode("check", "--data", str(demo_store_copy)).returncode == 0


def test_msgpack_of_an_entry_is_plain_data():
    # What a log entry holds survives msgpack as is: no objects, no closures.
    raw = msgpack.packb(["put_identifier", {"handle": "88.100.7/A", "values": [b"\x00"]}])
    assert decode_entry(raw) == ("put_identifier", {"handle": "88.100.7/A", "values": [b"\x00"]})
