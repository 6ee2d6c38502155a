"""DNS over UDP and TCP (RFC 1035 §4.2) for the DNS view: datagrams in, answers out; over TCP each message
carries a two-byte length, several may be pipelined, and the connection stays open until it falls silent.
Zone transfers (AXFR, IXFR) go out over TCP as a stream of messages, written as fast as the secondary reads
them; NOTIFY (RFC 1996) goes to the configured secondaries over UDP when the store's write-log position moves.
No exception escapes a handler.

`DnsZone` is what a worker serves DNS with: the view, its transfers, the SOA serial kept at the store's
position, and the notifier.
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import itertools
import logging
import os
import random
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from resolver.config import ServeConfig, notify_target
from resolver.dnsview.apex import Soa
from resolver.dnsview.names import NameMap
from resolver.dnsview.notify import notify_acknowledged, notify_message, notify_rcode
from resolver.dnsview.transfer import TransferAcl, ZoneTransfers, serial_of, transfer_qtype
from resolver.dnsview.view import DnsView
from resolver.security.events import NO_EVENTS, SecurityEvents
from resolver.server.batching import BatchedDatagramProtocol
from resolver.server.idle import IdleTimeout
from resolver.server.limits import ConnectionLimiter, UdpGuard
from storage.store import Store
from storage.zonesnapshot import ZoneSnapshot, read_position

log = logging.getLogger(__name__)

_LENGTH = struct.Struct(">H")
MAX_PENDING_TCP_BYTES = 2 * 65_537  #: one whole message and the start of the next; more unread input is abuse
#: Transfer messages written before the event loop gets a turn: a secondary that reads as fast as we write
#: never makes the transport push back, and other clients of this worker must not wait for a whole zone.
TRANSFER_MESSAGES_PER_TURN = 16
NOTIFY_POLL_S = 0.2  #: how often the notifier looks at the store's position: a write reaches secondaries soon
NOTIFY_RETRY_S = 2.0  #: an unanswered NOTIFY is sent again after this (RFC 1996 §4.3 leaves it to us)
NOTIFY_TRIES = 5  #: RFC 1996 §3.6 suggests a few retries; the secondary's own refresh timer covers the rest
NOTIFY_LOCK_NAME = "dns-notify.lock"  #: in the data directory: one worker of the node sends the NOTIFYs


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
    the worker gives DNS its own, with the Handle TCP settings), a refused one is reset at once.

    Answers go out in the order the queries came. A zone transfer (`transfers`) is a generator of messages:
    written a few at a time while the transport takes them (pause_writing/resume_writing), and while it
    streams, the connection reads nothing more, so neither side's buffers grow with the zone."""

    def __init__(
        self,
        view: DnsView,
        renew_view: Callable[[], None],
        idle_timeout_s: float,
        limiter: ConnectionLimiter | None = None,
        events: SecurityEvents | None = None,
        transfers: ZoneTransfers | None = None,
    ):
        self.view = view
        self.renew_view = renew_view
        self.idle_timeout_s = idle_timeout_s
        self.limiter = limiter
        self.events = events or NO_EVENTS  # connection-cap refusals
        self._address: str | None = None  # set once the connection is counted by the limiter
        self.transfers = transfers
        self._buffer = bytearray()
        self._idle: IdleTimeout | None = None
        self.transport: asyncio.Transport | None = None
        self._peer = ""
        self._outbox: collections.deque[bytes | Iterator[bytes]] = collections.deque()
        self._paused = False  # the transport's buffer is full
        self._pump_scheduled = False
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else ""
        if self.limiter is not None:
            if not self.limiter.open(self._peer):
                log.debug("refusing a DNS TCP connection from %s: connection limit", self._peer)
                self.events.rate_limited(self._peer, "dns")
                transport.abort()
                return
            self._address = self._peer
        self._idle = IdleTimeout(transport, self.idle_timeout_s)

    def data_received(self, data: bytes) -> None:
        self._idle.touch()
        self._buffer += data
        if len(self._buffer) >= 2:
            self.renew_view()
        try:
            self._read_messages()
        except Exception:
            log.exception("unexpected error answering DNS over TCP")
            self.transport.close()
            return
        self._pump()
        if len(self._buffer) > MAX_PENDING_TCP_BYTES:
            self.transport.close()

    def _read_messages(self) -> None:
        while len(self._buffer) >= 2 and not self._streaming():
            (length,) = _LENGTH.unpack_from(self._buffer)
            if len(self._buffer) < 2 + length:
                break
            message = bytes(self._buffer[2 : 2 + length])
            del self._buffer[: 2 + length]
            stream = None
            if self.transfers is not None and transfer_qtype(message) is not None:
                stream = self.transfers.messages(message, self._peer)
            if stream is not None:
                self._outbox.append(stream)
                self.transport.pause_reading()  # resumed when the transfer is written
                continue
            answer = self.view.answer(message, "tcp")
            if answer is not None:
                self._outbox.append(answer)

    def _streaming(self) -> bool:
        return any(not isinstance(item, bytes) for item in self._outbox)

    def _pump(self) -> None:
        """Write what is due, in order, until the transport pushes back or a transfer has had its turn."""
        self._pump_scheduled = False
        if self._closed:
            return
        answers: list[bytes] = []
        while self._outbox and not self._paused:
            item = self._outbox[0]
            if isinstance(item, bytes):
                answers.append(_LENGTH.pack(len(item)) + item)
                self._outbox.popleft()
                continue
            if answers:
                self.transport.write(b"".join(answers))
                answers = []
            if not self._write_some(item):
                return  # more of the transfer on the next turn (or on resume_writing)
            self._outbox.popleft()
            self._idle.touch()
            self.transport.resume_reading()
            try:
                self._read_messages()  # queries that came while it streamed
            except Exception:
                log.exception("unexpected error answering DNS over TCP")
                self.transport.close()
                return
        if answers:
            self.transport.write(b"".join(answers))

    def _write_some(self, stream: Iterator[bytes]) -> bool:
        """Up to TRANSFER_MESSAGES_PER_TURN messages of a transfer; True when it is all written."""
        for _ in range(TRANSFER_MESSAGES_PER_TURN):
            try:
                message = next(stream)
            except StopIteration:
                return True
            except Exception:
                log.exception("zone transfer to %s failed; closing the connection", self._peer)
                self.transport.close()
                return False
            self.transport.write(_LENGTH.pack(len(message)) + message)  # may call pause_writing
            if self._paused:
                return False
        self._idle.touch()
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)
        return False

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if not self._pump_scheduled:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._idle is not None:
            self._idle.cancel()
        for item in self._outbox:
            if not isinstance(item, bytes):
                item.close()  # type: ignore[attr-defined]  # closes the transfer's store snapshot
        self._outbox.clear()
        if self._address is not None:
            self.limiter.close(self._address)
            self._address = None


