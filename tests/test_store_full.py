"""A full disk: the store raises StoreFullError (storage/store.py) whichever way LMDB meets it (ENOSPC at
commit, EIO for a short write, a map that cannot grow), and writes nothing; the HTTP API answers 507 with a
clear message and logs one line per episode (resolver/http/storefull.py).

The real cases run on a tmpfs of a few MiB (`mount -t tmpfs`, root only; skipped, saying why, where mounting is
not permitted): a store filled until its disk is full, directly and through real HTTP writes to a real node.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import lmdb
import pytest

from storage.enterprises import add_prefix, issue_credential
from storage.store import SHORT_WRITE_FREE_BYTES, Store, StoreFullError
from tests.http_helpers import call, http_node
from tests.servers import idnode

DISK_BYTES = 4 << 20  #: the tmpfs: a few MiB fill in well under a second
RECORD_DATA_CHARS = 48_000  #: one PUT's value: ~80 of them fill the disk
MAX_FILL_WRITES = 400  #: far more than the disk holds: a loop that never meets a full disk fails, not hangs
FULL_LINE = "writes refused: the disk is full"
RECOVERED_LINE = "writes succeed again after the disk was full"


# -- the error type, with the failures made up --------------------------------------------------------------


def _failing_with(exc: BaseException):
    def work(txn):
        raise exc

    return work


def test_no_room_at_commit_is_store_full(store):
    for exc in (
        lmdb.DiskError("mdb_txn_commit: No space left on device"),
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        lmdb.Error(f"mdb_txn_commit: {os.strerror(errno.EDQUOT)}"),
    ):
        with pytest.raises(StoreFullError, match="no room on the disk"):
            store.write(_failing_with(exc))
    with pytest.raises(lmdb.BadValsizeError):  # other errors are what they are
        store.write(_failing_with(lmdb.BadValsizeError("mdb_put: bad value size")))


def test_a_short_write_is_store_full_only_on_a_full_file_system(store, monkeypatch):
    short = lmdb.Error(f"mdb_txn_commit: {os.strerror(errno.EIO)}")

    def statvfs_with(free_bytes: int):
        real = os.statvfs(store.path)
        fake = os.statvfs_result((real.f_bsize, 1, 0, 0, free_bytes, 0, 0, 0, 0, 255))
        return lambda path: fake

    monkeypatch.setattr(os, "statvfs", statvfs_with(SHORT_WRITE_FREE_BYTES - 1))
    with pytest.raises(StoreFullError):
        store.write(_failing_with(short))
    monkeypatch.setattr(os, "statvfs", statvfs_with(SHORT_WRITE_FREE_BYTES * 100))
    with pytest.raises(lmdb.Error) as caught:  # a failing device with room left: its EIO, as it is
        store.write(_failing_with(short))
    assert not isinstance(caught.value, StoreFullError)


def test_a_map_that_cannot_grow_is_store_full(store, monkeypatch):
    def full(txn):
        raise lmdb.MapFullError("mdb_put: MDB_MAP_FULL")

    class Env:  # the real environment, except that it cannot map more
        def __init__(self, env):
            self._env = env

        def __getattr__(self, name):
            return getattr(self._env, name)

        def set_mapsize(self, size):
            raise lmdb.MemoryError("mdb_env_set_mapsize: Cannot allocate memory")

    monkeypatch.setattr(store, "env", Env(store.env))
    with pytest.raises(StoreFullError, match="cannot grow"):
        store.write(full)


# -- a real full disk -----------------------------------------------------------------------------------------


@pytest.fixture()
def small_disk(tmp_path):
    """A tmpfs of DISK_BYTES at tmp_path/disk, unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = shutil.which("mount")
    if mount is None:
        pytest.skip("mount not installed: apt-get install mount")
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _grow(disk: Path, size_bytes: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size_bytes}", str(disk)], check=True)


def test_a_store_filled_to_the_last_byte_keeps_every_committed_write(small_disk):
    """Transactions of mixed sizes until the disk is full: large ones meet LMDB's short write (EIO), small
    ones ENOSPC. Each refused one raises StoreFullError; the store opens afterwards with every committed key
    and none of the refused ones."""
    path = small_disk / "store"
    committed, refused = [], []
    with Store(path, create=True) as store:
        for n in range(MAX_FILL_WRITES):
            count = 300 if n % 3 else 30  # ~300 KiB or ~30 KiB a transaction
            keys = [b"T%04d/%04d" % (n, i) for i in range(count)]

            def work(txn, keys=keys):
                for key in keys:
                    txn.put(key, os.urandom(1000), db=store.handles)

            try:
                store.write(work)
            except StoreFullError:
                refused.append(keys)
                if len(refused) >= 6:
                    break
                continue
            committed.append(keys)
    assert refused and committed, "the disk never filled"
    with Store(path) as store:
        with store.env.begin(db=store.handles) as txn:
            assert all(txn.get(k) is not None for keys in committed for k in keys)
            assert all(txn.get(k) is None for keys in refused for k in keys)


def test_http_writes_on_a_full_disk_answer_507_logged_once_per_episode(small_disk):
    path = small_disk / "store"
    with Store(path, create=True) as store:
        add_prefix(store, "88.100.7", "Org")
        credential = issue_credential(store, "88.100.7")
    statuses: list[int] = []
    acknowledged: list[str] = []
    refused: list[str] = []

    def put(handle: str, chars: int = RECORD_DATA_CHARS) -> int:
        values = [{"index": 1, "type": "DESC", "data": "x" * chars}]
        reply = call(node.http_port, "PUT", f"/api/handles/{handle}", {"values": values}, auth=credential)
        statuses.append(reply.status)
        if reply.status == 201:
            acknowledged.append(handle)
        else:
            assert reply.status == 507, (reply.status, reply.body)
            assert reply.json["message"] == "the node's disk is full: nothing of this request was stored; try again later"
            assert reply.json["responseCode"] == 2  # ERROR
            refused.append(handle)
        return reply.status

    with http_node(path, workers=2) as node:
        for n in range(MAX_FILL_WRITES):
            if put(f"88.100.7/FILL-{n}") == 507:
                break
        assert refused, "the disk never filled"
        for n in range(5):  # more writes while it is full: answered alike, not logged again
            put(f"88.100.7/MORE-{n}", RECORD_DATA_CHARS * 4)
        _grow(small_disk, DISK_BYTES * 4)
        assert put("88.100.7/AFTER") == 201  # room again: the episode ends
    output = node.output
    episodes = sum(1 for a, b in zip([201, *statuses], statuses, strict=False) if a != 507 and b == 507)
    recoveries = sum(1 for a, b in zip(statuses, statuses[1:], strict=False) if a == 507 and b != 507)
    assert output.count(FULL_LINE) == episodes >= 1, output
    assert output.count(RECOVERED_LINE) == recoveries >= 1, output
    assert output.count("no room on the disk") == episodes, output  # the cause: in the episode's line, once
    assert "Traceback" not in output, output

    checked = idnode("check", "--data", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with Store(path) as store:
        assert all(store.get(handle) is not None for handle in acknowledged)
        assert all(store.get(handle) is None for handle in refused)
