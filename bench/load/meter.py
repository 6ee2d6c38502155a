"""What one generator process measures, and when it stops: counts by answer code, raw latencies, answers per
interval, the rare events (losses, malformed answers, failed sends, reconnections), and the phases: warm-up (thrown
away), measurement, end by duration or by count, a report of progress about once a second.

The hot loops (datagram.py, stream.py) append to :attr:`Meter.latencies` and count into :attr:`Meter.codes`
through local names, and call :meth:`Meter.advance` only when the time it asked for has come or the count bound
is reached, so none of this costs anything per answer. Imports nothing of the server.
"""

from __future__ import annotations

import array
import os
import sys
import time
from collections.abc import Callable

from bench.load.schedule import Schedule

TIMELINE_INTERVAL_S = 0.5  #: answers are also counted per interval of this length, to show stalls and drift
PROGRESS_INTERVAL_S = 1.0  #: how often a process reports its counts so far to the parent
_RARE = ("lost", "late", "malformed", "send_errors", "receive_errors", "reconnects")
_NS = 1_000_000_000


class Meter:
    """Counts of one process. ``stop_after`` is the count bound (answers) once measuring, else effectively none:
    :meth:`advance` ends the run once ``len(latencies)`` reaches it."""

    __slots__ = (
        "_cpu_start", "_end", "_index", "_next_progress", "_next_tick", "_parent", "_progress", "_sent_start",
        "_should_stop", "_timeline", "_warm_end", "codes", "count", "duration_ns", "late", "latencies", "lost", "malformed",
        "measure_start", "measuring", "receive_errors", "reconnects", "send_errors", "send_lag_max_ns",
        "stop_after", "stopped_by", "warmup_ns",
    )  # fmt: skip

    def __init__(
        self, index: int, warmup_s: float, duration_s: float, count: int | None,
        progress: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
    ) -> None:  # fmt: skip
        self._index = index
        self._should_stop = should_stop  #: asked at each progress report: the parent may end the run early
        self.warmup_ns = int(warmup_s * _NS)
        self.duration_ns = int(duration_s * _NS)
        self.count = count
        self._progress = progress
        self.latencies = array.array("q")  #: ns from (scheduled) send to answer, in arrival order
        self.codes: dict[int, int] = {}  #: raw answer code -> answers
        self.lost = self.late = self.malformed = self.send_errors = self.receive_errors = self.reconnects = 0
        self.send_lag_max_ns = 0  #: open loop: the furthest a send fell behind its schedule
        self.measuring = False
        self.stop_after = sys.maxsize
        self.stopped_by = ""
        self._timeline: list[int] = []
        self._parent = os.getppid()
        self._sent_start = 0
        self.measure_start = self._warm_end = self._end = self._next_tick = self._next_progress = 0
        self._cpu_start = 0.0

    def start(self, now: int) -> tuple[int, int]:
        """The clock starts (the warm-up begins); returns when :meth:`advance` wants to be called, and the count
        bound as it stands."""
        self._warm_end = now + self.warmup_ns
        self._next_progress = now + int(PROGRESS_INTERVAL_S * _NS)
        self.measure_start = now
        self._cpu_start = time.process_time()
        if self.warmup_ns <= 0:
            self._begin_measuring(now, 0)
        return self._next_event(), self.stop_after

    def _begin_measuring(self, now: int, sent: int) -> None:
        # Forget the warm-up: everything counted from here on is the measurement.
        self.measuring = True
        self.measure_start = now
        self._end = now + self.duration_ns
        self._next_tick = now + int(TIMELINE_INTERVAL_S * _NS)
        self._cpu_start = time.process_time()
        self._sent_start = sent
        del self.latencies[:]
        self.codes.clear()
        for name in _RARE:
            setattr(self, name, 0)
        self.send_lag_max_ns = 0
        if self.count is not None:
            self.stop_after = self.count

    def _next_event(self) -> int:
        if not self.measuring:
            return min(self._warm_end, self._next_progress)
        return min(self._end, self._next_tick, self._next_progress)

    def event(self, now: int, sent: int) -> int:
        """Phase changes, timeline ticks and progress reports due by ``now``; ``sent``: requests sent so far.
        Returns when to be called next, or 0 when the run is over."""
        if now >= self._next_progress:
            self._next_progress = now + int(PROGRESS_INTERVAL_S * _NS)
            if os.getppid() != self._parent:
                self.stopped_by = "parent gone"  # killed: nobody will read the figures
                return 0
            if self._should_stop is not None and self._should_stop():
                self.stopped_by = "stopped"  # the parent's word: what was measured so far is the result
                return 0
            if self._progress is not None:
                self._progress(self.snapshot(now))
        if not self.measuring and now >= self._warm_end:
            self._begin_measuring(now, sent)
        if self.measuring:
            if now >= self._next_tick:  # before the end: the last interval ends with the run
                self._next_tick += int(TIMELINE_INTERVAL_S * _NS)
                self._timeline.append(len(self.latencies))
            if now >= self._end:
                self.stopped_by = "duration"
                return 0
        return self._next_event()

    def advance(self, now: int, sent: int) -> tuple[int, int]:
        """After a batch of answers: stop at the count bound, else :meth:`event`. Returns when to be called next
        (0: the run is over) and the count bound as it now stands."""
        if len(self.latencies) >= self.stop_after:
            self.stopped_by = "count"
            return 0, self.stop_after
        return self.event(now, sent), self.stop_after

    def due_sends(self, schedule: Schedule, now: int) -> list[int]:
        """The open loop's requests due by ``now``; notes how far behind its time the oldest of them goes out."""
        due = schedule.take_due(now)
        if due and now - due[0] > self.send_lag_max_ns:
            self.send_lag_max_ns = now - due[0]
        return due

    def snapshot(self, now: int) -> dict:
        return {
            "index": self._index,
            "measuring": self.measuring,
            "elapsed_s": (now - self.measure_start) / _NS,
            "answers": len(self.latencies),
            "codes": dict(self.codes),
            "lost": self.lost,
        }

    def result(self, now: int, sent: int, outstanding: int, unsent: int = 0) -> dict:
        """The figures of the measured period (the raw latencies as bytes: the parent merges them)."""
        timeline = self._timeline
        return {
            "index": self._index,
            "elapsed_s": (now - self.measure_start) / _NS if self.measuring else 0.0,
            # perf_counter_ns is CLOCK_MONOTONIC on Linux, the same clock in every process: the parent can place
            # the timeline's intervals against its own events (bench/writeplane_load.py).
            "measure_start_ns": self.measure_start if self.measuring else 0,
            "cpu_s": time.process_time() - self._cpu_start,
            "sent": sent - self._sent_start if self.measuring else 0,
            "answers": len(self.latencies) if self.measuring else 0,
            "codes": dict(self.codes) if self.measuring else {},
            **{name: getattr(self, name) for name in _RARE},
            "outstanding": outstanding,
            "unsent": unsent,
            "send_lag_max_us": round(self.send_lag_max_ns / 1000, 1),
            "stopped_by": self.stopped_by,
            "latencies_ns": self.latencies.tobytes() if self.measuring else b"",
            "timeline": [b - a for a, b in zip([0, *timeline], timeline, strict=False)],
        }
