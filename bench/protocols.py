"""Every protocol of ``idnode bench`` against one worker, in rounds (``make bench-protocols``, or
``.venv/bin/python -m bench.protocols --help``): the series behind bench/results/loadgen.md, rerunnable.

What it does:

1. builds a store of ``--count`` generated identifiers (``idnode gen`` + ``idnode load``) in ``--workdir``, once:
   a later run with the same count and seed reuses it (bench.compare.build_data, which also exports the zone);
2. starts ``idnode serve --workers 1`` on 127.0.0.1 at free ports (Handle UDP+TCP, DNS, HTTP), pinned to CPU 0
   (``taskset -c 0``), and with ``--dns-memo-off`` (the default) a second one with ``--dns-memo-mb 0`` for the
   DNS view's memo-off row;
3. for each of ``--rounds`` rounds and each protocol (the order rotating by one each round, so a drift of the
   machine is shared out), waits for a quiet machine (bench.compare.wait_for_quiet), then runs
   ``idnode bench <protocol>`` pinned to CPU 1 for ``--duration`` seconds after ``--warmup``, closed loop with
   the settings of loadgen.md (CLOSED_LOOP), ``--missing`` of the requests for absent identifiers, and
   ``--server-pid``, so the result carries the server's and the generator's CPU and any other busy process;
4. stops the servers by PID (also on Ctrl-C, SIGTERM or an error) and writes to ``--out``: the median round of
   each protocol as ``idnode bench`` wrote it (loadgen-<protocol>.json, .png, .md), and protocols.json (machine,
   commit, command, every round), protocols.md (the tables) and protocols.png (answers/s per round).

Bounded: every step has a time limit (server start, each ``idnode bench``, the wait for quiet) and the rounds and
seconds are capped. Traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.compare import (
    MAX_ROUNDS,
    MAX_SECONDS,
    START_TIMEOUT_S,
    ZONE,
    Interrupted,
    Processes,
    Started,
    build_data,
    idnode_cmd,
    machine,
    stopped_on_exit,
    unaccounted,
    wait_for_quiet,
    wait_ready,
)
from bench.datagen import Dataset
from bench.load.plot import NO_MATPLOTLIB, pyplot
from bench.load.spec import REQUEST_TIMEOUT_S
from resolver.dnsview import handle_to_name
from resolver.server.sockets import free_udp_tcp_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEFAULT_WORKDIR = Path("/var/tmp/idnode-protocols")
PROTOCOLS = ("udp", "tcp", "dns", "http")
MEMO_OFF = "dns-nomemo"  #: the key of the DNS row against the server with --dns-memo-mb 0
#: (sockets or connections, requests outstanding on each) per protocol: the settings of loadgen.md's table, fixed
#: here rather than taken from idnode bench's defaults, so that a series stays comparable if those change.
CLOSED_LOOP = {"udp": (64, 4), "tcp": (16, 16), "dns": (64, 4), "http": (32, 1)}
NAMES = {"udp": "Handle UDP", "tcp": "Handle TCP", "dns": "DNS view, UDP", MEMO_OFF: "DNS view, UDP, memo off",
         "http": "HTTP REST"}  # fmt: skip
BENCH_GRACE_S = 60.0  #: beyond warm-up + duration (start, request pools, report); then idnode bench is killed
MAX_COUNT = 20_000_000  #: identifiers; the acceptance volume (bench/scale.py), and a typo guard
DISTURBED_OTHERS = 0.10  #: cores busy beyond server and generator that make a round's figures suspect
DISTURBED_SERVER = 0.95  #: a saturated worker uses its core; below this it lost time it wanted


# --- what runs ------------------------------------------------------------------------------------------------


@dataclass
class Node:
    """One ``idnode serve`` and the port of each protocol on it."""

    name: str
    ports: dict[str, int]
    argv: list[str]
    entry: Started | None = None


@dataclass
class Target:
    """A row of the results: a protocol against a node."""

    key: str
    protocol: str
    node: Node

    @property
    def label(self) -> str:
        sockets, window = CLOSED_LOOP[self.protocol]
        how = (f"{sockets} keep-alive connections × {window}" if self.protocol == "http" else
               f"{sockets} connections × {window} pipelined" if self.protocol == "tcp" else
               f"{sockets} sockets × window {window}")  # fmt: skip
        memo = {"dns": "; answer memo on", MEMO_OFF: "; `--dns-memo-mb 0`"}.get(self.key, "")
        return f"{NAMES[self.key]} (`idnode bench {self.protocol}`, {how}{memo})"


def pin(cpu: int | None) -> list[str]:
    return [] if cpu is None else ["taskset", "-c", str(cpu)]


def node_argv(store: Path, ports: dict[str, int], cpu: int | None, memo_off: bool = False) -> list[str]:
    argv = [*pin(cpu), *idnode_cmd("serve", "--data", str(store), "--workers", "1", "--bind", "127.0.0.1",
                                   "--handle-port", str(ports["udp"]), "--dns-port", str(ports["dns"]),
                                   "--dns-zone", ZONE)]  # fmt: skip
    if "http" in ports:
        argv += ["--http-port", str(ports["http"])]
    if memo_off:
        argv += ["--dns-memo-mb", "0"]
    return argv


def plan_nodes(store: Path, protocols: list[str], memo_off_row: bool, cpu: int | None) -> list[Node]:
    """The node every protocol runs against, and the memo-off one when its row is wanted. Both serve DNS, which
    is how their readiness is probed (bench.compare.wait_ready); the memo-off one serves no HTTP."""
    handle, dns, http = (free_udp_tcp_port("127.0.0.1") for _ in range(3))
    ports = {"udp": handle, "tcp": handle, "dns": dns, "http": http}
    nodes = [Node("idnode", ports, node_argv(store, ports, cpu))]
    if memo_off_row and "dns" in protocols:
        handle, dns = free_udp_tcp_port("127.0.0.1"), free_udp_tcp_port("127.0.0.1")
        ports = {"udp": handle, "tcp": handle, "dns": dns}
        nodes.append(Node("idnode-nomemo", ports, node_argv(store, ports, cpu, memo_off=True)))
    return nodes


def plan_targets(protocols: list[str], nodes: list[Node]) -> list[Target]:
    targets = []
    for protocol in PROTOCOLS:
        if protocol in protocols:
            targets.append(Target(protocol, protocol, nodes[0]))
        if protocol == "dns" and len(nodes) > 1:
            targets.append(Target(MEMO_OFF, "dns", nodes[1]))
    return targets


def wait_http_ready(entry: Started, port: int, handle: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """Until the node answers ``handle`` over HTTP: the worker starts HTTP after DNS, so a DNS answer alone does
    not say the HTTP port listens yet."""
    url = f"http://127.0.0.1:{port}/api/handles/{handle}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if entry.process.poll() is not None:
            raise RuntimeError(f"{entry.name} exited with {entry.process.returncode}; see {entry.log}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{entry.name} did not answer {url} within {timeout_s:g} s; see {entry.log}")


def start_nodes(
    nodes: list[Node], processes: Processes, work: Path, dataset: Dataset, log: Callable[[str], None]
) -> None:
    handle = dataset.handle_at(0)
    for node in nodes:
        log(f"starting {node.name} on 127.0.0.1, ports {sorted(set(node.ports.values()))}")
        node.entry = processes.start(node.name, node.argv, work / f"{node.name}.log", cwd=ROOT)
        wait_ready(node.entry, node.ports["dns"], handle_to_name(handle, ZONE))
        if "http" in node.ports:
            wait_http_ready(node.entry, node.ports["http"], handle)


def bench_argv(
    target: Target, args: argparse.Namespace, files: dict[str, Path], server_pid: int
) -> list[str]:
    sockets, window = CLOSED_LOOP[target.protocol]
    bench = idnode_cmd(
        "bench", target.protocol, "--server", f"127.0.0.1:{target.node.ports[target.protocol]}",
        "--dataset-count", str(args.count), "--seed", str(args.seed), "--duration", f"{args.duration:g}",
        "--warmup", f"{args.warmup:g}", "--missing", f"{args.missing:g}", "--sockets", str(sockets),
        "--window", str(window), "--server-pid", str(server_pid), "--json", str(files["json"]),
        "--png", str(files["png"]), "--md", str(files["md"]), "--quiet",
    )  # fmt: skip
    return [*pin(args.client_cpu), *bench]


# --- one round ------------------------------------------------------------------------------------------------


def round_record(key: str, round_no: int, result: dict) -> dict:
    """What the summary keeps of one ``idnode bench --json`` result. errors: answers that are errors, malformed
    answers and socket errors, everything but lost requests that says the run went wrong."""
    server = result.get("server_cpu")
    record = {
        "key": key,
        "round": round_no,
        "answers_per_s": result["answers_per_s"],
        "answers": result["answers"],
        "not_found": result["not_found"],
        "not_found_share": round(result["not_found"] / result["answers"], 4) if result["answers"] else None,
        "latency_us": {k: result["latency_us"][k] for k in ("p50", "p99", "p99.9")},
        "lost": result["lost"],
        "errors": sum(result["errors"].values())
        + sum(result.get(k, 0) for k in ("malformed", "send_errors", "receive_errors")),
        "error_codes": result["errors"],
        "server_cores": round(sum(server.values()), 3) if server else None,
        "generator_cores": result["generator_cpu"],
        "machine_busy_cores": (result.get("machine_busy") or {}).get("cores", 0.0),
        "other_load": result.get("other_load", []),
    }  # fmt: skip
    record["others_cores"] = unaccounted(record)
    return record


def run_round(
    target: Target, round_no: int, args: argparse.Namespace, rounds_dir: Path, processes: Processes
) -> dict:
    """One ``idnode bench`` run of ``target`` after waiting for a quiet machine: its record, or why it failed."""
    if target.node.entry.process.poll() is not None:
        raise RuntimeError(f"{target.node.name} exited with {target.node.entry.process.returncode}; "
                           f"see {target.node.entry.log}")  # fmt: skip
    waited = wait_for_quiet(args.settle) if args.settle else 0.0
    stem = rounds_dir / f"{target.key}-{round_no}"
    files = {ext: stem.with_suffix(f".{ext}") for ext in ("json", "png", "md")}
    argv = bench_argv(target, args, files, target.node.entry.process.pid)
    started_at = time.strftime("%H:%M:%S")
    # Own process group (Processes.start): stopping it reaches the generator's spawned processes too.
    entry = processes.start(f"idnode bench {target.key}", argv, stem.with_suffix(".log"), cwd=ROOT)
    limit_s = args.warmup + args.duration + BENCH_GRACE_S
    try:
        entry.process.wait(limit_s)
        why = f"idnode bench exited with {entry.process.returncode}"
    except subprocess.TimeoutExpired:
        why = f"idnode bench did not finish within {limit_s:g} s and was stopped"
    finally:
        processes.stop(entry)
        processes.started.remove(entry)
    where = {"started": started_at, "waited_for_quiet_s": waited,
             "command": shlex.join(argv).replace(str(args.workdir), "$WORK")}  # fmt: skip
    if entry.process.returncode != 0 or not files["json"].exists():
        tail = " | ".join(entry.log.read_text(errors="replace").strip().splitlines()[-3:])
        return {"key": target.key, "round": round_no, **where, "failed": f"{why}: {tail}"}
    record = round_record(target.key, round_no, json.loads(files["json"].read_text()))
    record.update(where, files={ext: str(path) for ext, path in files.items() if path.exists()})
    return record


def describe(record: dict) -> str:
    if "failed" in record:
        return f"round {record['round']} {record['key']}: {record['failed']}"
    named = ", ".join(f"{o['name']} {o['cpu']:.2f}" for o in record["other_load"])
    return (f"round {record['round']} {record['key']}: {record['answers_per_s']:,.0f} answers/s, server CPU "
            f"{_cores(record['server_cores'])}, generator CPU {_cores(record['generator_cores'])}, the rest "
            f"{record['others_cores']:.2f}" + (f" ({named})" if named else "")
            + (f"; waited {record['waited_for_quiet_s']:g} s for quiet" if record["waited_for_quiet_s"] else ""))  # fmt: skip


# --- the summary ----------------------------------------------------------------------------------------------


def median_round(rounds: list[dict]) -> dict | None:
    """The measured round whose answers/s is the median; with an even number of rounds the lower of the middle
    two (a figure that was measured, and not the flattering one); ties go to the earlier round."""
    measured = sorted(
        (r for r in rounds if "failed" not in r), key=lambda r: (r["answers_per_s"], r["round"])
    )
    return measured[(len(measured) - 1) // 2] if measured else None


def summarize(targets: list[tuple[str, str]], rounds: list[dict]) -> list[dict]:
    """One row per (key, label): the median round's figures, every round's rate, errors and lost over all."""
    rows = []
    for key, label in targets:
        mine = sorted((r for r in rounds if r["key"] == key), key=lambda r: r["round"])
        middle = median_round(mine)
        measured = [r for r in mine if "failed" not in r]
        row = {"key": key, "label": label, "rounds": [r["round"] for r in mine],
               "answers_per_s": [r.get("answers_per_s") for r in mine],
               "failed": [r["failed"] for r in mine if "failed" in r]}  # fmt: skip
        if middle is not None:
            row.update(
                median_round=middle["round"], median_answers_per_s=middle["answers_per_s"],
                latency_us=middle["latency_us"], server_cores=middle["server_cores"],
                generator_cores=middle["generator_cores"], not_found_share=middle["not_found_share"],
                errors=sum(r["errors"] for r in measured), lost=sum(r["lost"] for r in measured),
                others_cores_max=max(r["others_cores"] for r in measured),
            )  # fmt: skip
        rows.append(row)
    return rows


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _cores(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def disturbed(record: dict) -> bool:
    server = record.get("server_cores")
    return record["others_cores"] >= DISTURBED_OTHERS or (server is not None and server < DISTURBED_SERVER)


def main_table(report: dict) -> list[str]:
    s = report["settings"]
    lines = [
        f"| protocol | answers/s, median of {s['rounds']} × {s['duration']:g} s | the rounds | latency p50 / p99 / "
        "p99.9 (median round) | server core | generator core | errors, lost |",
        "|---|---:|---|---|---:|---:|---|",
    ]
    for row in report["summary"]:
        if "median_round" not in row:
            lines.append(f"| {row['label']} | not measured: {'; '.join(row['failed'])} | | | | | |")
            continue
        the_rounds = " · ".join("failed" if rate is None else f"{rate:,.0f}" for rate in row["answers_per_s"])
        latency = " / ".join(f"{row['latency_us'][k] / 1000:.2f}" for k in ("p50", "p99", "p99.9"))
        lines.append(
            f"| {row['label']} | **{row['median_answers_per_s']:,.0f}** | {the_rounds} | {latency} ms | "
            f"{_cores(row['server_cores'])} | {_cores(row['generator_cores'])} | {row['errors']:,}, {row['lost']:,} |"
        )
    return lines


def rounds_table(report: dict) -> list[str]:
    lines = [
        "| protocol | round | started | answers/s | server core | generator core | p50 / p99 / p99.9 µs | not found "
        "| lost | errors | others busy (cores) | waited for quiet s |",
        "|---|---:|---|---:|---:|---:|---|---:|---:|---:|---|---:|",
    ]
    for r in report["rounds"]:  # in the order they ran
        if "failed" in r:
            lines.append(f"| {r['key']} | {r['round']} | {r['started']} | {r['failed']} | | | | | | | | "
                         f"{r['waited_for_quiet_s']:g} |")  # fmt: skip
            continue
        latency = " / ".join(f"{r['latency_us'][k]:,.0f}" for k in ("p50", "p99", "p99.9"))
        named = ", ".join(f"{o['name']} {o['cpu']:.2f}" for o in r["other_load"])
        others = f"{r['others_cores']:.2f}" + (f" ({named})" if named else "")
        share = "–" if r["not_found_share"] is None else f"{r['not_found_share']:.1%}"
        lines.append(
            f"| {r['key']} | {r['round']} | {r['started']} | {r['answers_per_s']:,.0f} | {_cores(r['server_cores'])} | "
            f"{_cores(r['generator_cores'])} | {latency} | {share} | {r['lost']:,} | {r['errors']:,} | {others} | "
            f"{r['waited_for_quiet_s']:g} |"
        )
    return lines


def markdown(report: dict, chart_note: str = "") -> str:
    m, s = report["machine"], report["settings"]
    pinned = (f"pinned to CPU {s['server_cpu']} (`taskset -c {s['server_cpu']}`), the generator `idnode bench` to "
              f"CPU {s['client_cpu']}" if s["server_cpu"] is not None else "and the generator unpinned (--no-pin)")  # fmt: skip
    suspect = [f"{r['key']} {r['round']}" for r in report["rounds"] if "failed" not in r and disturbed(r)]
    lines = [
        f"# `idnode bench`: every protocol against one worker, {s['count']:,} identifiers",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']}, kernel "
        f"{m['kernel']}; commit {m['commit']}; {report['started']} – {report['finished']}; load average at start "
        f"{' '.join(map(str, m['load_average_at_start']))}.",
        "",
        f"Command: `{report['command']}` (generated by bench/protocols.py)",
        "",
        f"One `idnode serve --workers 1` {pinned}; everything on 127.0.0.1. Each protocol {plural(s['rounds'], 'round')} of "
        f"{s['duration']:g} s after a {s['warmup']:g} s warm-up, the order rotating by one each round; "
        f"{s['missing']:.0%} of the requests ask for identifiers that do not exist, and their answers "
        "(HANDLE_NOT_FOUND, NXDOMAIN, HTTP 404) count as *not found*, not as errors. "
        + (f"Before each round the driver waited up to {s['settle']:g} s for the machine to be nearly idle "
           "(`bench.compare.wait_for_quiet`)." if s["settle"] else "The driver did not wait for a quiet machine."),
        "",
        *main_table(report),
        "",
        "*errors*: error answers, malformed answers and socket errors (any is a failed run); *lost*: requests "
        f"unanswered within {s['timeout_s']:g} s. *server core*, *generator core*: cores used over the measured "
        "seconds (1.00 = one core saturated). The median round of each protocol is in `loadgen-<protocol>.json`, "
        "`.png` and `.md`, as `idnode bench` wrote them.",
        "",
        (f"Rounds with others busy (≥ {DISTURBED_OTHERS:.2f} core beyond server and generator) or the server below "
         f"{DISTURBED_SERVER:.2f} of its core, whose figures are suspect: {', '.join(suspect)}." if suspect else
         "No round was disturbed: the server had its core and nothing else was busy."),
        "",
        "![answers/s per round](protocols.png)" if not chart_note else f"({chart_note})",
        "",
        "## Every round",
        "",
        *rounds_table(report),
        "",
        "*others busy*: cores the machine was busy beyond server and generator (neighbours, short-lived processes, "
        "kernel work charged to none), and in brackets the processes that used ≥ 0.02 core.",
        "",
        "## How it was run",
        "",
        "```sh",
        report["command"],
        *report["commands"]["setup"],
        *report["commands"]["servers"].values(),
        *report["commands"]["bench"].values(),
        "```",
        "",
        "`$WORK` is the work directory; each `idnode bench` line is the median round's (the others differ in the "
        "file names).",
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> str:
    """answers/s of every round as bars grouped by protocol, the median round solid and labelled, the others
    pale. Returns "" or why there is no chart."""
    plt = pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    from matplotlib.patches import Patch

    rows = [row for row in report["summary"] if "median_round" in row]
    if not rows:
        return "nothing was measured: no chart"
    most = max(len(row["rounds"]) for row in rows)
    width = 0.8 / most
    fig, ax = plt.subplots(figsize=(max(7, 2.2 * len(rows)), 4.6), dpi=110)
    for x, row in enumerate(rows):
        for slot, (round_no, rate) in enumerate(zip(row["rounds"], row["answers_per_s"], strict=True)):
            centre = x - 0.4 + width * (slot + 0.5)
            if rate is None:
                ax.annotate(f"{round_no}: failed", (centre, 0), ha="center", va="bottom", fontsize=7, rotation=90,
                            xytext=(0, 2), textcoords="offset points")  # fmt: skip
                continue
            median = round_no == row["median_round"]
            ax.bar(centre, rate / 1000, width * 0.9, color=f"C{x}", alpha=1.0 if median else 0.35,
                   edgecolor="black" if median else "none")  # fmt: skip
            ax.annotate(str(round_no), (centre, 0), ha="center", va="bottom", fontsize=7, xytext=(0, 2),
                        textcoords="offset points")  # fmt: skip
            if median:
                ax.annotate(f"{rate / 1000:,.1f}k", (centre, rate / 1000), ha="center", va="bottom", fontsize=8,
                            xytext=(0, 2), textcoords="offset points")  # fmt: skip
    ax.set_xticks(range(len(rows)), [NAMES[row["key"]].replace(", ", ",\n") for row in rows], fontsize=8)
    top = max(rate for row in rows for rate in row["answers_per_s"] if rate is not None)
    ax.set_ylim(0, top / 1000 * 1.15)
    ax.set_ylabel("thousand answers/s")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend([Patch(facecolor="grey", edgecolor="black"), Patch(facecolor="grey", alpha=0.35)],
              ["median round", "other rounds (number at the foot)"], fontsize=8, loc="upper right")  # fmt: skip
    m, s = report["machine"], report["settings"]
    ax.set_title(f"idnode bench against one worker, {s['count']:,} identifiers, {s['rounds']} × {s['duration']:g} s "
                 f"per protocol\ncommit {m['commit']}, {m['nproc']} CPUs ({m['cpu_model']})", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return ""


def copy_median_files(report: dict, out: Path) -> list[Path]:
    """The median round of each row, as idnode bench wrote it, to loadgen-<key>.json, .png, .md."""
    by_round = {(r["key"], r["round"]): r for r in report["rounds"]}
    copied = []
    for row in report["summary"]:
        if "median_round" not in row:
            continue
        for ext, source in by_round[row["key"], row["median_round"]]["files"].items():
            target = out / f"loadgen-{row['key']}.{ext}"
            shutil.copyfile(source, target)
            copied.append(target)
    return copied


def write_results(report: dict, out: Path) -> list[Path]:
    """protocols.json, .png and .md in ``out``, and the median rounds' files; the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = copy_median_files(report, out)
    chart_note = plot(report, out / "protocols.png")
    if chart_note:
        report["chart"] = chart_note
    else:
        written.append(out / "protocols.png")
    (out / "protocols.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out / "protocols.md").write_text(markdown(report, chart_note))
    return [*written, out / "protocols.json", out / "protocols.md"]


# --- the command ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.protocols", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument(
        "--protocols", default=",".join(PROTOCOLS), help="comma-separated subset of udp,tcp,dns,http"
    )
    p.add_argument("--dns-memo-off", action=argparse.BooleanOptionalAction, default=True,
                   help="also DNS against a second server with --dns-memo-mb 0 (default: yes, when dns runs)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=3, help="measured rounds per protocol (default 3)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per round (default 10)")
    p.add_argument(
        "--warmup", type=float, default=2.0, help="seconds before each round's measurement (default 2)"
    )
    p.add_argument(
        "--missing", type=float, default=0.1, help="share of requests for absent identifiers (0.1)"
    )
    p.add_argument("--count", type=int, default=100_000, help="identifiers in the store (default 100,000)")
    p.add_argument("--seed", type=int, default=1, help="`idnode gen --seed`; seeds the requests too")
    p.add_argument("--settle", type=float, default=60.0,
                   help="before each round, wait up to this many seconds for a quiet machine (0: never)")  # fmt: skip
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1)
    p.add_argument(
        "--no-pin", action="store_true", help="no taskset: server and generator wherever the kernel likes"
    )
    p.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                   help=f"store (built once, reused), logs and every round's files (default {DEFAULT_WORKDIR})")  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS, help="where protocols.* and loadgen-<protocol>.* go")
    args = p.parse_args(argv)
    args.workdir = args.workdir.resolve()  # absolute: its text is replaced by $WORK in the commands recorded
    args.protocol_list = [name.strip() for name in args.protocols.split(",") if name.strip()]
    unknown = [name for name in args.protocol_list if name not in PROTOCOLS]
    if unknown or not args.protocol_list:
        p.error(
            f"--protocols: unknown {', '.join(unknown) or 'none given'}; choose from {', '.join(PROTOCOLS)}"
        )
    if not 1 <= args.rounds <= MAX_ROUNDS:
        p.error(f"--rounds {args.rounds}: must lie within 1..{MAX_ROUNDS}")
    if (
        not 0 < args.duration <= MAX_SECONDS
        or not 0 <= args.warmup <= MAX_SECONDS
        or not 0 <= args.settle <= MAX_SECONDS
    ):
        p.error(
            f"--duration must lie within (0, {MAX_SECONDS:g}], --warmup and --settle within [0, {MAX_SECONDS:g}]"
        )
    if not 0 <= args.missing < 1 or not 1 <= args.count <= MAX_COUNT:
        p.error(f"--missing must lie within [0, 1), --count within 1..{MAX_COUNT:,}")
    if args.no_pin:
        args.server_cpu = args.client_cpu = None
    else:
        cpus = os.sched_getaffinity(0)
        if args.server_cpu not in cpus or args.client_cpu not in cpus or args.server_cpu == args.client_cpu:
            p.error(
                f"--server-cpu and --client-cpu must be two distinct CPUs of {sorted(cpus)} (or give --no-pin)"
            )
        if shutil.which("taskset") is None:
            p.error("taskset is not installed (apt-get install util-linux), or give --no-pin")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)

    def log(text: str) -> None:
        print(f"[protocols] {text}", file=sys.stderr, flush=True)

    args.workdir.mkdir(parents=True, exist_ok=True)
    processes = Processes()
    try:
        with stopped_on_exit(processes):
            report = _run(args, argv, processes, log)
    except (KeyboardInterrupt, Interrupted) as exc:
        log(f"interrupted ({exc or 'Ctrl-C'}): the servers are stopped; nothing written")
        return 130
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        log(f"failed: {exc}")
        return 1
    print("\n".join(main_table(report)))
    for path in write_results(report, args.out):
        log(f"wrote {path}")
    return 0


