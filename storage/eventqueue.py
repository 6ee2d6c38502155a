"""The disk-backed queue between the processes that produce security events and the one exporter that sends
them: an LMDB environment of its own (not the node's store), one database of events keyed by a big-endian
sequence number, one of counters.

Why LMDB rather than segment files: every process of the node (workers, the supervisor, `idnode` commands)
appends to the same queue, and LMDB gives that for free: appends are serialised by its cross-process writer
lock, so the sequence number taken inside the append transaction is a single total order across processes;
the bound is enforced and the drops are counted in that same transaction, so the count is exact; the
exporter removes what it sent in a transaction of its own; a process that dies mid-append leaves nothing
half-written. Segment files would need one spool per process, a merge by time stamp and cross-process drop
accounting to get the same. An append is one short write transaction (~20 µs, no fsync); durability comes
from `sync()`, which the exporter calls every `fsync_interval_s`: a process crash loses nothing, a power
loss at most the last interval (and LMDB without per-commit sync may then need the directory moved aside:
`QueueError` says so).

Bound and drop policy: the queue holds at most `max_events` entries and `max_bytes` bytes (value + key);
an append that would exceed either removes the oldest entries first and counts them in `dropped` (persisted,
cumulative across restarts: the metrics read it through `stats()`). The newest events are kept, so what the
platform gets after an outage ends is the recent past.

Like the store, an environment must be opened in the process that uses it, after fork. Never imports the
servers or the node's store.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import lmdb

log = logging.getLogger(__name__)

ENTRY_OVERHEAD_BYTES = 8  #: the key; counted with the value against max_bytes
MIN_MAP_BYTES = 32 << 20  #: virtual; the file grows only as far as it is used
MAP_FACTOR = 3  #: map = 3 × max_bytes + MIN_MAP_BYTES: pages are not full, freed ones wait for readers
DROP_ON_MAP_FULL = 8  #: when the map is full anyway, drop this fraction (1/8) of the oldest entries and retry
_DB_EVENTS = b"events"
_DB_META = b"meta"
_NEXT_SEQ = b"next_seq"
_BYTES = b"bytes"
_DROPPED = b"dropped"
_APPENDED = b"appended"
_DROPS_REPORTED = b"drops_reported"
_U64 = struct.Struct(">Q")


class QueueError(Exception):
    """The security event queue cannot be opened or written."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    events: int  # waiting to be sent
    bytes: int  # their size as counted against max_bytes
    dropped: int  # removed unsent by the bound, ever (persisted)
    appended: int  # ever appended (persisted)
    next_seq: int  # sequence number the next event gets


