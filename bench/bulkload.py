"""The bulk-load rate (`python -m bench.bulkload`): `idnode load` of a generated sorted file into a fresh store,
several runs, the median. Each run waits for the machine to be quiet, and says how much CPU it used and how
much other processes used meanwhile, so a figure taken on a shared machine shows its conditions instead of
hiding them; the summary also gives the median of the undisturbed runs (bench/results/load.md).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.procstat import machine_ticks

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


def _idnode(*args: str) -> list[str]:
    return [sys.executable, "-m", "resolver.cli", *args]


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
        _idnode("load", "--quiet", "--data", str(store), str(ndjson)),
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


def median(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bulkload", description=__doc__)
    parser.add_argument("--count", type=int, default=1_000_000, help="identifiers to generate and load")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("bulkload-work"), help="input file and store")
    parser.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    ndjson = args.workdir / f"ids-{args.count}-{args.seed}.ndjson"
    if not ndjson.exists():
        gen = ("gen", "--count", str(args.count), "--seed", str(args.seed), "-o", str(ndjson))
        subprocess.run(_idnode(*gen), check=True)
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
    undisturbed = [r.rate_per_s for r in runs if r.others_cpu_s < UNDISTURBED_SHARE * r.load_cpu_s]
    print(
        f"median {median([r.rate_per_s for r in runs]):,}/s of {len(runs)} runs"
        + (f", {median(undisturbed):,}/s of the {len(undisturbed)} undisturbed" if undisturbed else "")
        + f"; {size / args.count:.1f} bytes per identifier"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
