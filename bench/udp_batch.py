"""Handle UDP, one worker, side by side: batched datagram I/O (recvmmsg/sendmmsg, resolver/server/udp_batch.py)
with plain resolutions answered by the extension (the default), the same with every answer made in Python
(``--udp-c-answers false``), the event loop's datagram transport (``--udp-batch false``), and a C echo
(bench/c_echo.c: the kernel's UDP path alone), on the same store and cores, rounds alternated (the order rotates by one each round, so
a drift of the shared machine is shared out). ``.venv/bin/python -m bench.udp_batch --help``.

Each round, for each server: wait for a quiet machine (bench.compare.wait_for_quiet), start it pinned to
``--server-cpu``, then ``idnode bench udp`` pinned to ``--client-cpu``: closed loop (64 sockets × 4 outstanding,
the setting of bench/results/udp-1m.md) for ``--duration`` seconds, then open loop at half the rate the closed
loop just reached (the p99 an operator sees at half load). Writes ``--out``.json (machine, command, every
round) and ``--out``.md (medians, the per-round ratios of batched to transport, the echo).

Bounded: the server's start, each generator run and the wait for quiet have time limits; every process started
is stopped by its PID on the way out (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.compare import (
    MAX_ROUNDS,
    MAX_SECONDS,
    Processes,
    Started,
    idnode_cmd,
    machine,
    stopped_on_exit,
    wait_for_quiet,
)
from bench.protocols import BENCH_GRACE_S, pin, round_record
from resolver.handle.constants import OpCode
from resolver.handle.message import encode_request, encode_site_info_request
from resolver.server.sockets import free_udp_tcp_port

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WORKDIR = Path("/var/tmp/idnode-udp-batch")
DEFAULT_OUT = ROOT / "bench" / "results" / "udp_batch"
MODES = ("batch", "batch-python", "transport", "echo")
LABELS = {
    "batch": "idnode, batched, plain resolutions answered in C (the default)",
    "batch-python": "idnode, batched, every answer in Python (`--udp-c-answers false`)",
    "transport": "idnode, uvloop datagram transport (`--udp-batch false`)",
    "echo": "C echo (bench/c_echo.c), no lookup",
}
CLOSED_LOOP = (64, 4)  #: sockets × outstanding: as bench/results/udp-1m.md, so figures stay comparable
START_TIMEOUT_S = 60.0  #: a worker opens even a 20M store (mmap) in seconds
PROBE_TIMEOUT_S = 0.3  #: one readiness probe on loopback
MAX_COUNT = 20_000_000  #: identifiers: the acceptance volume, and a typo guard
HALF = 0.5  #: the open-loop rate as a share of the closed loop's: the issue's "p99 at half load"


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def build_store(work: Path, count: int, seed: int) -> Path:
    """The store of ``count`` generated identifiers, reused when ``work`` holds one for the same settings."""
    store, stamp = work / "store", work / "built.json"
    wanted = {"count": count, "seed": seed}
    if stamp.exists() and json.loads(stamp.read_text()) == wanted:
        log(f"reusing the store in {work}")
        return store
    shutil.rmtree(store, ignore_errors=True)
    ndjson = work / "ids.ndjson"
    log(f"generating and loading {count:,} identifiers")
    subprocess.run(
        idnode_cmd("gen", "--count", str(count), "--seed", str(seed), "-o", str(ndjson)), check=True
    )
    subprocess.run(idnode_cmd("load", "--quiet", "--data", str(store), str(ndjson)), check=True, cwd=ROOT)
    ndjson.unlink()
    stamp.write_text(json.dumps(wanted))
    return store


def build_echo(work: Path) -> Path:
    binary = work / "c_echo"
    source = ROOT / "bench" / "c_echo.c"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        subprocess.run(["cc", "-O2", "-o", str(binary), str(source)], check=True, timeout=120)
    return binary


def server_argv(mode: str, store: Path, port: int, cpu: int, echo: Path) -> list[str]:
    if mode == "echo":
        return [*pin(cpu), str(echo), str(port), "127.0.0.1"]
    serve = idnode_cmd("serve", "--data", str(store), "--workers", "1", "--bind", "127.0.0.1",
                       "--handle-port", str(port), "--dns-port", "0", "--http-port", "0")  # fmt: skip
    return [*pin(cpu), *serve, "--udp-batch", "false" if mode == "transport" else "true",
            "--udp-c-answers", "true" if mode == "batch" else "false"]  # fmt: skip


def wait_udp_ready(entry: Started, port: int, timeout_s: float = START_TIMEOUT_S) -> None:
    """Until the server answers a GET_SITE_INFO over UDP (the echo answers anything)."""
    request = encode_request(
        OpCode.GET_SITE_INFO, encode_site_info_request(), request_id=1, expiration=2**31 - 1
    )
    deadline = time.monotonic() + timeout_s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(PROBE_TIMEOUT_S)
        while time.monotonic() < deadline:
            if entry.process.poll() is not None:
                raise RuntimeError(f"{entry.name} exited with {entry.process.returncode}; see {entry.log}")
            sock.sendto(request, ("127.0.0.1", port))
            try:
                sock.recv(65535)
                return
            except TimeoutError:
                continue
    raise RuntimeError(
        f"{entry.name} did not answer on UDP port {port} within {timeout_s:g} s; see {entry.log}"
    )


def worker_pid(entry: Started, mode: str, timeout_s: float = START_TIMEOUT_S) -> int:
    """The process that answers: the echo itself, or idnode's one worker (named by the supervisor's log)."""
    if mode == "echo":
        return entry.process.pid
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in entry.log.read_text(errors="replace").splitlines():
            if "serving with 1 workers:" in line:
                return int(line.rsplit(":", 1)[1].split(",")[0])
        time.sleep(0.1)
    raise RuntimeError(f"{entry.name}: no worker pid in {entry.log}")


def run_bench(
    name: str, argv: list[str], files: dict[str, Path], limit_s: float, processes: Processes
) -> dict | str:
    entry = processes.start(name, argv, files["json"].with_suffix(".log"), cwd=ROOT)
    try:
        entry.process.wait(limit_s)
    except subprocess.TimeoutExpired:
        pass
    finally:
        processes.stop(entry)
        processes.started.remove(entry)
    if entry.process.returncode != 0 or not files["json"].exists():
        tail = " | ".join(entry.log.read_text(errors="replace").strip().splitlines()[-3:])
        return f"idnode bench exited with {entry.process.returncode}: {tail}"
    return json.loads(files["json"].read_text())


def bench_argv(
    args: argparse.Namespace, port: int, pid: int, json_path: Path, rate: float | None
) -> list[str]:
    sockets, window = CLOSED_LOOP
    load = ["--rate", f"{rate:.0f}"] if rate else ["--window", str(window)]
    bench = idnode_cmd(
        "bench", "udp", "--server", f"127.0.0.1:{port}", "--dataset-count", str(args.count),
        "--seed", str(args.seed), "--duration", f"{args.duration:g}", "--warmup", f"{args.warmup:g}",
        "--missing", f"{args.missing:g}", "--sockets", str(sockets), *load, "--server-pid", str(pid),
        "--json", str(json_path), "--quiet",
    )  # fmt: skip
    return [*pin(args.client_cpu), *bench]


def one_round(
    mode: str, round_no: int, args: argparse.Namespace, store: Path, echo: Path, processes: Processes
) -> dict:
    waited = wait_for_quiet(args.settle) if args.settle else 0.0
    port = free_udp_tcp_port("127.0.0.1")
    rounds_dir = args.workdir / "rounds"
    argv = server_argv(mode, store, port, args.server_cpu, echo)
    server = processes.start(mode, argv, rounds_dir / f"{mode}-{round_no}-server.log", cwd=ROOT)
    record: dict = {"key": mode, "round": round_no, "started": time.strftime("%H:%M:%S"), "waited_s": waited,
                    "server_command": shlex.join(argv).replace(str(args.workdir), "$WORK")}  # fmt: skip
    try:
        wait_udp_ready(server, port)
        pid = worker_pid(server, mode)
        limit_s = args.warmup + args.duration + BENCH_GRACE_S
        closed = rounds_dir / f"{mode}-{round_no}-closed.json"
        result = run_bench(f"bench {mode}", bench_argv(args, port, pid, closed, None), {"json": closed}, limit_s,
                           processes)  # fmt: skip
        if isinstance(result, str):
            return {**record, "failed": result}
        record.update(round_record(mode, round_no, result))
        record["per_server_core"] = (
            round(result["answers_per_s"] / record["server_cores"]) if record["server_cores"] else None
        )
        if args.open_loop:
            rate = args.open_rate or HALF * result["answers_per_s"]
            opened = rounds_dir / f"{mode}-{round_no}-open.json"
            half = run_bench(f"bench {mode} open", bench_argv(args, port, pid, opened, rate), {"json": opened},
                             limit_s, processes)  # fmt: skip
            if isinstance(half, str):
                record["open_loop"] = {"failed": half}
            else:
                kept = round_record(mode, round_no, half)
                record["open_loop"] = {"rate": round(rate), **{k: kept[k] for k in (
                    "answers_per_s", "latency_us", "lost", "errors", "server_cores", "others_cores")}}  # fmt: skip
        return record
    except RuntimeError as exc:
        return {**record, "failed": str(exc)}
    finally:
        processes.stop(server)
        processes.started.remove(server)


def median_of(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(rounds: list[dict], modes: list[str]) -> dict:
    rows = {}
    for mode in modes:
        mine = [r for r in rounds if r["key"] == mode and "failed" not in r]
        opened = [r["open_loop"] for r in mine if "open_loop" in r and "failed" not in r["open_loop"]]
        rows[mode] = {
            "rounds": len(mine),
            "answers_per_s": [r["answers_per_s"] for r in mine],
            "median_answers_per_s": median_of([r["answers_per_s"] for r in mine]),
            "median_per_server_core": median_of([r["per_server_core"] for r in mine if r["per_server_core"]]),
            "median_server_cores": median_of(
                [r["server_cores"] for r in mine if r["server_cores"] is not None]
            ),
            "median_generator_cores": median_of([r["generator_cores"] for r in mine]),
            "median_p99_us_closed": median_of([r["latency_us"]["p99"] for r in mine]),
            "median_open_rate": median_of([o["rate"] for o in opened]),
            "median_p50_us_open": median_of([o["latency_us"]["p50"] for o in opened]),
            "median_p99_us_open": median_of([o["latency_us"]["p99"] for o in opened]),
            "lost": sum(r["lost"] for r in mine) + sum(o["lost"] for o in opened),
            "errors": sum(r["errors"] for r in mine) + sum(o["errors"] for o in opened),
            "max_others_cores": max((r["others_cores"] for r in mine), default=None),
        }
    over_transport = per_round_ratios(rounds, "batch", "transport")
    over_python = per_round_ratios(rounds, "batch", "batch-python")
    return {"modes": rows, "batch_over_transport_per_round": over_transport,
            "median_batch_over_transport": median_of(over_transport),
            "batch_over_python_per_round": over_python,
            "median_batch_over_python": median_of(over_python)}  # fmt: skip


def per_round_ratios(rounds: list[dict], mode: str, other: str) -> list[float]:
    """answers/s of `mode` over `other` in each round that measured both (the same minute)."""
    ratios = []
    for round_no in sorted({r["round"] for r in rounds}):
        pair = {r["key"]: r for r in rounds if r["round"] == round_no and "failed" not in r}
        if mode in pair and other in pair:
            ratios.append(round(pair[mode]["answers_per_s"] / pair[other]["answers_per_s"], 3))
    return ratios


def markdown(report: dict) -> str:
    s, summary = report["settings"], report["summary"]
    m = report["machine"]
    lines = [
        f"# Handle UDP, one worker, {s['count']:,} identifiers: batched I/O against the datagram transport",
        "",
        f"Commit `{m['commit']}`, {report['finished']}; {m['nproc']} CPUs ({m['cpu_model']}), Linux {m['kernel']}; "
        f"load average at the start {m['load_average_at_start']}. Server on CPU {s['server_cpu']}, generator on CPU "
        f"{s['client_cpu']}; {s['rounds']} rounds × {s['duration']:g} s closed loop "
        f"({CLOSED_LOOP[0]} sockets × {CLOSED_LOOP[1]}), {s['missing']:.0%} missing identifiers"
        + ((f", then open loop at {s['open_rate']:,.0f}/s" if s.get("open_rate") else
            ", then open loop at half the closed loop's rate") if s["open_loop"] else "") + ".",
        "",
        "```sh", report["command"], "```", "",
        "| server | answers/s, median | rounds | server core | answers per server core-second | generator core "
        "| p99 closed loop | half-load rate | p50 / p99 at half load | lost, errors |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---|",
    ]  # fmt: skip
    for mode, row in summary["modes"].items():
        if not row["rounds"]:
            lines.append(f"| {LABELS[mode]} | not measured | | | | | | | | |")
            continue

        def us(v):
            return "–" if v is None else f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"

        def num(v, spec=",.0f"):
            return "–" if v is None else format(v, spec)

        lines.append(
            f"| {LABELS[mode]} | **{num(row['median_answers_per_s'])}** | "
            f"{' · '.join(f'{x:,.0f}' for x in row['answers_per_s'])} | {num(row['median_server_cores'], '.2f')} | "
            f"{num(row['median_per_server_core'])} | {num(row['median_generator_cores'], '.2f')} | "
            f"{us(row['median_p99_us_closed'])} | {num(row['median_open_rate'])} | "
            f"{us(row['median_p50_us_open'])} / {us(row['median_p99_us_open'])} | {row['lost']:,}, {row['errors']:,} |"
        )  # fmt: skip
    for key, label in (("transport", "Batched over transport"), ("python", "C answers over Python answers")):
        ratios = summary.get(f"batch_over_{key}_per_round")
        if ratios:
            lines += ["", f"{label}, per round (same round, same minute): {', '.join(map(str, ratios))}; "
                      f"median **{summary[f'median_batch_over_{key}']:.2f}x**."]  # fmt: skip
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--count", type=int, default=1_000_000, help="identifiers in the store (default 1,000,000)"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="store, echo binary, round files")
    p.add_argument("--modes", default=",".join(MODES), help=f"servers to run, of {','.join(MODES)}")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds of each run")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--missing", type=float, default=0.1)
    p.add_argument("--no-open-loop", dest="open_loop", action="store_false", help="skip the half-load runs")
    p.add_argument(
        "--open-rate",
        type=float,
        default=None,
        help="open loop at this rate for every server (default: half of each one's closed-loop rate)",
    )
    p.add_argument("--settle", type=float, default=30.0, help="wait at most this long for a quiet machine")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        p.error(f"--modes takes some of {','.join(MODES)}")
    args.modes = modes
    if not 1 <= args.rounds <= MAX_ROUNDS or not 0 < args.duration <= MAX_SECONDS:
        p.error(f"--rounds must lie in 1..{MAX_ROUNDS} and --duration in (0, {MAX_SECONDS:g}]")
    if args.open_rate is not None and not args.open_rate > 0:
        p.error("--open-rate must be positive")
    if not 1 <= args.count <= MAX_COUNT:
        p.error(f"--count must lie in 1..{MAX_COUNT:,}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    (args.workdir / "rounds").mkdir(parents=True, exist_ok=True)
    store = build_store(args.workdir, args.count, args.seed)
    echo = build_echo(args.workdir) if "echo" in args.modes else Path("/nonexistent")
    processes = Processes()
    rounds: list[dict] = []
    with stopped_on_exit(processes):
        for round_no in range(1, args.rounds + 1):
            shift = (round_no - 1) % len(args.modes)
            for mode in args.modes[shift:] + args.modes[:shift]:
                record = one_round(mode, round_no, args, store, echo, processes)
                rounds.append(record)
                if "failed" in record:
                    log(f"round {round_no} {mode}: failed: {record['failed']}")
                else:
                    half = record.get("open_loop", {})
                    log(f"round {round_no} {mode}: {record['answers_per_s']:,.0f}/s, server "
                        f"{record['server_cores']}, generator {record['generator_cores']}, others "
                        f"{record['others_cores']}; half load p99 {half.get('latency_us', {}).get('p99')} µs")  # fmt: skip
    report = {
        "machine": machine(),
        "command": shlex.join(
            ["python", "-m", "bench.udp_batch", *(argv if argv is not None else sys.argv[1:])]
        ),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rounds": rounds,
        "summary": summarize(rounds, args.modes),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0 if any("failed" not in r for r in rounds) else 1


if __name__ == "__main__":
    raise SystemExit(main())
