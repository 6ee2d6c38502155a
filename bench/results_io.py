"""What every benchmark result carries: the machine, the commit and the command, and a short markdown
summary beside the JSON (bench/results/<name>.json and .md)."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def machine_facts() -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def write_summary(
    path: Path, title: str, result: dict, rows: list[tuple[str, str, str]], more: Sequence[str] = ()
) -> None:
    """A markdown page: the machine, the command, one table of (figure, measured, target), then the lines of
    `more` (a run's own table, links to its files)."""
    m = result["machine"]
    lines = [
        f"# {title}",
        "",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']}, "
        f"kernel {m['kernel']}; commit {m['commit']}; {m['date']}.",
        "",
        f"Command: `{result.get('command', '')}`",
        "",
        "| figure | measured | target |",
        "|---|---|---|",
        *(f"| {name} | {value} | {target} |" for name, value, target in rows),
        "",
        *more,
    ]
    if more:
        lines.append("")
    path.write_text("\n".join(lines))
