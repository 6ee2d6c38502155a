"""The report of the micro-benchmarks (`python -m bench.micro`, run by `make bench-micro` after the timings).

`make bench-micro` times the hot-path pieces of ``bench/test_micro.py`` with pytest-benchmark, which saves each
run as JSON under bench/results/micro/<machine>/ for comparison between commits. This reads the newest saved
run (or --run FILE) and the run saved before it on the same machine (or --against FILE), and writes under --out
(bench/results by default) micro.json (the machine, the commit measured, the command, each case's median, min,
IQR, mean, rounds and ops/s, and the previous run's median and the ratio), micro.png (each case's median as a
bar beside the previous run's, IQR as error bars) and micro.md (a short summary with a table of the cases).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench.results_io import machine_facts, write_summary

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
STORAGE = RESULTS / "micro"  #: make bench-micro's --benchmark-storage
MEASURED_BY = "make bench-micro"
#: run-to-run changes below this are noise on the shared 2-core machine (README, Performance)
NOISE_SHARE = 0.10
LOG_AXIS_SPREAD = 20  #: draw a log axis when the slowest median is this many times the fastest
_STATS = ("median", "min", "max", "mean", "iqr", "q1", "q3", "rounds", "ops")


class MicroReportError(Exception):
    """No saved run, or a file that is not pytest-benchmark JSON: the CLI prints it and exits 2."""


# --- reading the runs pytest-benchmark saved --------------------------------------------------------------


def read_run(path: Path) -> dict:
    """A run saved by pytest-benchmark (``--benchmark-autosave`` or ``--benchmark-json``), checked for what
    the report reads."""
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MicroReportError(f"{path}: cannot read it ({exc.strerror})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MicroReportError(f"{path}: not pytest-benchmark JSON (not JSON: {exc})") from exc
    missing = _not_benchmark_json(run)
    if missing:
        raise MicroReportError(f"{path}: not pytest-benchmark JSON ({missing})")
    return run


def _not_benchmark_json(run: object) -> str:
    """What a loaded JSON lacks to be a pytest-benchmark run, or ""."""
    if not isinstance(run, dict):
        return "not an object"
    for key, kind in (("benchmarks", list), ("commit_info", dict), ("machine_info", dict), ("datetime", str)):
        if not isinstance(run.get(key), kind):
            return f"no {key!r}"
    if not run["benchmarks"]:
        return "no benchmarks in it"
    try:
        run_time(run)
    except ValueError:
        return f"its datetime {run['datetime']!r} is not a date"
    for case in run["benchmarks"]:
        stats = case.get("stats") if isinstance(case, dict) else None
        if not isinstance(stats, dict) or "name" not in case:
            return "a benchmark without 'name' or 'stats'"
        absent = [key for key in _STATS if not isinstance(stats.get(key), int | float)]
        if absent:
            return f"{case['name']}: no {', '.join(absent)} in its stats"
    return ""


def run_time(run: dict) -> datetime:
    """When pytest-benchmark saved the run (its ``datetime``, UTC)."""
    when = datetime.fromisoformat(run["datetime"])
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def machine_id(run: dict) -> str:
    """The name of the folder pytest-benchmark saves a machine's runs in (its ``get_machine_id``): only runs of
    the same id are compared, as pytest-benchmark's own --benchmark-compare does."""
    info = run["machine_info"]
    version = ".".join(str(info.get("python_version", "")).split(".")[:2])
    bits = info.get("cpu", {}).get("bits", "")
    return f"{info.get('system', '')}-{info.get('python_implementation', '')}-{version}-{bits}bit"


def saved_runs(storage: Path) -> list[tuple[Path, dict]]:
    """Every run saved under `storage` (one folder per machine), oldest first."""
    runs = [(path, read_run(path)) for path in storage.glob("*/*.json")]
    return sorted(runs, key=lambda path_run: run_time(path_run[1]))


def pick_runs(
    storage: Path, run_file: Path | None = None, against: Path | None = None
) -> tuple[tuple[Path, dict], tuple[Path, dict] | None]:
    """The run to report (`run_file` or the newest saved) and the one to compare it with (`against`, or the
    newest saved before it on the same machine, or None)."""
    saved = saved_runs(storage) if storage.is_dir() else []
    if run_file is not None:
        current = (run_file, read_run(run_file))
    elif saved:
        current = saved[-1]
    else:
        raise MicroReportError(f"{storage}: no saved run (make bench-micro saves one)")
    if against is not None:
        return current, (against, read_run(against))
    same_machine_before = [
        (path, run)
        for path, run in saved
        if run_time(run) < run_time(current[1]) and machine_id(run) == machine_id(current[1])
    ]
    return current, same_machine_before[-1] if same_machine_before else None


# --- the report -----------------------------------------------------------------------------------------


