"""bench/scale.py's writer without the 20M run: the JSON, the markdown summary and the PNG from a small result
dict shaped as the run leaves it (the run itself is `make bench-scale`, far too long for a test)."""

from __future__ import annotations

import json

import pytest

from bench import scale
from bench.load.report import latency_histogram, merge_histograms
from tests.bench_helpers import MACHINE, PNG_SIGNATURE


def _resolved(rate: int, latencies_ns: list[int]) -> dict:
    return {
        "answers": rate * 2, "errors": 0, "rounds": 1, "median_answers_per_s": rate, "rates": [rate],
        "latency_us": {"p50": 1.0}, "timeline_interval_s": 0.5,
        "answers_per_s_timeline": [rate - 10, rate + 10, rate, rate],
        "latency_histogram": latency_histogram(sorted(latencies_ns)),
    }  # fmt: skip


def small_result() -> dict:
    return {
        "command": "python -m bench.scale --count 2000", "count": 2000, "small_count": 1000, "machine": MACHINE,
        "large_load": {"seconds": 1.0, "per_s": 2000, "bytes_per_identifier": 280.0, "peak_rss_bytes": 1 << 20},
        "small_resolve": _resolved(1000, [40_000, 50_000, 900_000]),
        "large_resolve": _resolved(900, [45_000, 55_000, 1_200_000]),
        "rate_ratio_large_to_small": 0.9,
    }  # fmt: skip


def test_writer_writes_json_summary_and_png(tmp_path):
    pytest.importorskip("matplotlib")
    scale.write_results(small_result(), tmp_path)
    assert (tmp_path / "scale.png").read_bytes()[:8] == PNG_SIGNATURE
    written = json.loads((tmp_path / "scale.json").read_text())
    assert "chart" not in written and written["large_resolve"]["answers_per_s_timeline"] == [
        890,
        910,
        900,
        900,
    ]
    summary = (tmp_path / "scale.md").read_text()
    assert "| ratio 20M / 1M | 0.9 | ≥ 0.85 |" in summary


def test_no_timeline_no_chart(tmp_path):
    result = small_result()
    for name in ("small_resolve", "large_resolve"):
        del result[name]["answers_per_s_timeline"]
    assert scale.plot(result, tmp_path / "scale.png") != ""
    assert not (tmp_path / "scale.png").exists()


def test_round_histograms_add_up():
    first = latency_histogram(sorted([1_000, 2_000, 50_000]))
    second = latency_histogram(sorted([2_000, 3_000_000]))
    merged = merge_histograms([first, second])
    assert sum(merged["counts"]) == 5
    by_upper = dict(zip(merged["upper_us"], merged["counts"], strict=True))
    for histogram in (first, second):
        for upper, n in zip(histogram["upper_us"], histogram["counts"], strict=True):
            assert by_upper[upper] >= n
