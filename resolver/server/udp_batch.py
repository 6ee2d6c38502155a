"""Handle UDP in batches: the event loop only says the socket is readable; one recvmmsg(2) reads up to
DATAGRAMS_PER_BATCH requests, and one sendmmsg(2) sends their answers, each to the address its request came
from. In between, the extension answers the plain resolutions itself (`udp_c_answers`, the default: a
resolution with no filter of an identifier whose values are all public and fit one datagram) and hands the
others to HandleUdpProtocol, which answers them through the same per-request chain as the datagram transport
(`udp_c_answers = false`: it answers all of them, HandleUdpProtocol.answer_batch).

Why: through uvloop's datagram transport every datagram costs one recvmsg, one sendmsg and one Python callback,
about two thirds of a worker's time per answer (bench/results/udp_batch.md has the measurement that kept this).

The system calls live in the compiled resolver/server/_mmsg.c (built by `pip install`, optional). Where it is
missing, or not on Linux, or the setting `udp_batch` is false (IDNODE_UDP_BATCH=0, --udp-batch false),
`batched_listener` returns None with one log line and the worker uses the event loop's datagram transport, which
gives the same answers byte for byte.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

from resolver.server.udp import HandleUdpProtocol

try:
    from resolver.server import _mmsg  # type: ignore[attr-defined]
except ImportError:  # not built: no compiler or headers at install, or not Linux
    _mmsg = None

log = logging.getLogger(__name__)

#: Datagrams per recvmmsg: as the C echo reads; beyond 64 the system-call saving is already < 2% of an answer.
DATAGRAMS_PER_BATCH = 64
#: Batches read per readiness event before the loop serves its other sockets (TCP, DNS, HTTP, housekeeping)
#: again: 1,024 answers are ~7 ms of work, short enough not to starve them.
MAX_BATCHES_PER_WAKEUP = 16
#: Seconds between two warnings about answers the full send buffer refused (counted in between).
UNSENT_WARNING_INTERVAL_S = 60.0

_told = False  # the fallback is logged once per process


def unavailable_reason(enabled: bool = True) -> str | None:
    """Why batched UDP is not used in this process, or None when it is; `enabled`: the setting udp_batch."""
    if not enabled:
        return "udp_batch = false"
    if not sys.platform.startswith("linux"):
        return f"recvmmsg/sendmmsg are Linux calls, this is {sys.platform}"
    if _mmsg is None:
        return (
            "resolver.server._mmsg was not compiled at install (a C compiler and Python headers are needed)"
        )
    return None


def batched_listener(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    protocol: HandleUdpProtocol,
    enabled: bool = True,
    answer_in_c: bool = True,
) -> BatchedUdpListener | None:
    """A batched listener serving `sock` with `protocol`, or None (logged once) when the worker must use the
    event loop's datagram transport instead. `answer_in_c`: the setting udp_c_answers."""
    global _told
    reason = unavailable_reason(enabled)
    if reason is None:
        return BatchedUdpListener(loop, sock, protocol, answer_in_c)
    if not _told:
        _told = True
        log.info(
            "Handle UDP: batched datagram I/O off (%s); using the event loop's datagram transport", reason
        )
    return None


class BatchedUdpListener:
    """Serves one non-blocking UDP socket until `close()`, which also closes the socket (as a transport would)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        protocol: HandleUdpProtocol,
        answer_in_c: bool = True,
    ):
        assert _mmsg is not None
        self._loop = loop
        self._sock = sock
        self._fd = sock.fileno()
        self.protocol = protocol
        self._batch = _mmsg.Batch(self._fd, DATAGRAMS_PER_BATCH)
        self._answer_one_batch = self._served_batch if answer_in_c else self._received_batch
        if answer_in_c:
            protocol.configure_batch(self._batch)
        self._unsent_told = 0
        self._unsent_told_at = -UNSENT_WARNING_INTERVAL_S
        self._closed = False
        sock.setblocking(False)
        protocol.use_socket(sock)  # for answers that come later than their batch (recursion)
        loop.add_reader(self._fd, self._on_readable)

    @property
    def answered_in_c(self) -> int:
        """Datagrams the extension answered itself (plain resolutions) so far."""
        return self._batch.answered

    @property
    def unsent(self) -> int:
        """Answer datagrams the kernel did not take (a full send buffer, a refused destination) so far."""
        return self._batch.unsent

    def _on_readable(self) -> None:
        protocol = self.protocol
        protocol.start_batch_at(self._loop.time())
        batch = self._batch
        answer_one_batch = self._answer_one_batch
        for _ in range(MAX_BATCHES_PER_WAKEUP):
            try:
                answers = answer_one_batch()
            except OSError as exc:
                protocol.error_received(exc)
                return
            received = batch.received
            if not received:
                return
            try:
                unsent = batch.send(answers)
            except OSError as exc:
                protocol.error_received(exc)
                unsent = 0
            if unsent:
                self._tell_unsent()
            if received < DATAGRAMS_PER_BATCH:
                return  # the socket is drained: no need for a recvmmsg that finds nothing

    def _served_batch(self) -> list[list[bytes]]:
        """One recvmmsg; the extension answers the plain resolutions, the protocol the others."""
        return self.protocol.serve_batch(self._batch)

    def _received_batch(self) -> list[list[bytes]]:
        """One recvmmsg; the protocol answers every datagram."""
        received = self._batch.recv()
        return self.protocol.answer_batch(received) if received else received

    def _tell_unsent(self) -> None:
        now = self._loop.time()
        if now - self._unsent_told_at >= UNSENT_WARNING_INTERVAL_S:
            total = self._batch.unsent
            log.warning(
                "Handle UDP: %d answer datagrams not sent (send buffer full or destination refused), %d in all",
                total - self._unsent_told,
                total,
            )
            self._unsent_told, self._unsent_told_at = total, now

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._fd)
        self._sock.close()
