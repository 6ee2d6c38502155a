"""Handle protocol over UDP: datagrams in, answers (chunked when longer than one datagram) out.

No exception escapes `datagram_received`: one client's garbage must never stop the answers to others. The
security log hears of rate-limit refusals and of malformed datagrams (dropped, or answered PROTOCOL_ERROR);
the check costs one byte comparison per answer.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable

from resolver.frontend import ANSWER_LIFETIME_S, HandleFrontend
from resolver.handle.constants import (
    MAX_HANDLE_BYTES,
    SERVER_VERSION,
    UDP_DATAGRAM_BYTES,
    UNKNOWN_SITE_SERIAL,
    OpCode,
    ResponseCode,
)
from resolver.handle.udp import is_chunk, split_datagrams
from resolver.security.events import NO_EVENTS, SecurityEvents
from resolver.server.batching import BatchedDatagramProtocol
from resolver.server.limits import UdpGuard
from resolver.server.stats import (
    CODES_AT,
    NO_ANSWER,
    PROTOCOL_ERROR_LOW_BYTE,
    RCODE_LOW_BYTE_AT,
    QueryStats,
    is_protocol_error,
)
from storage.records import SCHEMA_VERSION

log = logging.getLogger(__name__)

#: What the extension's `serve` says of a datagram it hands back (resolver/server/_mmsg.c, HANDED_*).
HANDED_SAMPLED, HANDED_REFUSED, HANDED_UNDECIDED = 1, 2, 4
#: The counting key (CODES_AT) of the answers the extension sends: OC_RESOLUTION, SUCCESS.
_PLAIN_SUCCESS = struct.pack(">II", OpCode.RESOLUTION, ResponseCode.SUCCESS)


class HandleUdpProtocol(BatchedDatagramProtocol):
    def __init__(
        self,
        frontend: HandleFrontend,
        renew_view: Callable[[], None],
        stats: QueryStats | None = None,
        guard: UdpGuard | None = None,
        events: SecurityEvents | None = None,
    ):
        self.frontend = frontend
        super().__init__(renew_view)
        self.guard = guard
        self.events = events or NO_EVENTS
        self.transport: asyncio.DatagramTransport | None = None
        # Counting costs one dict increment; one datagram in `sample_every` is timed (maybe access-logged).
        self.stats = stats or QueryStats()
        self._counts = self.stats.counts("handle-udp")
        self._tick = self.stats.sample_every

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._sendto = self._late_sendto = transport.sendto  # type: ignore[attr-defined]

    def use_socket(self, sock) -> None:
        """Where answers that come later (a recursion's) go when a listener without a transport serves the
        socket (resolver/server/udp_batch.py)."""
        self._late_sendto = sock.sendto

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if not self._batch_pending:
            self._start_batch()
        self._tick -= 1
        if not self._tick:
            self._tick = self.stats.sample_every
            self._answer_sampled(data, addr)
            return
        try:
            answers = self._answer(data, addr)
            for datagram in answers:
                self._sendto(datagram, addr)
            self._counts[answers[0][CODES_AT] if answers else NO_ANSWER] += 1
        except Exception:  # a bug must cost one answer, not the listener
            log.exception("unexpected error answering a UDP datagram from %s", addr[0])

    def _answer_sampled(self, data: bytes, addr: tuple, send: bool = True, answer=None) -> list[bytes]:
        """`answer`: the link of the chain to time (default: all of it, `_answer`)."""
        started = time.perf_counter()
        answers: list[bytes] = []
        try:
            answers = (answer or self._answer)(data, addr)
            if send:
                for datagram in answers:
                    self._sendto(datagram, addr)
            self._counts[answers[0][CODES_AT] if answers else NO_ANSWER] += 1
        except Exception:
            log.exception("unexpected error answering a UDP datagram from %s", addr[0])
            answers = []
        spent = time.perf_counter() - started
        self.stats.sample("handle-udp", spent, addr[0], data, answers[0] if answers else None)
        return answers

    def answer_batch(self, received: list[tuple[bytes, tuple]]) -> list[list[bytes]]:
        """The answers to datagrams read together (resolver/server/udp_batch.py), one list per datagram in the
        same order, for one sendmmsg. Each goes through the same chain as in `datagram_received` (rate limit,
        dispatch, security events, amplification bound, counting, sampling); a sampled one is timed without
        its send, which the batch makes later. The caller starts the batch (`start_batch_at`)."""
        out: list[list[bytes]] = []
        append = out.append
        answer = self._answer
        counts = self._counts
        for data, addr in received:
            self._tick -= 1
            if not self._tick:
                self._tick = self.stats.sample_every
                append(self._answer_sampled(data, addr, send=False))
                continue
            try:
                answers = answer(data, addr)
                counts[answers[0][CODES_AT] if answers else NO_ANSWER] += 1
            except Exception:  # a bug must cost one answer, not the listener
                log.exception("unexpected error answering a UDP datagram from %s", addr[0])
                answers = []
            append(answers)
        return out

    # -- batches whose plain resolutions the extension answers (resolver/server/_mmsg.c) ---------------------

    def configure_batch(self, batch) -> None:
        """Let `batch` (resolver.server._mmsg.Batch) answer plain resolutions itself, by this chain's rules:
        this guard's rate limit, this service's store and prefixes, this sampling period."""
        service = self.frontend.service
        limiter = self.guard.limiter if self.guard is not None else None
        batch.configure_plain(
            shared=service.store.shared_cache,
            exempt=limiter.exempt.__contains__ if limiter is not None else None,
            admit=self.guard.admit if limiter is not None else None,
            sample_every=self.stats.sample_every,
            server_version=SERVER_VERSION,
            site_serial=UNKNOWN_SITE_SERIAL,
            max_handle_bytes=MAX_HANDLE_BYTES,
            max_answer_bytes=UDP_DATAGRAM_BYTES,
            record_schema=SCHEMA_VERSION,
            case_sensitive=service.case_sensitive,
        )

    def serve_batch(self, batch) -> list[list[bytes]]:
        """Read one batch with `batch.serve` (configured by `configure_batch`), which answers the plain
        resolutions; the answers to the datagrams it hands back, in their order, for `batch.send`."""
        service = self.frontend.service
        counter = service.counter
        tick, answered, handed = batch.serve(
            service.record_reader, service.served_prefixes, counter.live_counts,
            int(self.frontend.clock()) + ANSWER_LIFETIME_S, self._now, self._tick,
        )  # fmt: skip
        if answered:
            counter.pending += answered
            self._counts[_PLAIN_SUCCESS] += answered
        answers = self.answer_handed(handed) if handed else handed
        self._tick = tick
        return answers

    def answer_handed(self, handed: list[tuple[bytes, tuple, int]]) -> list[list[bytes]]:
        """Answers to the datagrams `batch.serve` handed back, with what it decided already: refused by the
        rate limit, chosen to be sampled, or nothing (the whole chain, admission included)."""
        out: list[list[bytes]] = []
        for data, addr, flags in handed:
            if flags & HANDED_REFUSED:
                answer = self._refuse
            elif flags & HANDED_UNDECIDED:
                answer = self._answer
            else:
                answer = self._answer_admitted
            if flags & HANDED_SAMPLED:
                out.append(self._answer_sampled(data, addr, send=False, answer=answer))
                continue
            try:
                answers = answer(data, addr)
                self._counts[answers[0][CODES_AT] if answers else NO_ANSWER] += 1
            except Exception:  # a bug must cost one answer, not the listener
                log.exception("unexpected error answering a UDP datagram from %s", addr[0])
                answers = []
            out.append(answers)
        return out

    # -- the chain ------------------------------------------------------------------------------------------

    def _answer(self, data: bytes, addr: tuple) -> list[bytes]:
        guard = self.guard
        if guard is not None and not guard.admit(addr[0], self._now):
            return self._refuse(data, addr)
        return self._answer_admitted(data, addr)

    def _refuse(self, data: bytes, addr: tuple) -> list[bytes]:
        self.events.rate_limited(addr[0], "udp")
        return self.guard.refusal(data)

    def _answer_admitted(self, data: bytes, addr: tuple) -> list[bytes]:
        guard = self.guard
        answers = self.frontend.answer_datagram(data, addr)
        if answers and answers[0].__class__ is not bytes:  # a recursion under way: sent when it ends
            self._send_later(answers[0], data, addr)
            return []
        if not answers:
            if not is_chunk(data):  # dropped: an unreadable envelope (a piece of a longer request waits)
                self.events.malformed(addr[0], "udp")
            return answers
        if answers[0][RCODE_LOW_BYTE_AT] == PROTOCOL_ERROR_LOW_BYTE and is_protocol_error(answers[0]):
            self.events.malformed(addr[0], "udp")
        if guard is not None and len(answers) > 1:  # only a chunked answer can be many times its request
            return guard.bound(data, answers, addr[0], self._now)
        return answers

    def _send_later(self, pending: asyncio.Future, data: bytes, addr: tuple) -> None:
        """Send the answer of a recursion (resolver/recursion) or of an administrative request
        (resolver/admin/datagrams.py) when it ends, chunked and bounded like any other answer (b"": none). It
        was counted as no answer when handed back; that count moves to its code."""

        def send(done: asyncio.Future) -> None:
            if done.cancelled() or (self.transport is not None and self.transport.is_closing()):
                return
            try:
                answer = done.result()
                if not answer:
                    return
                if answer[RCODE_LOW_BYTE_AT] == PROTOCOL_ERROR_LOW_BYTE and is_protocol_error(answer):
                    self.events.malformed(addr[0], "udp")
                answers = [answer] if len(answer) <= UDP_DATAGRAM_BYTES else split_datagrams(answer)
                if self.guard is not None and len(answers) > 1:
                    answers = self.guard.bound(data, answers, addr[0], asyncio.get_running_loop().time())
                for datagram in answers:
                    self._late_sendto(datagram, addr)
                if answers:
                    self._counts[NO_ANSWER] -= 1
                    self._counts[answers[0][CODES_AT]] += 1
            except OSError as exc:  # a full send buffer or a closed socket: UDP, the client asks again
                log.debug("recursive answer to %s not sent: %s", addr[0], exc)
            except Exception:
                log.exception("unexpected error sending a late answer to %s", addr[0])

        pending.add_done_callback(send)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)