def microseconds(seconds: float) -> float:
    return round(seconds * 1e6, 4)


def case_figures(case: dict) -> dict:
    """One case of a run, its times in µs."""
    s = case["stats"]
    return {
        "group": case.get("group") or "",
        "name": case["name"],
        "median_us": microseconds(s["median"]),
        "min_us": microseconds(s["min"]),
        "iqr_us": microseconds(s["iqr"]),
        "q1_us": microseconds(s["q1"]),
        "q3_us": microseconds(s["q3"]),
        "mean_us": microseconds(s["mean"]),
        "rounds": s["rounds"],
        "ops_per_s": round(s["ops"]),
    }


def _case_key(case: dict) -> str:
    return case.get("fullname") or case["name"]  # fullname tells apart two files' tests of one name


def compared_cases(run: dict, previous: dict | None) -> list[dict]:
    """The run's cases, grouped in the order their groups first appear, each with the previous run's median
    (and quartiles, for the chart) and the ratio of the medians, now / before, where that run has the case."""
    before = {_case_key(case): case_figures(case) for case in (previous or {}).get("benchmarks", [])}
    cases = []
    for case in run["benchmarks"]:
        figures = case_figures(case)
        old = before.get(_case_key(case))
        figures["previous_median_us"] = old["median_us"] if old else None
        figures["previous_q1_us"] = old["q1_us"] if old else None
        figures["previous_q3_us"] = old["q3_us"] if old else None
        figures["ratio"] = round(figures["median_us"] / old["median_us"], 4) if old else None
        cases.append(figures)
    groups = list(dict.fromkeys(case["group"] for case in cases))
    # sorted() is stable: the cases keep their order within a group
    return sorted(cases, key=lambda case: groups.index(case["group"]))


def short_commit(run: dict) -> str:
    return str(run["commit_info"].get("id", "unknown"))[:7]


def repo_path(path: Path) -> str:
    """`path` from the checkout's root when it is inside (so the committed JSON names no home directory)."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def run_facts(path: Path, run: dict) -> dict:
    """What names a run: its file, commit, whether the tree had uncommitted changes, when it was taken."""
    return {
        "file": repo_path(path),
        "commit": short_commit(run),
        "dirty": bool(run["commit_info"].get("dirty")),
        "date": run_time(run).strftime("%Y-%m-%d %H:%M UTC"),
        "pytest_benchmark": run.get("version", ""),
    }


def measured_machine(run: dict) -> dict:
    """The machine as pytest-benchmark recorded it when it took the timings."""
    info = run["machine_info"]
    return {
        "node": info.get("node", ""),
        "cpus": info.get("cpu", {}).get("count"),
        "cpu_model": info.get("cpu", {}).get("brand_raw", ""),
        "python": info.get("python_version", ""),
        "kernel": info.get("release", ""),
    }


def machine_of_run(run: dict) -> dict:
    """machine_facts() of this machine, but with the commit and date of the run: the report may be written
    later, at another HEAD, than the timings were taken. ``head_commit`` is HEAD when the report was written."""
    facts = machine_facts()
    return {**facts, "commit": short_commit(run), "date": run_time(run).strftime("%Y-%m-%d %H:%M UTC"),
            "head_commit": facts["commit"]}  # fmt: skip


def make_report(
    current: tuple[Path, dict], previous: tuple[Path, dict] | None, command: str, report_command: str
) -> dict:
    path, run = current
    return {
        "command": command,
        "report_command": report_command,
        "machine": machine_of_run(run),
        "measured_on": measured_machine(run),
        "run": run_facts(path, run),
        "previous": run_facts(*previous) if previous else None,
        "noise_share": NOISE_SHARE,
        "cases": compared_cases(run, previous[1] if previous else None),
    }


# --- the chart ------------------------------------------------------------------------------------------


def change_percent(ratio: float) -> int:
    """The change as the page shows it, in whole percent."""
    return round((ratio - 1) * 100)


def beyond_noise(ratio: float | None, noise: float) -> bool:
    """Whether the change as shown (whole percent, so 0.9 is -10% and counts) reaches the noise."""
    return ratio is not None and abs(change_percent(ratio)) >= round(noise * 100)


def _label(case: dict) -> str:
    return case["name"].removeprefix("test_")


def chart_rows(cases: list[dict]) -> list[tuple[str, dict | None]]:
    """Top to bottom: each group's name (a heading, no bars) followed by its cases."""
    rows: list[tuple[str, dict | None]] = []
    for case in cases:
        if not rows or rows[-1][1] is None or rows[-1][1]["group"] != case["group"]:
            rows.append((case["group"] or "(no group)", None))
        rows.append((_label(case), case))
    return rows


def change_text(ratio: float | None) -> str:
    return "" if ratio is None else f"{change_percent(ratio):+d}%"


