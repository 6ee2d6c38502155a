"""Resolution while a serving node writes (issue 12, items 1 and 7): does a bulk load or a stream of HTTP batches
into a node slow its answers or lose requests?

One run of a case: a fresh copy of a store of ``--store-count`` identifiers is served by ``idnode serve
--workers 1`` pinned to ``--server-cpu`` (its writer with it); an open-loop Handle UDP stream at ``--rate``
requests/s (bench/load, pinned to ``--client-cpu``) asks for random identifiers of the store for the whole run.
After ``--idle-s`` seconds of nothing but the stream, the writes start:

- ``load``: ``idnode load`` of ``--load-count`` new identifiers (``idnode gen --seed SEED+1``), which goes through
  the node's writer at the loader's documented nice level (10; ``--loader-nice`` to change), on every CPU;
- ``batches``: ``--batches`` POSTs of ``--batch-size`` (2,000) new identifiers to ``/api/batch``, ``--batch-clients``
  at a time, each sent the moment the last one of its client was answered (full speed), from the client CPU.

The stream goes on ``--after-s`` seconds after the writes ended. Every answer's latency (from the time its
request was due: no coordinated omission) is placed by its arrival in 0.5 s intervals; an interval that overlaps
the writes counts for the writing period, the ones wholly before for the idle period, after for the after period.
Reported per period: answers, p50/p90/p99/p99.9/max, and for the run: requests lost (unanswered after 1 s),
the writes' rate, the CPU the worker, the writer and the loader used while writing. The target (issue 12):
p99 while writing at most ``P99_TARGET_RATIO`` x the idle p99 of the same run, and no request lost.

    python -m bench.writeplane_load --store-count 1000000 --load-count 1000000 --cases load,batches --repeat 3

Writes ``--out``/NAME.json (every run, settings, machine), NAME.md (the table) and NAME.png (p99 per interval
with the writing period marked). ``--tree DIR`` serves and loads with another checkout of idnode (its own
``resolver``/``storage`` packages, this venv). Bounded: every wait has a limit, every process started is
stopped by PID, traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import multiprocessing
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from bench.compare import wait_for_quiet
from bench.http_batch import BATCH_SIZE, make_bodies, post_all
from bench.load.meter import TIMELINE_INTERVAL_S
from bench.load.report import percentiles
from bench.loadgen import DatasetSpec, LoadSpec, run_load
from bench.procstat import descendants, listening_ports, machine_ticks, process_ticks, tree_ticks
from bench.wire_latency import SAMPLE_MASK, WireLatency, period_stats, usable
from resolver.server.sockets import free_udp_tcp_port

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_WORKDIR = Path("/var/tmp/idnode-writeplane")
RATE_PER_S = 20_000  #: the stream of issue 12's first measurement; about a fifth of what one worker answers
IDLE_S = 10.0  #: the idle period of the same stream that the writing period is held against
AFTER_S = 3.0  #: the stream goes on this long after the writes: does the node settle at once?
WARMUP_S = 2.0  #: the stream's first seconds, not measured (sockets, page cache)
STREAM_FIFO_PRIORITY = 10  #: --stream-fifo: low among real-time priorities, above every normal process
P99_TARGET_RATIO = 2.0  #: issue 12: p99 while writing at most twice the idle p99 of the same run
START_TIMEOUT_S = 120.0  #: a node opens a store and binds its ports well within this
WRITES_TIMEOUT_S = 1800.0  #: a 20M load into a serving node takes minutes, never half an hour
GENERATOR_READY_TIMEOUT_S = 90.0  #: the stream's process builds its pool of requests and says go within this
QUIET_WAIT_S = 120.0  #: before each run, wait at most this for the machine to be nearly idle (bench.compare)
STOP_TIMEOUT_S = 30.0  #: a node stops (writes its counts) within this, else it is killed
BATCH_PREFIX = "88.200"  #: the batches' identifiers go under BATCH_PREFIX.1, outside the node's 88.100
BYTES_PER_NDJSON_LINE = 560  #: upper bound of a generated line, for the disk check
BYTES_PER_STORED_ID = 300  #: the store's target, for the disk check
DISK_MARGIN_BYTES = 2 << 30  #: room left over after the run
CASES = ("load", "batches")
_NS = 1_000_000_000


class WriteplaneBenchError(Exception):
    """The run cannot start or went wrong; the message says what to do."""


def make_stream_real_time(node_pid: int, others: frozenset[int] = frozenset()) -> None:
    """Every thread of the stream's generator processes (this process's children, not the node's) under
    SCHED_FIFO: with two CPUs the instrument shares one with the write plane, and a stream that waits for the
    CPU there counts its own delay against the node (latency is measured from when a request was due)."""
    node = descendants(node_pid)
    for pid in descendants(os.getpid()) - node - {os.getpid()} - others:  # others: the wire capture
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"multiprocessing.spawn" not in cmdline or b"resource_tracker" in cmdline:
                continue
            for tid in os.listdir(f"/proc/{pid}/task"):
                os.sched_setscheduler(int(tid), os.SCHED_FIFO, os.sched_param(STREAM_FIFO_PRIORITY))
        except OSError as exc:
            raise WriteplaneBenchError(f"--stream-fifo: cannot make the stream real-time: {exc}") from exc


# --- the trees, the data ---------------------------------------------------------------------------------------


def idnode(tree: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "resolver.cli", *args]


def tree_env(tree: Path) -> dict[str, str]:
    """The environment that makes `python -m resolver.cli` run `tree`'s code (its cwd is `tree` too)."""
    return {**os.environ, "PYTHONPATH": str(tree)}


