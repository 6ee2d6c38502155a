"""Crash safety: `kill -9` in the middle of writing never leaves a store that is half written, inconsistent
or unopenable, and never loses an acknowledged write.

- HTTP batch registration: every worker of `idnode serve` is killed, twice, while clients post batches of
  2,000 identifiers. A batch answered 2xx is there whole; any other batch is there whole or not at all.
- `idnode load` of 200,000 identifiers killed after its first commits (the parent; then, in another run, one
  of its worker processes): what is stored is exactly the lines up to the checkpoint, nothing goes on writing
  after the kill, and the same command run again resumes there and ends with every identifier.

After each: the store opens, `idnode check` exits 0 and the registrations counted equal the identifiers held.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import orjson
import pytest

from storage.counters import totals
from storage.enterprises import add_prefix, issue_credential
from storage.keys import handle_key
from storage.store import Store
from tests.http_helpers import basic, http_node
from tests.processes import is_writer
from tests.servers import idnode

pytestmark = pytest.mark.slow

LOAD_COUNT = 200_000
BATCH_SIZE = 2_000
CLIENTS = 4
KILL_ROUNDS = 2
DEADLINE_S = 60.0  #: every wait below is bounded by this


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def node_workers(pid: int) -> list[int]:
    """The worker processes of `idnode serve` `pid`: its forked children (same command line), not its writer
    nor helpers it may spawn (the security log exporter)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        return [c for c in children(pid) if Path(f"/proc/{c}/cmdline").read_bytes() == command and not is_writer(c)]
    except FileNotFoundError:
        return []


def running(pid: int) -> bool:
    """Alive and not a zombie (orphans may stay zombies where nothing reaps them)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def is_load_worker(pid: int) -> bool:
    """A worker process of `idnode load` (not multiprocessing's resource tracker)."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    return b"spawn_main" in command and b"resource_tracker" not in command


def wait_until(predicate, what: str, timeout_s: float = DEADLINE_S, every_s: float = 0.01):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every_s)


def check_exits_0(store_dir: Path) -> None:
    result = idnode("check", "--data", str(store_dir))
    assert result.returncode == 0, result.stdout + result.stderr


def registrations(store: Store) -> int:
    return totals(store, "registrations")[0]


# -- HTTP batches ------------------------------------------------------------------------------------------


def batch_body(number: int) -> bytes:
    lines = (
        orjson.dumps({"handle": f"88.100.7/K{number:04d}-{n:04d}", "values": [
            {"index": 1, "type": "URL", "data": f"https://example.com/{number}/{n}"}]})
        for n in range(BATCH_SIZE)
    )  # fmt: skip
    return b"\n".join(lines) + b"\n"


def stored_per_batch(store: Store) -> dict[int, int]:
    counts: dict[int, int] = {}
    with store.env.begin(db=store.handles) as txn:
        for key in txn.cursor().iternext(values=False):
            if key.startswith(b"88.100.7/K"):
                number = int(key[len(b"88.100.7/K") :].split(b"-")[0])
                counts[number] = counts.get(number, 0) + 1
    return counts


