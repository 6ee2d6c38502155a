"""Resolution counts: kept in memory per worker and added to the store every few seconds and at shutdown.

Counts are the node's acceptance evidence, so they must survive restarts, yet a write per query would cost
more than the query. A flush attributes what was counted since the last one to the day of the flush; with
flushes every few seconds and one at each day change, at most a few seconds straddle midnight.
"""

from __future__ import annotations

from collections import defaultdict

from storage.store import Store, counter_key, today

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


def totals(
    store: Store, kind: str = RESOLUTIONS
) -> tuple[int, dict[str, int], dict[str, int], dict[str, int]]:
    """(total, per prefix, per day, per protocol) of a counter kind (`resolutions` sums every protocol)."""
    per_prefix: defaultdict[str, int] = defaultdict(int)
    per_day: defaultdict[str, int] = defaultdict(int)
    per_protocol: defaultdict[str, int] = defaultdict(int)
    total = 0
    for key, n in store.counters().items():
        key_kind, day, prefix = key.decode().split("/", 2)
        base, _, protocol = key_kind.partition(".")
        if base != kind:
            continue
        per_prefix[prefix] += n
        per_day[day] += n
        if protocol:
            per_protocol[protocol] += n
        total += n
    return total, dict(per_prefix), dict(per_day), dict(per_protocol)


def resolution_totals(store: Store) -> tuple[int, dict[str, int], dict[str, int]]:
    """(total, per prefix, per day) of every resolution counted so far, all protocols."""
    return totals(store, RESOLUTIONS)[:3]
