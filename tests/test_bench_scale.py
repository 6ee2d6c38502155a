"""bench/scale.py: the merge of the rounds' latency histograms (a pure function), and one tiny real run (two
stores of a few hundred identifiers, a real node, one round of 0.6 s each, a restart) whose files must carry
what it measured. The acceptance run itself is `make bench-scale`; a benchmark is not a test: no timings here."""

from __future__ import annotations

import json

from bench import scale
from bench.load.report import latency_histogram, merge_histograms
from tests.bench_helpers import PNG_SIGNATURE


def test_round_histograms_add_up():
    first = latency_histogram(sorted([1_000, 2_000, 50_000]))
    second = latency_histogram(sorted([2_000, 3_000_000]))
    merged = merge_histograms([first, second])
    assert sum(merged["counts"]) == 5
    by_upper = dict(zip(merged["upper_us"], merged["counts"], strict=True))
    for histogram in (first, second):
        for upper, n in zip(histogram["upper_us"], histogram["counts"], strict=True):
            assert by_upper[upper] >= n


def test_a_tiny_real_run_writes_what_it_measured(tmp_path):
    out = tmp_path / "results"
    argv = ["--count", "400", "--small-count", "200", "--resolutions", "100", "--workers", "1",
            "--round-s", "0.6", "--warmup-s", "0", "--rate-rounds", "1", "--workdir", str(tmp_path / "work"), "--out", str(out)]  # fmt: skip
    assert scale.main(argv) == 0
    result = json.loads((out / "scale.json").read_text())
    large, small = result["large_resolve"], result["small_resolve"]
    assert result["large_load"]["per_s"] > 0 and large["answers"] >= 100 and large["errors"] == 0
    assert large["rounds"] >= 1 and small["rounds"] == 1
    cumulative = next(f["value"] for f in result["report_after_restart"]["figures"]
                      if f["name"].startswith("cumulative resolutions"))  # fmt: skip
    assert cumulative >= large["answers"]  # the large store's resolutions survived the restart
    assert (out / "scale.png").read_bytes()[:8] == PNG_SIGNATURE
    summary = (out / "scale.md").read_text()
    assert f"| identifiers loaded | {400:,} |" in summary and f"| {large['answers']:,} |" in summary
    assert f"{large['median_answers_per_s']:,.0f}/s" in summary and f"{small['median_answers_per_s']:,.0f}/s" in summary
    assert f"| {cumulative:,} |" in summary
    assert not list((tmp_path / "work").glob("store-*"))  # cleaned up