class SecurityQueue:
    def __init__(
        self,
        directory: str | Path,
        *,
        max_bytes: int,
        max_events: int,
        sync: bool = False,
    ):
        """Open (or create) the queue in `directory`. `sync=True` makes every append durable before it returns
        (an fsync each); otherwise call `sync()` periodically."""
        self.path = Path(directory)
        self.max_bytes = max_bytes
        self.max_events = max_events
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.env = lmdb.open(
                str(self.path),
                map_size=MAP_FACTOR * max_bytes + MIN_MAP_BYTES,
                max_dbs=2,
                sync=sync,
                readahead=False,
            )
            self._events = self.env.open_db(_DB_EVENTS)
            self._meta = self.env.open_db(_DB_META)
        except (lmdb.Error, OSError) as exc:
            raise QueueError(
                f"security event queue {self.path}: {exc} (if it is damaged, move the directory aside; "
                "a new queue is created in its place)"
            ) from exc

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> SecurityQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- producers -------------------------------------------------------------------------------------------

    def append(self, values: Sequence[bytes]) -> int:
        """Append `values` in order in one transaction; returns how many old events the bound dropped."""
        if not values:
            return 0
        made_room = False
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    return self._append(txn, values)
            except lmdb.MapFullError:
                # The bytes bound leaves room, but the pages are fragmented or held by an old reader: drop
                # the oldest eighth in a transaction of its own (its pages are free once it commits), retry.
                if made_room and self._count() == 0:
                    raise QueueError(f"security event queue {self.path}: full with no events in it") from None
                self._drop_oldest(max(1, self._count() // DROP_ON_MAP_FULL))
                made_room = True
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)
            except lmdb.Error as exc:
                raise QueueError(f"security event queue {self.path}: {exc}") from exc

    def _append(self, txn: lmdb.Transaction, values: Sequence[bytes]) -> int:
        seq = self._get(txn, _NEXT_SEQ) or 1
        size = self._get(txn, _BYTES)
        with txn.cursor(self._events) as cursor:
            for value in values:
                cursor.put(_U64.pack(seq), value, append=True)
                seq += 1
                size += len(value) + ENTRY_OVERHEAD_BYTES
        self._put(txn, _NEXT_SEQ, seq)
        self._put(txn, _BYTES, size)
        self._add(txn, _APPENDED, len(values))
        return self._enforce_bound(txn, 0)

    def _enforce_bound(
        self, txn: lmdb.Transaction, at_least: int, room_bytes: int = 0, room_events: int = 0
    ) -> int:
        """Drop the oldest events while the queue is over a bound, less `room_*` kept free for an append to
        come (and drop at least `at_least` of them)."""
        size = self._get(txn, _BYTES)
        entries = txn.stat(self._events)["entries"]
        max_events, max_bytes = self.max_events - room_events, self.max_bytes - room_bytes
        dropped = 0
        with txn.cursor(self._events) as cursor:
            cursor.first()
            while entries and (entries > max_events or size > max_bytes or dropped < at_least):
                size -= len(cursor.value()) + ENTRY_OVERHEAD_BYTES
                cursor.delete()
                entries -= 1
                dropped += 1
        if dropped:
            self._put(txn, _BYTES, max(0, size))
            self._add(txn, _DROPPED, dropped)
        return dropped

    def _drop_oldest(self, n: int) -> None:
        with self.env.begin(write=True) as txn:
            dropped = self._enforce_bound(txn, n)
        log.warning("security event queue %s: map full, dropped the %d oldest events", self.path, dropped)

    def _count(self) -> int:
        with self.env.begin() as txn:
            return txn.stat(self._events)["entries"]

    # -- the exporter ----------------------------------------------------------------------------------------

    def peek(self, max_events: int, max_bytes: int, *, after: int = 0) -> list[tuple[int, bytes]]:
        """The oldest events, (sequence number, value), at most `max_events` of them and about `max_bytes`
        (always at least one when the queue is not empty). They stay queued until `remove_through`. With
        `after`, the oldest of those whose sequence number is greater (the exporter's window of events sent
        and not yet acknowledged lies before it)."""
        out: list[tuple[int, bytes]] = []
        total = 0
        with self.env.begin(db=self._events) as txn, txn.cursor() as cursor:
            if not cursor.set_range(_U64.pack(after + 1)):
                return out
            for key, value in cursor.iternext():
                if out and (len(out) >= max_events or total + len(value) > max_bytes):
                    break
                out.append((_U64.unpack(key)[0], value))
                total += len(value)
        return out

    def remove_through(self, seq: int) -> int:
        """Remove every event up to and including `seq` (they were sent); returns how many were removed.
        Events the bound already dropped are not counted twice."""

        def work(txn: lmdb.Transaction) -> int:
            removed = freed = 0
            last = _U64.pack(seq)
            with txn.cursor(self._events) as cursor:
                if cursor.first():
                    while bytes(cursor.key()) <= last:
                        freed += len(cursor.value()) + ENTRY_OVERHEAD_BYTES
                        removed += 1
                        if not cursor.delete() or not cursor.key():
                            break
            if removed:
                self._put(txn, _BYTES, max(0, self._get(txn, _BYTES) - freed))
            return removed

        while True:
            try:
                with self.env.begin(write=True) as txn:
                    return work(txn)
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)
            except lmdb.Error as exc:
                raise QueueError(f"security event queue {self.path}: {exc}") from exc

    def append_drop_report(self, make_record: Callable[[int, int], bytes]) -> int:
        """When the bound dropped events that no report counted yet, append `make_record(unreported, total
        dropped)` and mark them reported, in one transaction (so a report survives exporter restarts and is
        queued once). Returns the number reported (0: nothing to report)."""
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    reported = self._get(txn, _DROPS_REPORTED)
                    if self._get(txn, _DROPPED) <= reported:
                        return 0
                    # Make room for the report first, so that its own append drops nothing unreported.
                    room = len(make_record(1 << 32, 1 << 48)) + ENTRY_OVERHEAD_BYTES
                    self._enforce_bound(txn, 0, room_bytes=room, room_events=1)
                    dropped = self._get(txn, _DROPPED)
                    self._append(txn, [make_record(dropped - reported, dropped)])
                    self._put(txn, _DROPS_REPORTED, dropped)
                    return dropped - reported
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)
            except lmdb.Error as exc:
                raise QueueError(f"security event queue {self.path}: {exc}") from exc

    def sync(self) -> None:
        """Make every append so far durable (fsync)."""
        self.env.sync(True)

    # -- anyone ----------------------------------------------------------------------------------------------

    def stats(self) -> QueueStats:
        with self.env.begin() as txn:
            return QueueStats(
                events=txn.stat(self._events)["entries"],
                bytes=self._get(txn, _BYTES),
                dropped=self._get(txn, _DROPPED),
                appended=self._get(txn, _APPENDED),
                next_seq=self._get(txn, _NEXT_SEQ) or 1,
            )

    def _get(self, txn: lmdb.Transaction, key: bytes) -> int:
        raw = txn.get(key, db=self._meta)
        return _U64.unpack(raw)[0] if raw else 0

    def _put(self, txn: lmdb.Transaction, key: bytes, value: int) -> None:
        txn.put(key, _U64.pack(value), db=self._meta)

    def _add(self, txn: lmdb.Transaction, key: bytes, n: int) -> None:
        self._put(txn, key, self._get(txn, key) + n)


def read_stats(directory: str | Path) -> QueueStats | None:
    """The stats of the queue in `directory` without creating one (None when there is none): for metrics and
    `idnode seclog status` in processes that do not otherwise use the queue."""
    path = Path(directory)
    if not (path / "data.mdb").exists():
        return None
    env = lmdb.open(str(path), readonly=True, max_dbs=2, readahead=False)
    try:
        with env.begin() as txn:
            try:
                events_db = env.open_db(_DB_EVENTS, txn=txn, create=False)
                meta_db = env.open_db(_DB_META, txn=txn, create=False)
            except lmdb.NotFoundError:
                return QueueStats(0, 0, 0, 0, 1)

            def get(key: bytes) -> int:
                raw = txn.get(key, db=meta_db)
                return _U64.unpack(raw)[0] if raw else 0

            return QueueStats(
                txn.stat(events_db)["entries"],
                get(_BYTES),
                get(_DROPPED),
                get(_APPENDED),
                get(_NEXT_SEQ) or 1,
            )
    finally:
        env.close()