def test_killing_every_http_worker_during_batches_loses_no_acknowledged_write(tmp_path):
    store_dir = tmp_path / "store"
    with Store(store_dir, create=True) as store:
        add_prefix(store, "88.100.7", "Crash Test Co")
        user, secret = issue_credential(store, "88.100.7")
    outcomes: dict[int, int | str] = {}  # batch number -> HTTP status, or the error that ended it
    lock = threading.Lock()
    next_batch = iter(range(10_000))
    stop = threading.Event()

    def client(port: int) -> None:
        while not stop.is_set():
            with lock:
                number = next(next_batch)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                conn.request("POST", "/api/batch", body=batch_body(number),
                             headers={"Authorization": basic(user, secret), "Content-Type": "application/x-ndjson"})  # fmt: skip
                response = conn.getresponse()
                answer = json.loads(response.read())
                if response.status == 200:
                    assert answer["created"] == BATCH_SIZE and answer["failed"] == 0
                outcomes[number] = response.status
            except (OSError, http.client.HTTPException) as exc:
                outcomes[number] = type(exc).__name__
                time.sleep(0.05)  # the workers are being restarted
            finally:
                conn.close()

    with http_node(store_dir, workers=2) as node:
        threads = [threading.Thread(target=client, args=(node.http_port,)) for _ in range(CLIENTS)]
        for thread in threads:
            thread.start()
        try:
            for _ in range(KILL_ROUNDS):
                acknowledged = sum(1 for s in outcomes.values() if s == 200)
                wait_until(lambda a=acknowledged: sum(1 for s in list(outcomes.values()) if s == 200) >= a + 2,
                           "batches to be acknowledged")  # fmt: skip
                workers = wait_until(lambda: node_workers(node.process.pid), "workers")
                for pid in workers:  # batches are in flight on them now: CLIENTS clients post back to back
                    os.kill(pid, signal.SIGKILL)
                wait_until(lambda w=workers: len(set(node_workers(node.process.pid)) - set(w)) >= 2, "new workers")
            wait_until(lambda: sum(1 for s in list(outcomes.values()) if s == 200) >= 2, "batches after the kills")
        finally:
            stop.set()
            for thread in threads:
                thread.join(DEADLINE_S)
    assert node.process.returncode == 0

    statuses = dict(outcomes)
    acknowledged = {n for n, s in statuses.items() if s == 200}
    lost_in_flight = {n for n, s in statuses.items() if not isinstance(s, int)}
    assert acknowledged and lost_in_flight, statuses  # the kills did hit requests in flight
    assert all(s == 200 or not isinstance(s, int) for s in statuses.values()), statuses
    with Store(store_dir) as store:
        stored = stored_per_batch(store)
        for number in acknowledged:
            assert stored.get(number) == BATCH_SIZE, f"acknowledged batch {number} has {stored.get(number)}"
        for number, count in stored.items():
            assert count == BATCH_SIZE, f"batch {number} is half applied: {count} of {BATCH_SIZE}"
        assert set(stored) <= set(statuses)
        held = store.count_identifiers()
        assert held == len(stored) * BATCH_SIZE + 1  # and 88.100.7/ADMIN
        assert registrations(store) == held
    check_exits_0(store_dir)


# -- idnode load -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("crash-load") / "ids.ndjson"
    result = idnode("gen", "--count", str(LOAD_COUNT), "--seed", "7", "-o", str(path))
    assert result.returncode == 0, result.stderr
    return path


