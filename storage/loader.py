"""Bulk registration from NDJSON or CSV files into the store.

Lines are parsed in chunks (in worker processes when the input is large) and written one chunk per LMDB
transaction, so a failed load leaves every committed chunk in place and nothing half-written. Each commit also
records a checkpoint (file identity and line), in the same transaction, so an interrupted load resumes where it
stopped; a finished load removes it, and loading the same file again is safe because records are replaced
whole. Keys that arrive sorted after everything stored take LMDB's append path, the fast one.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import msgpack
import orjson

from resolver.handle.constants import MAX_HANDLE_BYTES
from resolver.handle.errors import HandleProtocolError
from storage.jsonvalues import ValueEncoder, ValueFormatError, encoded_record_from_json, value_from_json
from storage.keys import InvalidHandle, handle_key, prefix_of_key
from storage.records import pack_encoded, pack_record
from storage.store import Store

CHUNK_LINES = 20_000  #: lines per parse chunk and per write transaction: large enough to amortise the commit
PARALLEL_MIN_BYTES = 8 << 20  #: below this, worker processes cost more than they save
CSV_COLUMNS = ("handle", "index", "type", "data")  #: required CSV header columns; see the README
CSV_OPTIONAL = ("format", "ttl", "permissions", "timestamp")
_CHECKPOINT = b"load-checkpoint/"


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


@dataclass
class _Chunk:
    first_line: int
    last_line: int
    items: list[tuple[bytes, bytes]]
    error: str | None = None  # "line N: message": items holds the lines before it


def _validate_handle(handle: str, case_sensitive: bool) -> bytes:
    raw = handle.encode()
    if len(raw) > MAX_HANDLE_BYTES:
        raise ValueFormatError(f"handle: longer than {MAX_HANDLE_BYTES} bytes")
    try:
        return handle_key(raw, case_sensitive)
    except InvalidHandle as exc:
        raise ValueFormatError(f"handle: {exc}: {handle!r}") from exc


def parse_ndjson_chunk(lines: list[bytes], first_line: int, now_s: int, case_sensitive: bool) -> _Chunk:
    items = []
    encoder = ValueEncoder(now_s)
    line_no = first_line
    for line_no, line in enumerate(lines, first_line):
        if not line.strip():
            continue
        try:
            handle, encoded, all_public = encoded_record_from_json(orjson.loads(line), encoder)
            items.append((_validate_handle(handle, case_sensitive), pack_encoded(encoded, all_public)))
        except (ValueError, RecursionError, HandleProtocolError) as exc:  # JSON and value format errors
            return _Chunk(first_line, line_no - 1, items, f"line {line_no}: {exc}")
    return _Chunk(first_line, line_no, items)


def _parse_chunk_job(args: tuple[list[bytes], int, int, bool]) -> _Chunk:
    return parse_ndjson_chunk(*args)


def _read_chunks(path: Path, skip_lines: int) -> Iterator[tuple[list[bytes], int]]:
    with path.open("rb") as f:
        for _ in range(skip_lines):
            if not f.readline():
                return
        line_no = skip_lines + 1
        while True:
            lines = f.readlines(CHUNK_LINES * 200)
            if not lines:
                return
            yield lines, line_no
            line_no += len(lines)


def _csv_chunks(path: Path, skip_lines: int, now_s: int, case_sensitive: bool) -> Iterator[_Chunk]:
    """CSV: one value a row, header `handle,index,type,data[,format,ttl,permissions,timestamp]`; the rows of
    one identifier are consecutive. A checkpoint never splits an identifier, so skipping whole lines is safe."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            yield _Chunk(1, 0, [], f"line 1: CSV header lacks {', '.join(missing)}")
            return
        items: list[tuple[bytes, bytes]] = []
        current: tuple[str, list, int] | None = None  # handle, values, first line of the identifier
        chunk_first = skip_lines + 2

        def flush_identifier() -> None:
            handle, values, _ = current
            items.append((_validate_handle(handle, case_sensitive), pack_record(values)))

        for row_no, row in enumerate(reader, 2):
            if row_no - 1 <= skip_lines:
                continue
            try:
                if current is not None and current[0] != row["handle"]:
                    flush_identifier()  # a new handle completes the one before it
                    current = None
                    if len(items) >= CHUNK_LINES:
                        yield _Chunk(chunk_first, row_no - 1, items)
                        items, chunk_first = [], row_no
                value = value_from_json(_csv_value(row), now_s, "row")
                if current is None:
                    current = (row["handle"], [], row_no)
                if any(v.index == value.index for v in current[1]):
                    raise ValueFormatError(f"index {value.index} appears twice for {row['handle']}")
                current[1].append(value)
            except (ValueError, TypeError, KeyError, HandleProtocolError) as exc:
                last_good = current[2] - 1 if current else row_no - 1
                yield _Chunk(chunk_first, last_good, items, f"line {row_no}: {exc}")
                return
        if current is not None:
            try:
                flush_identifier()
            except (ValueError, HandleProtocolError) as exc:
                yield _Chunk(chunk_first, current[2] - 1, items, f"line {current[2]}: {exc}")
                return
        yield _Chunk(chunk_first, row_no if items else chunk_first - 1, items)


