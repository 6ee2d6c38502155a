"""What the tests of the benchmarks' result writers share: a machine, and the reading of what a writer wrote."""

from __future__ import annotations

import json
from pathlib import Path

MACHINE = {"cpus": 2, "cpu_model": "test", "memory_gib": 1.0, "python": "3.11", "kernel": "6", "commit": "abc1234",
           "date": "2026-01-01 00:00 UTC"}  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_written(written: list[Path], names: list[str], command: str) -> tuple[dict, str]:
    """Checks the writer wrote `names` (a .png a PNG, the .md naming MACHINE's commit and `command`);
    the JSON's result and the markdown."""
    assert [p.name for p in written] == names
    by_suffix = {p.suffix: p for p in written}
    if ".png" in by_suffix:
        assert by_suffix[".png"].read_bytes()[:8] == PNG_SIGNATURE
    summary = by_suffix[".md"].read_text()
    assert f"commit {MACHINE['commit']}" in summary and f"`{command}`" in summary
    return json.loads(by_suffix[".json"].read_text()), summary