class DnsNotifier:
    """Sends NOTIFY to `targets` ((address, port) pairs) whenever `position()` moves, retrying each until it is
    acknowledged or NOTIFY_TRIES were sent; a newer change replaces a NOTIFY still retrying. Only the process
    holding `lock_path` (an flock) sends, so a node of many workers notifies once; another takes over when
    that one exits."""

    def __init__(
        self,
        names: NameMap,
        soa: Callable[[int], Soa],
        targets: Sequence[tuple[str, int]],
        position: Callable[[], int],
        lock_path: Path | None,
        poll_s: float = NOTIFY_POLL_S,
        retry_s: float = NOTIFY_RETRY_S,
        tries: int = NOTIFY_TRIES,
    ):
        self.names = names
        self.soa = soa
        self.targets = list(targets)
        self.position = position
        self.lock_path = lock_path
        self.poll_s = poll_s
        self.retry_s = retry_s
        self.tries = tries
        self._lock_fd: int | None = None
        self._sending: dict[tuple[str, int], asyncio.Task] = {}
        self._failing: set[tuple[str, int]] = set()
        self._ids = itertools.count(random.randrange(1 << 16))

    async def run(self) -> None:
        sent_at: int | None = None
        try:
            while True:
                if self._holds_lock():
                    try:
                        position = self.position()
                    except Exception as exc:
                        log.debug("cannot read the store's position for NOTIFY: %s", exc)
                        position = sent_at
                    if position is not None and position != sent_at:
                        sent_at = position
                        serial = serial_of(position)
                        for target in self.targets:
                            old = self._sending.pop(target, None)
                            if old is not None:
                                old.cancel()
                            self._sending[target] = asyncio.create_task(self._notify(target, serial))
                await asyncio.sleep(self.poll_s)
        finally:
            for task in self._sending.values():
                task.cancel()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the lock: another worker takes over
                self._lock_fd = None

    def _holds_lock(self) -> bool:
        if self._lock_fd is not None or self.lock_path is None:
            return True
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("cannot open %s (%s): this worker sends NOTIFY without it", self.lock_path, exc)
            self.lock_path = None
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False  # another worker notifies
        self._lock_fd = fd
        return True

    async def _notify(self, target: tuple[str, int], serial: int) -> None:
        host, port = target
        qid = next(self._ids) & 0xFFFF
        message = notify_message(qid, self.names, self.soa(serial))
        loop = asyncio.get_running_loop()
        replies: asyncio.Queue[bytes] = asyncio.Queue()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Replies(replies), remote_addr=(host, port)
            )
        except OSError as exc:
            self._failed(target, serial, str(exc))
            return
        try:
            for _ in range(self.tries):
                transport.sendto(message)
                deadline = loop.time() + self.retry_s
                while (left := deadline - loop.time()) > 0:
                    try:
                        reply = await asyncio.wait_for(replies.get(), left)
                    except TimeoutError:
                        break
                    if notify_acknowledged(reply, qid):
                        log.debug("NOTIFY serial %d acknowledged by %s:%d", serial, host, port)
                        if target in self._failing:
                            self._failing.discard(target)
                            log.info("NOTIFY acknowledged by %s:%d again", host, port)
                        return
                    if len(reply) >= 2 and reply[:2] == message[:2]:
                        self._failed(target, serial, f"answered rcode {notify_rcode(reply)}")
                        return
            self._failed(target, serial, f"no answer to {self.tries} tries")
        finally:
            transport.close()

    def _failed(self, target: tuple[str, int], serial: int, why: str) -> None:
        if target not in self._failing:  # logged once until it answers again, not at every write
            self._failing.add(target)
            log.warning("NOTIFY serial %d to %s:%d not acknowledged: %s", serial, target[0], target[1], why,
                        extra={"event": "dns_notify_failed"})  # fmt: skip


