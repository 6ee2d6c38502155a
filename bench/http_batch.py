"""Batch registration over HTTP, end to end: concurrent clients POST 2,000-identifier NDJSON batches to
`/api/batch` of a running node, and the identifiers registered per second are measured.

By default the script builds a fresh store (one enterprise prefix with a credential), starts
`idnode serve --http-port` on it, runs the load and stops the node; `--server URL --user U --secret S` aims
at a node already running instead. Bodies are generated before the clock starts (realistic records from
bench/datagen.py, sorted like an enterprise's export, or shuffled with --shuffle); warm-up batches are sent
first and not counted. Prints a Min/P50/P90/P99/Max table of batch latency and the rate, and writes under
--out (bench/results by default) http-batch.json (settings, every batch's latency, identifiers/s over time,
machine, commit, command), http-batch.png (the rate over time and the batch latency distribution) and
http-batch-summary.md; --name changes the "http-batch" of those names, `--json FILE` writes the JSON elsewhere too.

    .venv/bin/python -m bench.http_batch --batches 100 --clients 4 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import aiohttp

from bench.datagen import generate_lines
from bench.results_io import machine_facts, write_summary
from resolver.server.sockets import free_udp_tcp_port

RESULTS = Path(__file__).resolve().parent / "results"
BATCH_SIZE = 2_000  #: identifiers per request: the API's limit
TARGET_PER_S = 20_000  #: the batch registration target (README, Performance), identifiers/s end to end
TIMELINE_BINS = 20  #: the rate over time is drawn in this many steps, whatever the run's length
START_TIMEOUT_S = 30.0  #: the spawned node must answer HTTP within this
REQUEST_TIMEOUT_S = 120.0  #: one batch request, at most


def make_bodies(count: int, size: int, seed: int, prefix: str, shuffle: bool) -> list[bytes]:
    """`count` NDJSON bodies of `size` records under `{prefix}.1`, generated up front."""
    lines = [line if isinstance(line, str) else json.dumps(line, ensure_ascii=False)
             for line in generate_lines(count * size, seed, prefix, 1)]  # fmt: skip
    if shuffle:
        random.Random(seed).shuffle(lines)
    return [("\n".join(lines[n * size : (n + 1) * size]) + "\n").encode() for n in range(count)]


class SpawnedNode:
    """A fresh store with one credentialed enterprise prefix, served by `idnode serve` until stopped."""

    def __init__(self, prefix: str, workers: int):
        self.dir = Path(tempfile.mkdtemp(prefix="idnode-http-bench-"))
        self.data = self.dir / "store"
        self.prefix = prefix
        idnode = [sys.executable, "-m", "resolver.cli"]
        seed_file = self.dir / "seed.ndjson"
        seed_file.write_text(json.dumps({"handle": f"{prefix}.0/SEED", "values": []}) + "\n")
        subprocess.run([*idnode, "load", "--quiet", "--data", str(self.data), str(seed_file)], check=True,
                       capture_output=True)  # fmt: skip
        # --prefix need not be below the node's own prefix (88.100 by default): the store is the bench's alone.
        subprocess.run([*idnode, "prefix", "add", f"{prefix}.1", "--org", "bench", "--outside-node-prefix",
                        "--data", str(self.data)], check=True, capture_output=True)  # fmt: skip
        out = subprocess.run([*idnode, "prefix", "credential", f"{prefix}.1", "--json", "--data", str(self.data)],
                             check=True, capture_output=True, text=True).stdout  # fmt: skip
        cred = json.loads(out)
        self.user, self.secret = cred["user"], cred["secret"]
        self.port = free_udp_tcp_port("127.0.0.1")
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.dir / "serve.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [*idnode, "serve", "--data", str(self.data), "--handle-port", str(free_udp_tcp_port("127.0.0.1")),
             "--http-port", str(self.port), "--workers", str(workers)],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    async def wait(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(f"{self.url}/api/stats") as resp:
                        if resp.status == 200:
                            await asyncio.sleep(0.5)  # every worker binds its SO_REUSEPORT socket
                            return
                except aiohttp.ClientError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"idnode serve did not start; see {self.dir / 'serve.log'}")
                await asyncio.sleep(0.1)

    def pids(self) -> list[int]:
        return [self.process.pid]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


async def post_all(
    url: str, user: str, secret: str, bodies: list[bytes], clients: int
) -> tuple[list[tuple[float, float, int]], int, int]:
    """(per batch (perf_counter at its answer, seconds, created+replaced), identifiers accepted, failures) with
    `clients` concurrent connections taking the next body until none is left."""
    queue = list(reversed(bodies))
    done: list[tuple[float, float, int]] = []
    ok = failed = 0
    # The user has a ':': percent-encoded, as pyhandle sends it.
    token = base64.b64encode(f"{quote(user)}:{secret}".encode()).decode()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    headers = {"Content-Type": "application/x-ndjson", "Authorization": f"Basic {token}"}

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal ok, failed
        while queue:
            body = queue.pop()
            started = time.perf_counter()
            async with session.post(f"{url}/api/batch", data=io.BytesIO(body), headers=headers) as resp:
                result = await resp.json()
            answered = time.perf_counter()
            if resp.status != 200:
                raise RuntimeError(f"batch refused: HTTP {resp.status}: {str(result)[:300]}")
            done.append((answered, answered - started, result["created"] + result["replaced"]))
            ok += result["created"] + result["replaced"]
            failed += result["failed"]

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return done, ok, failed


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def rate_timeline(answered_s: list[tuple[float, int]], seconds: float) -> tuple[float, list[float]]:
    """(interval, identifiers/s in each interval) from (seconds after the start, identifiers) of each answered
    batch: a batch counts whole in the interval of its answer."""
    interval_s = max(seconds / TIMELINE_BINS, 1e-3)
    totals = [0] * TIMELINE_BINS
    for at_s, identifiers in answered_s:
        totals[min(TIMELINE_BINS - 1, int(at_s / interval_s))] += identifiers
    return interval_s, [n / interval_s for n in totals]


def format_result(result: dict) -> str:
    lat = result["latency_ms"]
    lines = [
        f"{result['identifiers']:,} identifiers in {result['batches']} batches of {result['batch_size']:,}, "
        f"{result['clients']} clients, {result['workers']} workers: {result['seconds']:.2f} s",
        f"rate: {result['identifiers_per_s']:,.0f} identifiers/s ({result['failed']} failed)",
        "batch latency ms   Min     P50     P90     P99     Max",
        f"                 {lat['min']:6.1f}  {lat['p50']:6.1f}  {lat['p90']:6.1f}  {lat['p99']:6.1f}  {lat['max']:6.1f}",
    ]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict:
    node = None
    if args.server:
        url, user, secret = args.server.rstrip("/"), args.user, args.secret
    else:
        node = SpawnedNode(args.prefix, args.workers)
        url, user, secret = node.url, node.user, node.secret
    try:
        if node is not None:
            await node.wait()
        total = args.warmup + args.batches
        bodies = make_bodies(total, args.batch_size, args.seed, args.prefix, args.shuffle)
        await post_all(url, user, secret, bodies[: args.warmup], args.clients)
        started = time.perf_counter()
        done, ok, failed = await post_all(url, user, secret, bodies[args.warmup :], args.clients)
        seconds = time.perf_counter() - started
    finally:
        if node is not None:
            node.stop()
    ordered = sorted(latency for _, latency, _ in done)
    interval_s, timeline = rate_timeline([(at - started, n) for at, _, n in done], seconds)
    return {
        "identifiers": ok,
        "failed": failed,
        "batches": args.batches,
        "batch_size": args.batch_size,
        "clients": args.clients,
        "workers": args.workers if node is not None else None,
        "shuffled": args.shuffle,
        "seconds": seconds,
        "identifiers_per_s": ok / seconds if seconds else 0.0,
        "latency_ms": {
            "min": ordered[0] * 1000,
            "p50": _percentile(ordered, 0.5) * 1000,
            "p90": _percentile(ordered, 0.9) * 1000,
            "p99": _percentile(ordered, 0.99) * 1000,
            "max": ordered[-1] * 1000,
        },
        "batch_latencies_ms": [round(latency * 1000, 2) for _, latency, _ in done],  # in order of answer
        "timeline_interval_s": interval_s,
        "identifiers_per_s_timeline": timeline,
        "target_per_s": TARGET_PER_S,
        "machine": machine_facts(),
    }


def write_results(result: dict, out_dir: Path = RESULTS, name: str = "http-batch") -> list[Path]:
    """NAME.json, NAME.png and NAME-summary.md in `out_dir`; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png, summary = out_dir / f"{name}.png", out_dir / f"{name}-summary.md"
    chart_note = plot(result, png)
    if chart_note:
        result["chart"] = chart_note
        print(f"bench.http_batch: {chart_note}", file=sys.stderr)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    order = "random order" if result["shuffled"] else "key order"
    more = [] if chart_note else [f"![identifiers/s over time and batch latency]({png.name})"]
    write_summary(summary, f"Batch registration over HTTP, {order}", result, _summary_rows(result), more)
    return [out_dir / f"{name}.json", *([] if chart_note else [png]), summary]


