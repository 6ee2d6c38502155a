"""The node's LMDB store: one environment with named databases for identifiers, prefixes, counters and meta.

Every worker process opens its own `Store` after fork (LMDB environments must not cross a fork). Serving
workers open it read-only (`readonly=True`: they never take LMDB's write lock); changes are entries of the
write log (storage/log.py), appended and applied by the node's one writer through `Store.write`, which grows
the map and retries instead of failing with MapFullError. The log database and the applied position live
here too (`applied_position`). Readers on the hot path hold a `ReadView`, a long-lived read transaction that
the server renews often (and on a timer) so that writers can reuse pages and new writes become visible. Never
imports the servers.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import lmdb
import msgpack

from storage.keys import count_by_prefix, handle_key, normalize_prefix, strictly_ascending
from storage.records import unpack_record

log = logging.getLogger(__name__)

INITIAL_MAP_BYTES = 1 << 30  #: 1 GiB virtual; the map doubles on demand, so this only sets the first step
MAX_DBS = 16  #: named databases: handles, prefixes, counters, meta, enterprises, templates, DNS digests, and room
MAX_CACHED_SHARED_VALUES = 100_000  #: one per prefix administrator in practice; the bound guards odd data
DNS_DIGEST_MIN_KEY_BYTES = 48  #: longer keys may not fit a readable DNS name (zone ≤ 64 bytes): index their digest
PREFIX_SCHEMA_VERSION = 1  #: version of the msgpack prefix record

_DB_HANDLES = b"handles"
_DB_PREFIXES = b"prefixes"
_DB_COUNTERS = b"counters"
_DB_META = b"meta"
_DB_ENTERPRISES = b"enterprises"  # credentials (salted hashes) and last-seen times: storage/enterprises.py
_DB_TEMPLATES = b"templates"  # metadata templates per prefix: resolver/templates.py
_DB_SHARED = b"shared-values"  # values many bulk-loaded records end with, stored once (storage/records.py)
_DB_DNS_DIGESTS = b"dns-digests"  # sha-256 of a long key -> the key, for DNS digest names (resolver/dnsview)
_DB_AUDIT = b"audit"  # append-only audit trail of every write: storage/audit.py
_DB_ZONE_JOURNAL = b"zone-journal"  # keys each write position changed, for DNS IXFR: storage/zonejournal.py
_DB_LOG = b"write-log"  # position (u64 big-endian) -> logged entry: storage/log.py
_META_CASE_SENSITIVE = b"case_sensitive"
_META_PREFIXES_VERSION = b"prefixes_version"  # bumped by every prefix change, so workers reload their table
_META_APPLIED_POSITION = b"applied_position"  # the last write-log position applied, in the same transaction
_U64 = struct.Struct(">Q")
REGISTRATIONS = "registrations"  #: counter kind: identifiers created, per prefix and day

T = TypeVar("T")
Transaction = lmdb.Transaction  #: a store transaction's type, for code outside storage/ (only storage/ imports lmdb)


class StoreError(Exception):
    """The store cannot be opened or used as asked."""


class StoreReadOnlyError(StoreError):
    """A write was tried on a store opened read-only (a serving worker): writes go through the writer."""


class StoreFullError(StoreError):
    """The store's file system has no room for a write (or its map cannot grow): nothing of the write was
    stored, and writes succeed again once there is room. Callers answer it (HTTP 507), never retry it."""


#: LMDB reports a short write at commit as EIO, not ENOSPC. It writes at most 64 pages (256 KiB) a call, so
#: a short write on a file system with less than this free was the disk filling up, not a failing device.
SHORT_WRITE_FREE_BYTES = 1 << 20
_NO_ROOM = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT))  # as py-lmdb words them in its messages
_SHORT_WRITE = os.strerror(errno.EIO)


@dataclass(frozen=True, slots=True)
class PrefixInfo:
    """An enterprise prefix this node knows: hosted here, referred to the enterprise's own node, or disabled."""

    prefix: str
    state: str = "hosted"  # "hosted" | "referral" | "disabled"
    org: str = ""
    site: bytes | None = None  # encoded HS_SITE of the enterprise's node, for referrals
    created_s: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def pack(self) -> bytes:
        return msgpack.packb(
            {
                "v": PREFIX_SCHEMA_VERSION,
                "prefix": self.prefix,
                "state": self.state,
                "org": self.org,
                "site": self.site,
                "created": self.created_s,
                "extra": self.extra,
            }
        )

    @classmethod
    def unpack(cls, raw: bytes) -> PrefixInfo:
        obj = msgpack.unpackb(raw)
        if obj.get("v") != PREFIX_SCHEMA_VERSION:
            raise StoreError(f"prefix record schema {obj.get('v')!r}, this node reads {PREFIX_SCHEMA_VERSION}")
        return cls(obj["prefix"], obj["state"], obj["org"], obj["site"], obj["created"], obj.get("extra") or {})


