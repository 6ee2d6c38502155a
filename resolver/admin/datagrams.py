"""Administrative Handle requests over UDP: the same AdminService as TCP (resolver/admin/handler.py), one
datagram exchange at a time, behind the UDP chain of resolver/server/udp.py (rate limit in front, amplification
bound and counting on the answer).

What UDP allows (handle-protocol.md, handle-admin.md §1-2): a challenge (402) and its op-200 answer each fit a
datagram, and the pending challenge is named by its session id, not by a connection, so CREATE, DELETE, ADD,
REMOVE, MODIFY and LIST_HANDLES work with the standard challenge-response. Not over UDP:
- op 2001: a login binds an identity to a TCP connection, and UDP has none (AdminService refuses it);
- an answer of several messages (a LIST_HANDLES with continuations, CN): the parts share a request id, which a
  UDP client reassembles by, so they cannot all be told apart. Refused with ERROR and the envelope's TC flag,
  as an answer too large for UDP is: ask over TCP.
A datagram the client sends again (its answer was lost, or late) gets the answer of the first one, for
DUPLICATE_WINDOW_S, not a second challenge or an "expired challenge" refusal of a write that was made. No
sockets here: the UDP protocol hands in datagrams and sends what the returned future yields.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

from resolver.admin.handler import ANSWER_LIFETIME_S, AdminService, Caller
from resolver.handle.constants import EnvelopeFlag, ResponseCode
from resolver.handle.errors import HandleProtocolError
from resolver.handle.message import encode_error_answer

DUPLICATE_WINDOW_S = 30.0  #: a client re-sends within its own timeout; its duplicate gets the first answer
MAX_REMEMBERED = 4096  #: datagrams (answered or under way) remembered per worker for their duplicates
MANY_MESSAGES = "the answer takes {n} messages (continuations), more than UDP carries: ask over TCP"
_TC = int(EnvelopeFlag.TC)


class AdminDatagrams:
    def __init__(self, admin: AdminService, clock: Callable[[], float] = time.monotonic):
        self.admin = admin
        self.clock = clock
        # (address, port, digest of the datagram) -> (when first seen, its answer: b"" = none)
        self._recent: OrderedDict[tuple[str, int, bytes], tuple[float, asyncio.Future[bytes]]] = OrderedDict()

    def answer(self, data: bytes, source: tuple) -> asyncio.Future[bytes]:
        """The answer to one whole administrative message from `source` (address, port, ...), as a future;
        b"" when nothing is to be sent."""
        now = self.clock()
        self._forget(now)
        key = (str(source[0]), int(source[1]), hashlib.blake2b(data, digest_size=16).digest())
        known = self._recent.get(key)
        if known is not None:
            return known[1]
        caller = Caller(str(source[0]), int(source[1]), "udp")
        future = asyncio.ensure_future(self._answer(data, caller))
        self._recent[key] = (now, future)
        return future

    async def _answer(self, data: bytes, caller: Caller) -> bytes:
        answers = await self.admin.answer(data, caller)
        if not answers:
            return b""
        if len(answers) == 1:
            return answers[0]
        error = HandleProtocolError(MANY_MESSAGES.format(n=len(answers)), ResponseCode.ERROR)
        answer = encode_error_answer(data, error, int(time.time()) + ANSWER_LIFETIME_S)
        if answer is None:
            return b""
        return answer[:2] + bytes((answer[2] | _TC,)) + answer[3:]

    def _forget(self, now: float) -> None:
        recent = self._recent
        while recent:
            first_key, (seen, _) = next(iter(recent.items()))
            if now - seen < DUPLICATE_WINDOW_S and len(recent) < MAX_REMEMBERED:
                return
            recent.popitem(last=False)