def _run(args: argparse.Namespace, argv: list[str], processes: Processes, log: Callable[[str], None]) -> dict:
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    info = {**machine(), "python": platform.python_version()}
    store, _ = build_data(args.workdir, args.count, args.seed, log)
    rounds_dir = args.workdir / "rounds"
    shutil.rmtree(rounds_dir, ignore_errors=True)  # a file of an earlier run must not pass for this one's
    rounds_dir.mkdir()
    nodes = plan_nodes(store, args.protocol_list, args.dns_memo_off, args.server_cpu)
    start_nodes(nodes, processes, args.workdir, Dataset(args.count, args.seed), log)
    targets = plan_targets(args.protocol_list, nodes)
    rounds = run_rounds(targets, args, rounds_dir, processes, log)
    processes.stop_all()
    summary = summarize([(t.key, t.label) for t in targets], rounds)
    return {
        "started": started,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": info,
        "command": shlex.join([sys.executable, "-m", "bench.protocols", *argv]),
        "settings": settings_of(args, targets),
        "commands": commands_of(args, store, nodes, summary, rounds),
        "summary": summary,
        "rounds": rounds,
    }


def run_rounds(targets: list[Target], args: argparse.Namespace, rounds_dir: Path, processes: Processes,
               log: Callable[[str], None]) -> list[dict]:  # fmt: skip
    """Every round of every target, the order rotating by one each round (as bench/compare.py does), so that a
    drift of the machine is shared out rather than charged to whichever protocol runs last."""
    rounds = []
    for round_no in range(1, args.rounds + 1):
        shift = (round_no - 1) % len(targets)
        for target in targets[shift:] + targets[:shift]:
            record = run_round(target, round_no, args, rounds_dir, processes)
            log(describe(record))
            rounds.append(record)
    return rounds


