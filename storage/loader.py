"""Bulk registration from NDJSON or CSV files into the store.

Input is cut into chunks of whole lines; each chunk is one `load_chunk` entry of the write log
(storage/entries.py), applied in one LMDB transaction together with a checkpoint (file identity, byte offset
and line count), so a failed or interrupted load leaves every committed chunk in place and nothing
half-written, and running the same unchanged file again resumes after the last commit. An NDJSON chunk is
logged BY REFERENCE (file, byte range, CRC-32 of the bytes, the load's clock and case rule), not record by
record: the records already parsed travel beside the entry to the apply step (a replay without them reads and
parses the range again, and refuses a file that changed); CSV chunks carry their records in the entry. The
entries go to the node's writer when one serves the store (`submitter`), else they are appended and applied
in the loading process itself (storage/log.py). A finished load removes its checkpoint; loading a file again is safe because records are replaced
whole. Keys that arrive sorted after everything stored take LMDB's append path. Each committed chunk leaves
one audit entry (`load`: its first identifier, with count, last identifier, file and first line) in the
same transaction.

Large NDJSON files are parsed by one worker process per CPU, each reading its own chunks straight from the
file and committing them in file order (a shared turn counter), so the parent does no per-record work.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lmdb
import msgpack

from storage import audit, entries
from storage.audit import Actor
from storage.chunks import Chunk, chunk_bounds, parse_ndjson
from storage.csvinput import CSV_COLUMNS, CSV_OPTIONAL, csv_chunks
from storage.entries import Submitter, encode_entry, unwrap
from storage.store import Store

CHUNK_BYTES = 8 << 20  #: NDJSON bytes per chunk (~16,000 typical lines): amortises the commit and its fsync
PARALLEL_MIN_BYTES = 16 << 20  #: below this, starting worker processes costs more than it saves
PROGRESS_INTERVAL_S = 0.5  #: how often the parent reports progress of a parallel load
TURN_WAIT_S = 1.0  #: a worker waiting for its turn to commit re-checks for a failure this often
_CHECKPOINT = b"load-checkpoint/"
_PR_SET_PDEATHSIG = 1  #: prctl(2) option: the signal a process gets when its parent dies (Linux)

__all__ = ["CSV_COLUMNS", "CSV_OPTIONAL", "LoadError", "LoadReport", "load_files"]

Progress = Callable[[str, int, float], None]


class LoadError(Exception):
    """A line of an input file cannot be registered; the message names the file and line."""


@dataclass
class LoadReport:
    records: int = 0  # records written in this run
    new: int = 0  # of which were not in the store before
    skipped_lines: int = 0  # lines skipped because a checkpoint said they were already committed
    seconds: float = 0.0

    @property
    def rate_per_s(self) -> float:
        return self.records / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class _Source:
    """One input file and where its load resumes."""

    path: Path
    checkpoint_key: bytes
    identity: tuple[int, int]  # size and mtime: a changed file is never resumed
    resume_offset: int
    resume_lines: int
    actor: Actor  # who the audit trail says loaded it

    @classmethod
    def open(cls, store: Store, path: Path, actor: Actor) -> _Source:
        st = path.stat()
        identity = (st.st_size, st.st_mtime_ns)
        key = _CHECKPOINT + str(path.resolve()).encode()
        saved = store.get_meta(key)
        if saved is not None:
            size, mtime_ns, offset, lines = msgpack.unpackb(saved)
            if (size, mtime_ns) == identity:
                return cls(path, key, identity, offset, lines, actor)
        return cls(path, key, identity, 0, 0, actor)

    def checkpoint(self, offset: int, lines: int) -> bytes:
        return msgpack.packb([*self.identity, offset, lines])


def chunk_entry(source: _Source, chunk: Chunk, lines_before: int, now_s: int, case_sensitive: bool) -> bytes:
    """The `load_chunk` entry of a chunk: its lines by reference (NDJSON) or its records (CSV), the
    checkpoint after it, and what its audit entry says."""
    args: dict[str, Any] = {
        "file": str(source.path), "checkpoint_key": source.checkpoint_key,
        "checkpoint": source.checkpoint(chunk.end_offset, lines_before + chunk.line_count),
        "time": now_s, "actor": entries.actor_args(source.actor), "first_line": chunk.first_line,
        "count": len(chunk.items),
    }  # fmt: skip
    if chunk.crc32 is not None:
        args["ref"] = {"identity": list(source.identity), "begin": chunk.start_offset, "end": chunk.end_offset,
                       "crc32": chunk.crc32, "case_sensitive": case_sensitive}  # fmt: skip
    else:
        args["items"] = chunk.items
        args["shared"] = chunk.shared
    return encode_entry(entries.LOAD_CHUNK, args)


def _commit(log: Submitter, source: _Source, chunk: Chunk, lines_before: int, now_s: int, case_sensitive: bool) -> int:
    """Submit a chunk's entry (with its parsed records beside it) and return how many of it were new."""
    entry = chunk_entry(source, chunk, lines_before, now_s, case_sensitive)
    payload = [chunk.items, chunk.shared] if chunk.crc32 is not None else None
    return unwrap(log.submit([entry], None if payload is None else [payload])[0])


