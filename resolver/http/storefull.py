"""A full disk, in the HTTP API: every write refused for want of room (storage's StoreFullError) answers 507 with
a message saying so, and the log gets one line per episode, not one per request: the first refusal starts the
episode (`store_full`, error), the next write that succeeds ends it (`store_writable`, warning). The episode
is the node's, kept in the memory its workers share, so N workers log it once too.
"""

from __future__ import annotations

import logging

from resolver.handle.constants import ResponseCode
from resolver.http.common import HttpError
from resolver.server.shared import SharedMemory
from storage.store import StoreFullError

log = logging.getLogger(__name__)

INSUFFICIENT_STORAGE = 507  #: RFC 4918 §11.5: the server cannot store what the request needs
STORE_FULL_MESSAGE = "the node's disk is full: nothing of this request was stored; try again later"
_SINCE_BYTES = 1  # the episode flag: one byte of shared memory, 0 = writes succeed


class StoreFullEpisodes:
    def __init__(self, memory: SharedMemory):
        self.memory = memory
        self._flag = memory.segment("store-full", _SINCE_BYTES)

    @property
    def ongoing(self) -> bool:
        return self._flag[0] != 0

    def refused(self, exc: StoreFullError) -> HttpError:
        """A write refused for want of room: the error to answer, after logging it if it starts an episode."""
        if not self.ongoing:
            with self.memory.lock():
                starts = not self.ongoing
                self._flag[0] = 1
            if starts:
                log.error(
                    "writes refused: the disk is full (%s); logged again when a write succeeds", exc,
                    extra={"event": "store_full"},
                )  # fmt: skip
        return HttpError(INSUFFICIENT_STORAGE, ResponseCode.ERROR, STORE_FULL_MESSAGE)

    def written(self) -> None:
        """A write succeeded: ends an episode (one line); costs one byte read otherwise."""
        if not self.ongoing:
            return
        with self.memory.lock():
            ends = self.ongoing
            self._flag[0] = 0
        if ends:
            log.warning("writes succeed again after the disk was full", extra={"event": "store_writable"})
