"""The DNS zone as one consistent snapshot of the store: the identifiers it shows (those under prefixes hosted
here), the write-log position they are at, and the zone journal after any earlier position. Zone transfers
(resolver/dnsview/transfer.py) and `idnode export-zone` read the zone through it, so both walk the same
identifiers in the same order: one rule, one place. The zone's position is that of the last write-log entry
that changed it (storage/zonejournal.py: `zone_position`).

A snapshot is one LMDB read transaction: what it reads never changes under it, however long a transfer to a
slow secondary takes, and it holds no write lock. Close it (or use it as a context manager) when done: an open
read transaction keeps writers from reusing the pages it sees. Never imports the servers or the DNS view.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import lmdb

from storage import zonejournal
from storage.store import PrefixInfo, Store
from storage.zonejournal import Bulk, Change

log = logging.getLogger(__name__)

_HOSTED = "hosted"  # PrefixInfo.state of the prefixes whose identifiers the zone shows


class ZoneSnapshot:
    """The zone as the store holds it: `position` is the write-log position of the last entry that changed it."""

    def __init__(self, store: Store):
        self._store = store
        self._txn = _begin(store)
        try:
            self.position = zonejournal.zone_position(store, self._txn)
            self.case_sensitive = store.case_sensitive
            with self._txn.cursor(store.prefixes_db) as cursor:
                #: prefix keys (normalized) whose identifiers the zone shows, sorted
                self.hosted = sorted(key for key, raw in cursor if PrefixInfo.unpack(raw).state == _HOSTED)
        except BaseException:
            self._txn.abort()
            raise
        self._hosted_set = frozenset(self.hosted)

    def close(self) -> None:
        self._txn.abort()

    def __enter__(self) -> ZoneSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def identifiers(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, stored record) of every identifier under a hosted prefix: prefix by prefix in sorted order,
        keys in order within each. The cursor walks as the caller consumes, so memory stays flat."""
        with self._txn.cursor(self._store.handles) as cursor:
            for prefix in self.hosted:
                start = prefix + b"/"
                if not cursor.set_range(start):
                    continue
                for key, raw in cursor:
                    if not key.startswith(start):
                        break
                    yield key, raw

    def shown(self, key: bytes) -> bool:
        """Whether identifier `key` would be in the zone: its prefix is hosted here."""
        slash = key.find(b"/")
        return slash > 0 and key[:slash] in self._hosted_set

    def values_tail(self, raw: bytes) -> bytes:
        """The values tail of a stored record (shared values resolved); raises storage.records.RecordError."""
        return self._store.unpack(raw)[0]

    def current(self, key: bytes) -> bytes | None:
        """The stored record of `key` if the zone shows it, else None."""
        if not self.shown(key):
            return None
        return self._txn.get(key, db=self._store.handles)

    def covers(self, after_position: int) -> bool:
        """Whether the journal holds every change after `after_position` (an IXFR from there is possible)."""
        return zonejournal.covers(self._store, self._txn, after_position)

    def notes_after(self, after_position: int) -> Iterator[Change | Bulk]:
        return zonejournal.notes_after(self._store, self._txn, after_position)


def read_position(store: Store) -> int:
    """The write-log position of the store's last zone change now, in a read transaction of its own (the DNS
    view's SOA serial follows it)."""
    txn = _begin(store)
    try:
        return zonejournal.zone_position(store, txn)
    finally:
        txn.abort()


def _begin(store: Store) -> lmdb.Transaction:
    while True:
        try:
            return store.env.begin(buffers=False)
        except lmdb.MapResizedError:
            # Another process grew the map past ours: adopt its size (LMDB: set_mapsize(0)), as ReadView does.
            store.env.set_mapsize(0)