def _csv_value(row: dict) -> dict:
    """One CSV row as a value in the JSON form, so both inputs share one parser and its checks."""
    fmt = row.get("format") or "string"
    obj: dict = {"index": _csv_int(row["index"], "index"), "type": row["type"],
                 "data": {"format": fmt, "value": json.loads(row["data"]) if fmt == "admin" else row["data"]}}
    for key in ("permissions", "timestamp"):
        if row.get(key):
            obj[key] = row[key]
    if row.get("ttl"):
        obj["ttl"] = int(row["ttl"]) if row["ttl"].lstrip("-").isdigit() else row["ttl"]
    return obj


def _csv_int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise ValueFormatError(f"{name}: {text!r} is not an integer") from exc


def _checkpoint_key(path: Path) -> bytes:
    return _CHECKPOINT + str(path.resolve()).encode()


def _file_identity(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def load_files(
    store: Store,
    paths: list[Path],
    progress: Callable[[str, int, float], None] | None = None,
    parallel: bool | None = None,
) -> LoadReport:
    """Register every record of `paths` (NDJSON, or CSV by the .csv ending). Raises LoadError naming the file
    and line at the first bad line, after committing the good lines before it."""
    report = LoadReport()
    started = time.monotonic()
    now_s = int(time.time())
    for path in paths:
        if not path.is_file():
            raise LoadError(f"{path}: no such file")
        _load_one(store, path, now_s, report, started, progress, parallel)
    report.seconds = time.monotonic() - started
    return report


def _load_one(store, path, now_s, report, started, progress, parallel) -> None:
    ckey = _checkpoint_key(path)
    identity = _file_identity(path)
    skip = 0
    saved = store.get_meta(ckey)
    if saved is not None:
        size, mtime_ns, line = msgpack.unpackb(saved)
        if [size, mtime_ns] == identity:
            skip = line
            report.skipped_lines += line
    last_key = store.last_key() or b""
    case_sensitive = store.case_sensitive

    if path.suffix.lower() == ".csv":
        chunks: Iterator[_Chunk] = _csv_chunks(path, skip, now_s, case_sensitive)
        pool = None
    else:
        jobs = ((lines, first, now_s, case_sensitive) for lines, first in _read_chunks(path, skip))
        if parallel is None:
            parallel = identity[0] >= PARALLEL_MIN_BYTES and (os.cpu_count() or 1) > 1
        if parallel:
            pool = multiprocessing.get_context("fork").Pool(max(1, (os.cpu_count() or 2)))
            chunks = pool.imap(_parse_chunk_job, jobs)
        else:
            pool = None
            chunks = map(_parse_chunk_job, jobs)
    try:
        for chunk in chunks:
            if chunk.items:
                keys = [k for k, _ in chunk.items]
                append = keys[0] > last_key and all(a < b for a, b in zip(keys, keys[1:]))
                checkpoint = msgpack.packb(identity + [chunk.last_line])
                prefixes = {prefix_of_key(k) for k in keys}

                def hook(txn, checkpoint=checkpoint, prefixes=prefixes):
                    txn.put(ckey, checkpoint, db=store.meta)
                    store.ensure_prefixes(txn, prefixes, now_s)

                report.new += store.put_records(chunk.items, append=append, txn_hook=hook)
                report.records += len(chunk.items)
                last_key = max(last_key, keys[-1])
                if progress:
                    progress(str(path), report.records, time.monotonic() - started)
            if chunk.error:
                raise LoadError(f"{path}:{chunk.error}")
    finally:
        if pool is not None:
            pool.terminate()
    store.write(lambda txn: txn.delete(ckey, db=store.meta))


