"""bench.recursion gets one tiny real run (two nodes on loopback) whose JSON and Markdown must carry what it
measured: every latency row answered, and a hit rate that matches what was asked upstream."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_tiny_recursion_run_reports_latencies_and_the_hit_rate(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "bench.recursion", "--count", "300", "--sample", "40", "--questions", "400",
         "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "recursion.json").read_text())
    rows = result["latency"]
    assert len(rows) == 4 and all(
        r["n"] == 40 and 0 < r["min_us"] <= r["p50_us"] <= r["max_us"] for r in rows.values()
    )
    zipf = result["zipf"]
    assert zipf["codes"] == {"1": 400}
    asked = zipf["recursions"]
    assert (
        asked["miss"] + asked.get("joined", 0) >= zipf["distinct"]
    )  # every distinct identifier went upstream once
    assert asked["hit"] + asked["miss"] + asked.get("joined", 0) == 400
    assert zipf["hit_rate"] == round(asked["hit"] / 400, 4) and 0 < zipf["hit_rate"] < 1
    assert "cache hit rate" in (tmp_path / "recursion.md").read_text()
