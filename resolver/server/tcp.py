"""Handle protocol over TCP: framed, pipelined requests answered in order on a connection that stays open
after every answer, KC or not (ID-SDK reuses its connection without KC), until it is idle too long.

Bounds on what a client can hold: a request must be whole within TCP_REQUEST_DEADLINE_S of its first byte
(a client trickling bytes cannot keep a connection and its buffer); a connection buffers at most one message
(resolver.handle.tcp caps MessageLength); a source's unfinished requests over all its connections are capped
by resolver.server.limits.PartialRequestBytes. Between requests only the idle timeout applies.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable

from resolver.frontend import HandleFrontend
from resolver.handle.errors import EnvelopeError
from resolver.handle.tcp import FrameBuffer
from resolver.security.events import NO_EVENTS, SecurityEvents
from resolver.server.idle import IdleTimeout
from resolver.server.limits import ConnectionLimiter, PartialRequestBytes, ProvenSources
from resolver.server.stats import (
    CODES_AT,
    NO_ANSWER,
    PROTOCOL_ERROR_LOW_BYTE,
    RCODE_LOW_BYTE_AT,
    QueryStats,
    is_protocol_error,
)

log = logging.getLogger(__name__)

TCP_REQUEST_DEADLINE_S = 10.0  #: a request must arrive whole this long after its first byte, or the connection closes
#: answers held behind a recursion under way (resolver/recursion) before the connection stops reading
MAX_QUEUED_ANSWERS = 256


class HandleTcpProtocol(asyncio.Protocol):
    def __init__(
        self,
        frontend: HandleFrontend,
        renew_view: Callable[[], None],
        idle_timeout_s: float,
        stats: QueryStats | None = None,
        connections: set[HandleTcpProtocol] | None = None,
        limiter: ConnectionLimiter | None = None,
        proven: ProvenSources | None = None,
        events: SecurityEvents | None = None,
        partial: PartialRequestBytes | None = None,
        request_deadline_s: float = TCP_REQUEST_DEADLINE_S,
    ):
        self.frontend = frontend
        self.limiter = limiter
        self.proven = proven
        self.partial = partial
        self.request_deadline_s = request_deadline_s
        self._held = 0  # bytes of an unfinished request counted in `partial`
        self._deadline: asyncio.TimerHandle | None = None  # armed while a request is only partly received
        self.events = events or NO_EVENTS  # connection-cap refusals and malformed requests
        self._address = ""  # the peer's address, read once the connection is made
        self.renew_view = renew_view
        self.idle_timeout_s = idle_timeout_s
        self.transport: asyncio.Transport | None = None
        self._frames = FrameBuffer()
        self._idle: IdleTimeout | None = None  # set once the connection is accepted
        self.stats = stats or QueryStats()
        self._counts = self.stats.counts("handle-tcp")
        self._tick = self.stats.sample_every
        self._connections = connections  # the worker's open connections, so that a drain can close them
        # While a recursion's answer is awaited, later answers wait behind it, in order (None: none waits).
        self._queue: collections.deque | None = None
        self._sender: asyncio.Task | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        address = self._address = str(peer[0]) if peer else ""
        if self.limiter is not None and not self.limiter.open(address):
            log.debug("refusing a TCP connection from %s: connection limit", address)
            self.events.rate_limited(address, "tcp")
            transport.abort()
            return
        if self.proven is not None:
            # A completed handshake proves the address: large UDP answers may go to it (resolver.server.limits).
            self.proven.prove(address, asyncio.get_running_loop().time())
        if self._connections is not None:
            self._connections.add(self)
        self.stats.tcp_connections += 1
        self._idle = IdleTimeout(transport, self.idle_timeout_s)

    def data_received(self, data: bytes) -> None:
        self._idle.touch()
        try:
            messages = self._frames.feed(data)
        except EnvelopeError as exc:
            # The stream cannot be re-synchronised after an unreadable envelope: close it.
            log.debug("closing TCP connection from %s: %s", self._peer(), exc)
            self.events.malformed(self._peer(), "tcp")
            self._close()
            return
        if messages:
            # Renewed before answering, so the answers reflect every write committed before they were asked.
            self.renew_view()
        self._tick -= 1
        started = time.perf_counter() if not self._tick else 0.0
        deferrals = self.frontend.deferrals
        try:
            answers = [a for a in map(self.frontend.answer_message, messages) if a]
            later = 0  # answers of recursions under way: counted and sent by _send_queued
            queued = self._queue is not None or self.frontend.deferrals != deferrals
            if queued:
                self._enqueue(answers)
                now = [a for a in answers if a.__class__ is bytes]
                later, answers = len(answers) - len(now), now
            counts = self._counts
            for answer in answers:
                counts[answer[CODES_AT]] += 1
                if answer[RCODE_LOW_BYTE_AT] == PROTOCOL_ERROR_LOW_BYTE and is_protocol_error(answer):
                    self.events.malformed(self._peer(), "tcp")
            if len(answers) + later < len(messages):
                counts[NO_ANSWER] += len(messages) - len(answers) - later
                for _ in range(len(messages) - len(answers) - later):  # dropped: unreadable, or not a request
                    self.events.malformed(self._peer(), "tcp")
            if started and messages:
                self._tick = self.stats.sample_every
                spent = (time.perf_counter() - started) / len(messages)
                first = answers[0] if answers else None
                self.stats.sample("handle-tcp", spent, self._peer(), messages[0], first)
        except Exception:
            log.exception("unexpected error answering over TCP from %s", self._peer())
            self.transport.close()
            return
        if answers and not queued:
            self.transport.write(b"".join(answers))
        if self._held or len(self._frames):  # rare: a request split over reads
            self._bound_partial(bool(messages))

    def _enqueue(self, answers: list) -> None:
        if self._queue is None:
            self._queue = collections.deque()
        self._queue.extend(answers)
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_queued())
        if len(self._queue) > MAX_QUEUED_ANSWERS:
            self.transport.pause_reading()  # flow control: the client waits for its answers

    async def _send_queued(self) -> None:
        """Write queued answers in request order, awaiting each recursion's in turn."""
        queue = self._queue
        try:
            while queue:
                answer = queue[0]
                if answer.__class__ is not bytes:
                    try:
                        answer = await answer
                    except Exception:
                        log.exception("unexpected error in a recursion for %s", self._peer())
                        answer = None
                    if answer:
                        self._counts[answer[CODES_AT]] += 1
                queue.popleft()
                if answer and not self.transport.is_closing():
                    self.transport.write(answer)
        finally:
            self._queue = self._sender = None
            if not self.transport.is_closing():
                self.transport.resume_reading()

    def _bound_partial(self, completed: bool) -> None:
        """Keep the deadline of the unfinished request and the source's count of buffered bytes current;
        close the connection when the source holds too much. `completed`: this read finished a request, so
        any unfinished one started in it."""
        pending = len(self._frames)
        if self._deadline is not None and (completed or not pending):
            self._deadline.cancel()
            self._deadline = None
        if pending and self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(self.request_deadline_s, self._expired)
        if self.partial is None:
            self._held = pending
        elif pending != self._held:
            within = self.partial.update(self._address, self._held, pending)
            self._held = pending
            if not within:
                log.debug("closing TCP connection from %s: unfinished requests over %d bytes", self._peer(),
                          self.partial.max_per_source)  # fmt: skip
                self.events.rate_limited(self._peer(), "tcp")
                self._close()

    def _expired(self) -> None:
        self._deadline = None
        log.debug("closing TCP connection from %s: request not whole within %.1f s", self._peer(),
                  self.request_deadline_s)  # fmt: skip
        self.events.malformed(self._peer(), "tcp")  # a request that never completes is a truncated one
        self._close()

    def _close(self) -> None:
        """Close, giving back at once what the connection held: another connection of the same source read
        in the same loop pass must not be refused for bytes already dropped."""
        self._release()
        self.transport.close()

    def _release(self) -> None:
        if self._held and self.partial is not None:
            self.partial.update(self._address, self._held, 0)
        self._held = 0
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _peer(self) -> str:
        return self._address or "?"

    def quiet_for(self, now: float) -> float:
        """Seconds since the client last sent anything (0 while a request is only partly received)."""
        return 0.0 if len(self._frames) else now - self._idle.last_activity

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is None:
            return  # refused in connection_made: nothing was counted
        if self.limiter is not None:
            self.limiter.close(self._address)
        if self._connections is not None:
            self._connections.discard(self)
        self.stats.tcp_connections -= 1
        self._idle.cancel()
        if self._sender is not None:
            self._sender.cancel()
        self._release()