def run_cli(tree: Path, *args: str, timeout_s: float = WRITES_TIMEOUT_S) -> subprocess.CompletedProcess:
    out = subprocess.run(idnode(tree, *args), cwd=tree, env=tree_env(tree), capture_output=True, text=True,
                         timeout=timeout_s, check=False)  # fmt: skip
    if out.returncode:
        raise WriteplaneBenchError(
            f"idnode {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-2000:]}"
        )
    return out


def check_disk(workdir: Path, store_count: int, load_count: int) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    # the pristine store and its copy, the load's input, the copy grown by the load
    need = (store_count * 3 + load_count) * BYTES_PER_STORED_ID + load_count * BYTES_PER_NDJSON_LINE
    need += DISK_MARGIN_BYTES
    free = shutil.disk_usage(workdir).free
    if free < need:
        raise WriteplaneBenchError(
            f"{workdir} has {free / 1e9:.1f} GB free; the run needs {need / 1e9:.1f} GB: pass --workdir on a "
            "larger disk or smaller counts"
        )


def generated(tree: Path, path: Path, count: int, seed: int, log) -> Path:
    """`idnode gen` output, reused when a file of these settings is there already (a stamp beside it says so)."""
    stamp = path.with_suffix(".json")
    wanted = {"count": count, "seed": seed}
    if path.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return path
    log(f"generating {count:,} identifiers (seed {seed}) into {path}")
    run_cli(tree, "gen", "--count", str(count), "--seed", str(seed), "-o", str(path))
    stamp.write_text(json.dumps(wanted))
    return path


def pristine_store(tree: Path, workdir: Path, count: int, seed: int, log) -> Path:
    """A store of `count` identifiers loaded with `tree`'s loader (no node serving it), kept for the next run."""
    store = workdir / f"store-{count}-{seed}-{tree.name}"
    stamp = store.with_suffix(".json")
    wanted = {"count": count, "seed": seed, "tree": str(tree)}
    if store.exists() and stamp.exists() and json.loads(stamp.read_text()) == wanted:
        return store
    shutil.rmtree(store, ignore_errors=True)
    ndjson = generated(tree, workdir / f"ids-{count}-{seed}.ndjson", count, seed, log)
    log(f"loading {count:,} identifiers into {store}")
    run_cli(tree, "load", "--quiet", "--data", str(store), str(ndjson))
    stamp.write_text(json.dumps(wanted))
    return store


def fresh_copy(pristine: Path, dest: Path) -> Path:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(pristine, dest)
    return dest


# --- the node ------------------------------------------------------------------------------------------------


