"""Resolution counts: kept in memory per worker and added to the store every few seconds and at shutdown.

Counts are the node's acceptance evidence, so they must survive restarts, yet a write per query would cost
more than the query. A flush attributes what was counted since the last one to the day of the flush; with
flushes every few seconds and one at each day change, at most a few seconds straddle midnight.

Counter deltas are `add_counts` entries of the write log (storage/entries.py). A serving worker sends its own
to the writer and, when an answer is lost, sends the same entry again: an entry from a `source` (one worker's
life) carries a sequence number, and the store keeps the last one applied per source in the same transaction,
so a repeat is recognised and not counted twice.
"""

from __future__ import annotations

import struct
from collections import defaultdict
from typing import Any

import lmdb

from storage import entries
from storage.entries import encode_entry, submit_one, unwrap
from storage.store import Store, counter_key, today

_SOURCE = b"count-source/"  # meta key prefix: source -> (last sequence applied, its time in seconds)
_SOURCE_STATE = struct.Struct(">QQ")
APPLIED = "applied"  #: result of an add_counts entry counted now
DUPLICATE = "duplicate"  #: ... of one whose sequence was applied already (a resend): nothing counted

RESOLUTIONS = (
    "resolutions"  #: counter kinds `resolutions.<protocol>`: resolutions answered, per prefix and day
)
PROTOCOLS = ("handle", "http", "dns")  #: every protocol whose resolutions are counted


class ResolutionCounter:
    """Counts one protocol's resolutions per prefix; `flush` moves them into the store."""

    __slots__ = ("_counts", "pending", "kind")

    def __init__(self, protocol: str = "handle") -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol: one of {', '.join(PROTOCOLS)}")
        self.kind = f"{RESOLUTIONS}.{protocol}"
        self._counts: defaultdict[bytes, int] = defaultdict(int)
        self.pending = 0

    def count(self, prefix: bytes) -> None:
        self._counts[prefix] += 1
        self.pending += 1

    @property
    def live_counts(self) -> defaultdict[bytes, int]:
        """The per-prefix counts being kept, for a counter that adds to them in place (the batched UDP
        listener's extension, resolver/server/_mmsg.c); it adds what it counted to `pending` too."""
        return self._counts

    def take(self, now_s: float | None = None) -> dict[bytes, int]:
        """The counts so far as counter deltas for the day of `now_s` (counter key -> n), forgotten here: the
        caller now owns them (a worker's CountSender, which sends them to the writer)."""
        day = today(now_s)
        counts, self._counts = self._counts, defaultdict(int)
        self.pending = 0
        return {counter_key(self.kind, day, prefix): n for prefix, n in counts.items()}

    def flush(self, store: Store, now_s: float | None = None, into: dict[bytes, int] | None = None) -> int:
        """Add the counts so far to the store's totals for today; returns how many were flushed. `into`, when
        given, receives the per-prefix counts written (added to what it holds), only if they were."""
        if not self.pending:
            return 0
        day = today(now_s)
        counts, self._counts, flushed = self._counts, defaultdict(int), self.pending
        self.pending = 0
        try:
            store.add_counts({counter_key(self.kind, day, prefix): n for prefix, n in counts.items()})
        except Exception:
            # Keep what could not be written for the next flush rather than lose acceptance evidence.
            for prefix, n in counts.items():
                self._counts[prefix] += n
            self.pending += flushed
            raise
        if into is not None:
            for prefix, n in counts.items():
                into[prefix] = into.get(prefix, 0) + n
        return flushed


def add_counts_entry(
    counts: dict[bytes, int], *, node: str = "", source: str = "", seq: int = 0, now_s: int = 0
) -> bytes:
    """The log entry of counter deltas: counter key -> n. `node` names the node that counted (for a cluster's
    per-node totals); `source` and `seq` (both or neither) make a resend of the same entry count once."""
    return encode_entry(entries.ADD_COUNTS, {"counts": counts, "node": node, "source": source, "seq": seq,
                                             "time": now_s})  # fmt: skip


def add_counts(target: Any, counts: dict[bytes, int]) -> None:
    """Add to persisted counters through the write log (`target`: a Store or the writer's client)."""
    if counts:
        unwrap(submit_one(target, add_counts_entry(counts)))


def apply_add_counts(store: Store, txn: lmdb.Transaction, args: dict) -> str:
    source, seq = args["source"], args["seq"]
    if source:
        key = _SOURCE + source.encode()
        old = txn.get(key, db=store.meta)
        if old is not None and _SOURCE_STATE.unpack(old)[0] >= seq:
            return DUPLICATE
        txn.put(key, _SOURCE_STATE.pack(seq, args["time"]), db=store.meta)
    node = args.get("node") or ""
    counts = args["counts"] if not node else {node_counter_key(key, node): n for key, n in args["counts"].items()}
    store.add_counts_in(txn, counts)
    return APPLIED


def node_counter_key(key: bytes, node: str) -> bytes:
    """A counter key of one cluster member: `kind@node/day/prefix`. Every member applies every member's
    counts, so each store holds the whole cluster's counters, per node, and totals sum them."""
    kind, rest = key.split(b"/", 1)
    return kind + b"@" + node.encode() + b"/" + rest


def split_counter_key(key: bytes) -> tuple[str, str, str, str]:
    """(kind, node, day, prefix) of a counter key; node is "" for a node on its own."""
    kind_node, day, prefix = key.decode().split("/", 2)
    kind, _, node = kind_node.partition("@")
    return kind, node, day, prefix


def forget_sources_in(store: Store, txn: lmdb.Transaction, before_s: int) -> int:
    """Drop the sequence state of sources silent since before `before_s` (a worker long gone); returns how
    many. A source older than the log's retention cannot resend anything still pending."""
    stale = []
    with txn.cursor(store.meta) as cursor:
        if cursor.set_range(_SOURCE):
            for key, value in cursor:
                if not key.startswith(_SOURCE):
                    break
                if _SOURCE_STATE.unpack(value)[1] < before_s:
                    stale.append(bytes(key))
    for key in stale:
        txn.delete(key, db=store.meta)
    return len(stale)


def totals(
    store: Store, kind: str = RESOLUTIONS
) -> tuple[int, dict[str, int], dict[str, int], dict[str, int]]:
    """(total, per prefix, per day, per protocol) of a counter kind (`resolutions` sums every protocol)."""
    per_prefix: defaultdict[str, int] = defaultdict(int)
    per_day: defaultdict[str, int] = defaultdict(int)
    per_protocol: defaultdict[str, int] = defaultdict(int)
    total = 0
    for key, n in store.counters().items():
        key_kind, _, day, prefix = split_counter_key(key)
        base, _, protocol = key_kind.partition(".")
        if base != kind:
            continue
        per_prefix[prefix] += n
        per_day[day] += n
        if protocol:
            per_protocol[protocol] += n
        total += n
    return total, dict(per_prefix), dict(per_day), dict(per_protocol)


def per_node(store: Store, kind: str = RESOLUTIONS) -> dict[str, int]:
    """Totals of a counter kind per cluster member ("" for counts made before the node joined a cluster)."""
    out: defaultdict[str, int] = defaultdict(int)
    for key, n in store.counters().items():
        key_kind, node, _, _ = split_counter_key(key)
        if key_kind.partition(".")[0] == kind:
            out[node] += n
    return dict(out)


def resolution_totals(store: Store) -> tuple[int, dict[str, int], dict[str, int]]:
    """(total, per prefix, per day) of every resolution counted so far, all protocols."""
    return totals(store, RESOLUTIONS)[:3]
