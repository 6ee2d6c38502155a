"""The write log of the embedded (one machine) node: a database of the node's own LMDB environment, position
(u64 big-endian) -> entry, appended to and applied in ONE write transaction, so the log, the changes and the
applied position can never disagree, whatever kills the process.

- `LogBackend` is the interface a log offers the writer: append entries (their positions come back), and the
  entries after a position, in order, for a member or an IXFR that catches up. `EmbeddedLog` is this one;
  a cluster log (NATS JetStream, resolver/cluster/) replaces the local append while the apply step
  (storage/apply.py) and the writer's request/answer path stay.
- `LocalLog` takes entries and answers their results: it validates them (a bad entry is refused before the
  log), then in one transaction appends, applies each (storage/apply.py) and trims. The node's writer commits
  through it (resolver/writer/); so do `idnode` commands and tests when no writer serves the store — the
  same code either way, and LMDB's writer lock orders them if both run.

Each logged entry is stored as 8 bytes of append time (ms since the epoch) then the entry. Entries are trimmed
once applied beyond a retention window (`log_retention_entries` entries, `log_retention_s` seconds; the
log keeps what IXFR and catching-up members need), at most TRIM_MAX_PER_COMMIT per commit so trimming never
stalls a write. A bulk-load chunk is logged by reference (file, byte range, digest), not record by record.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import lmdb

from storage import zonejournal
from storage.apply import EntryFailed, apply_batch_in
from storage.counters import forget_sources_in
from storage.entries import BAD_ENTRY, FAILED, LOG_UNAVAILABLE, EntryError, Result, decode_entry, refusal
from storage.members import cluster_node
from storage.store import Store

log = logging.getLogger(__name__)

LOG_RETENTION_ENTRIES = 1_000_000  #: entries kept after they are applied (IXFR and catching-up members read them)
LOG_RETENTION_S = 7 * 86_400  #: ... and for at most this long (a week covers a member down over a holiday)
TRIM_MAX_PER_COMMIT = 10_000  #: old entries deleted per commit at most: a trim never stalls the writes it rides on
_KEY = struct.Struct(">Q")
_STAMP = struct.Struct(">Q")  # append time in ms, before the entry bytes


@dataclass(frozen=True, slots=True)
class Retention:
    entries: int = LOG_RETENTION_ENTRIES
    seconds: float = LOG_RETENTION_S

    def __post_init__(self) -> None:
        if self.entries < 0 or self.seconds < 0:
            raise ValueError("log retention: entries and seconds must not be negative")


class LogBackend(Protocol):
    """What a write log offers: entries appended get positions (in order, no gaps); the entries after a
    position can be read back in order."""

    def append(self, entries: Sequence[bytes]) -> list[int]: ...

    def entries_after(self, position: int) -> Iterator[tuple[int, bytes]]: ...


class EmbeddedLog:
    """The log database in the node's LMDB environment."""

    def __init__(self, store: Store, retention: Retention | None = None):
        self.store = store
        self.retention = retention or Retention()

    # -- inside a write transaction ----------------------------------------------------------------------

    def append_in(self, txn: lmdb.Transaction, entries: Sequence[bytes], now_s: float | None = None) -> list[int]:
        """Append `entries` after the last position (or the applied one, when the log was trimmed empty)."""
        last = self.last_position(txn)
        stamp = _STAMP.pack(int((time.time() if now_s is None else now_s) * 1000))
        positions = []
        with txn.cursor(self.store.log_db) as cursor:
            for entry in entries:
                last += 1
                cursor.put(_KEY.pack(last), stamp + entry, append=True)
                positions.append(last)
        return positions

    def last_position(self, txn: lmdb.Transaction) -> int:
        with txn.cursor(self.store.log_db) as cursor:
            logged = _KEY.unpack(cursor.key())[0] if cursor.last() else 0
        return max(logged, self.store.applied_position(txn))

    def trim_in(self, txn: lmdb.Transaction, now_s: float | None = None) -> int:
        """Delete applied entries beyond the retention window (at most TRIM_MAX_PER_COMMIT); returns how many.
        The zone journal is trimmed to the same floor, and counter sources older than the window forgotten."""
        now_s = time.time() if now_s is None else now_s
        count = txn.stat(self.store.log_db)["entries"]
        applied = self.store.applied_position(txn)
        oldest_ms = int((now_s - self.retention.seconds) * 1000)
        over = count - self.retention.entries
        deleted = 0
        first_kept = None  # the first position that stays (None: every entry went)
        with txn.cursor(self.store.log_db) as cursor:
            positioned = cursor.first()
            while positioned and cursor.key():
                position = _KEY.unpack(cursor.key())[0]
                too_old = _STAMP.unpack(cursor.value()[: _STAMP.size])[0] < oldest_ms
                if position > applied or not (deleted < over or too_old) or deleted >= TRIM_MAX_PER_COMMIT:
                    first_kept = position
                    break
                deleted += 1
                positioned = cursor.delete()  # moves to the next entry
        if deleted:
            zonejournal.trim(self.store, txn, first_kept if first_kept is not None else applied + 1)
            forget_sources_in(self.store, txn, int(now_s - self.retention.seconds))
        return deleted

    # -- LogBackend ------------------------------------------------------------------------------------------

    def append(self, entries: Sequence[bytes]) -> list[int]:
        """Append without applying (LogBackend; the embedded writer appends and applies in one transaction
        through LocalLog instead)."""
        return self.store.write(lambda txn: self.append_in(txn, entries))

    def entries_after(self, position: int) -> Iterator[tuple[int, bytes]]:
        """(position, entry) of every logged entry after `position`, in order, from one snapshot."""
        with self.store.env.begin(db=self.store.log_db) as txn, txn.cursor() as cursor:
            if not cursor.set_range(_KEY.pack(position + 1)):
                return
            for key, value in cursor:
                yield _KEY.unpack(key)[0], bytes(value[_STAMP.size :])

    def first_position(self) -> int | None:
        with self.store.env.begin(db=self.store.log_db) as txn, txn.cursor() as cursor:
            return _KEY.unpack(cursor.key())[0] if cursor.first() else None


