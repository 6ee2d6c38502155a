"""Batch registration over HTTP, end to end: concurrent clients POST 2,000-identifier NDJSON batches to
`/api/batch` of a running node, and the identifiers registered per second are measured.

By default the script builds a fresh store (one enterprise prefix with a credential), starts
`idnode serve --http-port` on it, runs the load and stops the node; `--server URL --user U --secret S` aims
at a node already running instead. Bodies are generated before the clock starts (realistic records from
bench/datagen.py, sorted like an enterprise's export, or shuffled with --shuffle); warm-up batches are sent
first and not counted. Prints a Min/P50/P90/P99/Max table of batch latency and the rate; `--json FILE`
writes the result.

    .venv/bin/python -m bench.http_batch --batches 100 --clients 4 --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
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

BATCH_SIZE = 2_000  #: identifiers per request: the API's limit
START_TIMEOUT_S = 30.0  #: the spawned node must answer HTTP within this
REQUEST_TIMEOUT_S = 120.0  #: one batch request, at most


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
        subprocess.run([*idnode, "prefix", "add", f"{prefix}.1", "--org", "bench", "--data", str(self.data)],
                       check=True, capture_output=True)  # fmt: skip
        out = subprocess.run([*idnode, "prefix", "credential", f"{prefix}.1", "--json", "--data", str(self.data)],
                             check=True, capture_output=True, text=True).stdout  # fmt: skip
        cred = json.loads(out)
        self.user, self.secret = cred["user"], cred["secret"]
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(self.dir / "serve.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [*idnode, "serve", "--data", str(self.data), "--handle-port", str(_free_port()),
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
) -> tuple[list, int, int]:
    """(per-batch (seconds, created+replaced), identifiers accepted, failures) with `clients` concurrent
    connections taking the next body until none is left."""
    queue = list(reversed(bodies))
    latencies: list[float] = []
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
            latencies.append(time.perf_counter() - started)
            if resp.status != 200:
                raise RuntimeError(f"batch refused: HTTP {resp.status}: {str(result)[:300]}")
            ok += result["created"] + result["replaced"]
            failed += result["failed"]

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return latencies, ok, failed


def _percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


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
        latencies, ok, failed = await post_all(url, user, secret, bodies[args.warmup :], args.clients)
        seconds = time.perf_counter() - started
    finally:
        if node is not None:
            node.stop()
    ordered = sorted(latencies)
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
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "system": platform.platform(),
        },
        "command": " ".join(sys.argv),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    args = parser.parse_args(argv)
    if args.server and not (args.user and args.secret):
        parser.error("--server needs --user and --secret")
    result = asyncio.run(run(args))
    print(format_result(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
