"""Handle protocol over TCP: framed, pipelined requests answered in order on a connection that stays open
after every answer, KC or not (ID-SDK reuses its connection without KC), until it is idle too long.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from resolver.frontend import HandleFrontend
from resolver.handle.errors import EnvelopeError
from resolver.handle.tcp import FrameBuffer

log = logging.getLogger(__name__)


class HandleTcpProtocol(asyncio.Protocol):
    def __init__(self, frontend: HandleFrontend, after_batch: Callable[[], None], idle_timeout_s: float):
        self.frontend = frontend
        self.after_batch = after_batch
        self.idle_timeout_s = idle_timeout_s
        self.transport: asyncio.Transport | None = None
        self._frames = FrameBuffer()
        self._last_activity = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self._last_activity = loop.time()
        self._idle_timer = loop.call_later(self.idle_timeout_s, self._check_idle)

    def _check_idle(self) -> None:
        # One timer per connection, re-armed for the remainder, rather than a new timer per read.
        loop = asyncio.get_running_loop()
        remaining = self._last_activity + self.idle_timeout_s - loop.time()
        if remaining <= 0:
            self.transport.close()
        else:
            self._idle_timer = loop.call_later(remaining, self._check_idle)

    def data_received(self, data: bytes) -> None:
        self._last_activity = asyncio.get_running_loop().time()
        try:
            messages = self._frames.feed(data)
        except EnvelopeError as exc:
            # The stream cannot be re-synchronised after an unreadable envelope: close it.
            log.debug("closing TCP connection from %s: %s", self._peer(), exc)
            self.transport.close()
            return
        try:
            answers = [a for a in map(self.frontend.answer_message, messages) if a]
        except Exception:
            log.exception("unexpected error answering over TCP from %s", self._peer())
            self.transport.close()
            return
        if answers:
            self.transport.write(b"".join(answers))
        self.after_batch()

    def _peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport else None
        return str(peer[0]) if peer else "?"

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