class _Stopper:
    """A task the worker stops with its other listeners (`close()`)."""

    def __init__(self, task: asyncio.Task):
        self.task = task

    def close(self) -> None:
        self.task.cancel()


class _Replies(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[bytes]):
        self.queue = queue

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        log.debug("NOTIFY socket error: %s", exc)  # ICMP port unreachable: the retry timer decides


class DnsZone:
    """What one worker serves DNS with: the view of `store` for `config.dns_zone`, zone transfers to
    `dns_transfer_allow` (None without it: the view refuses them), the SOA serial kept at the store's write-log
    position (`renew`, before each batch of queries), and a notifier for `dns_notify` (None without it)."""

    def __init__(
        self,
        config: ServeConfig,
        store: Store,
        lookup: Callable[[bytes], bytes | None],
        refresh_reads: Callable[[], None],
        on_resolution: Callable[[bytes], None] | None = None,
    ):
        self.store = store
        self._refresh_reads = refresh_reads
        self.view = DnsView(
            config.dns_zone,
            lookup,
            store.case_sensitive,
            digest_lookup=store.key_of_dns_digest,
            on_resolution=on_resolution,
            memo_bytes=config.dns_memo_mb << 20,
        )
        self.renew()
        apex = self.view.soa
        self.transfers: ZoneTransfers | None = None
        if config.dns_transfer_allow:
            self.transfers = ZoneTransfers(
                self.view.names,
                apex,
                self.view.ns,
                lambda: ZoneSnapshot(store),
                TransferAcl(config.dns_transfer_allow),
                time.time,
            )
        self.notifier: DnsNotifier | None = None
        if config.dns_notify:
            self.notifier = DnsNotifier(
                self.view.names,
                lambda serial: replace(apex, serial=serial),
                [notify_target(t) for t in config.dns_notify],
                lambda: read_position(store),
                Path(config.data_dir) / NOTIFY_LOCK_NAME,
            )

    def start_notifier(self) -> _Stopper:
        """Run the notifier on the running loop; `close()` the result to stop it."""
        assert self.notifier is not None
        return _Stopper(asyncio.get_running_loop().create_task(self.notifier.run()))

    def renew(self) -> None:
        """Newer writes visible to the next answers, and the SOA serial at the store's position."""
        self._refresh_reads()
        try:
            self.view.set_serial(serial_of(read_position(self.store)))
        except Exception as exc:  # the answers go on with the serial they had
            log.debug("cannot read the store's position: %s", exc)

    def udp_protocol(self, guard: UdpGuard | None, events: SecurityEvents | None) -> DnsUdpProtocol:
        return DnsUdpProtocol(self.view, self.renew, guard, events)

    def tcp_protocol(
        self, idle_timeout_s: float, limiter: ConnectionLimiter | None, events: SecurityEvents | None
    ) -> DnsTcpProtocol:
        return DnsTcpProtocol(self.view, self.renew, idle_timeout_s, limiter, events, self.transfers)
