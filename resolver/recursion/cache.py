"""Answers of enterprise nodes kept within their TTL, in bounded memory (entries and bytes), least recently
used first out. One per worker; no locking (one event loop). Knows nothing of sockets."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import NamedTuple

MAX_CACHE_ENTRIES = 100_000  #: answers kept per worker: a busy node's popular remote identifiers, not all
MAX_CACHE_BYTES = 64 * 1024 * 1024  #: answer bytes kept per worker, so big records cannot exhaust memory
ENTRY_OVERHEAD_BYTES = 200  #: the key, tuple and dict slot an entry costs besides its answer body


class Cached(NamedTuple):
    """An enterprise node's answer: its response code and body (no request digest), until `expires_s`."""

    code: int
    body: bytes
    expires_s: float


class AnswerCache:
    def __init__(self, max_entries: int = MAX_CACHE_ENTRIES, max_bytes: int = MAX_CACHE_BYTES):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, Cached] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Hashable, now_s: float) -> Cached | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_s <= now_s:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: Hashable, code: int, body: bytes, ttl_s: float, now_s: float) -> None:
        """Keep an answer for `ttl_s` seconds (nothing when the TTL is not positive or the answer alone is
        larger than the whole cache)."""
        if ttl_s <= 0 or len(body) + ENTRY_OVERHEAD_BYTES > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = Cached(code, body, now_s + ttl_s)
        self.bytes += len(body) + ENTRY_OVERHEAD_BYTES
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key)
        self.bytes -= len(entry.body) + ENTRY_OVERHEAD_BYTES
