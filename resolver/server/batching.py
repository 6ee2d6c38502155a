"""What the UDP listeners (Handle and DNS) share: datagrams that arrive in one event-loop iteration form a
batch, answered from one read transaction and one clock reading.

The read transaction is renewed when a batch starts, not after it, so an answer reflects every write committed
before its request arrived, even on a worker that was idle when the write happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class BatchedDatagramProtocol(asyncio.DatagramProtocol):
    def __init__(self, renew_view: Callable[[], None]):
        self.renew_view = renew_view
        self._batch_pending = False
        self._now = 0.0  # loop time at the start of the batch: precise enough for the rate limit

    def _start_batch(self) -> None:
        """Call when a datagram arrives and `_batch_pending` is false (checked inline: it is the hot path)."""
        self._batch_pending = True
        self.renew_view()
        loop = asyncio.get_running_loop()
        self._now = loop.time()
        loop.call_soon(self._end_batch)

    def _end_batch(self) -> None:
        self._batch_pending = False

    def start_batch_at(self, now: float) -> None:
        """For a listener that reads its socket itself (resolver/server/udp_batch.py): one renewed view and one
        clock reading for the datagrams of one readiness event, as `_start_batch` gives one loop iteration."""
        self.renew_view()
        self._now = now
