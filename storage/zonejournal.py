"""The zone journal: which identifier keys each write-log position changed, and what they held before, so the
DNS view can answer IXFR (RFC 1995) with only the difference. Lives in the named LMDB database `zone-journal`
of the node's store and is written in the SAME write transaction as the change it describes, so a note exists
exactly when the change committed.

Layout (keys sort by position, so "everything after serial S" is one cursor range):
- `>Q position` + `\\x01` + identifier key -> `\\x00` (the key did not exist) or `\\x01` + the old stored record.
  One key per (position, identifier): a second change of the same identifier at the same position keeps the
  first old record, the one from before the position.
- `>Q position` + `\\x00` + first key -> last key: a bulk-load chunk wrote a range of keys at that position
  without noting each one; an IXFR across it answers with the full zone (RFC 1995 allows that).

A prefix change that adds or removes a prefix's identifiers from the zone (enabled, disabled, referred, or a
new hosted prefix over identifiers already stored) is noted as a bulk note over that prefix's keys
(`note_prefix_change`); one that changes nothing the zone shows is not noted.

The journal knows the oldest position it is complete from (`floor`): the first position ever noted, moved up by
`trim` with the write log's retention. Positions are the write log's (`Store.applied_position`); the position
of the last entry that changed the zone (`zone_position`, kept in the meta database with the notes) is what the
DNS view's SOA serial follows.

Never imports the servers or the DNS view (the view decodes old records itself).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

import lmdb

from storage.store import PrefixInfo, Store

_POSITION = struct.Struct(">Q")
_BULK = b"\x00"  # kind byte after the position: a bulk-load chunk's key range
_CHANGE = b"\x01"  # ... one identifier changed
_ABSENT = b"\x00"  # value of a change note: the identifier did not exist before
_PRESENT = b"\x01"  # ... it held the record that follows
_META_FLOOR = b"zone_journal_floor"  # oldest position whose notes are all kept
_META_ZONE_POSITION = b"zone_position"  # position of the last entry that changed the zone: the SOA serial's
_AFTER_ALL_BYTES = b"\xff"  # sorts after every UTF-8 suffix: the end of a prefix's key range


@dataclass(frozen=True, slots=True)
class Change:
    """One identifier changed at `position`: `old_raw` is its stored record before, None if it did not exist."""

    position: int
    key: bytes
    old_raw: bytes | None


@dataclass(frozen=True, slots=True)
class Bulk:
    """A bulk-load chunk wrote keys `first_key`..`last_key` at `position` without noting them one by one."""

    position: int
    first_key: bytes
    last_key: bytes


# -- writing (inside the writer's transaction) ---------------------------------------------------------------


def note_change(
    store: Store, txn: lmdb.Transaction, position: int, key: bytes, old_raw: bytes | None
) -> None:
    """Note that the entry at `position` changed identifier `key`, which held `old_raw` (None: did not exist)."""
    _mark(store, txn, position)
    value = _ABSENT if old_raw is None else _PRESENT + old_raw
    # overwrite=False: the first note of a key at a position carries the record from before the position.
    txn.put(_POSITION.pack(position) + _CHANGE + key, value, db=store.zone_journal_db, overwrite=False)


def note_bulk(store: Store, txn: lmdb.Transaction, position: int, first_key: bytes, last_key: bytes) -> None:
    """Note that a bulk-load chunk at `position` wrote keys `first_key`..`last_key` (sorted bounds)."""
    _mark(store, txn, position)
    txn.put(_POSITION.pack(position) + _BULK + first_key, last_key, db=store.zone_journal_db)


def hosted_in(store: Store, txn: lmdb.Transaction, prefix_key: bytes) -> bool:
    """Whether the zone shows the identifiers under `prefix_key` (the prefix is hosted here), as `txn` sees it."""
    raw = txn.get(prefix_key, db=store.prefixes_db)
    return raw is not None and PrefixInfo.unpack(raw).state == "hosted"


def note_prefix_change(
    store: Store, txn: lmdb.Transaction, position: int, prefix_key: bytes, was_hosted: bool
) -> None:
    """After the entry at `position` changed prefix `prefix_key`, which was hosted or not before: if that moved
    identifiers into or out of the zone, note the prefix's key range as a bulk change."""
    if hosted_in(store, txn, prefix_key) == was_hosted:
        return
    first = prefix_key + b"/"
    with txn.cursor(store.handles) as cursor:
        if not cursor.set_range(first) or not cursor.key().startswith(first):
            return  # no identifier under it: the zone did not change
    note_bulk(store, txn, position, first, first + _AFTER_ALL_BYTES)


def trim(store: Store, txn: lmdb.Transaction, before_position: int) -> int:
    """Drop the notes of positions before `before_position` (the write log's retention); returns how many."""
    floor = _read_floor(store, txn)
    if floor is not None and floor >= before_position:
        return 0
    dropped = 0
    with txn.cursor(store.zone_journal_db) as cursor:
        if cursor.first():
            while cursor.key()[: _POSITION.size] < _POSITION.pack(before_position):
                dropped += 1
                if not cursor.delete():  # delete moves to the next record; False at the end
                    break
    txn.put(_META_FLOOR, _POSITION.pack(before_position), db=store.meta)
    return dropped


def _mark(store: Store, txn: lmdb.Transaction, position: int) -> None:
    """Record that the zone changed at `position` (once per entry: its other notes find it done)."""
    packed = _POSITION.pack(position)
    if txn.get(_META_ZONE_POSITION, db=store.meta) == packed:
        return
    txn.put(_META_ZONE_POSITION, packed, db=store.meta)
    # The journal is complete from its first note on; earlier positions were never noted.
    if txn.get(_META_FLOOR, db=store.meta) is None:
        txn.put(_META_FLOOR, packed, db=store.meta)


def _read_floor(store: Store, txn: lmdb.Transaction) -> int | None:
    raw = txn.get(_META_FLOOR, db=store.meta)
    return _POSITION.unpack(raw)[0] if raw else None


# -- reading (through the caller's snapshot) -----------------------------------------------------------------


def zone_position(store: Store, txn: lmdb.Transaction) -> int:
    """The write-log position of the last entry that changed the zone, as `txn` sees it (0: none yet). The SOA
    serial follows it, not every applied entry: counter deltas and last-seen marks, written every few seconds,
    change nothing a secondary holds, so they neither make the zone newer nor send NOTIFY."""
    raw = txn.get(_META_ZONE_POSITION, db=store.meta)
    return _POSITION.unpack(raw)[0] if raw else 0


def covers(store: Store, txn: lmdb.Transaction, after_position: int) -> bool:
    """Whether the journal holds every note of the positions after `after_position` (up to the current one)."""
    floor = _read_floor(store, txn)
    if floor is None:  # nothing ever noted: complete only if nothing was written since
        return after_position >= zone_position(store, txn)
    return after_position + 1 >= floor


def notes_after(store: Store, txn: lmdb.Transaction, after_position: int) -> Iterator[Change | Bulk]:
    """The notes of the positions after `after_position`, in position order, then key order."""
    with txn.cursor(store.zone_journal_db) as cursor:
        if not cursor.set_range(_POSITION.pack(after_position + 1)):
            return
        for raw_key, value in cursor:
            position = _POSITION.unpack_from(raw_key)[0]
            kind, key = raw_key[_POSITION.size : _POSITION.size + 1], raw_key[_POSITION.size + 1 :]
            if kind == _BULK:
                yield Bulk(position, key, bytes(value))
            else:
                yield Change(position, key, None if value[:1] == _ABSENT else bytes(value[1:]))