def apply_load_chunk(
    store: Store,
    txn: lmdb.Transaction,
    args: dict,
    payload: Any,
    loaded: Callable[[bytes, bytes], None],
) -> int:
    """Write a chunk's records and the checkpoint after it in the applying transaction; returns how many were
    new. The records: in the entry, beside it (`payload`, as the loader parsed them), or read again from the
    file by the entry's reference."""
    if "items" in args:
        items, shared = args["items"], args["shared"]
    elif payload is not None:
        items, shared = payload
    else:
        items, shared = _read_reference(args)
    if items and type(items[0]) is not tuple:  # msgpack gives pairs back as lists; putmulti wants tuples
        items = [(key, record) for key, record in items]
    store.put_shared(txn, shared)
    new = store.put_records_in(txn, items, append=None, now_s=args["time"], register_prefixes=True)
    if args["checkpoint"] is not None:  # None: a part of a chunk, split by the cluster's log, not its last
        txn.put(args["checkpoint_key"], args["checkpoint"], db=store.meta)
    if items:
        actor = Actor(*args["actor"])
        detail = {"count": len(items), "last": items[-1][0].decode(errors="replace"), "file": args["file"],
                  "line": args["first_line"]}  # fmt: skip
        first = items[0][0].decode(errors="replace")
        audit.record(store, txn, actor.identity, actor.source, audit.LOAD, first, detail,
                     now_ns=args["time"] * 1_000_000_000)  # fmt: skip
        keys = [key for key, _ in items]
        loaded(min(keys), max(keys))
    return new


def _read_reference(args: dict) -> tuple[list, dict]:
    """The records of a chunk logged by reference, parsed again from the file; LoadError when the file is
    gone or its bytes are not those logged."""
    ref = args["ref"]
    path = Path(args["file"])
    try:
        st = path.stat()
        with path.open("rb") as f:
            f.seek(ref["begin"])
            data = f.read(ref["end"] - ref["begin"])
    except OSError as exc:
        raise LoadError(f"{path}: the load logged at this position cannot be read again: {exc}") from exc
    if [st.st_size, st.st_mtime_ns] != list(ref["identity"]) or zlib.crc32(data) != ref["crc32"]:
        raise LoadError(f"{path}: the file changed since it was loaded; its logged chunk cannot be applied again")
    chunk = parse_ndjson(data, ref["begin"], args["time"], ref["case_sensitive"])
    return chunk.items, chunk.shared


def load_done_entry(checkpoint_key: bytes) -> bytes:
    """The entry that ends a file's load: its checkpoint is removed."""
    return encode_entry(entries.LOAD_DONE, {"checkpoint_key": checkpoint_key})


