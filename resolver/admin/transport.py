"""Handle TCP with administration: the resolution protocol of resolver/server/tcp.py, plus the administrative
requests and op-2001 logins of resolver/admin/handler.py on the same connection.

The base protocol frames the stream and answers resolutions at once. Here the frame buffer is wrapped: from the
first administrative message of a read on, that message and every later one of the connection go to an ordered
queue, answered one after the other by a task (an administrative answer waits for its write to be applied), so
answers leave in request order. While the queue holds MAX_QUEUED_MESSAGES, reading pauses (flow control). The
connection's Caller carries its login; it ends when the connection closes. No codec or store here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from resolver.admin.handler import AdminService, Caller
from resolver.handle.admin import is_auth_path
from resolver.handle.tcp import FrameBuffer
from resolver.server.stats import CODES_AT
from resolver.server.tcp import HandleTcpProtocol

log = logging.getLogger(__name__)

MAX_QUEUED_MESSAGES = 64  #: messages read behind an administrative one; beyond, the connection stops reading


class _SplittingFrames:
    """A FrameBuffer whose `feed` hands the base protocol only the messages before the first administrative
    one; that one and everything after go to the connection's queue."""

    def __init__(self, protocol: AdminTcpProtocol):
        self._frames = FrameBuffer()
        self._protocol = protocol

    def __len__(self) -> int:
        return len(self._frames)

    def feed(self, data) -> list[bytes]:
        messages = self._frames.feed(data)
        queue = self._protocol.queue
        if queue:
            queue.extend(messages)
            self._protocol.kick()
            return []
        for n, message in enumerate(messages):
            if is_auth_path(message):
                queue.extend(messages[n:])
                self._protocol.kick()
                return messages[:n]
        return messages


class AdminTcpProtocol(HandleTcpProtocol):
    def __init__(self, *args, admin: AdminService, **kwargs):
        super().__init__(*args, **kwargs)
        self.admin = admin
        self.queue: deque[bytes] = deque()
        self.caller: Caller | None = None
        self._draining: asyncio.Task | None = None
        self._frames = _SplittingFrames(self)  # type: ignore[assignment]

    def kick(self) -> None:
        if len(self.queue) >= MAX_QUEUED_MESSAGES:
            self.transport.pause_reading()
        if self._draining is None or self._draining.done():
            self._draining = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        if self.caller is None:
            peer = self.transport.get_extra_info("peername")
            self.caller = Caller(self._address, peer[1] if peer else 0, "tcp")
        while self.queue:
            message = self.queue.popleft()
            try:
                if is_auth_path(message):
                    answers = await self.admin.answer(message, self.caller)
                else:
                    self.renew_view()  # a resolution after a write sees it
                    answer = self.frontend.answer_message(message)
                    if answer is not None and answer.__class__ is not bytes:  # a deferred answer (recursion)
                        answer = await answer
                    answers = [answer] if answer else []
            except Exception:
                log.exception("unexpected error answering over TCP from %s", self._peer())
                self.transport.close()
                return
            if self.transport.is_closing():
                return
            for answer in answers:
                self._counts[answer[CODES_AT]] += 1
            if answers:
                self.transport.write(b"".join(answers))
            if len(self.queue) < MAX_QUEUED_MESSAGES:
                self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._draining is not None:
            self._draining.cancel()
        if self.caller is not None:
            self.admin.release(self.caller)  # a login lasts as long as its connection


def build_admin(worker) -> AdminService:
    """The AdminService of a serving worker: its read-only store and resolution service, writes through the
    node's writer, challenges in the data directory (shared by the workers), its security events. Challenges
    and logins are rate-limited per address except from the networks of `rate_limit_exempt` (as every other
    limit of the node): a trusted enterprise system answering a challenge per write is not held to
    AUTH_RATE_PER_S."""
    import time
    from pathlib import Path

    from resolver.admin.challenges import DIRECTORY_NAME, PendingChallenges
    from resolver.admin.handler import AUTH_BURST, AUTH_RATE_PER_S
    from resolver.server.limits import ExemptNetworks, SourceRateLimiter

    data_dir = Path(worker.config.data_dir)
    exempt = ExemptNetworks(worker.config.rate_limit_exempt)
    return AdminService(
        worker.store, worker.service, writer=worker.writer, events=worker.events, data_dir=data_dir,
        challenges=PendingChallenges(data_dir / DIRECTORY_NAME),
        limiter=SourceRateLimiter(AUTH_RATE_PER_S, AUTH_BURST, exempt), clock=time.time,
    )  # fmt: skip
