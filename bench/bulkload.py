"""The bulk-load rate (`python -m bench.bulkload`): `idnode load` of a generated sorted file into a fresh store,
several runs, the median. Each run waits for the machine to be quiet, and says how much CPU it used and how
much other processes used meanwhile, so a figure taken on a shared machine shows its conditions instead of
hiding them; the summary also gives the median of the undisturbed runs (bench/results/load.md).

Writes bulkload-<count>.json (settings, every run, the medians, machine, commit, command), .png (each run's
rate, the median and the target) and .md (a short summary) under --out, bench/results by default.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.compare import idnode_cmd
from bench.procstat import machine_ticks
from bench.results_io import machine_facts, write_summary

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_PER_S = 300_000  #: the bulk-load target (README, Performance), sorted input

QUIET_BUSY_FRACTION = 0.05  #: the machine counts as quiet when under 5% of all CPU time is busy
QUIET_SAMPLE_S = 2.0  #: how long the busy fraction is sampled before a run
QUIET_WAIT_MAX_S = 600.0  #: after this long a run starts anyway (and its "others' CPU" says so)
UNDISTURBED_SHARE = 0.1  #: a run was undisturbed when other processes used under 10% of the CPU the load used
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc/stat counts in these
_RATE = re.compile(r"in ([\d.]+) s, ([\d,]+)/s")


@dataclass(frozen=True)
class Run:
    rate_per_s: int  # as `idnode load` reports it: identifiers over the time of load_files
    seconds: float
    load_cpu_s: float  # user + system of `idnode load` and its workers
    others_cpu_s: float  # what the rest of the machine used during the run
    load_average: str  # /proc/loadavg's three averages when the run started


def busy_fraction(seconds: float) -> float:
    busy0, all0 = machine_ticks()
    time.sleep(seconds)
    busy1, all1 = machine_ticks()
    return (busy1 - busy0) / max(1, all1 - all0)


def wait_for_quiet(limit: float = QUIET_BUSY_FRACTION, max_wait_s: float = QUIET_WAIT_MAX_S) -> None:
    deadline = time.monotonic() + max_wait_s
    while busy_fraction(QUIET_SAMPLE_S) > limit and time.monotonic() < deadline:
        pass


def parse_report(stderr: str) -> tuple[float, int]:
    """(seconds, identifiers/s) from `idnode load`'s last line."""
    match = _RATE.search(stderr.strip().splitlines()[-1])
    if match is None:
        raise ValueError(f"no rate in idnode load's output: {stderr!r}")
    return float(match.group(1)), int(match.group(2).replace(",", ""))


def load_once(store: Path, ndjson: Path) -> Run:
    shutil.rmtree(store, ignore_errors=True)
    with open("/proc/loadavg") as f:
        load_average = " ".join(f.read().split()[:3])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy0, _ = machine_ticks()
    done = subprocess.run(
        idnode_cmd("load", "--quiet", "--data", str(store), str(ndjson)),
        capture_output=True,
        text=True,
        check=True,
    )
    busy1, _ = machine_ticks()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    seconds, rate = parse_report(done.stderr)
    others = max(0.0, (busy1 - busy0) / _CLOCK_TICKS - load_cpu_s)
    return Run(rate, seconds, round(load_cpu_s, 2), round(others, 2), load_average)


def median(values: Sequence[float]) -> float:
    """The middle value; of an even count the upper of the two middle ones (a value that was measured)."""
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bulkload", description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000, help="identifiers to generate and load")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("/var/tmp/idnode-bulkload"),
        help="input file and store (default /var/tmp/idnode-bulkload: outside the checkout, ~1 GB at 1M)",
    )
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where bulkload-<count>.json, .png, .md go")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    ndjson = args.workdir / f"ids-{args.count}-{args.seed}.ndjson"
    if not ndjson.exists():
        gen = ("gen", "--count", str(args.count), "--seed", str(args.seed), "-o", str(ndjson))
        subprocess.run(idnode_cmd(*gen), check=True)
    runs = []
    for _ in range(args.runs):
        if not args.no_wait:
            wait_for_quiet()
        run = load_once(args.workdir / "store", ndjson)
        runs.append(run)
        print(
            f"{run.rate_per_s:,}/s in {run.seconds} s; load CPU {run.load_cpu_s} s, others' CPU "
            f"{run.others_cpu_s} s; load average {run.load_average}",
            flush=True,
        )
    size = (args.workdir / "store" / "data.mdb").stat().st_size
    result = make_result(args, argv if argv is not None else sys.argv[1:], runs, size)
    undisturbed = result["undisturbed_median_per_s"]
    print(
        f"median {result['median_per_s']:,}/s of {len(runs)} runs"
        + (f", {undisturbed:,}/s of the {result['undisturbed_runs']} undisturbed" if undisturbed else "")
        + f"; {result['bytes_per_identifier']} bytes per identifier"
    )
    for path in write_results(result, args.out):
        print(f"wrote {path}", file=sys.stderr)
    return 0


def undisturbed(run: Run) -> bool:
    return run.others_cpu_s < UNDISTURBED_SHARE * run.load_cpu_s


