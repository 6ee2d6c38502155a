"""A closed-loop UDP load generator for the Handle protocol: how many resolutions per second a node answers.

Each generator process opens many connected, non-blocking UDP sockets (one source port each, so SO_REUSEPORT
spreads the load over the server's workers), keeps ``window`` requests outstanding on every socket and sends
the next request the moment an answer arrives. Requests are encoded once, before the clock starts, into a
seeded pool; sending one patches its request id in place. An answer is read at two fixed offsets only (request
id, response code): the generator must stay faster than the server, so no message is decoded.

A request unanswered after ``timeout_s`` counts as lost and is replaced by a new one (new request id) on the
same socket, so the window never shrinks. The first ``warmup_s`` seconds are not counted. Processes report
their counts and raw latencies to the parent, which merges them into one result dict::

    from bench.loadgen import DatasetSpec, run_udp_load
    result = run_udp_load("127.0.0.1", 2641, DatasetSpec(1_000_000, seed=1), duration_s=10)
    print(format_result(result))

or ``idnode bench udp --server 127.0.0.1:2641 --dataset-count 1000000 --seed 1``. The run is bounded by time
and only ever sends to the one address it is given. Imports nothing of the server.
"""

from __future__ import annotations

import array
import math
import multiprocessing
import os
import select
import socket
import struct
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from random import Random

from bench.datagen import DEFAULT_ENTERPRISES, DEFAULT_PREFIX, Dataset, missing_handle
from bench.procstat import all_process_ticks, descendants, machine_ticks, tree_ticks
from resolver.handle.constants import ENVELOPE_BYTES, OpCode, OpFlag, ResponseCode
from resolver.handle.message import ResolutionRequest, encode_request, encode_resolution_request

__all__ = ["DatasetSpec", "LoadGenError", "format_result", "percentiles", "request_pool", "run_udp_load"]

REQUEST_TIMEOUT_S = 1.0  #: an answer later than this means a lost request; loopback answers take < 10 ms
DEFAULT_POOL_SIZE = 1 << 16  #: pre-encoded requests per process; a power of two (indexed by a mask)
MAX_DURATION_S = 3600.0  #: a run is a benchmark, not a flood: refuse anything longer than an hour
MAX_SOCKETS_PER_PROCESS = 4096  #: file descriptors are finite; 64-256 already spread well over SO_REUSEPORT
MAX_WINDOW = 1024  #: per socket; beyond a few dozen the server's receive buffer only fills up and drops
POLL_INTERVAL_S = 0.01  #: the longest an idle process sleeps before it looks at the clock again
TIMEOUT_SCAN_INTERVAL_S = 0.05  #: how often outstanding requests are checked against the timeout
TIMELINE_INTERVAL_S = 0.5  #: answers are also counted per interval of this length, to show stalls and drift
READY_TIMEOUT_S = 60.0  #: a process building its pool and opening its sockets takes well under that
REPORT_GRACE_S = 30.0  #: after the run, how long the parent waits for a process's report before stopping it
RECEIVE_BUFFER_BYTES = 1 << 20  #: per socket, so a burst of answers is not dropped by our own side
REQUEST_LIFETIME_S = 86_400  #: ExpirationTime written into the pre-encoded requests (a run is far shorter)
OTHER_LOAD_REPORTED = 0.02  #: cores; another process this busy while we measure makes the figures suspect
REQUEST_FLAGS = int(OpFlag.REC | OpFlag.CA | OpFlag.PO)  #: the reference client's defaults (resolver.client)

_REQUEST_ID_AT = 8  # envelope: major, minor, flags, suggested minor, SessionId u32, then RequestId u32
# RequestId, SequenceNumber, ResponseCode (envelope 20 bytes + OpCode u32 -> ResponseCode at 24).
_ANSWER = struct.Struct(">8xII8xI")
assert _ANSWER.size == ENVELOPE_BYTES + 8
_U32 = struct.Struct(">I")
_SUCCESS = int(ResponseCode.SUCCESS)
_U32_MASK = 0xFFFF_FFFF
_RECEIVE_BYTES = 2048  # an answer piece is at most 512 bytes; only its first 28 are read


