"""Recursion figures: latency of a REC resolution answered by asking an enterprise node (cold), answered from
the cache (cached), the same identifiers asked at the enterprise node directly and a local identifier of the
node (baselines), and the cache hit rate of a Zipf-popular workload, all against a second `idnode serve` on
loopback acting as the enterprise node.

    python -m bench.recursion --count 20000 --sample 2000 --questions 20000 --out bench/results

Two nodes, one worker each, on 127.0.0.1: E serves `--count` generated identifiers under 88.200.1; A (node
prefix 88.100, 1,000 local identifiers) refers 88.200.1 to E and resolves REC requests there. Latencies are
measured by one closed-loop client (one request at a time over UDP), so they include the client's own
Python time, alike for every row. The hit rate comes from A's /metrics (idnode_recursions_total) before and
after the Zipf phase, which sends `--questions` requests `--window` at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.compare import Processes
from bench.datagen import generate_lines, write_ndjson
from bench.results_io import machine_facts
from resolver.client import HandleClient
from resolver.handle.constants import OpFlag, ResponseCode
from storage.enterprises import site_from_address
from storage.loader import load_files
from storage.store import PrefixInfo, Store

ROOT = Path(__file__).resolve().parents[1]
REC = int(OpFlag.REC | OpFlag.PO)
NO_REC = int(OpFlag.PO)
START_TIMEOUT_S = 60.0  #: a node opens its store and binds in about a second; slow machines get more
ENTERPRISE_PREFIX = "88.200"  #: E's identifiers live under 88.200.1, outside A's node prefix
LOCAL_COUNT = 1000  #: identifiers A holds itself, for the local baseline
PUBLISH_WAIT_S = 2.5  #: a worker moves its recursion counts to /metrics once a housekeeping pass (a second)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        for _ in range(50):
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            try:
                tcp.bind(("127.0.0.1", port))
                return port
            except OSError:
                udp.close()
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raise RuntimeError("no free port")


def build_store(path: Path, count: int, prefix: str, enterprises: int, seed: int) -> list[str]:
    """A store of `count` generated identifiers; returns their handles."""
    ndjson = path.with_suffix(".ndjson")
    with ndjson.open("w", encoding="utf-8") as out:
        write_ndjson(generate_lines(count, seed, prefix, enterprises), out)
    with Store(path, create=True) as store:
        load_files(store, [ndjson])
    return [json.loads(line)["handle"] for line in ndjson.open(encoding="utf-8")]


async def wait_ready(port: int, handle: str, process) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"a node exited with {process.returncode}")
        try:
            async with HandleClient("127.0.0.1", port, timeout_s=0.5) as client:
                if (await client.resolve(handle, op_flags=NO_REC)).ok:
                    return
        except Exception:
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the node on port {port} did not answer {handle} within {START_TIMEOUT_S:g} s")


def percentiles(samples_s: list[float]) -> dict:
    ordered = sorted(samples_s)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6, 1)

    return {"n": len(ordered), "min_us": at(0), "p50_us": at(0.5), "p90_us": at(0.9), "p99_us": at(0.99),
            "max_us": round(ordered[-1] * 1e6, 1)}  # fmt: skip


async def latencies(port: int, handles: list[str], flags: int) -> dict:
    """One request at a time over one UDP client; every answer must be SUCCESS."""
    samples = []
    async with HandleClient("127.0.0.1", port, timeout_s=5.0) as client:
        for handle in handles:
            started = time.perf_counter()
            answer = await client.resolve(handle, op_flags=flags)
            samples.append(time.perf_counter() - started)
            if answer.response_code != ResponseCode.SUCCESS:
                raise RuntimeError(f"{handle}: {answer.response_code} {answer.message}")
    return percentiles(samples)


def recursion_counts(http_port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5).read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith('idnode_recursions_total{outcome="'):
            outcome = line.split('"')[1]
            counts[outcome] = float(line.rsplit(" ", 1)[1])
    return counts


async def zipf_phase(port: int, handles: list[str], questions: int, s: float, window: int, seed: int) -> dict:
    """`questions` REC requests over `handles` by Zipf popularity, `window` outstanding at a time."""
    rng = random.Random(seed)
    weights = [1.0 / (rank + 1) ** s for rank in range(len(handles))]
    asked = rng.choices(handles, weights=weights, k=questions)
    codes: dict[int, int] = {}
    async with HandleClient("127.0.0.1", port, timeout_s=10.0) as client:
        started = time.perf_counter()
        for i in range(0, questions, window):
            answers = await asyncio.gather(*(client.resolve(h, op_flags=REC) for h in asked[i : i + window]))
            for answer in answers:
                codes[answer.response_code] = codes.get(answer.response_code, 0) + 1
        spent = time.perf_counter() - started
    return {"questions": questions, "distinct": len(set(asked)), "seconds": round(spent, 2),
            "answers_per_s": round(questions / spent), "codes": codes}  # fmt: skip


def run(args: argparse.Namespace, work: Path, processes: Processes) -> dict:
    ent_handles = build_store(work / "enterprise", args.count, ENTERPRISE_PREFIX, 1, args.seed)
    local_handles = build_store(work / "node", LOCAL_COUNT, "88.100", 8, args.seed + 1)
    ent_port, node_port, http_port = free_port(), free_port(), free_port()
    prefix = ent_handles[0].split("/")[0]
    with Store(work / "node") as store:
        store.put_prefix(PrefixInfo(prefix, org="bench enterprise", state="referral",
                                    site=site_from_address(f"127.0.0.1:{ent_port}")))  # fmt: skip
    serve = [sys.executable, "-m", "resolver.cli", "serve", "--workers", "1", "--probe-interval", "0"]
    ent = processes.start("enterprise", [*serve, "--data", str(work / "enterprise"), "--handle-port",
                                         str(ent_port)], work / "enterprise.log", cwd=ROOT)  # fmt: skip
    node = processes.start("node", [*serve, "--data", str(work / "node"), "--handle-port", str(node_port),
                                    "--http-port", str(http_port)], work / "node.log", cwd=ROOT)  # fmt: skip
    asyncio.run(wait_ready(ent_port, ent_handles[0], ent.process))
    asyncio.run(wait_ready(node_port, local_handles[0], node.process))
    rng = random.Random(args.seed)
    sample = rng.sample(ent_handles[1:], min(args.sample, len(ent_handles) - 1))
    local = rng.sample(local_handles, min(args.sample, len(local_handles)))
    rows = {
        "local identifier at the node (no recursion)": asyncio.run(latencies(node_port, local, NO_REC)),
        "the enterprise node asked directly": asyncio.run(latencies(ent_port, sample, NO_REC)),
        "REC at the node, cold (the enterprise node asked)": asyncio.run(latencies(node_port, sample, REC)),
        "REC at the node, cached": asyncio.run(latencies(node_port, sample, REC)),
    }
    time.sleep(PUBLISH_WAIT_S)  # the counts of the rows above reach /metrics first
    before = recursion_counts(http_port)
    fresh = [h for h in ent_handles[1:] if h not in set(sample)]
    rng.shuffle(fresh)
    zipf = asyncio.run(zipf_phase(node_port, fresh, args.questions, args.zipf_s, args.window, args.seed))
    time.sleep(PUBLISH_WAIT_S)
    after = recursion_counts(http_port)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    asked = sum(delta.get(k, 0) for k in ("hit", "miss", "joined"))
    zipf["recursions"] = delta
    zipf["hit_rate"] = round(delta.get("hit", 0) / asked, 4) if asked else None
    return {"latency": rows, "zipf": zipf}


def markdown(result: dict) -> str:
    m, a = result["machine"], result["args"]
    lines = [
        "# Recursion to an enterprise node: latency and cache hit rate",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']}, kernel "
        f"{m['kernel']}; commit {m['commit']}; {m['date']}. The machine was shared with other work while this ran.",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Two `idnode serve` on 127.0.0.1, one worker each: the enterprise node holds {a['count']:,} identifiers, "
        "the node refers their prefix to it. One client, one UDP request at a time, "
        f"{a['sample']:,} identifiers per row (the client's own Python time is in every row alike).",
        "",
        "| what | n | min µs | P50 µs | P90 µs | P99 µs | max µs |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["latency"].items():
        lines.append(f"| {name} | {r['n']:,} | {r['min_us']} | {r['p50_us']} | {r['p90_us']} | {r['p99_us']} | "
                     f"{r['max_us']} |")  # fmt: skip
    z = result["zipf"]
    lines += [
        "",
        f"Zipf popularity (s = {a['zipf_s']}) over {a['count'] - a['sample'] - 1:,} identifiers not asked before: "
        f"{z['questions']:,} REC requests, {a['window']} outstanding, {z['distinct']:,} distinct: "
        f"**cache hit rate {z['hit_rate']:.1%}** ({z['recursions']}), {z['answers_per_s']:,} answers/s "
        f"(one client), codes {z['codes']}.",
        "",
    ]
    rows = list(result["latency"].values())
    direct, cold, cached = rows[1]["p50_us"], rows[2]["p50_us"], rows[3]["p50_us"]
    ideal = 1 - z["distinct"] / z["questions"]
    lines += [
        f"Read: a cold REC answer's median is {cold / direct:.1f}x the enterprise node's own ({cold - direct:.0f} µs "
        f"more: one more loopback round trip and the worker's upstream client); a cached one is {cached / direct:.2f}x. "
        f"The ideal hit rate of this workload (each distinct identifier asked upstream once) is {ideal:.1%}. "
        "Tails (P90 and up) move with the other work on the shared machine; compare medians.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recursion", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000, help="identifiers at the enterprise node")
    parser.add_argument("--sample", type=int, default=2000, help="identifiers per latency row")
    parser.add_argument("--questions", type=int, default=20000, help="requests of the Zipf phase")
    parser.add_argument("--zipf-s", type=float, default=1.0)
    parser.add_argument("--window", type=int, default=16, help="requests outstanding in the Zipf phase")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    processes = Processes()
    try:
        with tempfile.TemporaryDirectory(prefix="idnode-recursion-") as tmp:
            result = run(args, Path(tmp), processes)
    finally:
        processes.stop_all()
    result.update(machine=machine_facts(), args=vars(args) | {"out": str(args.out)},
                  command="python -m bench.recursion " + " ".join(argv if argv is not None else sys.argv[1:]))  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "recursion.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    (args.out / "recursion.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
