"""When the loops send and how they wait. Open loop: request n of a process is due at ``start + n / rate``,
whatever the answers do, and the loop sleeps until the next one is due or an answer arrives, whichever comes
first. Closed loop: the loop sleeps until an answer arrives (or a short interval passes, to look at the clock).

A latency in the open loop is measured from the time a request was *due*, not from when it left: when the
server (or the generator) stalls, the requests that should have gone out meanwhile are charged the stall, as
their users would have been. Measuring from the actual send would hide it (coordinated omission: the
generator would quietly wait for the server and report only the fast answers). Imports nothing of the server.
"""

from __future__ import annotations

import select
import time

_NS = 1_000_000_000
TIMEOUT_SCAN_NS = 50_000_000  #: how often a loop looks for requests older than the timeout (0.05 s)
POLL_INTERVAL_S = 0.01  #: the longest an idle closed loop sleeps before it looks at the clock again
_EPOLL_RESOLUTION_NS = 1_000_000  #: epoll waits in whole milliseconds; shorter waits go through select()


class Schedule:
    """Due times of one process's requests at ``rate_per_s``, from ``start_ns`` on."""

    __slots__ = ("_interval_ns", "_start_ns", "scheduled", "next_ns")

    def __init__(self, rate_per_s: float, start_ns: int) -> None:
        self._interval_ns = _NS / rate_per_s
        self._start_ns = start_ns
        self.scheduled = 0  #: requests taken so far
        self.next_ns = start_ns  #: when the next request is due

    def take(self) -> int:
        """The due time of the next request; the schedule moves on to the one after it."""
        due = self.next_ns
        self.scheduled += 1
        # From the start each time, not by adding the interval up: no drift from rounding.
        self.next_ns = self._start_ns + int(self.scheduled * self._interval_ns)
        return due

    def take_due(self, now_ns: int) -> list[int]:
        """The due times of every request due by ``now_ns`` (none when the next one is still to come)."""
        due = []
        while self.next_ns <= now_ns:
            due.append(self.take())
        return due


def wait(poller: select.epoll, timeout_ns: int) -> list[tuple[int, int]]:
    """The ready descriptors of ``poller``, waiting at most ``timeout_ns``. epoll alone rounds a wait up to a
    whole millisecond, which would send a 2,000/s schedule in bursts; select() on the epoll descriptor itself
    waits to the microsecond."""
    if timeout_ns <= 0:
        return poller.poll(0)
    if timeout_ns >= _EPOLL_RESOLUTION_NS:
        return poller.poll((timeout_ns // _EPOLL_RESOLUTION_NS) / 1000)
    readable, _, _ = select.select([poller], [], [], timeout_ns / _NS)
    return poller.poll(0) if readable else []


def ready_events(
    poller: select.epoll, schedule: Schedule | None, *deadlines_ns: int
) -> list[tuple[int, int]]:
    """What a loop has to read next. Closed loop (no schedule): whatever is ready within POLL_INTERVAL_S. Open
    loop: whatever arrives before the next request is due or the earliest of ``deadlines_ns``."""
    if schedule is None:
        return poller.poll(POLL_INTERVAL_S)
    return wait(poller, min(schedule.next_ns, *deadlines_ns) - time.perf_counter_ns())