def apply_load_done(store: Store, txn: lmdb.Transaction, args: dict) -> None:
    txn.delete(args["checkpoint_key"], db=store.meta)


def _local(store: Store) -> Submitter:
    from storage.log import LocalLog  # the log applies through this module, which is imported first

    return LocalLog(store)


def load_files(
    store: Store,
    paths: list[Path],
    progress: Progress | None = None,
    parallel: bool | None = None,
    actor: Actor | None = None,
    submitter: Callable[[Store], Submitter] | None = None,
) -> LoadReport:
    """Register every record of `paths` (NDJSON, or CSV by the .csv ending). Raises LoadError naming the file
    and line at the first bad line, after committing the good lines before it. The audit trail names `actor`
    (default: this `idnode` command's user). `submitter(store)` gives where the chunks' entries go (default:
    appended and applied by this process); parallel workers call it in their own process, so it must be a
    module-level function (or a functools.partial of one)."""
    report = LoadReport()
    started = time.monotonic()
    now_s = int(time.time())
    actor = actor or audit.cli_actor()
    make_log = submitter or _local
    log = make_log(store)
    for path in paths:
        if not path.is_file():
            raise LoadError(f"{path}: no such file")
        source = _Source.open(store, path, actor)
        report.skipped_lines += source.resume_lines
        if path.suffix.lower() == ".csv":
            chunks = csv_chunks(path, source.resume_lines, now_s, store.case_sensitive)
            _load_chunks(log, source, chunks, now_s, store.case_sensitive, report, started, progress)
        elif _use_processes(parallel, source):
            _load_ndjson_parallel(store, source, now_s, report, started, progress, make_log)
        else:
            chunks = _ndjson_chunks(source, now_s, store.case_sensitive)
            _load_chunks(log, source, chunks, now_s, store.case_sensitive, report, started, progress)
        unwrap(log.submit([load_done_entry(source.checkpoint_key)])[0])
    report.seconds = time.monotonic() - started
    return report


def _use_processes(parallel: bool | None, source: _Source) -> bool:
    if parallel is not None:
        return parallel
    return source.identity[0] - source.resume_offset >= PARALLEL_MIN_BYTES and (os.cpu_count() or 1) > 1


def _ndjson_chunks(source: _Source, now_s: int, case_sensitive: bool) -> Iterator[Chunk]:
    size = source.identity[0]
    with source.path.open("rb") as f:
        index = 0
        while True:
            begin, end = chunk_bounds(f, index, source.resume_offset, size, CHUNK_BYTES)
            if begin >= size:
                return
            f.seek(begin)
            yield parse_ndjson(f.read(end - begin), begin, now_s, case_sensitive)
            index += 1


def _load_chunks(log, source, chunks, now_s, case_sensitive, report, started, progress) -> None:
    lines = source.resume_lines
    for chunk in chunks:
        chunk.first_line = lines + 1
        if chunk.items or chunk.error is None:
            report.new += _commit(log, source, chunk, lines, now_s, case_sensitive)
        report.records += len(chunk.items)
        lines += chunk.line_count
        if progress:
            progress(str(source.path), report.records, time.monotonic() - started)
        if chunk.error:
            raise LoadError(f"{source.path}:{chunk.located_error()}")


# -- parallel NDJSON ---------------------------------------------------------------------------------------


class _Turns:
    """State the workers share: whose turn it is to commit, and the running totals."""

    def __init__(self, ctx, lines_before: int):
        self.cond = ctx.Condition()
        self.next_chunk = ctx.Value("q", 0, lock=False)
        self.lines = ctx.Value("q", lines_before, lock=False)
        self.records = ctx.Value("q", 0, lock=False)
        self.new = ctx.Value("q", 0, lock=False)
        self.failed = ctx.Value("b", 0, lock=False)
        self.errors = ctx.SimpleQueue()