def _bars(ax, ys: list[float], medians: list[float], q1s: list[float], q3s: list[float], height, **style):
    """Horizontal bars of medians with the IQR (first to third quartile) as error bars."""
    err = [
        [m - q1 for m, q1 in zip(medians, q1s, strict=True)],
        [q3 - m for m, q3 in zip(medians, q3s, strict=True)],
    ]
    ax.barh(ys, medians, height=height, xerr=err, capsize=2, error_kw={"elinewidth": 0.8}, **style)


def plot(report: dict, path: Path) -> str:
    """micro.png: each case's median (this run, and the previous run's beside it), IQR as error bars, grouped
    as pytest-benchmark groups them. Returns "" or why there is no chart."""
    from bench.load.plot import NO_MATPLOTLIB, pyplot

    plt = pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    rows = chart_rows(report["cases"])
    run, previous = report["run"], report["previous"]
    pair = previous is not None
    step = 1.5 if pair else 1.0
    fig, ax = plt.subplots(figsize=(10, 1.4 + 0.3 * len(rows) * step), dpi=110)
    ys = [-n * step for n in range(len(rows))]  # top to bottom
    drawn = [(y, case) for y, (_, case) in zip(ys, rows, strict=True) if case is not None]
    height = 0.6
    offset = height / 2 if pair else 0.0
    _bars(ax, [y + offset for y, _ in drawn], [c["median_us"] for _, c in drawn], [c["q1_us"] for _, c in drawn],
          [c["q3_us"] for _, c in drawn], height, color="C0", label=f"this run: {_run_label(run)}")  # fmt: skip
    compared = [(y, c) for y, c in drawn if c["previous_median_us"] is not None]
    if pair and compared:
        _bars(ax, [y - offset for y, _ in compared], [c["previous_median_us"] for _, c in compared],
              [c["previous_q1_us"] for _, c in compared], [c["previous_q3_us"] for _, c in compared], height,
              color="C7", alpha=0.6, label=f"previous run: {_run_label(previous)}")  # fmt: skip
    for y, case in drawn:
        right = max(case["q3_us"], case["previous_q3_us"] or 0)
        change = change_text(case["ratio"]) or ("(not in the previous run)" if pair else "")
        text = f"{format_us(case['median_us'])} µs  {change}".rstrip()
        weight = "bold" if beyond_noise(case["ratio"], report["noise_share"]) else "normal"  # as in micro.md
        ax.annotate(
            text,
            (right, y + offset),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            fontweight=weight,
        )
    _scale_x(ax, report["cases"])
    ax.set_yticks(ys, [label for label, _ in rows], fontsize=8)
    for y, tick, (_, case) in zip(ys, ax.get_yticklabels(), rows, strict=True):
        if case is None:
            tick.set_fontweight("bold")
            if y != ys[0]:
                ax.axhline(y + step / 2, color="grey", linewidth=0.5)
    ax.set_ylim(ys[-1] - step * 0.7, ys[0] + step * 0.7)
    ax.grid(True, axis="x", which="both", alpha=0.3)
    # Above the bars, not over them: a legend inside the axes covers the longest bar's label.
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    m = report["machine"]
    fig.suptitle(f"Micro-benchmarks: median time per call (error bars: IQR), {m['cpus']} CPUs ({m['cpu_model']}), "
                 f"Python {m['python']}", fontsize=10)  # fmt: skip
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return ""


def _run_label(run: dict) -> str:
    return f"commit {run['commit']}{' with uncommitted changes' if run['dirty'] else ''}, {run['date']}"


def _both_runs(cases: list[dict], key: str) -> list[float]:
    """A figure of every case in this run and, where it has one, in the previous run."""
    return [c[key] for c in cases] + [c[f"previous_{key}"] for c in cases if c[f"previous_{key}"] is not None]


def _scale_x(ax, cases: list[dict]) -> None:
    """A log axis when the medians span more than LOG_AXIS_SPREAD times (a 0.1 µs case beside a 20 µs one
    would be an invisible bar), with room on the right for the labels."""
    lows = _both_runs(cases, "q1_us")
    highs = _both_runs(cases, "q3_us")
    medians = [c["median_us"] for c in cases]
    if max(medians) > LOG_AXIS_SPREAD * min(medians) > 0:
        import matplotlib.ticker

        ax.set_xscale("log")
        ax.set_xlim(min(lows) / 2, max(highs) * 12)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("µs per call (log)")
    else:
        ax.set_xlim(0, max(highs) * 1.5)
        ax.set_xlabel("µs per call")


# --- the summary and the files --------------------------------------------------------------------------


