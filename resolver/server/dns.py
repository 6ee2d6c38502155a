"""DNS over UDP and TCP (RFC 1035 §4.2) for the DNS view: datagrams in, answers out; over TCP each message
carries a two-byte length, several may be pipelined, and the connection stays open until it falls silent.
No exception escapes a handler."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable

from resolver.dnsview.view import DnsView
from resolver.security.events import NO_EVENTS, SecurityEvents
from resolver.server.batching import BatchedDatagramProtocol
from resolver.server.idle import IdleTimeout
from resolver.server.limits import ConnectionLimiter, UdpGuard

log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">H")
MAX_PENDING_TCP_BYTES = 2 * 65_537  #: one whole message and the start of the next; more unread input is abuse


class DnsUdpProtocol(BatchedDatagramProtocol):
    def __init__(
        self,
        view: DnsView,
        renew_view: Callable[[], None],
        guard: UdpGuard | None = None,
        events: SecurityEvents | None = None,
    ):
        self.view = view
        super().__init__(renew_view)
        self.guard = guard
        self.events = events or NO_EVENTS  # rate-limit refusals and dropped (malformed) queries

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sendto = transport.sendto  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if not self._batch_pending:
            self._start_batch()
        if self.guard is not None and not self.guard.admit(addr[0], self._now):
            self.events.rate_limited(addr[0], "dns")
            return  # over its rate: dropped (a DNS client retries; a spoofed victim gets nothing)
        try:
            answer = self.view.answer(data, "udp")
            if answer is not None:
                self._sendto(answer, addr)
            else:
                self.events.malformed(addr[0], "dns")
        except Exception:
            log.exception("unexpected error answering a DNS datagram from %s", addr[0])


    def error_received(self, exc: Exception) -> None:
        log.debug("DNS UDP error: %s", exc)


class DnsTcpProtocol(asyncio.Protocol):
    """DNS over TCP, capped like Handle TCP: `limiter` counts the open connections (in all and per source;
    the worker gives DNS its own, with the Handle TCP settings), a refused one is reset at once."""

    def __init__(
        self,
        view: DnsView,
        renew_view: Callable[[], None],
        idle_timeout_s: float,
        limiter: ConnectionLimiter | None = None,
        events: SecurityEvents | None = None,
    ):
        self.view = view
        self.renew_view = renew_view
        self.idle_timeout_s = idle_timeout_s
        self.limiter = limiter
        self.events = events or NO_EVENTS  # connection-cap refusals
        self._address: str | None = None  # set once the connection is counted by the limiter
        self._buffer = bytearray()
        self._idle: IdleTimeout | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.limiter is not None:
            peer = transport.get_extra_info("peername")
            address = str(peer[0]) if peer else ""
            if not self.limiter.open(address):
                log.debug("refusing a DNS TCP connection from %s: connection limit", address)
                self.events.rate_limited(address, "dns")
                transport.abort()
                return
            self._address = address
        self._idle = IdleTimeout(transport, self.idle_timeout_s)

    def data_received(self, data: bytes) -> None:
        self._idle.touch()
        self._buffer += data
        if len(self._buffer) >= 2:
            self.renew_view()
        answers = []
        try:
            while len(self._buffer) >= 2:
                (length,) = _LENGTH.unpack_from(self._buffer)
                if len(self._buffer) < 2 + length:
                    break
                message = bytes(self._buffer[2 : 2 + length])
                del self._buffer[: 2 + length]
                answer = self.view.answer(message, "tcp")
                if answer is not None:
                    answers.append(_LENGTH.pack(len(answer)) + answer)
        except Exception:
            log.exception("unexpected error answering DNS over TCP")
            self.transport.close()
            return
        if answers:
            self.transport.write(b"".join(answers))
        if len(self._buffer) > MAX_PENDING_TCP_BYTES:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        if self._address is not None:
            self.limiter.close(self._address)
            self._address = None
