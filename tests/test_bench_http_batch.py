"""bench/http_batch.py's result files from a small made-up result, and the rate over time (the run itself needs a
node and is a benchmark, not a test)."""

from __future__ import annotations

import sys

import pytest

from bench import http_batch
from bench.load.plot import NO_MATPLOTLIB
from tests.bench_helpers import MACHINE, read_written

COMMAND = "python -m bench.http_batch --batches 5"


def small_result() -> dict:
    latencies = [30.0, 75.5, 80.0, 110.0, 226.0]
    interval_s, timeline = http_batch.rate_timeline([(0.1, 2000), (0.2, 2000), (0.3, 2000), (0.35, 2000),
                                                     (0.5, 2000)], 0.5)  # fmt: skip
    return {
        "command": COMMAND, "identifiers": 10_000, "failed": 0, "batches": 5,
        "batch_size": 2000, "clients": 4, "workers": 2, "shuffled": False, "seconds": 0.5,
        "identifiers_per_s": 20_000.0,
        "latency_ms": {"min": 30.0, "p50": 80.0, "p90": 226.0, "p99": 226.0, "max": 226.0},
        "batch_latencies_ms": latencies, "timeline_interval_s": interval_s, "identifiers_per_s_timeline": timeline,
        "target_per_s": 20_000, "machine": MACHINE,
    }  # fmt: skip


def test_rate_timeline_counts_each_batch_once_at_its_answer():
    interval_s, timeline = http_batch.rate_timeline([(0.0, 2000), (0.99, 2000), (1.0, 1000), (5.0, 500)], 2.0)
    assert interval_s == pytest.approx(0.1) and len(timeline) == http_batch.TIMELINE_BINS
    assert sum(n * interval_s for n in timeline) == pytest.approx(5500)
    assert timeline[0] == pytest.approx(20_000) and timeline[9] == pytest.approx(20_000)
    assert timeline[10] == pytest.approx(10_000)
    assert timeline[-1] == pytest.approx(5_000)  # answered after the measured time: counted in the last step


def test_writer_writes_json_png_and_summary(tmp_path):
    pytest.importorskip("matplotlib")
    written = http_batch.write_results(small_result(), tmp_path)
    names = ["http-batch.json", "http-batch.png", "http-batch-summary.md"]
    result, summary = read_written(written, names, COMMAND)
    assert {"command", "identifiers_per_s", "latency_ms", "batch_latencies_ms", "identifiers_per_s_timeline",
            "machine"} <= set(result)  # fmt: skip
    assert "chart" not in result
    assert "| rate | 20,000 identifiers/s in 0.50 s | ≥ 20,000/s |" in summary
    assert "30.0 / 80.0 / 226.0 / 226.0 / 226.0" in summary


def test_another_name_and_no_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    written = http_batch.write_results({**small_result(), "shuffled": True}, tmp_path, "http-batch-random")
    result, summary = read_written(
        written, ["http-batch-random.json", "http-batch-random-summary.md"], COMMAND
    )
    assert result["chart"] == NO_MATPLOTLIB and "random order" in summary
