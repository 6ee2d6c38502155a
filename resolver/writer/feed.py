"""What a serving worker sends to the writer on its own, not per request: resolution counter deltas (every flush
interval and at shutdown) and last-seen marks of enterprises (coalesced), as write-log entries.

Counts are acceptance evidence: a delta the writer did not acknowledge is kept and sent again, as the same
entry (same source and sequence number), so the store counts it once however often it is sent
(storage/counters.py). Only one delta is in flight at a time; what is counted meanwhile waits in the
counters for the next one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from typing import Any

from storage.counters import ResolutionCounter, add_counts_entry
from storage.enterprises import mark_seen_entry
from storage.entries import unwrap

log = logging.getLogger(__name__)

MAX_SENDS_PER_FLUSH = 2  #: a resend of the unacknowledged delta, then the new one


class CountFeed:
    def __init__(self, client: Any, counters: dict[str, ResolutionCounter], node: str = ""):
        self.client = client
        self.counters = counters
        self.node = node  # the cluster member's id ("" on its own): counters are kept per member
        # One source per worker life: the writer remembers the last sequence applied for it.
        self.source = f"{node or socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"
        self.seq = 0
        self._pending: tuple[bytes, dict[bytes, int], int] | None = None  # entry, per prefix, how many

    @property
    def unsent(self) -> int:
        """Resolutions counted and not yet acknowledged by the writer."""
        held = self._pending[2] if self._pending else 0
        return held + sum(counter.pending for counter in self.counters.values())

    def _next(self, now_s: float | None) -> bool:
        deltas: dict[bytes, int] = {}
        for counter in self.counters.values():
            deltas.update(counter.take(now_s))  # keys name their protocol: no two counters share one
        if not deltas:
            return False
        per_prefix: dict[bytes, int] = {}
        for key, n in deltas.items():
            prefix = key.split(b"/", 2)[2]
            per_prefix[prefix] = per_prefix.get(prefix, 0) + n
        self.seq += 1
        now = int(time.time() if now_s is None else now_s)
        entry = add_counts_entry(deltas, node=self.node, source=self.source, seq=self.seq, now_s=now)
        self._pending = (entry, per_prefix, sum(deltas.values()))
        return True

    async def flush(self, into: dict[bytes, int] | None = None, now_s: float | None = None) -> int:
        """Send the unacknowledged delta again, then what was counted since; returns how many resolutions the
        writer acknowledged. `into` receives their per-prefix counts. WriterUnavailable or StoreFullError
        keep the delta for the next flush."""
        sent = 0
        for _ in range(MAX_SENDS_PER_FLUSH):
            if self._pending is None and not self._next(now_s):
                break
            assert self._pending is not None
            entry, per_prefix, count = self._pending
            unwrap((await self.client.submit([entry]))[0])
            self._pending = None
            sent += count
            if into is not None:
                for prefix, n in per_prefix.items():
                    into[prefix] = into.get(prefix, 0) + n
        return sent


class SeenFeed:
    """Last-seen marks (prefix key -> Unix seconds), sent at once in the background, coalesced while a send is
    in flight; what could not be sent goes with the next flush (every housekeeping pass)."""

    def __init__(self, client: Any):
        self.client = client
        self._marks: dict[bytes, int] = {}
        self._sending: asyncio.Task | None = None

    def add(self, prefix_key: bytes, now_s: int | None = None) -> None:
        self._marks[prefix_key] = int(time.time()) if now_s is None else now_s
        self.kick()

    def kick(self) -> None:
        """Send what is pending in the background, unless a send is in flight (its caller never waits)."""
        if self._marks and (self._sending is None or self._sending.done()):
            self._sending = asyncio.get_running_loop().create_task(self._send_quietly())

    async def _send_quietly(self) -> None:
        try:
            await self.flush()
        except Exception as exc:  # bookkeeping: the marks stay for the next pass
            log.debug("last-seen marks not sent: %s", exc)

    async def flush(self) -> None:
        if not self._marks:
            return
        marks, self._marks = self._marks, {}
        try:
            unwrap((await self.client.submit([mark_seen_entry(marks)]))[0])
        except Exception:
            for prefix, seen_s in marks.items():  # newer marks made meanwhile win
                self._marks[prefix] = max(seen_s, self._marks.get(prefix, 0))
            raise
