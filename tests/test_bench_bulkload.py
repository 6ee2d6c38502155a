"""bench/bulkload.py: the report parsed, the median, the result files from a small made-up result, and one tiny
run end to end (a benchmark is not a test: no timings asserted)."""

from __future__ import annotations

import json
import sys

import pytest

from bench import bulkload
from bench.load.plot import NO_MATPLOTLIB
from tests.bench_helpers import MACHINE, read_written

COMMAND = "python -m bench.bulkload --count 1000 --runs 3"


def small_result() -> dict:
    run = {"rate_per_s": 500_000, "seconds": 2.0, "load_cpu_s": 3.8, "others_cpu_s": 0.05, "load_average": "1.0 1.1 1.2",
           "undisturbed": True}  # fmt: skip
    return {
        "command": COMMAND,
        "settings": {"count": 1000, "seed": 1, "runs": 3, "wait_for_quiet": True, "quiet_busy_fraction": 0.05,
                     "quiet_sample_s": 2.0, "undisturbed_share": 0.1},
        "runs": [run, {**run, "rate_per_s": 270_000, "others_cpu_s": 3.7, "undisturbed": False},
                 {**run, "rate_per_s": 510_000}],
        "median_per_s": 500_000, "min_per_s": 270_000, "max_per_s": 510_000, "median_seconds": 2.0,
        "undisturbed_runs": 2, "undisturbed_median_per_s": 510_000, "store_bytes": 280_700,
        "bytes_per_identifier": 280.7, "target_per_s": 300_000, "machine": MACHINE,
    }  # fmt: skip


def test_parse_report_reads_the_last_line_of_idnode_load():
    out = "ids.ndjson: 10 identifiers\nloaded 1,000,000 identifiers (1,000,000 new) in 2.1 s, 483,330/s; the store\n"
    assert bulkload.parse_report(out) == (2.1, 483330)
    with pytest.raises(ValueError):
        bulkload.parse_report("idnode: error\n")


def test_median_of_an_odd_and_an_even_count():
    assert bulkload.median([5, 1, 3]) == 3
    assert bulkload.median([4, 1, 3, 2]) == 3


def test_writer_writes_json_png_and_summary(tmp_path):
    pytest.importorskip("matplotlib")
    written = bulkload.write_results(small_result(), tmp_path)
    names = ["bulkload-1000.json", "bulkload-1000.png", "bulkload-1000.md"]
    result, summary = read_written(written, names, COMMAND)
    expected = {"command", "settings", "runs", "median_per_s", "undisturbed_median_per_s", "machine"}
    assert expected <= set(result)
    assert "chart" not in result and [r["undisturbed"] for r in result["runs"]] == [True, False, True]
    assert "| 2 | 270,000 | 2.0 | 3.8 | 3.7 | 1.0 1.1 1.2 | no |" in summary
    assert "| rate, median of 3 runs | 500,000/s (270,000-510,000) | ≥ 300,000/s |" in summary


def test_without_matplotlib_json_and_summary_say_so(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    written = bulkload.write_results(small_result(), tmp_path)
    result, summary = read_written(written, ["bulkload-1000.json", "bulkload-1000.md"], COMMAND)
    assert result["chart"] == NO_MATPLOTLIB and "bulkload-1000.png" not in summary


def test_a_tiny_run_loads_reports_and_writes(tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["--count", "300", "--runs", "2", "--workdir", str(tmp_path), "--no-wait", "--out", str(out)]
    assert bulkload.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[-1].startswith("median ") and "bytes per identifier" in lines[-1]
    assert (tmp_path / "ids-300-1.ndjson").exists()
    result = json.loads((out / "bulkload-300.json").read_text())
    assert result["command"] == "python -m bench.bulkload " + " ".join(argv)
    assert len(result["runs"]) == 2 and result["settings"]["wait_for_quiet"] is False
    assert result["median_per_s"] in [r["rate_per_s"] for r in result["runs"]]