def settings_of(args: argparse.Namespace, targets: list[Target]) -> dict:
    return {
        "count": args.count,
        "seed": args.seed,
        "protocols": args.protocol_list,
        "dns_memo_off": MEMO_OFF in {t.key for t in targets},
        "rounds": args.rounds,
        "duration": args.duration,
        "warmup": args.warmup,
        "missing": args.missing,
        "settle": args.settle,
        "server_cpu": args.server_cpu,
        "client_cpu": args.client_cpu,
        "timeout_s": REQUEST_TIMEOUT_S,
        "closed_loop": {t.key: dict(zip(("sockets", "window"), CLOSED_LOOP[t.protocol], strict=True)) for t in targets},
    }  # fmt: skip


def commands_of(args: argparse.Namespace, store: Path, nodes: list[Node], summary: list[dict],
                rounds: list[dict]) -> dict:  # fmt: skip
    """The commands that rebuild the setup by hand: the store, the servers, each row's median round."""
    work = str(args.workdir)
    ndjson = str(args.workdir / "ids.ndjson")
    gen = idnode_cmd("gen", "--count", str(args.count), "--seed", str(args.seed), "-o", ndjson)
    load = idnode_cmd("load", "--data", str(store), ndjson)
    by_round = {(r["key"], r["round"]): r["command"] for r in rounds}
    return {
        "setup": [shlex.join(gen).replace(work, "$WORK"), shlex.join(load).replace(work, "$WORK")],
        "servers": {n.name: shlex.join(n.argv).replace(work, "$WORK") for n in nodes},
        "bench": {row["key"]: by_round[row["key"], row.get("median_round", 1)] for row in summary},
    }


if __name__ == "__main__":
    sys.exit(main())
