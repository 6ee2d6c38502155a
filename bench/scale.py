"""The acceptance-volume run (`make bench-scale`): generate and load 20,000,000 identifiers, serve them with
every worker, drive 5,000,000 resolutions of random identifiers, restart the node and show with
`idnode report` that the cumulative resolutions survived. Also measures the resolution rate on a 1,000,000
store the same way, so the two rates can be compared.

Bounded and safe: checks disk and memory before it starts, sends traffic only to 127.0.0.1, stops every
process it started (by PID, also when interrupted), and writes bench/results/scale.{json,md,png}.

    python -m bench.scale [--count 20000000] [--resolutions 5000000] [--workdir /var/tmp/idnode-scale]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.compare import idnode_cmd
from bench.datagen import generate_lines, write_ndjson
from bench.load.report import merge_histograms
from bench.loadgen import DatasetSpec, run_udp_load
from bench.procstat import descendants
from resolver.server.sockets import free_udp_tcp_port

RESULTS = Path(__file__).resolve().parent / "results"
NDJSON_BYTES_PER_ID = 560  #: upper bound of a generated line, for the disk check
STORE_BYTES_PER_ID = 300  #: the target; the disk check allows for it
DISK_MARGIN_BYTES = 2 << 30  #: room left over after the run
MIN_AVAILABLE_MEMORY_BYTES = 4 << 30  #: the store is read through the page cache; less thrashes
LOAD_SAMPLE_S = 0.5  #: how often the loader's memory is sampled
SERVE_START_TIMEOUT_S = 60.0  #: a worker opens a 20M store in well under this
ROUND_S = 20.0  #: one load-generator round; rounds repeat until the resolutions are reached
WARMUP_S = 1.0  #: the start of each round, not measured (sockets opened, the page cache warmed)
RATE_ROUNDS = 3  #: rounds whose median is the resolution rate of a store


class ScaleError(Exception):
    """The run cannot start or went wrong; the message says what to do."""


def preflight(workdir: Path, count: int) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    need = count * (NDJSON_BYTES_PER_ID + STORE_BYTES_PER_ID) + DISK_MARGIN_BYTES
    free = shutil.disk_usage(workdir).free
    if free < need:
        raise ScaleError(
            f"{workdir} has {free / 1e9:.1f} GB free; {count:,} identifiers need {need / 1e9:.1f} GB "
            "(the NDJSON input and the store); pass --workdir on a larger disk or a smaller --count"
        )
    available = _meminfo("MemAvailable")
    if available < MIN_AVAILABLE_MEMORY_BYTES:
        raise ScaleError(
            f"only {available / 1e9:.1f} GB of memory available; the run needs "
            f"{MIN_AVAILABLE_MEMORY_BYTES / 1e9:.0f} GB"
        )
    return {"disk_free_bytes": free, "disk_needed_bytes": need, "memory_available_bytes": available}


def _meminfo(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and its descendants (the loader's parse workers)."""
    total = 0
    for member in descendants(pid):
        try:
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue  # gone meanwhile
    return total