def start_load(store_dir: Path, path: Path) -> subprocess.Popen:
    """`idnode load` in a process group of its own (its workers and multiprocessing's helper with it)."""
    return subprocess.Popen(
        [sys.executable, "-m", "resolver.cli", "load", "--data", str(store_dir), str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
        start_new_session=True,
    )  # fmt: skip


def freeze_after_first_commit(load: subprocess.Popen, store_dir: Path, path: Path) -> int:
    """Stop every process of the load (SIGSTOP to its group) as soon as its first chunk is committed, and
    check it is not done: the kill that follows then lands in the middle of the load, never after it (a load
    of this file takes well under a second on a fast machine, so waiting any moment would be a race).
    Returns the identifiers committed by then, which no stopped process can change. The store is opened
    before the stop: opening it takes the write lock, which a stopped worker may hold."""
    store = wait_until(lambda: _open(store_dir), "the store to exist")
    try:
        wait_until(lambda: store.count_identifiers(), "the first commit", every_s=0.005)
        os.killpg(load.pid, signal.SIGSTOP)
        held, saved = store.count_identifiers(), checkpoint(store, path)  # read transactions only
    finally:
        store.close()
    assert saved is not None and 0 < held < LOAD_COUNT, f"the load ended before it was stopped ({held} held)"
    return held


def thaw(load: subprocess.Popen) -> None:
    """SIGCONT to what is left of the load's process group."""
    try:
        os.killpg(load.pid, signal.SIGCONT)
    except ProcessLookupError:
        pass


def _open(store_dir: Path) -> Store | None:
    try:
        return Store(store_dir) if (store_dir / "data.mdb").exists() else None
    except Exception:
        return None


def checkpoint(store: Store, path: Path) -> list | None:
    """The checkpoint an interrupted load of `path` left (size, mtime_ns, offset, lines), or None."""
    raw = store.get_meta(b"load-checkpoint/" + str(path.resolve()).encode())
    return msgpack.unpackb(raw) if raw is not None else None


def check_prefix_of_file(store_dir: Path, path: Path) -> int:
    """The store holds exactly the identifiers of the lines before the load's checkpoint; returns that count."""
    with Store(store_dir) as store:
        saved = checkpoint(store, path)
        assert saved is not None, "an interrupted load leaves its checkpoint"
        size, _mtime, offset, lines = saved
        assert size == path.stat().st_size and 0 < lines < LOAD_COUNT
        with path.open("rb") as f:
            committed = f.read(offset)
        assert committed.endswith(b"\n") and committed.count(b"\n") == lines  # the checkpoint ends on a line
        expected = {handle_key(orjson.loads(line)["handle"].encode(), False) for line in committed.splitlines()}
        with store.env.begin(db=store.handles) as txn:
            held = set(txn.cursor().iternext(values=False))
        assert held == expected, f"{len(held - expected)} stored beyond the checkpoint, {len(expected - held)} missing"
        assert registrations(store) == len(held)
        return len(held)


def resume(store_dir: Path, path: Path, committed_lines: int) -> None:
    result = idnode("load", "--data", str(store_dir), str(path))
    assert result.returncode == 0, result.stderr
    assert f"resumed after {committed_lines:,} committed lines" in result.stdout + result.stderr
    with Store(store_dir) as store:
        assert store.count_identifiers() == LOAD_COUNT
        assert registrations(store) == LOAD_COUNT  # resumed lines are not counted twice
        assert checkpoint(store, path) is None
    check_exits_0(store_dir)


def test_kill_9_of_idnode_load_keeps_a_consistent_prefix_and_resumes(tmp_path, big_file):
    store_dir = tmp_path / "store"
    load = start_load(store_dir, big_file)
    try:
        at_kill = freeze_after_first_commit(load, store_dir, big_file)
        workers = children(load.pid)
        load.kill()
        load.wait(DEADLINE_S)
    finally:
        thaw(load)
        if load.poll() is None:
            load.kill()
        load.communicate()
    # Its worker processes die with it: nothing goes on writing to the store.
    wait_until(lambda: not any(running(pid) for pid in workers), "the load's workers to die", timeout_s=10)
    held = check_prefix_of_file(store_dir, big_file)
    assert held == at_kill  # what was committed when the load was stopped, and nothing after
    check_exits_0(store_dir)
    with Store(store_dir) as store:
        lines = checkpoint(store, big_file)[3]
    resume(store_dir, big_file, lines)


def test_kill_9_of_a_load_worker_stops_the_load_cleanly_and_resumes(tmp_path, big_file):
    store_dir = tmp_path / "store"
    load = start_load(store_dir, big_file)
    try:
        freeze_after_first_commit(load, store_dir, big_file)
        workers = [pid for pid in children(load.pid) if is_load_worker(pid) and running(pid)]
        assert workers, "the load has a worker left"
        os.kill(workers[0], signal.SIGKILL)  # maybe while it commits, holding the turn lock
        thaw(load)
        _, stderr = load.communicate(timeout=DEADLINE_S)  # the load stops: it neither hangs nor reports success
    finally:
        thaw(load)
        if load.poll() is None:
            load.kill()
            load.communicate()
    assert load.returncode != 0
    assert "a load worker was killed (SIGKILL)" in stderr and "run the same load again" in stderr
    check_prefix_of_file(store_dir, big_file)
    check_exits_0(store_dir)
    with Store(store_dir) as store:
        lines = checkpoint(store, big_file)[3]
    resume(store_dir, big_file, lines)
