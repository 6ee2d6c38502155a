"""Handle protocol over UDP: datagrams in, answers (chunked when longer than one datagram) out.

No exception escapes `datagram_received`: one client's garbage must never stop the answers to others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from resolver.frontend import HandleFrontend

log = logging.getLogger(__name__)


class HandleUdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, frontend: HandleFrontend, after_batch: Callable[[], None]):
        self.frontend = frontend
        self.after_batch = after_batch
        self.transport: asyncio.DatagramTransport | None = None
        self._batch_pending = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._sendto = transport.sendto  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        try:
            for datagram in self.frontend.answer_datagram(data, addr):
                self._sendto(datagram, addr)
        except Exception:  # a bug must cost one answer, not the listener
            log.exception("unexpected error answering a UDP datagram from %s", addr[0])
        if not self._batch_pending:
            # Datagrams that arrive in one loop iteration share a read transaction; renew it after them.
            self._batch_pending = True
            asyncio.get_running_loop().call_soon(self._end_batch)

    def _end_batch(self) -> None:
        self._batch_pending = False
        self.after_batch()

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)