class Node:
    """`idnode serve --workers 1` on a store, pinned to one CPU, with Handle UDP/TCP and HTTP on free ports."""

    def __init__(
        self, tree: Path, store: Path, cpu: int | None, log_path: Path, write_cpu: int | None = None,
        http_workers: int = 0,
    ):  # fmt: skip
        """`write_cpu`: the node's core budget (`--worker-cpus cpu --writer-cpus write_cpu`, and the HTTP
        workers' `--http-cpus write_cpu`); without it the whole node, writer included, is pinned to `cpu`.
        `http_workers`: processes serving HTTP alone (the worker then answers Handle only)."""
        self.store = store
        self.handle_port = free_udp_tcp_port("127.0.0.1")
        self.http_port = free_udp_tcp_port("127.0.0.1")
        argv = idnode(tree, "serve", "--data", str(store), "--bind", "127.0.0.1", "--handle-port",
                      str(self.handle_port), "--http-port", str(self.http_port), "--workers", "1")  # fmt: skip
        if http_workers:
            argv += ["--http-workers", str(http_workers)]
        if write_cpu is not None:
            argv += ["--worker-cpus", str(cpu), "--writer-cpus", str(write_cpu)]
            argv += ["--http-cpus", str(write_cpu)] if http_workers else []
        elif cpu is not None:
            argv = ["taskset", "-c", str(cpu), *argv]
        self.argv = argv
        self._log = log_path.open("w")
        self.process = subprocess.Popen(argv, cwd=tree, env=tree_env(tree), stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.log_path = log_path

    def wait_ready(self, probe_handle: str, writer: bool) -> None:
        """Ready: the worker answers an identifier over HTTP and (when `writer`) the writer's socket accepts."""
        deadline = time.monotonic() + START_TIMEOUT_S
        url = f"http://127.0.0.1:{self.http_port}/api/handles/{probe_handle}"
        sock_path = self.store / "writer.sock"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    http_ok = resp.status == 200
            except OSError:
                http_ok = False
            if http_ok and (not writer or _accepts(sock_path)):
                return
            time.sleep(0.1)
        raise WriteplaneBenchError(f"idnode serve did not get ready; see {self.log_path}")

    def roles(self) -> dict[str, list[int]]:
        """PIDs of the node's processes by role: supervisor, writer (named idnode-writer), the worker that
        resolves, and HTTP workers (those listening on the HTTP port alone)."""
        pids = descendants(self.process.pid) - {self.process.pid}
        roles: dict[str, list[int]] = {"supervisor": [self.process.pid], "writer": [], "worker": [], "http": []}
        for pid in sorted(pids):
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if name == "idnode-writer":
                roles["writer"].append(pid)
            else:
                http_only = listening_ports(pid) == {("tcp", self.http_port)}
                roles["http" if http_only else "worker"].append(pid)
        return roles

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: only what it started
                self.process.wait()
        self._log.close()


def _accepts(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(path))
        return True
    except OSError:
        return False


class CpuSampler:
    """CPU ticks of the node's processes by role at named moments, to say who used the CPU in each period; also
    `others`: what the machine did beyond everything this run started (other people's work on a shared
    machine), from /proc/stat less this process tree."""

    def __init__(self, roles: dict[str, list[int]]):
        self.roles = roles
        self.marks: list[tuple[str, float, dict[str, int]]] = []

    def mark(self, name: str) -> None:
        ticks = {role: sum(process_ticks(pid) for pid in pids) for role, pids in self.roles.items()}
        # The loader and the stream are our children too; a process gone meanwhile (the loader) is missed
        # here, so `others` is an upper bound while it ran.
        ticks["others"] = machine_ticks()[0] - tree_ticks(os.getpid())
        # Time the workers were runnable but waited for a CPU (schedstat, ns): a stall from CPU contention shows
        # here, one from waiting on something else (a lock, the disk, the writer) does not.
        ticks["worker_runqueue_ns"] = sum(_runqueue_wait_ns(pid) for pid in self.roles["worker"])
        self.marks.append((name, time.monotonic(), ticks))

    def cores(self, first: str, last: str) -> dict[str, float]:
        """Cores each role used between two marks (1.0 = one CPU busy)."""
        by_name = {name: (at, ticks) for name, at, ticks in self.marks}
        (t0, a), (t1, b) = by_name[first], by_name[last]
        hz = os.sysconf("SC_CLK_TCK")
        seconds = max(t1 - t0, 1e-9)
        out = {
            role: round((b[role] - a[role]) / hz / seconds, 3) for role in a if role != "worker_runqueue_ns"
        }
        out["worker_runqueue_wait_ms_per_s"] = round(
            (b["worker_runqueue_ns"] - a["worker_runqueue_ns"]) / 1e6 / seconds, 2
        )
        return out


def _runqueue_wait_ns(pid: int) -> int:
    """Nanoseconds `pid`'s threads have waited runnable on a run queue (/proc/PID/schedstat, second field)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for task in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total


# --- the periods ----------------------------------------------------------------------------------------------


def periods(reports: list[dict], write_start_ns: int, write_end_ns: int) -> dict[str, dict]:
    """Latency figures of the idle, writing and after periods from the stream's raw reports: each answer is placed
    by its arrival in the timeline's intervals; an interval that overlaps [write_start, write_end] is the
    writing period's (a stall at either edge is charged to the writes)."""
    interval_ns = int(TIMELINE_INTERVAL_S * _NS)
    samples: dict[str, array.array] = {name: array.array("q") for name in ("idle", "writing", "after")}
    seconds = dict.fromkeys(samples, 0.0)
    for report in reports:
        latencies = array.array("q")
        latencies.frombytes(report["latencies_ns"])
        start = report["measure_start_ns"]
        counts = list(report["timeline"])
        counts.append(len(latencies) - sum(counts))  # the answers after the last whole interval
        at = 0
        for i, n in enumerate(counts):
            begin, end = start + i * interval_ns, start + (i + 1) * interval_ns
            if i == len(counts) - 1:
                end = start + int(report["elapsed_s"] * _NS)
            if end <= write_start_ns:
                name = "idle"
            elif begin >= write_end_ns:
                name = "after"
            else:
                name = "writing"
            samples[name].extend(latencies[at : at + n])
            if report["index"] == 0:
                seconds[name] += max(0, end - begin) / _NS
            at += n
    return {name: _figures(values, seconds[name]) for name, values in samples.items()}


def _figures(values: array.array, seconds: float) -> dict:
    ordered = sorted(values)
    points = percentiles(ordered, (50, 90, 99, 99.9))
    ms = 1e6
    if not ordered:
        return {"answers": 0, "seconds": round(seconds, 2)}
    return {
        "answers": len(ordered),
        "seconds": round(seconds, 2),
        "answers_per_s": round(len(ordered) / seconds, 1) if seconds else None,
        "p50_ms": round(points[50] / ms, 3),
        "p90_ms": round(points[90] / ms, 3),
        "p99_ms": round(points[99] / ms, 3),
        "p99.9_ms": round(points[99.9] / ms, 3),
        "max_ms": round(ordered[-1] / ms, 3),
    }


def p99_timeline(reports: list[dict]) -> list[tuple[float, float | None]]:
    """(seconds since the measurement began, p99 ms) of each interval of process 0 (for the chart)."""
    out = []
    for report in reports[:1]:
        latencies = array.array("q")
        latencies.frombytes(report["latencies_ns"])
        at = 0
        for i, n in enumerate(report["timeline"]):
            chunk = sorted(latencies[at : at + n])
            at += n
            p99 = percentiles(chunk, (99,))[99] / 1e6 if chunk else None
            out.append((round((i + 0.5) * TIMELINE_INTERVAL_S, 2), p99))
    return out


# --- one run --------------------------------------------------------------------------------------------------


def run_once(
    case: str, args: argparse.Namespace, pristine: Path, load_file: Path | None, bodies, log
) -> dict:
    """One run of `case` on a fresh copy of the store: the stream, the idle period, the writes, the after period."""
    store = fresh_copy(pristine, args.workdir / "run-store")
    user = secret = None
    if case == "batches":
        run_cli(args.tree, "prefix", "add", f"{BATCH_PREFIX}.1", "--org", "bench", "--outside-node-prefix",
                "--data", str(store))  # fmt: skip
        cred = json.loads(run_cli(args.tree, "prefix", "credential", f"{BATCH_PREFIX}.1", "--json", "--data",
                                  str(store)).stdout)  # fmt: skip
        user, secret = cred["user"], cred["secret"]
    probe = _first_handle(pristine_input(args))
    waited_s = wait_for_quiet(args.quiet_wait_s)  # others' work on a shared machine skews every figure
    node = Node(args.tree, store, args.server_cpu, args.workdir / f"serve-{case}.log", args.write_cpu,
                args.http_workers)  # fmt: skip
    stream_result: dict = {}
    stream_error: list[BaseException] = []
    wire = WireLatency(node.handle_port, args.workdir / "wire.bin", args.client_cpu) if args.wire else None
    wall: dict[str, int] = {}
    stop = multiprocessing.get_context("spawn").Event()
    first_progress = threading.Event()
    try:
        node.wait_ready(probe, writer=True)
        roles = node.roles()
        sampler = CpuSampler(roles)
        spec = LoadSpec(
            "udp", "127.0.0.1", node.handle_port, DatasetSpec(args.store_count, args.seed),
            duration_s=3600.0, warmup_s=WARMUP_S, processes=1, sockets=64, rate=args.rate,
            missing_ratio=args.missing, seed=args.seed,
        )  # fmt: skip

        def started() -> None:
            if not first_progress.is_set() and args.stream_fifo:
                make_stream_real_time(node.process.pid, wire.pids if wire is not None else frozenset())
            first_progress.set()

        def stream() -> None:
            try:
                stream_result.update(run_load(spec, [node.process.pid], lambda _line: started(),
                                              stop=stop, raw=True))  # fmt: skip
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                stream_error.append(exc)
                first_progress.set()

        if wire is not None:
            wire.start()
        thread = threading.Thread(target=stream, name="stream", daemon=True)
        thread.start()
        if not first_progress.wait(GENERATOR_READY_TIMEOUT_S) or stream_error:
            raise WriteplaneBenchError(f"the request stream did not start: {stream_error}")
        time.sleep(WARMUP_S)  # the first progress line comes about a second after go: this passes the warm-up
        sampler.mark("idle")
        wall["idle"] = time.time_ns()
        time.sleep(args.idle_s)
        sampler.mark("write_start")
        write_start_ns = time.perf_counter_ns()
        wall["write_start"] = time.time_ns()
        writes = (
            do_load(args, store, load_file, log)
            if case == "load"
            else do_batches(args, node, user, secret, bodies)
        )
        write_end_ns = time.perf_counter_ns()
        wall["write_end"] = time.time_ns()
        sampler.mark("write_end")
        time.sleep(args.after_s)
        sampler.mark("end")
        stop.set()
        thread.join(GENERATOR_READY_TIMEOUT_S)
        if stream_error or not stream_result:
            raise WriteplaneBenchError(f"the request stream failed: {stream_error}")
    finally:
        stop.set()
        pairs = wire.stop() if wire is not None else []
        node.stop()
    reports = stream_result.pop("process_reports")
    by_period = periods(reports, write_start_ns, write_end_ns)
    idle, writing = by_period["idle"], by_period["writing"]
    ratio = (
        round(writing["p99_ms"] / idle["p99_ms"], 2) if idle.get("p99_ms") and writing.get("p99_ms") else None
    )
    lost = stream_result["lost"]
    errors = sum(stream_result["errors"].values()) if isinstance(stream_result.get("errors"), dict) else 0
    return {
        "case": case,
        "periods": by_period,
        "p99_ratio": ratio,
        "lost": lost,
        "errors": errors,
        "late": stream_result.get("late", 0),
        "target_met": ratio is not None and ratio <= P99_TARGET_RATIO and lost == 0 and errors == 0,
        "writes": writes,
        "cpu_cores": {
            "idle": sampler.cores("idle", "write_start"),
            "writing": sampler.cores("write_start", "write_end"),
            "after": sampler.cores("write_end", "end"),
        },
        "stream": {k: v for k, v in stream_result.items() if k not in ("latency_histogram",)},
        "p99_timeline_ms": p99_timeline(reports),
        "write_window_s": [
            round((write_start_ns - reports[0]["measure_start_ns"]) / _NS, 2),
            round((write_end_ns - reports[0]["measure_start_ns"]) / _NS, 2),
        ],
        "node_argv": " ".join(node.argv),
        "wire": wire_periods(pairs, wall) if wire is not None else None,
        "waited_for_quiet_s": waited_s,
    }


def wire_periods(pairs: list[tuple[int, int]], wall: dict[str, int]) -> dict:
    """The node's share of each answer (bench/wire_latency.py), idle and while writing, and the p99 ratio."""
    idle = period_stats(pairs, wall["idle"], wall["write_start"])
    writing = period_stats(pairs, wall["write_start"], wall["write_end"])
    ratio = (
        round(writing["p99_ms"] / idle["p99_ms"], 2) if idle.get("p99_ms") and writing.get("p99_ms") else None
    )
    return {"idle": idle, "writing": writing, "p99_ratio": ratio}


def tree_state(tree: Path) -> dict:
    """The commit of the tree that served, and whether its files differed from it (others' work in progress)."""

    def git(*argv: str) -> str:
        out = subprocess.run(["git", *argv], cwd=tree, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {"path": str(tree), "commit": git("rev-parse", "--short", "HEAD"), "modified_files": changed}


def pristine_input(args: argparse.Namespace) -> Path:
    return args.workdir / f"ids-{args.store_count}-{args.seed}.ndjson"


def _first_handle(ndjson: Path) -> str:
    with ndjson.open("rb") as f:
        return json.loads(f.readline())["handle"]


def do_load(args: argparse.Namespace, store: Path, load_file: Path | None, log) -> dict:
    """`idnode load` of the load file into the served store, at its documented nice level (or --loader-nice)."""
    assert load_file is not None
    argv = idnode(args.tree, "load", "--quiet", "--data", str(store), str(load_file))
    if args.loader_nice is not None:
        argv += ["--nice", str(args.loader_nice)]
    cpus = args.loader_cpus or (
        str(args.write_cpu)  # the node's writer_cpus, which a load into its store takes by itself
        if args.write_cpu is not None
        else ",".join(str(c) for c in sorted(os.sched_getaffinity(0) | {args.server_cpu}))
    )
    argv = [
        "taskset",
        "-c",
        cpus,
        *argv,
    ]  # this process is pinned to the client CPU: say where the loader runs
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    log(f"loading {args.load_count:,} identifiers into the serving node")
    out = subprocess.run(argv, cwd=args.tree, env=tree_env(args.tree), capture_output=True, text=True,
                         timeout=WRITES_TIMEOUT_S, check=False)  # fmt: skip
    seconds = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        raise WriteplaneBenchError(f"idnode load failed ({out.returncode}):\n{out.stderr[-2000:]}")
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "identifiers": args.load_count,
        "seconds": round(seconds, 2),
        "per_s": round(args.load_count / seconds),
        "loader_cpu_s": round(cpu_s, 2),
        "loader_cores": round(cpu_s / seconds, 3),
        "loader_said": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "",
        "loader_cpus": cpus,
        "loader_nice": args.loader_nice
        if args.loader_nice is not None
        else "default (10 into a served store)",
    }


def do_batches(args: argparse.Namespace, node: Node, user: str, secret: str, bodies: list[bytes]) -> dict:
    """Every batch POSTed to the node, `--batch-clients` at a time, each as soon as its client's last was answered."""
    url = f"http://127.0.0.1:{node.http_port}"
    started = time.perf_counter()
    done, ok, failed = asyncio.run(post_all(url, user, secret, bodies, args.batch_clients))
    seconds = time.perf_counter() - started
    latencies = sorted(latency for _, latency, _ in done)
    return {
        "batches": len(done),
        "batch_size": args.batch_size,
        "clients": args.batch_clients,
        "identifiers": ok,
        "failed": failed,
        "seconds": round(seconds, 2),
        "per_s": round(ok / seconds) if seconds else 0,
        "batch_latency_ms": {
            "p50": round(percentiles(latencies, (50,))[50] * 1000, 1),
            "max": round(latencies[-1] * 1000, 1),
        },
    }


# --- the report ----------------------------------------------------------------------------------------------


def summary(runs: list[dict]) -> dict[str, dict]:
    """Per case: the runs' p99 ratios and losses, and the median run's figures."""
    out = {}
    for case in CASES:
        mine = [r for r in runs if r["case"] == case]
        if not mine:
            continue
        ranked = sorted(mine, key=lambda r: r["p99_ratio"] if r["p99_ratio"] is not None else float("inf"))
        median = ranked[len(ranked) // 2]
        out[case] = {
            "runs": len(mine),
            "p99_ratios": [r["p99_ratio"] for r in mine],
            "lost": [r["lost"] for r in mine],
            "median_run": mine.index(median),
            "target_met_in": sum(r["target_met"] for r in mine),
        }
    return out


def placement(s: dict) -> str:
    http = s.get("http_workers")
    if s.get("write_cpu") is None:
        return f"pinned to CPU {s['server_cpu']}, its writer with it" + (f", {http} HTTP workers" if http else "")
    if http:
        return (f"its worker on CPU {s['server_cpu']} answering Handle alone, its writer, the load and {http} "
                f"HTTP worker(s) on CPU {s['write_cpu']} (a core budget, `--http-workers`)")  # fmt: skip
    return f"its worker on CPU {s['server_cpu']}, its writer and the load on CPU {s['write_cpu']} (a core budget)"


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        f"# Resolution while the node writes ({result['machine'].get('commit', '?')})",
        "",
        f"Command: `{result['command']}`",
        "",
        f"One node (`idnode serve --workers 1`, {placement(s)}), a store of "
        f"{s['store_count']:,} identifiers; an open-loop Handle UDP stream of {s['rate']:,}/s from CPU "
        f"{s['client_cpu']}{' (SCHED_FIFO)' if s.get('stream_fifo') else ''} asks for random ones of them throughout; {s['idle_s']:g} s idle, then the writes, "
        f"then {s['after_s']:g} s after. Target: p99 while writing <= {P99_TARGET_RATIO:g} x idle p99, none lost.",
        "",
        "| case | run | idle p50 / p99 / max ms | writing p50 / p99 / max ms | p99 ratio | after p99 ms | lost | "
        "writes | CPU while writing: worker / writer / loader or HTTP worker | others' CPU idle / writing | "
        "worker's run-queue wait ms/s idle / writing |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, run in enumerate(result["runs"]):
        p = run["periods"]
        w = run["writes"]
        what = f"{w['identifiers']:,} in {w['seconds']} s ({w['per_s']:,}/s)"
        cpu = run["cpu_cores"]["writing"]
        loader = f" / {w['loader_cores']}" if "loader_cores" in w else ""
        loader += f" / HTTP {cpu['http']}" if cpu.get("http") else ""
        lines.append(
            f"| {run['case']} | {n + 1} | {_trio(p['idle'])} | {_trio(p['writing'])} | "
            f"**{run['p99_ratio']}** | {p['after'].get('p99_ms', '-')} | {run['lost']} | {what} | "
            f"{cpu.get('worker')} / {cpu.get('writer')}{loader} | "
            f"{run['cpu_cores']['idle'].get('others')} / {cpu.get('others')} | "
            f"{run['cpu_cores']['idle'].get('worker_runqueue_wait_ms_per_s')} / "
            f"{cpu.get('worker_runqueue_wait_ms_per_s')} |"
        )
    wired = [(n, run["wire"]) for n, run in enumerate(result["runs"]) if run.get("wire")]
    if wired:
        lines += [
            "",
            "The node's own share of each answer, from the wire (`--wire`: kernel timestamps of request and answer "
            "on `lo`, bench/wire_latency.py), without the generator's delays:",
            "",
            "| run | idle p50 / p99 / max ms | writing p50 / p99 / max ms | p99 ratio | answers captured (1 in "
            f"{SAMPLE_MASK + 1}) idle / writing |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {n + 1} | {_trio(w['idle'])} | {_trio(w['writing'])} | **{w['p99_ratio']}** | "
            f"{w['idle'].get('answers', 0):,} / {w['writing'].get('answers', 0):,} |"
            for n, w in wired
        ]
    lines += ["", "Machine: " + ", ".join(f"{k} {v}" for k, v in result["machine"].items() if k != "commit")]
    return "\n".join(lines) + "\n"


def _trio(period: dict) -> str:
    if not period.get("answers"):
        return "-"
    return f"{period['p50_ms']} / {period['p99_ms']} / {period['max_ms']}"


def plot(result: dict, path: Path) -> str:
    """p99 per 0.5 s interval of each run, the writing period shaded. Returns "" or why there is no chart."""
    from bench.load.plot import NO_MATPLOTLIB, pyplot

    plt = pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    runs = result["runs"]
    fig, axes = plt.subplots(len(runs), 1, figsize=(11, 2.6 * len(runs)), dpi=100, squeeze=False)
    for ax, run in zip(axes[:, 0], runs, strict=True):
        points = [(t, v) for t, v in run["p99_timeline_ms"] if v is not None]
        ax.plot([t for t, _ in points], [v for _, v in points], color="C0", linewidth=1)
        ax.axvspan(*run["write_window_s"], color="C3", alpha=0.15, label=f"{run['case']} running")
        ax.set_yscale("log")
        ax.set_ylabel("p99 ms / 0.5 s")
        ax.set_title(f"{run['case']}: p99 ratio {run['p99_ratio']}, lost {run['lost']}", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel("seconds of the stream")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return ""


def write_results(result: dict, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{name}.png"
    note = plot(result, png)
    if note:
        result["chart"] = note
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(
        markdown(result) + ("" if note else f"\n![p99 per interval]({png.name})\n")
    )
    return [out / f"{name}.json", out / f"{name}.md", *([] if note else [png])]


# --- main ------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.writeplane_load", description=__doc__.split("\n\n")[0])
    p.add_argument("--store-count", type=int, default=1_000_000, help="identifiers the node serves")
    p.add_argument("--load-count", type=int, default=1_000_000, help="identifiers `idnode load` adds")
    p.add_argument("--cases", default="load,batches", help="comma-separated: load, batches")
    p.add_argument("--repeat", type=int, default=1, help="runs of each case (alternated)")
    p.add_argument("--rate", type=int, default=RATE_PER_S, help="requests/s of the stream")
    p.add_argument("--missing", type=float, default=0.0, help="share of requests for absent identifiers")
    p.add_argument("--idle-s", type=float, default=IDLE_S)
    p.add_argument("--after-s", type=float, default=AFTER_S)
    p.add_argument("--batches", type=int, default=200, help="batches POSTed in the batches case")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--batch-clients", type=int, default=4)
    p.add_argument(
        "--loader-nice", type=int, default=None, help="`idnode load --nice` (default: the loader's own)"
    )
    p.add_argument("--loader-cpus", default=None, help="taskset list for idnode load (default: every CPU)")
    p.add_argument("--write-cpu", type=int, default=None,
                   help="a core budget: the node's writer (and the load) on this CPU, its worker alone on "
                        "--server-cpu (default: the whole node on --server-cpu)")  # fmt: skip
    p.add_argument(
        "--quiet-wait-s", type=float, default=QUIET_WAIT_S, help="wait at most this for a quiet machine"
    )
    p.add_argument("--http-workers", type=int, default=0,
                   help="processes serving HTTP alone (`idnode serve --http-workers`); on --write-cpu")  # fmt: skip
    p.add_argument("--wire", action="store_true",
                   help="also measure the node's own share of each answer on the wire (root: bench/wire_latency.py)")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1, help="the stream and the batch clients")
    p.add_argument("--stream-fifo", action="store_true",
                   help="run the stream's processes under SCHED_FIFO (root): the instrument ahead of a write plane "
                        "sharing its CPU, as clients on other machines would be")  # fmt: skip
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent,
                   help="the idnode checkout that serves and loads (default: this one)")  # fmt: skip
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    p.add_argument("--keep", action="store_true", help="keep the stores and inputs for the next run")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="writeplane-load")
    args = p.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    bad = [c for c in args.cases if c not in CASES]
    if bad or not args.cases:
        p.error(f"--cases: each of {', '.join(CASES)}")
    if args.server_cpu == args.client_cpu:
        p.error("--server-cpu and --client-cpu must be two distinct CPUs")
    if args.write_cpu is not None and args.write_cpu == args.server_cpu:
        p.error("--write-cpu: a core budget gives the writer a CPU other than the worker's --server-cpu")
    if not {args.server_cpu, args.client_cpu} <= os.sched_getaffinity(0):
        p.error(f"CPUs {args.server_cpu} and {args.client_cpu} must both be available to this process")
    if args.wire and usable() is not None:
        p.error(f"--wire: {usable()}")
    if args.repeat < 1 or args.rate < 1 or args.idle_s <= TIMELINE_INTERVAL_S * 2:
        p.error("--repeat and --rate must be positive, --idle-s more than one second")
    args.tree = args.tree.resolve()
    args.workdir = args.workdir.resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    from bench.results_io import machine_facts

    args = parse_args(argv)

    def log(text: str) -> None:
        print(f"writeplane_load: {text}", file=sys.stderr, flush=True)

    if shutil.which("taskset") is None:
        raise WriteplaneBenchError("taskset is not installed: apt-get install -y util-linux")
    check_disk(args.workdir, args.store_count, args.load_count if "load" in args.cases else 0)
    pristine = pristine_store(args.tree, args.workdir, args.store_count, args.seed, log)
    load_file = None
    if "load" in args.cases:
        load_file = generated(args.tree, args.workdir / f"ids-{args.load_count}-{args.seed + 1}.ndjson",
                              args.load_count, args.seed + 1, log)  # fmt: skip
    bodies = (
        make_bodies(args.batches, args.batch_size, args.seed, BATCH_PREFIX, False)
        if "batches" in args.cases
        else []
    )
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {args.client_cpu})  # the stream's process and the batch clients run here
    runs = []
    try:
        for n in range(args.repeat):
            for case in args.cases:
                log(f"run {n + 1}/{args.repeat}: {case}")
                run = run_once(case, args, pristine, load_file, bodies, log)
                log(f"{case}: idle p99 {run['periods']['idle'].get('p99_ms')} ms, writing p99 "
                    f"{run['periods']['writing'].get('p99_ms')} ms (ratio {run['p99_ratio']}), lost {run['lost']}")  # fmt: skip
                runs.append(run)
    finally:
        os.sched_setaffinity(0, affinity)
        shutil.rmtree(args.workdir / "run-store", ignore_errors=True)
        if not args.keep:
            for path in args.workdir.glob("store-*"):
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
            for path in args.workdir.glob("ids-*"):
                path.unlink(missing_ok=True)
    given = list(argv if argv is not None else sys.argv[1:])
    result = {
        "command": " ".join(["python -m bench.writeplane_load", *given]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine_facts(),
        "tree": tree_state(args.tree),
        "summary": summary(runs),
        "runs": runs,
    }
    for path in write_results(result, args.out, args.name):
        log(f"wrote {path}")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except WriteplaneBenchError as exc:
        print(f"writeplane_load: {exc}", file=sys.stderr)
        sys.exit(2)