class LoadGenError(Exception):
    """The load could not be generated (bad arguments, a process failed or hung)."""


@dataclass(frozen=True, slots=True)
class DatasetSpec:
    """The synthetic data set the server was loaded with (the arguments of ``idnode gen``)."""

    count: int
    seed: int = 1
    prefix: str = DEFAULT_PREFIX
    enterprises: int = DEFAULT_ENTERPRISES


# --- requests ---------------------------------------------------------------------------------------------


def _missing_for_list(handles: Sequence[str], i: int) -> str:
    # Under a prefix the server hosts, so the answer is HANDLE_NOT_FOUND rather than "not my prefix".
    prefix = handles[i % len(handles)].partition("/")[0]
    return f"{prefix}/IDNODE-LOADGEN-MISSING-{i:08d}"


def request_pool(
    handles: Sequence[str] | DatasetSpec, size: int, missing_ratio: float, seed: int | str
) -> tuple[list[bytearray], list[str]]:
    """``size`` pre-encoded OC_RESOLUTION requests (request id 0) and their handles, in send order.

    Exactly ``round(size * missing_ratio)`` of them ask for handles that do not exist; the rest are drawn
    uniformly with replacement from ``handles``. The order is a seeded shuffle.
    """
    if not 0.0 <= missing_ratio <= 1.0:
        raise LoadGenError(f"missing ratio {missing_ratio} is not between 0 and 1")
    rng = Random(f"idnode-loadgen:{seed}")
    missing = round(size * missing_ratio)
    if isinstance(handles, DatasetSpec):
        dataset = Dataset(handles.count, handles.seed, handles.prefix, handles.enterprises)
        if size - missing and not dataset.count:
            raise LoadGenError("the data set is empty")
        start = rng.randrange(1 << 20)  # different processes ask for different missing handles
        names = [dataset.handle_at(rng.randrange(dataset.count)) for _ in range(size - missing)]
        names += [missing_handle(start + i, handles.prefix, handles.enterprises) for i in range(missing)]
    else:
        if not handles:
            raise LoadGenError("no handles to ask for")
        start = rng.randrange(1 << 20)
        names = [rng.choice(handles) for _ in range(size - missing)]
        names += [_missing_for_list(handles, start + i) for i in range(missing)]
    rng.shuffle(names)
    expiration = int(time.time()) + REQUEST_LIFETIME_S
    pool = [
        bytearray(
            encode_request(
                OpCode.RESOLUTION,
                encode_resolution_request(ResolutionRequest(name.encode())),
                request_id=0,
                expiration=expiration,
                op_flags=REQUEST_FLAGS,
            )
        )
        for name in names
    ]
    return pool, names


# --- one generator process --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Plan:
    host: str
    port: int
    handles: Sequence[str] | DatasetSpec
    warmup_s: float
    duration_s: float
    sockets: int
    window: int
    missing_ratio: float
    seed: int
    index: int
    timeout_s: float
    pool_size: int


