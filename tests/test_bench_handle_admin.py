"""bench.handle_admin gets one tiny real run (a real `idnode serve` on loopback): every counted write must be
answered SUCCESS, resolve afterwards (the script checks a sample and fails otherwise), and the JSON and
Markdown must carry a figure for every mode and connection count asked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_tiny_run_reports_writes_per_second_for_every_mode(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "bench.handle_admin", "--seconds", "0.6", "--warmup", "0.2", "--rounds", "1",
         "--connections", "1", "3", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads((tmp_path / "handle_admin.json").read_text())
    rows = {(r["mode"], r["connections"]): r for r in result["medians"]}
    assert set(rows) == {(m, c) for m in ("challenge-seckey", "challenge-rsa", "login-rsa") for c in (1, 3)}
    for row in rows.values():
        assert row["writes_per_s"] > 0 and set(row["codes"]) == {"1"}, row
        assert 0 < row["p50_ms"] <= row["p99_ms"]
    for phase in result["rounds"][0]:  # the counted writes are the rate's numerator
        assert phase["writes"] == phase["codes"]["1"] == phase["latency"]["n"]
        assert phase["writes_per_s"] == round(phase["writes"] / phase["seconds"], 1)
    logins = [p for p in result["rounds"][0] if p["mode"] == "login-rsa"]
    assert [p["login"]["n"] for p in logins] == [1, 3]  # one op-2001 login per connection
    text = (tmp_path / "handle_admin.md").read_text()
    assert "| login-rsa | 3 |" in text and "Machine:" in text
