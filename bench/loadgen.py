"""The load generator of ``idnode bench udp|tcp|dns|http``: how many resolutions per second a node answers, and
how fast, over Handle UDP, Handle TCP, the DNS view (UDP) or the REST API (HTTP/1.1).

This module is the entry and the parent: it checks the :class:`LoadSpec`, starts the generator processes
(spawned; each with its own pre-encoded request pool and its own sockets, so SO_REUSEPORT spreads the source
ports over the server's workers), says go when all are ready, prints live progress, measures the server's CPU
over the measured period, and merges the processes' reports into one result dict. The parts, one job each, are
in bench/load/ (its __init__ lists them).

- Closed loop (default): ``window`` requests outstanding per socket or connection.
- Open loop (``rate``): requests sent on a fixed schedule whatever the answers do; latency is measured from
  the time each request was due, so a stall is charged to every request it delayed (no coordinated omission).
- Bounded by ``duration_s`` measured seconds or by ``count`` measured answers; the ``warmup_s`` before is not
  counted. A request unanswered after ``timeout_s`` counts as lost.
- A seeded mix of existing identifiers (uniform, or Zipf by rank) and an exact share of missing ones, whose
  expected answer (HANDLE_NOT_FOUND, NXDOMAIN, HTTP 404) is counted as ``not_found``, not as an error.

::

    from bench.loadgen import DatasetSpec, LoadSpec, run_load, format_result
    result = run_load(LoadSpec("udp", "127.0.0.1", 2641, DatasetSpec(1_000_000, seed=1), duration_s=10))
    print(format_result(result))

or ``idnode bench udp --server 127.0.0.1:2641 --dataset-count 1000000 --seed 1``. Every run stops by itself and
only ever sends to the one address it is given. Imports nothing of the server.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import time
from collections.abc import Callable, Sequence

from bench.load.plot import plot_result
from bench.load.report import format_result, merge, percentiles, progress_line
from bench.load.requests import request_pool
from bench.load.spec import DEFAULT_POOL_SIZE, REQUEST_TIMEOUT_S, DatasetSpec, LoadGenError, LoadSpec
from bench.load.worker import READY_TIMEOUT_S, ProcessPlan, process_main
from bench.procstat import all_process_ticks, descendants, machine_ticks, tree_ticks

__all__ = [
    "DatasetSpec",
    "LoadGenError",
    "LoadSpec",
    "format_result",
    "percentiles",
    "plot_result",
    "request_pool",
    "run_load",
    "run_udp_load",
]

REPORT_GRACE_S = 30.0  #: how long past the planned end the parent waits for a report before giving up
OTHER_LOAD_REPORTED = 0.02  #: cores; another process this busy while we measure makes the figures suspect


class _CpuWatch:
    """CPU ticks of the server, of every process and of the whole machine between :meth:`start` and :meth:`stop`."""

    def __init__(self, server_pids: Sequence[int]) -> None:
        self.server_pids = list(server_pids)
        self.started = 0.0

    def start(self) -> None:
        self._server = {pid: tree_ticks(pid) for pid in self.server_pids}
        self._everyone = all_process_ticks()
        self._machine = machine_ticks()
        self.started = time.monotonic()

    def stop(self, ours: set[int]) -> dict:
        server = {pid: tree_ticks(pid) for pid in self.server_pids}
        everyone = all_process_ticks()
        machine = machine_ticks()
        seconds = max(time.monotonic() - self.started, 1e-9)
        hz = os.sysconf("SC_CLK_TCK")
        for pid in self.server_pids:
            ours |= descendants(pid)
        busy = []
        for pid, (name, ticks) in everyone.items():
            share = (ticks - self._everyone.get(pid, (name, 0))[1]) / hz / seconds
            if pid not in ours and share >= OTHER_LOAD_REPORTED:
                busy.append({"pid": pid, "name": name, "cpu": round(share, 3)})
        return {
            "server_cpu": (
                {str(pid): round((server[pid] - self._server[pid]) / hz / seconds, 3) for pid in self.server_pids}
                if self.server_pids else None
            ),
            "other_load": sorted(busy, key=lambda b: -b["cpu"]),
            # Everything the CPUs did meanwhile, in cores: generator + server + kernel softirq + whoever else.
            "machine_busy": {"cores": round((machine[0] - self._machine[0]) / hz / seconds, 3), "of": os.cpu_count()},
        }  # fmt: skip


def _collect(
    workers: list, spec: LoadSpec, watch: _CpuWatch, progress: Callable[[str], None] | None
) -> list[dict]:
    """Reports of every process; progress printed as it comes, the CPU watch started when the warm-up ends."""
    started = time.monotonic()
    warm_end = started + spec.warmup_s
    deadline = warm_end + spec.duration_s + REPORT_GRACE_S
    waiting = {conn: process for process, conn in workers}
    snapshots: dict[int, dict] = {}
    reports = []
    while waiting:
        now = time.monotonic()
        if not watch.started and now >= warm_end:
            watch.start()
        if now > deadline:
            names = ", ".join(p.name for p in waiting.values())
            raise LoadGenError(f"{names} did not report within {REPORT_GRACE_S:g} s of the end")
        wake = deadline if watch.started else min(deadline, warm_end)
        for conn in multiprocessing.connection.wait(list(waiting), timeout=max(0.0, wake - now)):
            try:
                kind, payload = conn.recv()
            except EOFError:
                raise LoadGenError(f"{waiting[conn].name} died without a report") from None
            if kind == "error":
                raise LoadGenError(f"{waiting[conn].name} failed:\n{payload}")
            if kind == "result":
                reports.append(payload)
                del waiting[conn]
            elif kind == "progress":
                snapshots[payload["index"]] = payload
                # One line a second: when process 0 reports, with everyone's latest figures.
                if progress is not None and payload["index"] == 0 and len(snapshots) == spec.processes:
                    progress(progress_line(spec.protocol, snapshots))
    if not watch.started:
        watch.start()  # every process stopped early (count reached in no time): an empty interval
    return reports


def run_load(
    spec: LoadSpec, server_pids: Sequence[int] = (), progress: Callable[[str], None] | None = None,
    stop=None, raw: bool = False,
) -> dict:  # fmt: skip
    """Run ``spec`` and return the merged result. ``server_pids``: processes (and their children) whose CPU share
    over the measured period goes into the result as ``server_cpu`` (1.0 = one core busy). ``progress``: called
    with a line of live figures about once a second. ``stop``: an event of the spawn context
    (``multiprocessing.get_context("spawn").Event()``) another thread may set to end the measurement early (the
    processes see it within a second). ``raw``: also return each process's own report (raw latencies in arrival
    order, timeline, ``measure_start_ns``) as ``process_reports``, for callers that cut the run into periods."""
    spec.check()
    plans = [ProcessPlan(spec, index, *spec.share(index)) for index in range(spec.processes)]
    # spawn, not fork: the caller may hold threads, an event loop or an LMDB environment.
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    workers = []
    watch = _CpuWatch(server_pids)
    try:
        for plan in plans:
            parent_end, child_end = ctx.Pipe(duplex=False)
            process = ctx.Process(
                target=process_main,
                args=(plan, child_end, go, stop),
                name=f"loadgen-{plan.index}",
                daemon=True,
            )
            process.start()
            child_end.close()
            workers.append((process, parent_end))
        for process, conn in workers:
            if not conn.poll(READY_TIMEOUT_S):
                raise LoadGenError(f"{process.name} did not get ready in {READY_TIMEOUT_S:g} s")
            kind, payload = conn.recv()
            if kind == "error":
                raise LoadGenError(f"{process.name} failed:\n{payload}")
        go.set()
        reports = _collect(workers, spec, watch, progress)
        cpu = watch.stop({os.getpid(), *(p.pid for p, _ in workers)})
        for process, _ in workers:
            process.join(REPORT_GRACE_S)
    except EOFError as exc:
        raise LoadGenError("a generator process died without a report") from exc
    finally:
        for process, conn in workers:
            if process.is_alive():
                process.terminate()
            process.join()
            conn.close()
    result = merge(reports, spec, cpu["server_cpu"], cpu["other_load"])
    result["machine_busy"] = cpu["machine_busy"]
    if raw:
        result["process_reports"] = sorted(reports, key=lambda r: r["index"])
    return result


def run_udp_load(
    host: str,
    port: int,
    handles: Sequence[str] | DatasetSpec,
    duration_s: float = 10.0,
    warmup_s: float = 2.0,
    processes: int = 1,
    sockets_per_process: int = 64,
    window: int = 4,
    missing_ratio: float = 0.0,
    seed: int = 1,
    *,
    timeout_s: float = REQUEST_TIMEOUT_S,
    pool_size: int = DEFAULT_POOL_SIZE,
    server_pids: Sequence[int] = (),
) -> dict:
    """The closed-loop Handle UDP run of :func:`run_load`, with the arguments it always had (bench/compare.py and
    bench/scale.py call it so)."""
    spec = LoadSpec(
        "udp", host, port, handles, duration_s=duration_s, warmup_s=warmup_s, processes=processes,
        sockets=sockets_per_process, window=window, missing_ratio=missing_ratio, seed=seed, timeout_s=timeout_s,
        pool_size=pool_size,
    )  # fmt: skip
    return run_load(spec, server_pids)