def _die_with_parent(parent_pid: int) -> None:
    """A worker must not go on writing once `idnode load` is gone (kill -9, the OOM killer): on Linux the
    kernel kills it with its parent; elsewhere, and if the parent died before this ran, it stops at its next
    turn (_orphaned)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if _orphaned(parent_pid):
        os._exit(1)


def _orphaned(parent_pid: int) -> bool:
    return os.getppid() != parent_pid


def _worker(
    store_path: str,
    source: _Source,
    first: int,
    step: int,
    chunk_bytes: int,
    now_s: int,
    turns: _Turns,
    parent_pid: int,
    make_log: Callable[[Store], Submitter],
) -> None:
    """Parse chunks first, first+step, ... and commit each when its turn comes (file order)."""
    _die_with_parent(parent_pid)
    try:
        with Store(store_path, readonly=make_log is not _local) as store, source.path.open("rb") as f:
            log = make_log(store)
            size = source.identity[0]
            index = first
            while True:
                begin, end = chunk_bounds(f, index, source.resume_offset, size, chunk_bytes)
                if begin >= size:
                    return
                f.seek(begin)
                chunk = parse_ndjson(f.read(end - begin), begin, now_s, store.case_sensitive)
                with turns.cond:
                    while turns.next_chunk.value != index and not turns.failed.value and not _orphaned(parent_pid):
                        turns.cond.wait(TURN_WAIT_S)
                    if turns.failed.value or _orphaned(parent_pid):
                        return
                    chunk.first_line = turns.lines.value + 1
                    if chunk.items or chunk.error is None:
                        turns.new.value += _commit(log, source, chunk, turns.lines.value, now_s,
                                                   store.case_sensitive)  # fmt: skip
                    turns.records.value += len(chunk.items)
                    turns.lines.value += chunk.line_count
                    if chunk.error:
                        turns.errors.put(f"{source.path}:{chunk.located_error()}")
                        turns.failed.value = 1
                    turns.next_chunk.value = index + 1
                    turns.cond.notify_all()
                if chunk.error:
                    return
                index += step
    except BaseException as exc:  # tell the parent and the other workers, then stop
        turns.errors.put(f"{source.path}: load worker failed: {exc!r}")
        with turns.cond:
            turns.failed.value = 1
            turns.cond.notify_all()


def _load_ndjson_parallel(store, source, now_s, report, started, progress, make_log) -> None:
    # spawn, not fork: an LMDB environment must not cross a fork, and the parent has the store open.
    ctx = multiprocessing.get_context("spawn")
    turns = _Turns(ctx, source.resume_lines)
    count = max(1, os.cpu_count() or 1)
    args = (str(store.path), source)
    workers = [
        ctx.Process(
            target=_worker, args=(*args, n, count, CHUNK_BYTES, now_s, turns, os.getpid(), make_log), daemon=True
        )
        for n in range(count)
    ]
    killed = None
    try:
        for worker in workers:
            worker.start()
        while any(w.is_alive() for w in workers):
            for w in workers:
                w.join(PROGRESS_INTERVAL_S / count)
            # A worker killed from outside (OOM killer, kill -9) may have died holding the turn lock: the
            # others would wait for it forever. Stop them all; the committed chunks stay, and a new run resumes.
            killed = next((w for w in workers if w.exitcode is not None and w.exitcode < 0), None)
            if killed is not None:
                break
            if progress:
                progress(str(source.path), report.records + turns.records.value, time.monotonic() - started)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()  # an interrupted transaction is never committed: nothing half-written
            worker.join()
    report.records += turns.records.value
    report.new += turns.new.value
    if killed is not None:
        raise LoadError(
            f"{source.path}: a load worker was killed ({_signal_name(-killed.exitcode)}); the chunks "
            "committed before are kept: run the same load again to resume after them"
        )
    if not turns.errors.empty():
        raise LoadError(turns.errors.get())


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
