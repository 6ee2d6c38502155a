"""Resolving a handle of a referred prefix at the enterprise's own node, for the Handle dispatch
(resolver/frontend.py) of one worker.

The dispatch calls `answer()` where it would answer 302. A cached answer, a refusal (recursion count too
high, too many recursions under way) come back as bytes at once; otherwise an asyncio task whose result is
the answer, which the transport sends when it ends: the worker's event loop never waits. Identical
questions asked while one is under way share it (single flight). The resolution was already counted for
the prefix by the resolution service before the referral was decided, so it is counted once, here or not.

Bounds: `timeout_s` for the whole question (UDP, then TCP); at most `max_per_enterprise` questions under way
per enterprise prefix and MAX_PENDING per worker (more get SERVER_TOO_BUSY at once); answers cached within
their TTL, at most MAX_CACHE_TTL_S, negative answers NEGATIVE_TTL_S, in a bounded cache (cache.py); the
recursion count of the request (loop protection: two nodes referring a prefix to each other) at most
MAX_RECURSION_COUNT.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

from resolver.config import RECURSION_MODES, RECURSION_TIMEOUT_S
from resolver.handle.constants import OpCode, OpFlag, ResponseCode
from resolver.handle.errors import HandleProtocolError
from resolver.handle.message import (
    ResolutionRequest,
    encode_error_body,
    encode_resolution_request,
    encode_response,
    split_request_digest,
)
from resolver.handle.values import SiteInfo, decode_site, decode_values
from resolver.handle.wire import Reader
from resolver.recursion.cache import AnswerCache
from resolver.recursion.upstream import Upstream, UpstreamError, endpoint_for
from storage.keys import InvalidHandle, handle_key

log = logging.getLogger(__name__)

MAX_PER_ENTERPRISE = 64  #: questions under way to one enterprise node per worker: a slow node cannot take all
MAX_PENDING = 4096  #: answers waiting on enterprise nodes per worker (joined single flights included)
MAX_RECURSION_COUNT = 4  #: a request already passed on this often is refused (a referral loop between nodes)
MAX_CACHE_TTL_S = 3600.0  #: an answer is kept at most this long, whatever TTL its values say
NEGATIVE_TTL_S = 60.0  #: HANDLE_NOT_FOUND, VALUES_NOT_FOUND kept this long: new identifiers show soon
MAX_SITES = 1024  #: decoded HS_SITE records kept per worker (one per enterprise node, keyed by its bytes)
UPSTREAM_FLAGS = int(OpFlag.REC | OpFlag.PO)  #: what the node asks with: public values, recursion allowed

_REC = int(OpFlag.REC)
_SUCCESS = ResponseCode.SUCCESS
_NEGATIVE = (ResponseCode.HANDLE_NOT_FOUND, ResponseCode.VALUES_NOT_FOUND)
#: codes relayed as the enterprise node said them; anything else is its problem, reported as SERVER_NOT_RESP
_RELAYED = (
    ResponseCode.SUCCESS,
    ResponseCode.HANDLE_NOT_FOUND,
    ResponseCode.VALUES_NOT_FOUND,
    ResponseCode.SERVICE_REFERRAL,
    ResponseCode.INVALID_HANDLE,
    ResponseCode.RECURSION_COUNT_TOO_HIGH,
    ResponseCode.SERVER_TOO_BUSY,
)


class Outcome(NamedTuple):
    code: int
    body: bytes  # the answer body without a request digest: handle + values, or an error message


def ttl_of(body: bytes, now_s: float) -> float:
    """Seconds a SUCCESS body (handle + values) may be kept: its values' smallest TTL, at most
    MAX_CACHE_TTL_S (an absolute TTL counts from now). HandleProtocolError when the body is unreadable."""
    reader = Reader(body)
    reader.get_counted_bytes()
    ttl = MAX_CACHE_TTL_S
    for value in decode_values(reader):
        ttl = min(ttl, value.ttl if value.ttl_type == 0 else value.ttl - now_s)
    return ttl


class Recursor:
    """One per worker (one event loop)."""

    def __init__(
        self,
        service,
        mode: str = "on-request",
        timeout_s: float = RECURSION_TIMEOUT_S,
        max_per_enterprise: int = MAX_PER_ENTERPRISE,
        cache: AnswerCache | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if mode not in RECURSION_MODES:
            raise ValueError(f"recursion: {mode!r} is not one of {', '.join(RECURSION_MODES)}")
        self.service = service
        self.mode = mode
        self.timeout_s = timeout_s
        self.max_per_enterprise = max_per_enterprise
        self.cache = cache or AnswerCache()
        self.clock = clock
        self.upstream = Upstream()
        self._always = mode == "always"
        self._on = mode != "off"
        self._inflight: dict[tuple, asyncio.Task] = {}
        self._per_prefix: Counter[bytes] = Counter()
        self._waiting = 0
        self._sites: dict[bytes, SiteInfo] = {}
        #: questions by outcome: hit, miss (asked upstream), joined (shared one under way), busy, loop, failed
        self.counts: Counter[str] = Counter()

    def wanted(self, op_flags: int) -> bool:
        return self._on and (self._always or bool(op_flags & _REC))

    # -- the dispatch's entry ---------------------------------------------------------------------------------

    def answer(self, request, handle: bytes, query: ResolutionRequest | None, expiration: int, finish):
        """The answer to `request` for `handle` of a referred prefix: bytes (the caller finishes them), or a
        task of bytes already passed through `finish` (which signs the answer to a CT request)."""
        if request.header.recursion_count >= MAX_RECURSION_COUNT:
            self.counts["loop"] += 1
            text = f"passed on {request.header.recursion_count} times already: a referral loop?"
            return self._encode(
                request,
                Outcome(ResponseCode.RECURSION_COUNT_TOO_HIGH, encode_error_body(text)),
                expiration,
            )
        indexes, types = (query.indexes, query.types) if query is not None else ((), ())
        try:
            normalized = handle_key(handle, self.service.case_sensitive)
        except InvalidHandle:
            normalized = handle
        key = (normalized, indexes, types)
        hit = self.cache.get(key, self.clock())
        if hit is not None:
            self.counts["hit"] += 1
            return self._encode(request, Outcome(hit.code, hit.body), expiration)
        prefix = normalized[: normalized.find(b"/")]
        # Shared only at the same depth: a question that comes back round a loop must not wait on itself.
        flight = (key, request.header.recursion_count)
        task = self._inflight.get(flight)
        if task is None:
            if self._waiting >= MAX_PENDING or self._per_prefix[prefix] >= self.max_per_enterprise:
                self.counts["busy"] += 1
                text = f"too many questions under way to the node of {prefix.decode(errors='replace')}: retry"
                return self._encode(
                    request, Outcome(ResponseCode.SERVER_TOO_BUSY, encode_error_body(text)), expiration
                )
            self.counts["miss"] += 1
            task = asyncio.get_running_loop().create_task(
                self._fetch(key, prefix, handle, indexes, types, request.header.recursion_count + 1)
            )
            self._inflight[flight] = task
            self._per_prefix[prefix] += 1
            task.add_done_callback(lambda _t: self._done(flight, prefix))
        else:
            self.counts["joined"] += 1
        self._waiting += 1
        return asyncio.get_running_loop().create_task(self._reply(task, request, expiration, finish))

    def _done(self, flight: tuple, prefix: bytes) -> None:
        self._inflight.pop(flight, None)
        self._per_prefix[prefix] -= 1
        if self._per_prefix[prefix] <= 0:
            del self._per_prefix[prefix]

    async def _reply(self, task: asyncio.Task, request, expiration: int, finish) -> bytes:
        try:
            outcome = await asyncio.shield(task)  # one waiter going away must not cancel the others' question
        finally:
            self._waiting -= 1
        return finish(self._encode(request, outcome, expiration))

    @staticmethod
    def _encode(request, outcome: Outcome, expiration: int) -> bytes:
        # Not authoritative: the answer is the enterprise node's, passed on.
        return encode_response(request, outcome.code, outcome.body, expiration)

    # -- asking the enterprise node ---------------------------------------------------------------------------

    def _site(self, prefix: bytes) -> SiteInfo:
        info = self.service.prefix_info(prefix)
        if info is None or info.state != "referral" or not info.site:
            raise UpstreamError("the prefix is no longer served by an enterprise node")
        site = self._sites.get(info.site)
        if site is None:
            site = decode_site(info.site)
            if len(self._sites) >= MAX_SITES:
                self._sites.clear()
            self._sites[info.site] = site
        return site

    async def _fetch(
        self, key, prefix: bytes, handle: bytes, indexes, types, recursion_count: int
    ) -> Outcome:
        where = prefix.decode(errors="replace")
        try:
            endpoint = endpoint_for(self._site(prefix), handle.decode("utf-8", errors="replace"))
            where = f"{where} at {endpoint.describe()}"
            body = encode_resolution_request(ResolutionRequest(handle, indexes, types))
            message = await self.upstream.ask(
                endpoint, OpCode.RESOLUTION, body, UPSTREAM_FLAGS, recursion_count, self.timeout_s
            )
            code = message.header.response_code
            _, answer_body = split_request_digest(message.body, bool(message.header.op_flags & OpFlag.RD))
        except (UpstreamError, HandleProtocolError) as exc:
            self.counts["failed"] += 1
            log.debug("recursion for %s failed: %s", where, exc)
            text = f"the enterprise node of {where} did not answer: {exc}"
            return Outcome(ResponseCode.SERVER_NOT_RESP, encode_error_body(text[:400]))
        if code not in _RELAYED:
            self.counts["failed"] += 1
            text = f"the enterprise node of {where} answered response code {code}"
            return Outcome(ResponseCode.SERVER_NOT_RESP, encode_error_body(text))
        now = self.clock()
        if code == _SUCCESS:
            try:
                self.cache.put(key, code, answer_body, ttl_of(answer_body, time.time()), now)
            except HandleProtocolError as exc:
                self.counts["failed"] += 1
                text = f"the enterprise node of {where} sent an unreadable answer: {exc}"
                return Outcome(ResponseCode.SERVER_NOT_RESP, encode_error_body(text))
        elif code in _NEGATIVE:
            self.cache.put(key, code, answer_body, NEGATIVE_TTL_S, now)
        return Outcome(code, answer_body)

    async def close(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        await self.upstream.close()


class RecursionMetrics:
    """Moves a recursor's counts to Prometheus once a housekeeping pass (never per request):
    idnode_recursions_total{outcome} and idnode_recursion_cache_entries (summed over workers)."""

    def __init__(self, recursor: Recursor):
        from prometheus_client import Counter as PromCounter
        from prometheus_client import Gauge

        self.recursor = recursor
        self._sent: Counter[str] = Counter()
        self.questions = PromCounter(
            "idnode_recursions",
            "Requests for prefixes of enterprise nodes resolved there, by outcome (hit: from the cache, miss: "
            "asked, joined: shared a question under way, busy, loop, failed)",
            ["outcome"],
            registry=None,
        )
        self.entries = Gauge(
            "idnode_recursion_cache_entries",
            "Answers of enterprise nodes cached",
            multiprocess_mode="livesum",
            registry=None,
        )

    def publish(self) -> None:
        for outcome, n in self.recursor.counts.items():
            if n > self._sent[outcome]:
                self.questions.labels(outcome).inc(n - self._sent[outcome])
                self._sent[outcome] = n
        self.entries.set(len(self.recursor.cache))