class Processes:
    """Every process the run starts, stopped by PID at the end, whatever happens."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen] = []

    def start(self, argv: list[str], **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(argv, **kwargs)
        self.running.append(process)
        return process

    def stop(self, process: subprocess.Popen, timeout_s: float = 30.0) -> int:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process in self.running:
            self.running.remove(process)
        return process.returncode

    def stop_all(self) -> None:
        for process in list(self.running):
            self.stop(process)


def generate(path: Path, count: int, seed: int) -> dict:
    started = time.monotonic()
    with path.open("w", encoding="utf-8") as out:
        write_ndjson(generate_lines(count, seed, "88.100", 32), out)
    seconds = time.monotonic() - started
    return {"seconds": round(seconds, 1), "bytes": path.stat().st_size, "per_s": round(count / seconds)}


def load(procs: Processes, store: Path, ndjson: Path, count: int) -> dict:
    if store.exists():
        shutil.rmtree(store)
    started = time.monotonic()
    process = procs.start(
        idnode_cmd("load", "--quiet", "--data", str(store), str(ndjson)), stderr=subprocess.PIPE, text=True
    )
    peak = 0
    while process.poll() is None:
        peak = max(peak, _tree_rss_bytes(process.pid))
        time.sleep(LOAD_SAMPLE_S)
    seconds = time.monotonic() - started
    _, err = process.communicate()
    procs.running.remove(process)
    if process.returncode:
        raise ScaleError(f"idnode load failed:\n{err}")
    size = (store / "data.mdb").stat().st_size
    return {
        "seconds": round(seconds, 1),
        "per_s": round(count / seconds),
        "store_bytes": size,
        "bytes_per_identifier": round(size / count, 1),
        "peak_rss_bytes": peak,
        "output": err.strip().splitlines()[-1] if err.strip() else "",
    }


def serve(procs: Processes, store: Path, port: int, workers: int) -> subprocess.Popen:
    process = procs.start(
        idnode_cmd(
            "serve",
            "--data",
            str(store),
            "--bind",
            "127.0.0.1",
            "--handle-port",
            str(port),
            "--workers",
            str(workers),
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + SERVE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            time.sleep(0.5 * workers)
            return process
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.2)
    raise ScaleError("idnode serve did not start")


def drive(
    port: int, count: int, seed: int, target: int, server_pid: int, round_s: float = ROUND_S,
    warmup_s: float = WARMUP_S, rate_rounds: int = RATE_ROUNDS,
) -> dict:  # fmt: skip
    """Rounds of the UDP load generator over random identifiers until `target` answers were measured."""
    spec = DatasetSpec(count, seed, "88.100", 32)
    rounds, answers, errors = [], 0, 0
    while answers < target or len(rounds) < rate_rounds:
        result = run_udp_load(
            "127.0.0.1",
            port,
            spec,
            duration_s=round_s,
            warmup_s=warmup_s,
            processes=1,
            sockets_per_process=64,
            window=4,
            server_pids=[server_pid],
        )
        rounds.append(result)
        answers += result["answers"]
        errors += result.get("lost", 0) + sum(result["errors"].values())
        print(f"  {answers:,} answers so far, {result['answers_per_s']:,.0f}/s this round", file=sys.stderr)
    rates = sorted(r["answers_per_s"] for r in rounds[:rate_rounds])
    return {
        "answers": answers,
        "errors": errors,
        "rounds": len(rounds),
        "median_answers_per_s": rates[len(rates) // 2],
        "latency_us": rounds[0]["latency_us"],
        "rates": [r["answers_per_s"] for r in rounds],
        # For the plot: the rounds one after the other, and every answer's latency in one histogram.
        "timeline_interval_s": rounds[0]["timeline_interval_s"],
        "answers_per_s_timeline": [rate for r in rounds for rate in r["answers_per_s_timeline"]],
        "latency_histogram": merge_histograms([r["latency_histogram"] for r in rounds]),
    }


def report(store: Path) -> dict:
    out = subprocess.run(
        idnode_cmd("report", "--data", str(store), "--json"), capture_output=True, text=True, check=False
    )
    return json.loads(out.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20_000_000)
    parser.add_argument(
        "--small-count", type=int, default=1_000_000, help="the store the rate is compared with"
    )
    parser.add_argument("--resolutions", type=int, default=5_000_000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp/idnode-scale"))
    parser.add_argument("--keep", action="store_true", help="keep the input and stores afterwards")
    parser.add_argument("--round-s", type=float, default=ROUND_S, help="seconds of one measured round")
    parser.add_argument("--warmup-s", type=float, default=WARMUP_S, help="unmeasured seconds before each round")
    parser.add_argument("--rate-rounds", type=int, default=RATE_ROUNDS, help="rounds whose median is a store's rate")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where scale.json, .md and .png go")
    args = parser.parse_args(argv)
    procs = Processes()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    result: dict = {
        "command": " ".join(["python -m bench.scale", *(argv or sys.argv[1:])]),
        "count": args.count,
        "small_count": args.small_count,
        "round_s": args.round_s,
    }
    try:
        result["preflight"] = preflight(args.workdir, args.count + args.small_count)
        for name, count in (("small", args.small_count), ("large", args.count)):
            print(f"{name}: generating {count:,} identifiers", file=sys.stderr)
            ndjson = args.workdir / f"ids-{count}.ndjson"
            result[f"{name}_generate"] = generate(ndjson, count, args.seed)
            print(f"{name}: loading", file=sys.stderr)
            store = args.workdir / f"store-{count}"
            result[f"{name}_load"] = load(procs, store, ndjson, count)
            ndjson.unlink()
            port = free_udp_tcp_port("127.0.0.1")
            server = serve(procs, store, port, args.workers)
            target = args.resolutions if name == "large" else 0  # the small store: --rate-rounds rounds only
            print(f"{name}: resolving", file=sys.stderr)
            result[f"{name}_resolve"] = drive(
                port, count, args.seed, target, server.pid, args.round_s, args.warmup_s, args.rate_rounds
            )
            procs.stop(server)
            if name == "large":
                server = serve(procs, store, port, args.workers)  # the restart: counts must have survived
                procs.stop(server)
                result["report_after_restart"] = report(store)
        large, small = (
            result["large_resolve"]["median_answers_per_s"],
            result["small_resolve"]["median_answers_per_s"],
        )
        result["rate_ratio_large_to_small"] = round(large / small, 3)
    finally:
        procs.stop_all()
        if not args.keep:
            for path in args.workdir.glob("store-*"):
                shutil.rmtree(path, ignore_errors=True)
            for path in args.workdir.glob("ids-*.ndjson"):
                path.unlink(missing_ok=True)
    write_results(result, args.out)
    return 0


def write_results(result: dict, out_dir: Path = RESULTS) -> None:
    from bench.results_io import machine_facts, write_summary

    result.setdefault("machine", machine_facts())
    out_dir.mkdir(parents=True, exist_ok=True)
    chart_note = plot(result, out_dir / "scale.png")
    if chart_note:
        result["chart"] = chart_note
        print(f"bench-scale: {chart_note}", file=sys.stderr)
    (out_dir / "scale.json").write_text(json.dumps(result, indent=2))
    write_summary(out_dir / "scale.md", "Scale run", result, _summary_rows(result))


def plot(result: dict, path: Path) -> str:
    """scale.png: answers/s over the resolution rounds and the latency distribution, each store a line.
    Returns "" or why there is no chart."""
    from bench.load.plot import plot_series

    series = []
    for name in ("small", "large"):
        resolved = result.get(f"{name}_resolve")
        if not resolved or not resolved.get("answers_per_s_timeline"):
            continue
        count = result.get("small_count" if name == "small" else "count")
        label = f"{count:,} identifiers" if count else name
        series.append({
            "label": f"{label}: median {resolved['median_answers_per_s']:,.0f}/s",
            "timeline": resolved["answers_per_s_timeline"],
            "interval_s": resolved["timeline_interval_s"],
            "histogram": resolved["latency_histogram"],
            "latency_us": {},
        })  # fmt: skip
    if not series:
        return "no resolution rounds with a timeline: no chart"
    title = f"Scale run: Handle UDP resolutions, rounds of {result.get('round_s', ROUND_S):g} s one after the other"
    return plot_series(series, path, title)


def _summary_rows(r: dict) -> list[tuple[str, str, str]]:
    figures = r.get("report_after_restart", {}).get("figures", [])
    cumulative = next((f["value"] for f in figures if f["name"].startswith("cumulative resolutions")), None)
    return [
        ("identifiers loaded", f"{r['count']:,}", "20,000,000"),
        ("load time", f"{r['large_load']['seconds']} s ({r['large_load']['per_s']:,}/s)", "≤ 120 s"),
        ("store bytes per identifier", f"{r['large_load']['bytes_per_identifier']}", "≤ 300"),
        ("loader peak memory", f"{r['large_load']['peak_rss_bytes'] / 2**20:,.0f} MiB", ""),
        ("resolutions driven", f"{r['large_resolve']['answers']:,}", "≥ 5,000,000"),
        ("errors", f"{r['large_resolve']['errors']:,}", "0"),
        ("rate, 20M store (median)", f"{r['large_resolve']['median_answers_per_s']:,.0f}/s", ""),
        ("rate, 1M store (median)", f"{r['small_resolve']['median_answers_per_s']:,.0f}/s", ""),
        ("ratio 20M / 1M", f"{r['rate_ratio_large_to_small']}", "≥ 0.85"),
        (
            "cumulative resolutions after restart (idnode report)",
            f"{cumulative:,}" if cumulative is not None else "?",
            "≥ 5,000,000",
        ),
    ]


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ScaleError as exc:
        print(f"bench-scale: {exc}", file=sys.stderr)
        sys.exit(2)
