"""Abuse limits of the UDP and TCP listeners, kept cheap enough for the hot path.

- `SourceRateLimiter`: a token bucket per source address (rate and burst configurable); networks listed as
  exempt (loopback by default, so that local load tests measure the node, not the limiter) are never limited.
- `ProvenSources`: addresses that completed a TCP handshake recently, which proves they are not spoofed. The
  amplification rule: a UDP answer larger than `amplification_factor` × its request (and longer than one
  datagram) goes only to proven or exempt sources; others get a short error answer telling them to ask over
  TCP. Proof is kept per worker: a client whose TCP connection landed on another worker proves itself there.
- `ConnectionLimiter`: caps on open TCP connections per worker and per source address.
- `PartialRequestBytes`: bytes of unfinished requests a source address has buffered over all its Handle TCP
  connections in one worker; past MAX_PARTIAL_BYTES_PER_SOURCE the connection that grew it is closed.

Every table is bounded; a flood of spoofed sources costs bounded memory.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

MAX_TRACKED_SOURCES = 100_000  #: source addresses with a bucket (or proof) at once; beyond, idle ones are forgotten
PROOF_TTL_S = 3600.0  #: a TCP handshake vouches for its address this long
#: Unfinished Handle TCP requests one address may hold in a worker, all its connections together: four of the
#: largest messages (262,164 bytes with the envelope). Real requests are a few hundred bytes and complete in
#: one read; without this bound, 256 connections of one source could pin 64 MiB with partial messages.
MAX_PARTIAL_BYTES_PER_SOURCE = 1 << 20
_EXEMPT = None  # bucket of an exempt address


def _networks(specs: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(spec, strict=False) for spec in specs]


class ExemptNetworks:
    def __init__(self, specs: Iterable[str]):
        self.networks = _networks(specs)

    def __contains__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


class SourceRateLimiter:
    """Token buckets keyed by source address: `allow(address, now)` takes one token or says no."""

    __slots__ = ("rate_per_s", "burst", "exempt", "_buckets", "max_sources")

    def __init__(self, rate_per_s: float, burst: float, exempt: ExemptNetworks, max_sources: int = MAX_TRACKED_SOURCES):
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a rate limit needs a positive rate and a burst of at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.exempt = exempt
        self.max_sources = max_sources
        self._buckets: dict[str, list[float] | None] = {}

    def allow(self, address: str, now: float) -> bool:
        bucket = self._buckets.get(address, False)
        if bucket is False:
            bucket = self._add(address, now)
        if bucket is _EXEMPT:
            return True
        tokens = bucket[0] + (now - bucket[1]) * self.rate_per_s
        if tokens > self.burst:
            tokens = self.burst
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        return False

    def _add(self, address: str, now: float) -> list[float] | None:
        if len(self._buckets) >= self.max_sources:
            self._forget_idle(now)
        bucket = _EXEMPT if address in self.exempt else [self.burst, now]
        self._buckets[address] = bucket
        return bucket

    def _forget_idle(self, now: float) -> None:
        """Keep only the sources being refused now (no token left); the others start again with a full
        bucket when they return. A flood of refused sources beyond the table's size starts everyone over."""
        rate = self.rate_per_s
        self._buckets = {
            a: b for a, b in self._buckets.items() if b is not _EXEMPT and b[0] + (now - b[1]) * rate < 1.0
        }
        if len(self._buckets) >= self.max_sources:
            self._buckets.clear()

    def __len__(self) -> int:
        return len(self._buckets)


