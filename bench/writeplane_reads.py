"""Read throughput per worker before and after the write plane (issue 12, item 7: at most 5% lower).

Two checkouts of idnode (``--before-tree``, e.g. a ``git worktree`` at the commit before resolver/writer came,
and ``--after-tree``, this one by default) each build their own store of ``--count`` generated identifiers with
their own loader, and serve it with ``idnode serve --workers 1`` pinned to ``--server-cpu``, both at once (the
one not measured waits idle). Rounds alternate between them (before-after, then after-before, ...), each after
a wait for a quiet machine: ``--duration`` seconds of the closed-loop Handle UDP generator (64 sockets x window
4, 10% absent identifiers; bench/load) pinned to ``--client-cpu``. Reported per tree: the median answers/s,
answers per CPU-second of the server (less sensitive to others' work on a shared machine), p99, losses; and the
ratio after / before of both medians.

    python -m bench.writeplane_reads --before-tree /tmp/before --count 1000000 --rounds 6

Writes ``--out``/NAME.json and NAME.md. Bounded: every wait has a limit, both nodes are stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

from bench.compare import wait_for_quiet
from bench.loadgen import DatasetSpec, LoadSpec, run_load
from bench.results_io import machine_facts
from bench.writeplane_load import (
    DEFAULT_WORKDIR,
    RESULTS,
    Node,
    WriteplaneBenchError,
    _first_handle,
    pristine_store,
    tree_state,
)

TARGET_RATIO = 0.95  #: issue 12: read throughput per worker at most 5% lower than before the write plane
QUIET_WAIT_S = 60.0  #: before each round, wait at most this for the machine to be nearly idle
MISSING = 0.1  #: share of requests for absent identifiers, as in bench/results/udp-1m.md
SOCKETS, WINDOW = 64, 4  #: 256 requests outstanding: the closed loop of udp-1m.md


def run_round(node: Node, args: argparse.Namespace) -> dict:
    waited = wait_for_quiet(args.quiet_wait_s)
    spec = LoadSpec(
        "udp", "127.0.0.1", node.handle_port, DatasetSpec(args.count, args.seed), duration_s=args.duration,
        warmup_s=args.warmup, processes=1, sockets=SOCKETS, window=WINDOW, missing_ratio=MISSING, seed=args.seed,
    )  # fmt: skip
    result = run_load(spec, [node.process.pid])
    server_cpu = sum((result.get("server_cpu") or {}).values())
    return {
        "answers_per_s": result["answers_per_s"],
        "server_cpu": round(server_cpu, 3),
        "answers_per_cpu_s": round(result["answers_per_s"] / server_cpu) if server_cpu else None,
        "p99_ms": round(result["latency_us"]["p99"] / 1000, 3),
        "lost": result["lost"],
        "errors": sum(result["errors"].values()),
        "machine_busy_cores": result["machine_busy"]["cores"],
        "generator_cpu": result["generator_cpu"],
        "waited_for_quiet_s": waited,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.writeplane_reads", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--before-tree", type=Path, required=True, help="checkout of idnode before the write plane"
    )
    p.add_argument("--after-tree", type=Path, default=Path(__file__).resolve().parent.parent)
    p.add_argument("--count", type=int, default=1_000_000)
    p.add_argument("--rounds", type=int, default=6, help="rounds per tree, alternated")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quiet-wait-s", type=float, default=QUIET_WAIT_S)
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--name", default="writeplane-reads")
    args = p.parse_args(argv)
    if args.server_cpu == args.client_cpu or not {args.server_cpu, args.client_cpu} <= os.sched_getaffinity(
        0
    ):
        p.error("--server-cpu and --client-cpu must be two distinct CPUs available to this process")
    if args.rounds < 1 or args.duration <= 0:
        p.error("--rounds and --duration must be positive")
    trees = {"before": args.before_tree.absolute(), "after": args.after_tree.absolute()}
    if trees["before"].name == trees["after"].name:
        p.error("the two trees need different directory names (their stores are named after them)")

    def log(text: str) -> None:
        print(f"writeplane_reads: {text}", file=sys.stderr, flush=True)

    args.workdir.mkdir(parents=True, exist_ok=True)
    stores = {
        name: pristine_store(tree, args.workdir, args.count, args.seed, log) for name, tree in trees.items()
    }
    probe = _first_handle(args.workdir / f"ids-{args.count}-{args.seed}.ndjson")
    nodes: dict[str, Node] = {}
    rounds: list[dict] = []
    affinity = os.sched_getaffinity(0)
    try:
        for name, tree in trees.items():
            nodes[name] = Node(tree, stores[name], args.server_cpu, args.workdir / f"serve-reads-{name}.log")
        for node in nodes.values():
            node.wait_ready(probe, writer=False)
        os.sched_setaffinity(0, {args.client_cpu})  # the generator's process inherits it
        for n in range(args.rounds):
            for name in ("before", "after") if n % 2 == 0 else ("after", "before"):
                record = {"round": n + 1, "tree": name, **run_round(nodes[name], args)}
                log(f"round {n + 1} {name}: {record['answers_per_s']:,.0f} answers/s, "
                    f"{record['answers_per_cpu_s'] or 0:,} per server CPU-s, p99 {record['p99_ms']} ms")  # fmt: skip
                rounds.append(record)
    finally:
        os.sched_setaffinity(0, affinity)
        for node in nodes.values():
            node.stop()
    summary = {}
    for name in trees:
        mine = [r for r in rounds if r["tree"] == name]
        summary[name] = {
            "median_answers_per_s": statistics.median(r["answers_per_s"] for r in mine),
            "median_answers_per_cpu_s": statistics.median(r["answers_per_cpu_s"] or 0 for r in mine),
            "median_p99_ms": statistics.median(r["p99_ms"] for r in mine),
            "lost": sum(r["lost"] for r in mine),
        }
    ratio = summary["after"]["median_answers_per_s"] / summary["before"]["median_answers_per_s"]
    cpu_ratio = summary["after"]["median_answers_per_cpu_s"] / (
        summary["before"]["median_answers_per_cpu_s"] or 1
    )
    result = {
        "command": " ".join(
            ["python -m bench.writeplane_reads", *(argv if argv is not None else sys.argv[1:])]
        ),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": machine_facts(),
        "trees": {name: tree_state(tree) for name, tree in trees.items()},
        "summary": summary,
        "ratio_answers_per_s": round(ratio, 3),
        "ratio_answers_per_cpu_s": round(cpu_ratio, 3),
        "target_ratio": TARGET_RATIO,
        "rounds": rounds,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.out / f"{args.name}.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    s, t = result["summary"], result["trees"]
    lines = [
        f"# Read throughput per worker, before and after the write plane ({result['machine']['date']})",
        "",
        f"Command: `{result['command']}`",
        "",
        "| tree | commit | median answers/s | median answers per server CPU-s | median p99 ms | lost |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name in ("before", "after"):
        lines.append(
            f"| {name} | `{t[name]['commit']}` | {s[name]['median_answers_per_s']:,.0f} | "
            f"{s[name]['median_answers_per_cpu_s']:,.0f} | {s[name]['median_p99_ms']} | {s[name]['lost']} |"
        )
    lines += [
        "",
        f"After / before: **{result['ratio_answers_per_s']}** in answers/s, **{result['ratio_answers_per_cpu_s']}** "
        f"in answers per server CPU-second (target >= {result['target_ratio']}).",
        "",
        "| round | tree | answers/s | server CPU | per CPU-s | p99 ms | lost | machine busy (cores) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rounds"]:
        lines.append(
            f"| {r['round']} | {r['tree']} | {r['answers_per_s']:,.0f} | {r['server_cpu']} | "
            f"{r['answers_per_cpu_s'] or 0:,} | {r['p99_ms']} | {r['lost']} | {r['machine_busy_cores']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except WriteplaneBenchError as exc:
        print(f"writeplane_reads: {exc}", file=sys.stderr)
        sys.exit(2)
