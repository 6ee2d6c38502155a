"""The idle timeout of a stream connection (Handle TCP, DNS TCP): a connection silent for too long is closed.

One timer per connection, re-armed for the remainder when it fires, rather than a new timer per read.
"""

from __future__ import annotations

import asyncio


class IdleTimeout:
    __slots__ = ("transport", "timeout_s", "last_activity", "_timer")

    def __init__(self, transport: asyncio.BaseTransport, timeout_s: float):
        loop = asyncio.get_running_loop()
        self.transport = transport
        self.timeout_s = timeout_s
        self.last_activity = loop.time()
        self._timer: asyncio.TimerHandle | None = loop.call_later(timeout_s, self._check)

    def touch(self) -> None:
        """The peer sent something."""
        self.last_activity = asyncio.get_running_loop().time()

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        remaining = self.last_activity + self.timeout_s - loop.time()
        if remaining <= 0:
            self._timer = None
            self.transport.close()
        else:
            self._timer = loop.call_later(remaining, self._check)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