def make_result(args: argparse.Namespace, argv: list[str], runs: list[Run], store_bytes: int) -> dict:
    """What the JSON holds: the settings, every run, the medians, the store size, the command and machine."""
    rates = [r.rate_per_s for r in runs]
    quiet = [r.rate_per_s for r in runs if undisturbed(r)]
    return {
        "command": " ".join(["python -m bench.bulkload", *argv]),
        "settings": {
            "count": args.count,
            "seed": args.seed,
            "runs": args.runs,
            "wait_for_quiet": not args.no_wait,
            "quiet_busy_fraction": QUIET_BUSY_FRACTION,
            "quiet_sample_s": QUIET_SAMPLE_S,
            "undisturbed_share": UNDISTURBED_SHARE,
        },
        "runs": [{**asdict(r), "undisturbed": undisturbed(r)} for r in runs],
        "median_per_s": median(rates),
        "min_per_s": min(rates),
        "max_per_s": max(rates),
        "median_seconds": median([r.seconds for r in runs]),
        "undisturbed_runs": len(quiet),
        "undisturbed_median_per_s": median(quiet) if quiet else None,
        "store_bytes": store_bytes,
        "bytes_per_identifier": round(store_bytes / args.count, 1),
        "target_per_s": TARGET_PER_S,
        "machine": machine_facts(),
    }


def write_results(result: dict, out_dir: Path = RESULTS) -> list[Path]:
    """bulkload-<count>.json, .png and .md in `out_dir`; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"bulkload-{result['settings']['count']}"
    png, summary = stem.with_suffix(".png"), stem.with_suffix(".md")
    chart_note = plot(result, png)
    if chart_note:
        result["chart"] = chart_note
        print(f"bench.bulkload: {chart_note}", file=sys.stderr)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    title = f"Bulk load, {result['settings']['count']:,} sorted identifiers"
    write_summary(summary, title, result, _summary_rows(result), _runs_table(result, png, chart_note))
    return [stem.with_suffix(".json"), *([] if chart_note else [png]), summary]


def _summary_rows(r: dict) -> list[tuple[str, str, str]]:
    quiet = r["undisturbed_median_per_s"]
    return [
        (f"rate, median of {len(r['runs'])} runs", f"{r['median_per_s']:,}/s ({r['min_per_s']:,}-{r['max_per_s']:,})",
         f"≥ {r['target_per_s']:,}/s"),
        (f"rate, median of the {r['undisturbed_runs']} undisturbed", f"{quiet:,}/s" if quiet else "none undisturbed",
         ""),
        ("time, median", f"{r['median_seconds']} s", ""),
        ("store bytes per identifier", f"{r['bytes_per_identifier']}", "≤ 300"),
    ]  # fmt: skip


def _runs_table(r: dict, png: Path, chart_note: str) -> list[str]:
    lines = [
        "| run | identifiers/s | seconds | load CPU s | others' CPU s | load average at start | undisturbed |",
        "|---:|---:|---:|---:|---:|---|---|",
        *(f"| {n} | {run['rate_per_s']:,} | {run['seconds']} | {run['load_cpu_s']} | {run['others_cpu_s']} | "
          f"{run['load_average']} | {'yes' if run['undisturbed'] else 'no'} |" for n, run in enumerate(r["runs"], 1)),
        "",
        f"Undisturbed: other processes used under {r['settings']['undisturbed_share']:.0%} of the CPU the load used.",
    ]  # fmt: skip
    if not chart_note:
        lines += ["", f"![each run's rate]({png.name})"]
    return lines


def plot(result: dict, path: Path) -> str:
    """Each run's rate as a bar (undisturbed and disturbed runs in two colours), the median and the target as
    lines. Returns "" or why there is no chart."""
    from bench.load.plot import NO_MATPLOTLIB, pyplot

    plt = pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    from matplotlib.patches import Patch

    runs = result["runs"]
    colours = {True: "C0", False: "C1"}
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    numbers = range(1, len(runs) + 1)
    ax.bar(numbers, [r["rate_per_s"] / 1000 for r in runs], color=[colours[r["undisturbed"]] for r in runs])
    median_line = ax.axhline(result["median_per_s"] / 1000, color="black", linestyle="--", linewidth=1)
    target_line = ax.axhline(result["target_per_s"] / 1000, color="C3", linestyle=":", linewidth=1.5)
    ax.legend(
        [Patch(color=colours[True]), Patch(color=colours[False]), median_line, target_line],
        ["undisturbed run", "disturbed run (others' CPU ≥ 10% of the load's)",
         f"median {result['median_per_s']:,}/s", f"target {result['target_per_s']:,}/s"],
        fontsize=8, loc="best",
    )  # fmt: skip
    ax.set_xticks(list(numbers))
    ax.set_xlabel("run")
    ax.set_ylabel("thousand identifiers/s")
    ax.set_ylim(0, max([r["rate_per_s"] for r in runs] + [result["target_per_s"]]) / 1000 * 1.15)
    ax.grid(True, axis="y", alpha=0.3)
    m = result["machine"]
    ax.set_title(f"idnode load, {result['settings']['count']:,} sorted identifiers, {len(runs)} runs "
                 f"(commit {m['commit']}, {m['cpus']} CPUs)", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return ""


if __name__ == "__main__":
    sys.exit(main())