def _open_sockets(plan: _Plan) -> list[socket.socket]:
    family = socket.AF_INET6 if ":" in plan.host else socket.AF_INET
    socks = []
    try:
        for _ in range(plan.sockets):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            socks.append(sock)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
            except OSError:
                pass  # a smaller buffer only risks drops we would count as lost
            # Connected: the kernel picks a distinct source port, filters strangers, send() skips the address.
            sock.connect((plan.host, plan.port))
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def _generate(plan: _Plan, ready, go) -> dict:  # noqa: C901 - one hot loop, kept in one frame for speed
    """The closed loop of one process. Returns its counts and raw latencies (ns) of the measured period."""
    pool, _ = request_pool(plan.handles, plan.pool_size, plan.missing_ratio, f"{plan.seed}:{plan.index}")
    pool_mask = plan.pool_size - 1
    socks = _open_sockets(plan)
    poller = select.epoll()
    id_bits = max(1, (plan.sockets - 1).bit_length())
    # Request ids carry the socket number in their low bits, so a timed-out request knows where to go again.
    id_step = 1 << id_bits
    socket_of_id = id_step - 1
    sends = [s.send for s in socks]
    by_fd = {}
    for i, sock in enumerate(socks):
        by_fd[sock.fileno()] = (sock.recv_into, sock.send, i)
        poller.register(sock.fileno(), select.EPOLLIN)
    buf = bytearray(_RECEIVE_BYTES)
    drain = range(plan.window)
    unpack_answer = _ANSWER.unpack_from
    patch_id = _U32.pack_into
    clock = time.perf_counter_ns
    poll = poller.poll
    timeout_ns = int(plan.timeout_s * 1e9)
    scan_ns = int(TIMEOUT_SCAN_INTERVAL_S * 1e9)
    getppid, parent = os.getppid, os.getppid()

    pending: dict[int, int] = {}  # request id -> send time (ns); insertion order is send order
    pending_pop = pending.pop
    latencies = array.array("q")
    record = latencies.append
    codes: dict[int, int] = {}
    ok = lost = late = malformed = send_errors = receive_errors = sent = 0
    next_id = id_step  # never 0
    k = 0  # position in the pool

    ready.send(("ready", plan.index))
    if not go.wait(READY_TIMEOUT_S):
        raise LoadGenError("the parent never said go")
    started = clock()
    warm_end = started + int(plan.warmup_s * 1e9)
    end = warm_end + int(plan.duration_s * 1e9)
    measuring = plan.warmup_s <= 0
    measure_start = started
    cpu_start = time.process_time()
    next_scan = started + scan_ns
    tick_ns = int(TIMELINE_INTERVAL_S * 1e9)
    next_tick = warm_end + tick_ns
    timeline: list[int] = []  # answers counted at the end of each measured interval

    now = clock()
    for i in range(plan.sockets):
        for _ in range(plan.window):
            request = pool[k & pool_mask]
            k += 1
            rid = next_id | i
            next_id = (next_id + id_step) & _U32_MASK or id_step
            patch_id(request, _REQUEST_ID_AT, rid)
            try:
                sends[i](request)
            except OSError:
                send_errors += 1  # left pending: the timeout sends it again
            pending[rid] = now
            sent += 1

    while True:
        for fd, _ in poll(POLL_INTERVAL_S):
            recv_into, send, i = by_fd[fd]
            # At most a window's worth per wake-up: a fast server must not keep us on one socket forever,
            # and when the whole window came back at once no EAGAIN exception is paid.
            for _ in drain:
                try:
                    n = recv_into(buf)
                except BlockingIOError:
                    break
                except OSError:
                    receive_errors += 1  # ICMP port unreachable: nobody listens (yet)
                    break
                now = clock()
                if n < 28:
                    malformed += 1
                    continue
                rid, sequence, code = unpack_answer(buf)
                if sequence:
                    continue  # a later piece of a chunked answer; piece 0 carried the response code
                t0 = pending_pop(rid, None)
                if t0 is None:
                    late += 1  # answered after its timeout, or not ours
                    continue
                record(now - t0)
                if code == _SUCCESS:
                    ok += 1
                else:
                    codes[code] = codes.get(code, 0) + 1
                request = pool[k & pool_mask]
                k += 1
                rid = next_id | i
                next_id = (next_id + id_step) & _U32_MASK or id_step
                patch_id(request, _REQUEST_ID_AT, rid)
                try:
                    send(request)
                except OSError:
                    send_errors += 1
                pending[rid] = now
                sent += 1
        now = clock()
        if now >= next_scan:
            next_scan = now + scan_ns
            if getppid() != parent:
                break  # the parent is gone (killed): nobody will read the figures
            deadline = now - timeout_ns
            expired = []
            for rid, t0 in pending.items():
                if t0 > deadline:
                    break
                expired.append(rid)
            for old in expired:
                del pending[old]
                i = old & socket_of_id
                request = pool[k & pool_mask]
                k += 1
                rid = next_id | i
                next_id = (next_id + id_step) & _U32_MASK or id_step
                patch_id(request, _REQUEST_ID_AT, rid)
                try:
                    sends[i](request)
                except OSError:
                    send_errors += 1
                pending[rid] = now
                sent += 1
            lost += len(expired)
        if now >= next_tick and measuring:
            next_tick += tick_ns
            timeline.append(len(latencies))
        if not measuring and now >= warm_end:
            # Forget the warm-up: everything counted from here on is the measurement.
            measuring = True
            measure_start = now
            next_tick = now + tick_ns
            cpu_start = time.process_time()
            del latencies[:]
            codes.clear()
            ok = lost = late = malformed = send_errors = receive_errors = sent = 0
        if now >= end:
            break

    elapsed_ns = clock() - measure_start
    cpu_s = time.process_time() - cpu_start
    poller.close()
    for sock in socks:
        sock.close()
    answers = len(latencies)
    codes[_SUCCESS] = ok
    return {
        "index": plan.index,
        "elapsed_s": elapsed_ns / 1e9,
        "cpu_s": cpu_s,
        "sent": sent,
        "answers": answers,
        "codes": codes,
        "lost": lost,
        "late": late,
        "malformed": malformed,
        "send_errors": send_errors,
        "receive_errors": receive_errors,
        "outstanding": len(pending),
        "latencies_ns": latencies.tobytes(),
        "timeline": [b - a for a, b in zip([0, *timeline], timeline, strict=False)],
    }


