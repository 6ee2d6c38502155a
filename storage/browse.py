"""Reading an enterprise's identifiers page by page for the workspace pages: the keys under a prefix from a
point on (a handle-prefix search is a range of keys), a bounded count, and a search by the text of one value
index (a template field), which must decode records and so scans a bounded number per request and says
where to go on. Pages are keyed by the last key shown, not by an offset, so a page costs its own size
whatever its depth. Never imports the servers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from resolver.handle.values import HandleValue
from storage.store import Store
from storage.writes import decode_record_values

MAX_COUNT_KEYS = 100_000  #: identifiers under a prefix are counted up to this many (~20 ms), then "100,000+"
MAX_SCAN_RECORDS = 20_000  #: records a value search decodes per page (~60 ms); then it offers to go on


@dataclass
class Listing:
    """One page: (key, values) per identifier, the key to continue after (None at the end), and for a value
    search how many records were looked at."""

    rows: list[tuple[bytes, list[HandleValue]]] = field(default_factory=list)
    next_after: bytes | None = None
    scanned: int = 0


def _records(store: Store, start: bytes, after: bytes | None):
    """(key, raw record) from `start` (or just after `after`) while keys begin with `start`."""
    with store.env.begin(db=store.handles) as txn, txn.cursor() as cursor:
        positioned = cursor.set_range(after if after is not None and after > start else start)
        if positioned and after is not None and cursor.key() == after:
            positioned = cursor.next()
        while positioned:
            key = bytes(cursor.key())
            if not key.startswith(start):
                return
            yield key, bytes(cursor.value())
            positioned = cursor.next()


def list_page(store: Store, start: bytes, after: bytes | None, limit: int) -> Listing:
    """Up to `limit` identifiers whose key begins with `start` (`PREFIX/` and the searched beginning of the
    suffix, as stored: upper-cased unless the store is case-sensitive), after the key `after`."""
    page = Listing()
    for key, raw in _records(store, start, after):
        if len(page.rows) == limit:
            page.next_after = page.rows[-1][0]
            break
        page.rows.append((key, decode_record_values(raw, store.shared_value)))
    return page


def search_page(
    store: Store, start: bytes, after: bytes | None, limit: int, matches: Callable[[list[HandleValue]], bool],
    max_scan: int = MAX_SCAN_RECORDS,
) -> Listing:  # fmt: skip
    """Up to `limit` identifiers under `start` whose values satisfy `matches`, looking at `max_scan` records at
    most: `next_after` then says where the next page goes on (also when this one found fewer than `limit`)."""
    page = Listing()
    last = None
    for key, raw in _records(store, start, after):
        if page.scanned >= max_scan or len(page.rows) == limit:
            page.next_after = last
            break
        page.scanned += 1
        last = key
        values = decode_record_values(raw, store.shared_value)
        if matches(values):
            page.rows.append((key, values))
    return page


def count_under(store: Store, start: bytes, cap: int = MAX_COUNT_KEYS) -> tuple[int, bool]:
    """(identifiers whose key begins with `start`, counted up to `cap`; whether there are more)."""
    n = 0
    with store.env.begin(db=store.handles) as txn, txn.cursor() as cursor:
        if not cursor.set_range(start):
            return 0, False
        for key in cursor.iternext(values=False):
            if not key.startswith(start):
                return n, False
            if n == cap:
                return n, True
            n += 1
    return n, False


def read_values(store: Store, key: bytes) -> list[HandleValue] | None:
    """The values of the identifier stored under `key`, or None."""
    with store.env.begin(db=store.handles) as txn:
        raw = txn.get(key)
        return None if raw is None else decode_record_values(bytes(raw), store.shared_value)