class LocalLog:
    """Entries in, results out (storage.entries.Submitter): validated, then appended, applied and trimmed in
    one LMDB write transaction of this process."""

    def __init__(self, store: Store, retention: Retention | None = None):
        self.store = store
        self.log = EmbeddedLog(store, retention)

    def submit(self, entries: Sequence[bytes], payloads: Sequence[Any] | None = None) -> list[Result]:
        """The result of every entry, in order. A bad entry is refused (BAD_ENTRY) without being logged; an
        entry whose apply raises is left out of the log and answered FAILED while the others commit. A
        failure of the transaction itself (StoreFullError, ...) raises."""
        member = cluster_node(self.store)
        if member is not None:
            why = (f"this store is cluster member {member!r}: write through its running node (idnode serve), so "
                   "that the write goes into the cluster's log and reaches every member")  # fmt: skip
            return [refusal(LOG_UNAVAILABLE, why)] * len(entries)
        out: list[Result | None] = [None] * len(entries)
        pending: list[int] = []
        for n, entry in enumerate(entries):
            try:
                decode_entry(entry)
                pending.append(n)
            except EntryError as exc:
                out[n] = refusal(BAD_ENTRY, str(exc))
        while pending:
            try:
                results = self.store.write(lambda txn, p=pending: self._commit_in(txn, p, entries, payloads))
            except EntryFailed as failed:
                bad = pending.pop(failed.index)
                log.error("a write failed while it was applied; left out of the log: %r", failed.cause,
                          exc_info=failed.cause, extra={"event": "apply_failed"})  # fmt: skip
                out[bad] = refusal(FAILED, f"the write failed in the writer: {failed.cause!r}")
                continue
            for n, result in zip(pending, results, strict=True):
                out[n] = result
            break
        return out  # type: ignore[return-value]

    def _commit_in(
        self, txn: lmdb.Transaction, pending: list[int], entries: Sequence[bytes], payloads: Sequence[Any] | None
    ) -> list[Result]:
        chosen = [entries[n] for n in pending]
        positions = self.log.append_in(txn, chosen)
        results = apply_batch_in(
            self.store, txn, list(zip(positions, chosen, strict=True)),
            [payloads[n] for n in pending] if payloads else None,
        )  # fmt: skip
        self.log.trim_in(txn)
        return results  # type: ignore[return-value]