def _process_main(plan: _Plan, conn, go) -> None:
    try:
        conn.send(("result", _generate(plan, conn, go)))
    except KeyboardInterrupt:
        pass  # the parent stops everyone
    except BaseException:
        try:
            conn.send(("error", traceback.format_exc()))
        except OSError:
            pass
    finally:
        conn.close()


# --- the parent -------------------------------------------------------------------------------------------


def percentiles(sorted_values: Sequence[float], points: Iterable[float]) -> dict[float, float]:
    """Nearest-rank percentiles of sorted values: the smallest value with at least p% at or below it."""
    n = len(sorted_values)
    out = {}
    for p in points:
        if not n:
            out[p] = float("nan")
            continue
        rank = max(1, math.ceil(n * p / 100 - 1e-9))  # the epsilon keeps 1000 * 99.9 / 100 at rank 999
        out[p] = sorted_values[min(n, rank) - 1]
    return out


def _code_name(code: int) -> str:
    try:
        return ResponseCode(code).name
    except ValueError:
        return f"CODE_{code}"


def _others(before: dict, after: dict, ours: set[int], seconds: float) -> list[dict]:
    """Processes other than the generator and the server that used CPU while we measured."""
    hz = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, (name, ticks) in after.items():
        if pid in ours:
            continue
        share = (ticks - before.get(pid, (name, 0))[1]) / hz / seconds
        if share >= OTHER_LOAD_REPORTED:
            busy.append({"pid": pid, "name": name, "cpu": round(share, 3)})
    return sorted(busy, key=lambda b: -b["cpu"])