def _summary_rows(r: dict) -> list[tuple[str, str, str]]:
    lat = r["latency_ms"]
    workers = f", {r['workers']} workers" if r["workers"] else ""
    return [
        ("identifiers registered", f"{r['identifiers']:,} in {r['batches']} batches of {r['batch_size']:,} "
         f"({r['failed']} failed)", ""),
        ("clients", f"{r['clients']}{workers}", ""),
        ("rate", f"{r['identifiers_per_s']:,.0f} identifiers/s in {r['seconds']:.2f} s",
         f"≥ {r['target_per_s']:,}/s"),
        ("batch latency ms Min / P50 / P90 / P99 / Max",
         " / ".join(f"{lat[k]:.1f}" for k in ("min", "p50", "p90", "p99", "max")), ""),
    ]  # fmt: skip


def plot(result: dict, path: Path) -> str:
    """Identifiers/s over the run (with the overall rate and the target) and the CDF of batch latency.
    Returns "" or why there is no chart."""
    from bench.load.plot import NO_MATPLOTLIB, pyplot

    plt = pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    fig, (rate_ax, latency_ax) = plt.subplots(1, 2, figsize=(13, 4.8), dpi=110)
    interval_s, timeline = result["timeline_interval_s"], result["identifiers_per_s_timeline"]
    rate_ax.bar([(i + 0.5) * interval_s for i in range(len(timeline))], [r / 1000 for r in timeline],
                width=interval_s * 0.9, color="C0", label="identifiers/s in each step")  # fmt: skip
    rate_ax.axhline(result["identifiers_per_s"] / 1000, color="black", linestyle="--", linewidth=1,
                    label=f"whole run {result['identifiers_per_s']:,.0f}/s")  # fmt: skip
    rate_ax.axhline(result["target_per_s"] / 1000, color="C3", linestyle=":", linewidth=1.5,
                    label=f"target {result['target_per_s']:,}/s")  # fmt: skip
    rate_ax.set_ylim(0, max([*timeline, result["target_per_s"]]) / 1000 * 1.15)
    rate_ax.set_xlabel("seconds of the measurement (a batch counts at its answer)")
    rate_ax.set_ylabel("thousand identifiers/s")
    rate_ax.set_title("identifiers registered per second", fontsize=10)
    ordered = sorted(result["batch_latencies_ms"])
    shares = [(n + 1) / len(ordered) for n in range(len(ordered))]
    latency_ax.step([ordered[0], *ordered], [0.0, *shares], where="post", color="C0")
    lat = result["latency_ms"]
    marked = [(name, share, lat[key]) for key, name, share in (("p50", "P50", 0.5), ("p90", "P90", 0.9),
                                                                ("p99", "P99", 0.99))]  # fmt: skip
    latency_ax.plot([v for _, _, v in marked], [s for _, s, _ in marked], "o", color="C0", markersize=3)
    latency_ax.text(0.02, 0.97, "\n".join(f"{name} {value:,.1f} ms" for name, _, value in marked),
                    transform=latency_ax.transAxes, va="top", fontsize=8)  # fmt: skip
    latency_ax.set_xlim(0, ordered[-1] * 1.05)
    latency_ax.set_ylim(0, 1.01)
    latency_ax.set_xlabel("batch latency, ms")
    latency_ax.set_ylabel("share of batches at or below")
    latency_ax.set_title(f"batch latency distribution (CDF, {len(ordered)} batches)", fontsize=10)
    for ax in (rate_ax, latency_ax):
        ax.grid(True, alpha=0.3)
    rate_ax.legend(fontsize=8, loc="best")
    order = "random order" if result["shuffled"] else "key order"
    workers = f", {result['workers']} workers" if result["workers"] else ""
    fig.suptitle(f"POST /api/batch, {result['batch_size']:,} a request, {order}, {result['clients']} clients"
                 f"{workers}: {result['identifiers_per_s']:,.0f} identifiers/s "
                 f"(commit {result['machine']['commit']})", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_batch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=100, help="measured batches")
    parser.add_argument("--warmup", type=int, default=4, help="batches sent first, not measured")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--clients", type=int, default=4, help="concurrent connections")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the spawned node")
    parser.add_argument("--prefix", default="88.200", help="identifiers go under PREFIX.1")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--shuffle", action="store_true", help="send identifiers in random order (no append path)"
    )
    parser.add_argument("--server", help="URL of a running node instead of spawning one")
    parser.add_argument("--user", help="with --server: 300:<prefix>/ADMIN or operator")
    parser.add_argument("--secret", help="with --server: the user's secret")
    parser.add_argument("--json", help="also write the result to this file")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where NAME.json, .png, -summary.md go")
    parser.add_argument("--name", default="http-batch", help="the name of the files written under --out")
    args = parser.parse_args(argv)
    if args.server and not (args.user and args.secret):
        parser.error("--server needs --user and --secret")
    given = list(argv if argv is not None else sys.argv[1:])
    if args.secret:  # the result files are committed: the command names no secret
        given = [arg.replace(args.secret, "<secret>") for arg in given]
    command = " ".join(["python -m bench.http_batch", *given])
    result = {"command": command, **asyncio.run(run(args))}
    print(format_result(result))
    for path in write_results(result, args.out, args.name):
        print(f"wrote {path}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
