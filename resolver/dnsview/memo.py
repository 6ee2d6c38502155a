"""A memo with a byte budget: the DNS view's caches of rendered records and of whole answers.

Entries leave oldest first (FIFO). A hit does not move its entry: that would cost a dict operation on every
answer, and with popular identifiers asked again and again, a hot entry that falls out comes straight back.
The budget counts what ``size_of(key, value)`` says an entry holds, bytes shared with other entries included,
so the memory really used stays below it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ByteBudgetMemo(Generic[K, V]):
    def __init__(self, budget_bytes: int, size_of: Callable[[K, V], int]) -> None:
        if budget_bytes < 0:
            raise ValueError(f"budget_bytes must be >= 0, not {budget_bytes}")
        self.budget_bytes = budget_bytes
        self._size_of = size_of
        # An OrderedDict, not a dict: evicting the oldest entry of a dict by `next(iter(d))` walks the holes
        # that earlier evictions left, microseconds per miss; popitem(last=False) is O(1).
        self._entries: OrderedDict[K, V] = OrderedDict()
        self.bytes = 0  #: what the entries held now add up to, by size_of
        self.get = self._entries.get  # the hot path: a bound dict method, no Python frame in between

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def keys(self) -> list[K]:
        """Oldest first."""
        return list(self._entries)

    def put(self, key: K, value: V) -> None:
        """Remember ``value`` (replacing what ``key`` had); an entry larger than the whole budget is not kept."""
        if not self.budget_bytes:
            return  # switched off
        size = self._size_of(key, value)
        if size > self.budget_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= self._size_of(key, old)
        while self.bytes + size > self.budget_bytes:
            oldest_key, oldest = self._entries.popitem(last=False)
            self.bytes -= self._size_of(oldest_key, oldest)
        self._entries[key] = value
        self.bytes += size

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0
