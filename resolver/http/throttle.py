"""The failed-login throttle of the HTTP API, counted for the whole node: the tables live in the memory the
workers share (resolver/server/shared.py), so the documented numbers hold whatever the worker count and however
SO_REUSEPORT spreads a client's connections.

Failures are counted per source address and user, and per source address over all users (auth.py says why).
An attempt is counted before its secret is checked and taken back when the secret is right, so concurrent
guesses, on one worker or many, cannot get past the limit while their checks run. Each table has a fixed number
of slots: a key hashes (keyed by the memory's random key, so nobody can aim at another's slot) to a short run of
slots, and when they are all taken the least recently failed key of the run makes room.
"""

from __future__ import annotations

import hashlib
import struct
import time

from resolver.server.shared import SharedMemory

MAX_AUTH_FAILURES = 10  #: failed logins of one user from one source within the window; then that pair gets 429
MAX_SOURCE_FAILURES = 30  #: failed logins from one source, any users, within the window; then the source gets 429
AUTH_FAILURE_WINDOW_S = 60.0  #: ... this window
MAX_TRACKED_FAILURES = 10_000  #: slots of each table, for the whole node; beyond, the least recent go
PROBE_SLOTS = 8  #: slots a key may take, from its hash on: few enough to scan on every login
DIGEST_BYTES = 16  #: keys are kept as keyed BLAKE2b digests of this size: fixed slots, no collisions in practice
_SLOT_HEAD = struct.Struct(f"{DIGEST_BYTES}sI4x")  # digest, number of times kept


class FailureTable:
    """Up to `limit` recent failure times per key (bytes), in `slots` slots of shared memory. The caller holds
    the memory's lock around every call."""

    def __init__(
        self, memory: SharedMemory, name: str, limit: int, window_s: float, slots: int = MAX_TRACKED_FAILURES
    ):
        self.limit = limit
        self.window_s = window_s
        self.slots = slots
        self._times = struct.Struct(f"{limit}d")
        self._slot_bytes = _SLOT_HEAD.size + self._times.size
        self._buf = memory.segment(name, slots * self._slot_bytes)
        self._key = memory.key

    def __len__(self) -> int:
        """Keys held (slots in use)."""
        return sum(1 for n in range(self.slots) if self._head(n)[1])

    def count(self, key: bytes, now: float) -> int:
        """Failures of `key` within the window before `now`."""
        slot, _ = self._find(self._digest(key))
        if slot is None:
            return 0
        return sum(1 for t in self._read(slot) if t >= now - self.window_s)

    def exceeded(self, key: bytes, now: float) -> bool:
        return self.count(key, now) >= self.limit

    def add(self, key: bytes, now: float) -> None:
        digest = self._digest(key)
        slot, free = self._find(digest)
        times = [] if slot is None else self._read(slot)
        times = [t for t in times if t >= now - self.window_s]
        times.append(now)
        self._write(free if slot is None else slot, digest, times[-self.limit :])

    def remove(self, key: bytes, at: float) -> None:
        """Take back one failure counted at `at` (an attempt that succeeded)."""
        digest = self._digest(key)
        slot, _ = self._find(digest)
        if slot is None:
            return
        times = self._read(slot)
        if at in times:
            times.remove(at)
            self._write(slot, digest, times)

    def forget(self, key: bytes) -> None:
        slot, _ = self._find(self._digest(key))
        if slot is not None:
            self._clear(slot)

    def forget_all(self) -> None:
        for n in range(self.slots):
            self._clear(n)

    # -- slots ---------------------------------------------------------------------------------------------

    def _digest(self, key: bytes) -> bytes:
        return hashlib.blake2b(key, digest_size=DIGEST_BYTES, key=self._key).digest()

    def _find(self, digest: bytes) -> tuple[int | None, int]:
        """(the slot holding `digest` or None, the slot to put it in otherwise: a free one, else the least
        recently failed of its run)."""
        first = int.from_bytes(digest[:8], "big") % self.slots
        victim, victim_last = first, float("inf")
        for step in range(min(PROBE_SLOTS, self.slots)):
            slot = (first + step) % self.slots
            held, count = self._head(slot)
            if count and held == digest:
                return slot, slot
            last = self._read(slot)[-1] if count else float("-inf")
            if last < victim_last:
                victim, victim_last = slot, last
        return None, victim

    def _head(self, slot: int) -> tuple[bytes, int]:
        return _SLOT_HEAD.unpack_from(self._buf, slot * self._slot_bytes)

    def _read(self, slot: int) -> list[float]:
        _, count = self._head(slot)
        return list(self._times.unpack_from(self._buf, slot * self._slot_bytes + _SLOT_HEAD.size)[:count])

    def _write(self, slot: int, digest: bytes, times: list[float]) -> None:
        if not times:
            self._clear(slot)
            return
        offset = slot * self._slot_bytes
        _SLOT_HEAD.pack_into(self._buf, offset, digest, len(times))
        self._times.pack_into(self._buf, offset + _SLOT_HEAD.size, *times, *[0.0] * (self.limit - len(times)))

    def _clear(self, slot: int) -> None:
        _SLOT_HEAD.pack_into(self._buf, slot * self._slot_bytes, bytes(DIGEST_BYTES), 0)


class LoginThrottle:
    """Failed logins per (source, user) and per source, for every worker of the node. `clock` must be one
    clock for all of them: CLOCK_MONOTONIC is the same in every process of the machine."""

    def __init__(self, memory: SharedMemory, clock=time.monotonic):
        self.memory = memory
        self.clock = clock
        self.pairs = FailureTable(memory, "auth.pairs", MAX_AUTH_FAILURES, AUTH_FAILURE_WINDOW_S)
        self.sources = FailureTable(memory, "auth.sources", MAX_SOURCE_FAILURES, AUTH_FAILURE_WINDOW_S)

    def source_throttled(self, source: str) -> bool:
        with self.memory.lock():
            return self.sources.exceeded(source.encode(), self.clock())

    def fail(self, source: str) -> None:
        """A failure that names no user (a malformed credential, an unknown user form)."""
        with self.memory.lock():
            self.sources.add(source.encode(), self.clock())

    def attempt(self, source: str, user_key: bytes) -> float | None:
        """Count a login of `user_key` from `source` as failed until `succeeded` says otherwise; None (nothing
        counted) when the pair or the source is throttled. Returns the time to give `succeeded`."""
        now = self.clock()
        pair = _pair(source, user_key)
        with self.memory.lock():
            if self.sources.exceeded(source.encode(), now) or self.pairs.exceeded(pair, now):
                return None
            self.sources.add(source.encode(), now)
            self.pairs.add(pair, now)
        return now

    def succeeded(self, source: str, user_key: bytes, at: float) -> None:
        """The attempt counted at `at` logged in: it is no failure, and that pair starts counting afresh."""
        with self.memory.lock():
            self.sources.remove(source.encode(), at)
            self.pairs.forget(_pair(source, user_key))

    def forget_all(self) -> None:
        with self.memory.lock():
            self.pairs.forget_all()
            self.sources.forget_all()


def _pair(source: str, user_key: bytes) -> bytes:
    return source.encode() + b"\0" + user_key