def counter_key(kind: str, day: str, prefix: bytes) -> bytes:
    """Counters are keyed kind/day/prefix, e.g. b"resolutions/20261129/88.100.7"."""
    return kind.encode() + b"/" + day.encode() + b"/" + prefix


class Store:
    def __init__(
        self, path: str | Path, *, create: bool = False, case_sensitive: bool = False, readonly: bool = False
    ):
        """Open (with `create`, make) the store at `path`. `readonly`: never write, never take LMDB's write
        lock (serving workers); the store must have been opened read-write once since its databases were
        added (the writer does at start)."""
        self.path = Path(path)
        self.readonly = readonly
        if (readonly or not create) and not (self.path / "data.mdb").exists():
            raise StoreError(f"no store at {self.path} (build one with `idnode load --data {self.path} FILE`)")
        self.path.mkdir(parents=True, exist_ok=True)
        map_bytes = max(INITIAL_MAP_BYTES, _file_size(self.path / "data.mdb") * 2)
        # readahead off: a store larger than memory must not read pages nobody asked for.
        self.env = lmdb.open(
            str(self.path), map_size=map_bytes, max_dbs=MAX_DBS, readahead=False, readonly=readonly
        )
        self._views: list[ReadView] = []
        try:
            self._open_dbs()
        except lmdb.ReadonlyError as exc:  # a database this version adds, not yet created
            self.env.close()
            raise StoreError(
                f"the store at {self.path} lacks a database of this version: open it read-write once "
                "(`idnode serve` does at start, so does any `idnode` command that writes)"
            ) from exc
        stored = self.get_meta(_META_CASE_SENSITIVE)
        if stored is None and not readonly:
            self.write(lambda txn: txn.put(_META_CASE_SENSITIVE, b"1" if case_sensitive else b"0", db=self.meta))
            self.case_sensitive = case_sensitive
        else:
            self.case_sensitive = stored == b"1"

    def _open_dbs(self) -> None:
        self.handles = self.env.open_db(_DB_HANDLES)
        self.prefixes_db = self.env.open_db(_DB_PREFIXES)
        self.counters_db = self.env.open_db(_DB_COUNTERS)
        self.meta = self.env.open_db(_DB_META)
        self.enterprises_db = self.env.open_db(_DB_ENTERPRISES)
        self.templates_db = self.env.open_db(_DB_TEMPLATES)
        self.dns_digests_db = self.env.open_db(_DB_DNS_DIGESTS)
        self.shared_db = self.env.open_db(_DB_SHARED)
        self._shared_cache: dict[bytes, bytes] = {}
        self.audit_db = self.env.open_db(_DB_AUDIT)
        self.zone_journal_db = self.env.open_db(_DB_ZONE_JOURNAL)
        self.log_db = self.env.open_db(_DB_LOG)

    def close(self) -> None:
        for view in self._views:
            view.close()
        self.env.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------------------

    def write(self, work: Callable[[lmdb.Transaction], T]) -> T:
        """Run `work` in one write transaction; on MapFullError grow the map and run it again. No room on
        the disk (at commit, or for the map to grow) raises StoreFullError; the transaction is then aborted,
        so nothing of it is stored. A store opened read-only raises StoreReadOnlyError."""
        if self.readonly:
            raise StoreReadOnlyError(f"the store {self.path} is open read-only here: writes go through the writer")
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    return work(txn)
            except lmdb.MapFullError:
                self._grow()
            except lmdb.MapResizedError:
                self._adopt_grown_map()
            except (lmdb.Error, OSError) as exc:
                if self._no_room(exc):
                    raise StoreFullError(f"no room on the disk of the store {self.path}: {exc}") from exc
                raise

    def _adopt_grown_map(self) -> None:
        """Another process grew the map: adopt its size (LMDB: set_mapsize(0)) before trying again."""
        for view in self._views:
            view.suspend()
        self.env.set_mapsize(0)

    def _no_room(self, exc: BaseException) -> bool:
        """Whether a failed write failed for want of disk space (ENOSPC, EDQUOT, or LMDB's EIO for a short
        write on a file system that is full)."""
        if isinstance(exc, lmdb.DiskError):
            return True
        if isinstance(exc, OSError):
            return exc.errno in (errno.ENOSPC, errno.EDQUOT)
        text = str(exc)
        if any(reason in text for reason in _NO_ROOM):
            return True
        if _SHORT_WRITE not in text:
            return False
        try:
            fs = os.statvfs(self.path)
        except OSError:
            return False  # a device that cannot say how full it is: report its EIO as it is
        return fs.f_bavail * fs.f_frsize < SHORT_WRITE_FREE_BYTES

    def _grow(self) -> None:
        # set_mapsize needs every transaction of this process closed, the readers' included.
        for view in self._views:
            view.suspend()
        new_size = self.env.info()["map_size"] * 2
        log.info("growing the store map to %d MiB", new_size >> 20)
        try:
            self.env.set_mapsize(new_size)
        except lmdb.Error as exc:  # the address space or the file system cannot take the larger map
            raise StoreFullError(f"the store {self.path} cannot grow to {new_size >> 20} MiB: {exc}") from exc

    def put_records(
        self,
        items: list[tuple[bytes, bytes]],
        append: bool | None = False,
        txn_hook: Callable[[lmdb.Transaction], None] | None = None,
        now_s: float | None = None,
        register_prefixes: bool = False,
    ) -> int:
        """`put_records_in` in a write transaction of its own, with `txn_hook(txn)` run in it too. A low-level
        write outside the write log (storage/log.py), for tests and tools that build stores; the node's
        changes are log entries (the loader's `load_chunk` applies through `put_records_in`)."""

        def work(txn: lmdb.Transaction) -> int:
            new_count = self.put_records_in(txn, items, append, now_s, register_prefixes)
            if txn_hook is not None:
                txn_hook(txn)
            return new_count

        return self.write(work)

    def put_records_in(
        self,
        txn: lmdb.Transaction,
        items: list[tuple[bytes, bytes]],
        append: bool | None = False,
        now_s: float | None = None,
        register_prefixes: bool = False,
    ) -> int:
        """Write (key, record) pairs in the caller's write transaction, counting the new ones as
        registrations of their prefix for the day of `now_s` in it. `append` is the fast path for keys sorted
        after every stored key; None decides by looking. `register_prefixes`: register every prefix the keys
        fall under as hosted (bulk loads). Returns how many were new."""
        day = today(now_s)
        keys = [key for key, _ in items]
        if append is None:
            append = self.appendable(txn, keys)
        # Appended keys are all new, so one count serves the registrations and the prefixes to register.
        per_prefix = count_by_prefix(keys, ascending=True if append else None)
        if append:
            new_count, new_per_prefix = len(keys), per_prefix
        else:
            new_keys = [key for key in keys if txn.get(key, db=self.handles) is None]
            new_count, new_per_prefix = len(new_keys), count_by_prefix(new_keys)
        with txn.cursor(self.handles) as cursor:
            cursor.putmulti(items, append=append)
        if max(map(len, keys), default=0) > DNS_DIGEST_MIN_KEY_BYTES:  # rare: skip the loop in one C pass
            self.index_long_keys(txn, keys)
        self.add_counts_in(txn, {counter_key(REGISTRATIONS, day, p): n for p, n in new_per_prefix.items()})
        if register_prefixes:
            self.ensure_prefixes(txn, per_prefix.keys(), int(now_s if now_s is not None else time.time()))
        return new_count

    def index_long_keys(self, txn: lmdb.Transaction, keys: Iterable[bytes]) -> None:
        """Index the digest of every key too long to be sure of a readable DNS name, in the writer's
        transaction. Entries are never removed: the DNS view checks that the key still exists and that the
        name asked is its own, so a stale entry answers NXDOMAIN like no entry."""
        for key in keys:
            if len(key) > DNS_DIGEST_MIN_KEY_BYTES:
                txn.put(hashlib.sha256(key).digest(), key, db=self.dns_digests_db)

    def put_shared(self, txn: lmdb.Transaction, shared: dict[bytes, bytes]) -> None:
        """Store shared values (content-addressed, so writing one again changes nothing) in the caller's
        transaction, the one that writes the records referring to them."""
        for sid, value in shared.items():
            txn.put(sid, value, db=self.shared_db)

    def shared_value(self, sid: bytes) -> bytes | None:
        """A shared value by id; cached for the life of the process (ids name content, which never changes)."""
        value = self._shared_cache.get(sid)
        if value is None:
            with self.env.begin(db=self.shared_db) as txn:
                value = txn.get(sid)
            if value is not None and len(self._shared_cache) < MAX_CACHED_SHARED_VALUES:
                self._shared_cache[sid] = value
        return value

    @property
    def shared_cache(self) -> dict[bytes, bytes]:
        """The shared values read so far (id -> encoded value), for a reader that looks there first and asks
        `shared_value` when it misses (resolver/server/_mmsg.c)."""
        return self._shared_cache

    def unpack(self, raw: bytes) -> tuple[bytes, bool]:
        """(values_tail, all_public) of a stored record, shared values resolved."""
        return unpack_record(raw, self.shared_value)

    def key_of_dns_digest(self, digest: bytes) -> bytes | None:
        with self.env.begin(db=self.dns_digests_db) as txn:
            return txn.get(digest)

    def appendable(self, txn: lmdb.Transaction, keys: list[bytes]) -> bool:
        """Whether the keys are strictly ascending and all after the last stored key (putmulti's append path
        takes them)."""
        if not keys:
            return False
        with txn.cursor(self.handles) as cursor:
            if cursor.last() and cursor.key() >= keys[0]:
                return False
        return strictly_ascending(keys)

    def last_key(self) -> bytes | None:
        with self.env.begin(db=self.handles) as txn, txn.cursor() as cursor:
            return cursor.key() if cursor.last() else None

    def put_prefix(self, info: PrefixInfo) -> None:
        key = normalize_prefix(info.prefix.encode())

        def work(txn: lmdb.Transaction) -> None:
            txn.put(key, info.pack(), db=self.prefixes_db)
            self._bump_prefixes_version(txn)

        self.write(work)

    def put_prefix_in(self, txn: lmdb.Transaction, info: PrefixInfo) -> None:
        """`put_prefix` inside the caller's write transaction (a read-modify-write of a prefix)."""
        txn.put(normalize_prefix(info.prefix.encode()), info.pack(), db=self.prefixes_db)
        self._bump_prefixes_version(txn)

    def bump_prefixes_version_in(self, txn: lmdb.Transaction) -> None:
        """Tell workers to rebuild their prefix handles' values (a prefix, or the cluster's members, changed)."""
        self._bump_prefixes_version(txn)

    def _bump_prefixes_version(self, txn: lmdb.Transaction) -> None:
        old = txn.get(_META_PREFIXES_VERSION, db=self.meta)
        txn.put(_META_PREFIXES_VERSION, _U64.pack(_U64.unpack(old)[0] + 1 if old else 1), db=self.meta)

    def ensure_prefixes(self, txn: lmdb.Transaction, prefixes: Iterable[bytes], now_s: int) -> None:
        """Register as hosted every prefix not yet known (the loader calls this inside its batch)."""
        added = False
        for prefix in prefixes:
            key = normalize_prefix(prefix)
            if txn.get(key, db=self.prefixes_db) is None:
                txn.put(key, PrefixInfo(prefix.decode(), created_s=now_s).pack(), db=self.prefixes_db)
                added = True
        if added:
            self._bump_prefixes_version(txn)

    def add_counts(self, counts: dict[bytes, int]) -> None:
        """Add to persisted counters: an `add_counts` entry of the write log, appended and applied in this
        process (storage/log.py; serving workers send theirs to the writer instead)."""
        if counts:
            from storage.counters import add_counts  # the counters' entry lives with the counters

            add_counts(self, counts)

    def add_counts_in(self, txn: lmdb.Transaction, counts: dict[bytes, int]) -> None:
        """Add to persisted counters inside the caller's write transaction (registrations counted with the
        write that made them)."""
        for key, n in counts.items():
            old = txn.get(key, db=self.counters_db)
            txn.put(key, _U64.pack(n + (_U64.unpack(old)[0] if old else 0)), db=self.counters_db)

    def set_meta(self, key: bytes, value: bytes) -> None:
        self.write(lambda txn: txn.put(key, value, db=self.meta))

    # -- reading -------------------------------------------------------------------------------------------

    def applied_position(self, txn: lmdb.Transaction | None = None) -> int:
        """The write-log position of the last entry applied to this store (0: none yet), as `txn` sees it
        (default: a read transaction of its own). Stored in the transaction that applied the entry, so it
        names exactly what the store holds; the DNS view's SOA serial follows it."""
        raw = (txn.get(_META_APPLIED_POSITION, db=self.meta) if txn is not None
               else self.get_meta(_META_APPLIED_POSITION))  # fmt: skip
        return _U64.unpack(raw)[0] if raw else 0

    def set_applied_position_in(self, txn: lmdb.Transaction, position: int) -> None:
        """Record in the applying transaction that every entry up to `position` is applied."""
        txn.put(_META_APPLIED_POSITION, _U64.pack(position), db=self.meta)

    def read(self, work: Callable[[lmdb.Transaction], T], db=None) -> T:
        """`work(txn)` in a read transaction of its own (not for the hot path), tried again when another
        process (the writer, a loader's sibling) grew the map meanwhile."""
        while True:
            try:
                with self.env.begin(db=db) as txn:
                    return work(txn)
            except lmdb.MapResizedError:
                self._adopt_grown_map()

    def get_meta(self, key: bytes) -> bytes | None:
        return self.read(lambda txn: txn.get(key), self.meta)

    def prefixes_version(self) -> bytes | None:
        """Changes whenever a prefix is added or changed; cheap to poll."""
        return self.get_meta(_META_PREFIXES_VERSION)

    def key_of(self, handle: str | bytes) -> bytes:
        raw = handle.encode() if isinstance(handle, str) else handle
        return handle_key(raw, self.case_sensitive)

    def get(self, handle: str | bytes) -> bytes | None:
        """The raw record of `handle`, in a transaction of its own (not for the hot path)."""
        key = self.key_of(handle)
        return self.read(lambda txn: txn.get(key), self.handles)

    def count_identifiers(self) -> int:
        return self.read(lambda txn: txn.stat(self.handles)["entries"])

    def prefixes(self) -> dict[bytes, PrefixInfo]:
        return self.read(lambda txn: {key: PrefixInfo.unpack(raw) for key, raw in txn.cursor()}, self.prefixes_db)

    def counters(self) -> dict[bytes, int]:
        return self.read(lambda txn: {key: _U64.unpack(raw)[0] for key, raw in txn.cursor()}, self.counters_db)

    def iter_records(self, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        with self.env.begin(db=self.handles) as txn, txn.cursor() as cursor:
            if cursor.set_range(start):
                yield from cursor

    def read_view(self) -> ReadView:
        view = ReadView(self)
        self._views.append(view)
        return view


class ReadView:
    """A long-lived read transaction over identifiers for the hot path. `refresh()` makes newer writes visible
    and lets writers reuse pages; call it once per batch of requests."""

    __slots__ = ("_store", "_txn", "get")

    def __init__(self, store: Store):
        self._store = store
        self._txn: lmdb.Transaction | None = None
        self.get: Callable[[bytes], bytes | None] = self._open()

    def _open(self) -> Callable[[bytes], bytes | None]:
        while True:
            try:
                self._txn = self._store.env.begin(db=self._store.handles)
                break
            except lmdb.MapResizedError:
                # Another process grew the map past ours: adopt its size (LMDB: set_mapsize(0)).
                self._store.env.set_mapsize(0)
        self.get = self._txn.get
        return self.get

    def refresh(self) -> None:
        if self._txn is not None:
            self._txn.abort()
        self._open()

    def suspend(self) -> None:
        """Close the transaction until the next refresh (the map is being resized)."""
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
            self.get = self._reopen_then_get

    def _reopen_then_get(self, key: bytes) -> bytes | None:
        return self._open()(key)

    def close(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = None


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def today(now_s: float | None = None) -> str:
    """The counting day, YYYYMMDD in UTC."""
    return time.strftime("%Y%m%d", time.gmtime(time.time() if now_s is None else now_s))