class ProvenSources:
    """Addresses that proved themselves with a TCP handshake within PROOF_TTL_S."""

    def __init__(self, exempt: ExemptNetworks, ttl_s: float = PROOF_TTL_S, max_sources: int = MAX_TRACKED_SOURCES):
        self.exempt = exempt
        self.ttl_s = ttl_s
        self.max_sources = max_sources
        self._seen: dict[str, float] = {}
        self._exempt_cache: dict[str, bool] = {}

    def prove(self, address: str, now: float) -> None:
        if len(self._seen) >= self.max_sources:
            self._seen = {a: t for a, t in self._seen.items() if now - t < self.ttl_s}
            if len(self._seen) >= self.max_sources:
                self._seen.clear()  # a flood of real handshakes: start over rather than grow
        self._seen[address] = now

    def is_proven(self, address: str, now: float) -> bool:
        seen = self._seen.get(address)
        if seen is not None and now - seen < self.ttl_s:
            return True
        exempt = self._exempt_cache.get(address)
        if exempt is None:
            if len(self._exempt_cache) >= self.max_sources:
                self._exempt_cache.clear()
            exempt = self._exempt_cache[address] = address in self.exempt
        return exempt


class ConnectionLimiter:
    """Open TCP connections of one worker, in all and per source address."""

    def __init__(self, max_total: int, max_per_source: int):
        self.max_total = max_total
        self.max_per_source = max_per_source
        self.total = 0
        self._per_source: dict[str, int] = {}

    def open(self, address: str) -> bool:
        """Count a new connection; False when it must be refused (nothing is counted then)."""
        count = self._per_source.get(address, 0)
        if self.total >= self.max_total or count >= self.max_per_source:
            return False
        self._per_source[address] = count + 1
        self.total += 1
        return True

    def close(self, address: str) -> None:
        count = self._per_source.get(address, 0)
        if count <= 1:
            self._per_source.pop(address, None)
        else:
            self._per_source[address] = count - 1
        self.total = max(0, self.total - 1)


class PartialRequestBytes:
    """Bytes of requests not yet whole, buffered per source address over its TCP connections (one worker).
    Only sources with such bytes have an entry, so the table is bounded by the open connections."""

    def __init__(self, max_per_source: int = MAX_PARTIAL_BYTES_PER_SOURCE):
        self.max_per_source = max_per_source
        self._per_source: dict[str, int] = {}

    def update(self, address: str, held: int, holding: int) -> bool:
        """One connection of `address` went from `held` to `holding` buffered bytes; False when the
        source's total is now over the bound (the caller closes that connection and releases its bytes)."""
        total = self._per_source.get(address, 0) - held + holding
        if total > 0:
            self._per_source[address] = total
        else:
            self._per_source.pop(address, None)
        return total <= self.max_per_source

    def held(self, address: str) -> int:
        return self._per_source.get(address, 0)


class UdpGuard:
    """The limits one UDP listener applies: the rate limit before answering, the amplification bound after."""

    def __init__(
        self,
        limiter: SourceRateLimiter | None,
        proven: ProvenSources,
        amplification_factor: float,
        busy_answer: Callable[[bytes], bytes | None] | None,
        too_large_answer: Callable[[bytes], bytes | None],
    ):
        self.limiter = limiter
        self.proven = proven
        self.amplification_factor = amplification_factor
        self.busy_answer = busy_answer  # None: over-limit requests are dropped
        self.too_large_answer = too_large_answer
        self.limited = 0  # requests refused by the rate limit
        self.sent_to_tcp = 0  # answers withheld by the amplification bound

    def admit(self, address: str, now: float) -> bool:
        if self.limiter is None or self.limiter.allow(address, now):
            return True
        self.limited += 1
        return False

    def refusal(self, request: bytes) -> list[bytes]:
        if self.busy_answer is None:
            return []
        answer = self.busy_answer(request)
        return [answer] if answer else []

    def bound(self, request: bytes, answers: list[bytes], address: str, now: float) -> list[bytes]:
        """`answers`, or the short answer when they are too large for an unproven source."""
        if not self.amplification_factor or sum(map(len, answers)) <= self.amplification_factor * len(request):
            return answers
        if self.proven.is_proven(address, now):
            return answers
        self.sent_to_tcp += 1
        short = self.too_large_answer(request)
        return [short] if short else []