def _merge(
    reports: list[dict], plan: _Plan, processes: int, server_cpu: dict | None, other_load: list[dict]
) -> dict:
    samples = array.array("q")
    codes: dict[int, int] = {}
    totals = dict.fromkeys(
        ("sent", "answers", "lost", "late", "malformed", "send_errors", "receive_errors", "outstanding"), 0
    )
    per_process = []
    timeline: list[int] = []
    for report in sorted(reports, key=lambda r: r["index"]):
        chunk = array.array("q")
        chunk.frombytes(report["latencies_ns"])
        samples.extend(chunk)
        for key in totals:
            totals[key] += report[key]
        for slot, n in enumerate(report["timeline"]):
            if slot < len(timeline):
                timeline[slot] += n
            else:
                timeline.append(n)
        for code, n in report["codes"].items():
            codes[code] = codes.get(code, 0) + n
        per_process.append(
            {
                "index": report["index"],
                "answers": report["answers"],
                "answers_per_s": round(report["answers"] / max(report["elapsed_s"], 1e-9), 1),
                "elapsed_s": round(report["elapsed_s"], 3),
                "cpu_s": round(report["cpu_s"], 3),
            }
        )
    ordered = sorted(samples)
    points = percentiles(ordered, (50, 90, 99, 99.9))
    us = 1e-3
    latency = {
        "min": ordered[0] * us if ordered else float("nan"),
        "p50": points[50] * us,
        "p90": points[90] * us,
        "p99": points[99] * us,
        "p99.9": points[99.9] * us,
        "max": ordered[-1] * us if ordered else float("nan"),
        "mean": sum(ordered) / len(ordered) * us if ordered else float("nan"),
    }
    answers = totals["answers"]
    success = codes.get(_SUCCESS, 0)
    named = {_code_name(c): n for c, n in sorted(codes.items()) if n}
    return {
        "server": f"{plan.host}:{plan.port}",
        "settings": {
            "processes": processes,
            "sockets_per_process": plan.sockets,
            "window": plan.window,
            "outstanding": processes * plan.sockets * plan.window,
            "duration_s": plan.duration_s,
            "warmup_s": plan.warmup_s,
            "missing_ratio": plan.missing_ratio,
            "seed": plan.seed,
            "timeout_s": plan.timeout_s,
            "pool_size": plan.pool_size,
            "handles": (
                {"dataset": {"count": plan.handles.count, "seed": plan.handles.seed,
                             "prefix": plan.handles.prefix, "enterprises": plan.handles.enterprises}}
                if isinstance(plan.handles, DatasetSpec)
                else {"list": len(plan.handles)}
            ),
        },  # fmt: skip
        "elapsed_s": round(max((p["elapsed_s"] for p in per_process), default=0.0), 3),
        "answers": answers,
        "answers_per_s": round(sum(p["answers_per_s"] for p in per_process), 1),
        "success": success,
        "codes": named,
        "errors": {name: n for name, n in named.items() if name != "SUCCESS"},
        "sent": totals["sent"],
        "lost": totals["lost"],
        "late": totals["late"],
        "malformed": totals["malformed"],
        "send_errors": totals["send_errors"],
        "receive_errors": totals["receive_errors"],
        "outstanding_at_end": totals["outstanding"],
        "latency_us": {k: round(v, 1) for k, v in latency.items()},
        "answers_per_s_timeline": [round(n / TIMELINE_INTERVAL_S) for n in timeline],
        "generator_cpu": round(sum(p["cpu_s"] for p in per_process) / max(
            (p["elapsed_s"] for p in per_process), default=1.0) if per_process else 0.0, 3),
        "server_cpu": server_cpu,
        "other_load": other_load,
        "per_process": per_process,
    }  # fmt: skip


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
    """Drive ``host:port`` with resolutions for ``warmup_s + duration_s`` seconds; the merged result.

    ``handles`` is the list of handles to ask for, or the :class:`DatasetSpec` the server's store was
    generated from. ``server_pids``: processes (and their children) whose CPU share over the measured
    period goes into the result as ``server_cpu`` (1.0 = one core busy).
    """
    if not 0 < duration_s <= MAX_DURATION_S or not 0 <= warmup_s <= MAX_DURATION_S:
        raise LoadGenError(f"duration and warm-up must lie within (0, {MAX_DURATION_S:g}] seconds")
    sockets_ok = 1 <= sockets_per_process <= MAX_SOCKETS_PER_PROCESS
    if processes < 1 or not sockets_ok or not 1 <= window <= MAX_WINDOW:
        raise LoadGenError(
            f"need processes >= 1, 1..{MAX_SOCKETS_PER_PROCESS} sockets and a window of 1..{MAX_WINDOW}"
        )
    if pool_size < 1 or pool_size & (pool_size - 1):
        raise LoadGenError(f"pool size {pool_size} is not a power of two")
    if timeout_s <= 0:
        raise LoadGenError("timeout must be positive")
    if isinstance(handles, DatasetSpec):
        pass
    else:
        handles = list(handles)
    plans = [
        _Plan(host, port, handles, warmup_s, duration_s, sockets_per_process, window, missing_ratio, seed,
              index, timeout_s, pool_size)
        for index in range(processes)
    ]  # fmt: skip
    # spawn, not fork: the caller may hold threads, an event loop or an LMDB environment.
    ctx = multiprocessing.get_context("spawn")
    go = ctx.Event()
    workers = []
    try:
        for plan in plans:
            parent_end, child_end = ctx.Pipe(duplex=False)
            process = ctx.Process(
                target=_process_main, args=(plan, child_end, go), name=f"loadgen-{plan.index}", daemon=True
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
        time.sleep(warmup_s)
        ticks_start = {pid: tree_ticks(pid) for pid in server_pids}
        everyone_start = all_process_ticks()
        machine_start = machine_ticks()
        measure_start = time.monotonic()
        time.sleep(duration_s)
        ticks_end = {pid: tree_ticks(pid) for pid in server_pids}
        everyone_end = all_process_ticks()
        machine_end = machine_ticks()
        measured = time.monotonic() - measure_start
        reports = []
        for process, conn in workers:
            if not conn.poll(REPORT_GRACE_S):
                raise LoadGenError(f"{process.name} did not report within {REPORT_GRACE_S:g} s of the end")
            kind, payload = conn.recv()
            if kind == "error":
                raise LoadGenError(f"{process.name} failed:\n{payload}")
            reports.append(payload)
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
    server_cpu = None
    if server_pids:
        hz = os.sysconf("SC_CLK_TCK")
        server_cpu = {
            str(pid): round((ticks_end[pid] - ticks_start[pid]) / hz / measured, 3) for pid in server_pids
        }
    ours = {os.getpid(), *(p.pid for p, _ in workers)}
    for pid in server_pids:
        ours |= descendants(pid)
    other_load = _others(everyone_start, everyone_end, ours, measured)
    result = _merge(reports, plans[0], processes, server_cpu, other_load)
    # Everything the CPUs did meanwhile, in cores: generator + server + kernel softirq + whoever else.
    busy = (machine_end[0] - machine_start[0]) / os.sysconf("SC_CLK_TCK") / measured
    result["machine_busy"] = {"cores": round(busy, 3), "of": os.cpu_count()}
    return result


# --- presentation -----------------------------------------------------------------------------------------


def format_result(result: dict) -> str:
    """A short human-readable table of a :func:`run_udp_load` result."""
    s = result["settings"]
    lat = result["latency_us"]
    lines = [
        f"server {result['server']}: {s['processes']} process(es) x {s['sockets_per_process']} sockets "
        f"x window {s['window']} = {s['outstanding']} outstanding, missing {s['missing_ratio']:.0%}, "
        f"{s['duration_s']:g} s measured after {s['warmup_s']:g} s warm-up",
        "",
        f"answers/s   {result['answers_per_s']:>12,.0f}",
        f"answers     {result['answers']:>12,}   (sent {result['sent']:,})",
        f"success     {result['success']:>12,}",
    ]
    for name, n in result["errors"].items():
        lines.append(f"  {name:<22}{n:>12,}")
    lines += [
        f"lost        {result['lost']:>12,}   (timeout {s['timeout_s']:g} s, late {result['late']:,})",
    ]
    other = {k: result[k] for k in ("malformed", "send_errors", "receive_errors") if result[k]}
    if other:
        lines.append("other       " + ", ".join(f"{k} {v:,}" for k, v in other.items()))
    lines += [
        "",
        "latency µs     Min      P50      P90      P99    P99.9      Max",
        "          " + "".join(f"{lat[k]:>9,.0f}" for k in ("min", "p50", "p90", "p99", "p99.9", "max")),
        "",
        f"generator CPU {result['generator_cpu']:.2f} cores"
        + (
            "; server CPU " + ", ".join(f"pid {p}: {c:.2f}" for p, c in result["server_cpu"].items())
            if result.get("server_cpu")
            else ""
        ),
    ]
    if result.get("machine_busy"):
        busy = result["machine_busy"]
        lines[-1] += f"; whole machine {busy['cores']:.2f} of {busy['of']} cores"
    if result.get("other_load"):
        lines.append(
            "WARNING: other processes were busy meanwhile: "
            + ", ".join(f"{o['name']} ({o['pid']}) {o['cpu']:.2f}" for o in result["other_load"])
        )
    return "\n".join(lines)