def format_us(value: float) -> str:
    """Three significant digits or so: 0.122, 3.34, 15.2, 1,520."""
    if value < 1:
        return f"{value:.3f}"
    if value < 10:
        return f"{value:.2f}"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _relative(path: str, to: Path) -> str:
    """`path` (see repo_path) as a link from a page in `to`, or as it is when it is elsewhere."""
    try:
        return str((REPO / path).resolve().relative_to(to.resolve()))
    except ValueError:
        return path


def summary_rows(report: dict, out_dir: Path) -> list[tuple[str, str, str]]:
    run, previous, cases = report["run"], report["previous"], report["cases"]
    rows = [
        ("cases", f"{len(cases)} in {len({c['group'] for c in cases})} groups", ""),
        ("timings", f"[{Path(run['file']).name}]({_relative(run['file'], out_dir)}) ({_run_label(run)})", ""),
    ]
    if report["machine"]["head_commit"] != run["commit"]:
        rows.append(("commit", f"timings of {run['commit']}; HEAD was {report['machine']['head_commit']} when "
                     "this page was written", ""))  # fmt: skip
    machine = report["measured_on"]
    if (machine["cpus"], machine["python"], machine["kernel"]) != tuple(
        report["machine"][key] for key in ("cpus", "python", "kernel")
    ):
        rows.append(("measured on", f"{machine['node']}: {machine['cpus']} CPUs ({machine['cpu_model']}), Python "
                     f"{machine['python']}, kernel {machine['kernel']} (not the machine above)", ""))  # fmt: skip
    if previous is None:
        rows.append(("compared with", "no previous run saved on this machine", ""))
        return rows
    rows.append(("compared with", f"[{Path(previous['file']).name}]({_relative(previous['file'], out_dir)}) "
                 f"({_run_label(previous)})", ""))  # fmt: skip
    noise = report["noise_share"]
    slower = [c for c in cases if beyond_noise(c["ratio"], noise) and c["ratio"] > 1]
    faster = [c for c in cases if beyond_noise(c["ratio"], noise) and c["ratio"] < 1]
    rows.append((f"changes of ±{noise:.0%} or more", ", ".join(f"{_label(c)} {change_text(c['ratio'])}"
                 for c in slower + faster) or "none", ""))  # fmt: skip
    return rows


def cases_table(report: dict, png: Path, chart_note: str) -> list[str]:
    noise = report["noise_share"]
    lines = [
        "| group | case | median µs | IQR µs | ops/s | previous median µs | change |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for c in report["cases"]:
        previous = format_us(c["previous_median_us"]) if c["previous_median_us"] is not None else "–"
        change = change_text(c["ratio"]) or "–"
        if beyond_noise(c["ratio"], noise):
            change = f"**{change}**"
        lines.append(f"| {c['group']} | {_label(c)} | {format_us(c['median_us'])} | {format_us(c['iqr_us'])} | "
                     f"{c['ops_per_s']:,} | {previous} | {change} |")  # fmt: skip
    lines += [
        "",
        "In-process timings of one piece each (pytest-benchmark, `bench/test_micro.py`): no event loop, socket "
        f"or kernel work, so they add up to less than a served answer costs (`bench/loadgen.py` measures that). A "
        f"change under ~{noise:.0%} between runs is within noise on this shared {report['machine']['cpus']}-core "
        "machine; larger changes are in bold.",
        "",
        f"This page: `{report['report_command']}`.",
    ]
    if not chart_note:
        lines += ["", f"![median per case]({png.name})"]
    return lines


def write_report(report: dict, out_dir: Path = RESULTS) -> list[Path]:
    """micro.json, micro.png and micro.md in `out_dir`; the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / "micro"
    png, summary = stem.with_suffix(".png"), stem.with_suffix(".md")
    chart_note = plot(report, png)
    if chart_note:
        report["chart"] = chart_note
        print(f"bench.micro: {chart_note}", file=sys.stderr)
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    title = f"Micro-benchmarks of the hot paths, commit {report['run']['commit']}"
    write_summary(summary, title, report, summary_rows(report, out_dir), cases_table(report, png, chart_note))
    return [stem.with_suffix(".json"), *([] if chart_note else [png]), summary]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--storage", type=Path, default=STORAGE, help="make bench-micro's --benchmark-storage"
    )
    parser.add_argument("--run", type=Path, help="the run to report (default: the newest saved)")
    parser.add_argument("--against", type=Path, help="the run to compare it with")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where micro.json, .png and .md go")
    parser.add_argument("--command", default=MEASURED_BY, help="what took the timings")
    args = parser.parse_args(argv)
    report_command = " ".join(
        ["python -m bench.micro", *map(shlex.quote, argv if argv is not None else sys.argv[1:])]
    )
    try:
        current, previous = pick_runs(args.storage, args.run, args.against)
    except MicroReportError as exc:
        print(f"bench.micro: {exc}", file=sys.stderr)
        return 2
    report = make_report(current, previous, args.command, report_command)
    for path in write_report(report, args.out):
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
