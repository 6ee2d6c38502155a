"""bench/http_batch.py: the rate over time (a pure function), and one tiny real run against the node it spawns
whose files must carry what it measured (a benchmark is not a test: no timings asserted)."""

from __future__ import annotations

import json

import pytest

from bench import http_batch
from tests.bench_helpers import PNG_SIGNATURE


def test_rate_timeline_counts_each_batch_once_at_its_answer():
    interval_s, timeline = http_batch.rate_timeline([(0.0, 2000), (0.99, 2000), (1.0, 1000), (5.0, 500)], 2.0)
    assert interval_s == pytest.approx(0.1) and len(timeline) == http_batch.TIMELINE_BINS
    assert sum(n * interval_s for n in timeline) == pytest.approx(5500)
    assert timeline[0] == pytest.approx(20_000) and timeline[9] == pytest.approx(20_000)
    assert timeline[10] == pytest.approx(10_000)
    assert timeline[-1] == pytest.approx(5_000)  # answered after the measured time: counted in the last step


def test_a_tiny_real_run_writes_what_it_measured(tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["--batches", "4", "--warmup", "1", "--batch-size", "100", "--clients", "2", "--workers", "1",
            "--out", str(out)]  # fmt: skip
    assert http_batch.main(argv) == 0
    result = json.loads((out / "http-batch.json").read_text())
    assert result["command"] == "python -m bench.http_batch " + " ".join(argv)
    assert (result["identifiers"], result["failed"], result["batches"]) == (400, 0, 4)
    assert len(result["batch_latencies_ms"]) == 4 and result["identifiers_per_s"] > 0
    assert (out / "http-batch.png").read_bytes()[:8] == PNG_SIGNATURE
    summary = (out / "http-batch-summary.md").read_text()
    assert f"{result['identifiers_per_s']:,.0f} identifiers/s in {result['seconds']:.2f} s" in summary
    lat = result["latency_ms"]
    assert " / ".join(f"{lat[k]:.1f}" for k in ("min", "p50", "p90", "p99", "max")) in summary
    assert f"{result['identifiers_per_s']:,.0f}" in capsys.readouterr().out
