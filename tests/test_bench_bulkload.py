"""bench/bulkload.py: the report line of `idnode load` parsed, the median, and one tiny real run end to end whose
files must carry what it measured (a benchmark is not a test: no timings asserted)."""

from __future__ import annotations

import json

import pytest

from bench import bulkload
from tests.bench_helpers import PNG_SIGNATURE


def test_parse_report_reads_the_last_line_of_idnode_load():
    out = "ids.ndjson: 10 identifiers\nloaded 1,000,000 identifiers (1,000,000 new) in 2.1 s, 483,330/s; the store\n"
    assert bulkload.parse_report(out) == (2.1, 483330)
    with pytest.raises(ValueError):
        bulkload.parse_report("idnode: error\n")


def test_median_of_an_odd_and_an_even_count():
    assert bulkload.median([5, 1, 3]) == 3
    assert bulkload.median([4, 1, 3, 2]) == 3


def test_a_tiny_run_loads_and_writes_what_it_measured(tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["--count", "300", "--runs", "2", "--workdir", str(tmp_path), "--no-wait", "--out", str(out)]
    assert bulkload.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[-1].startswith("median ") and "bytes per identifier" in lines[-1]
    result = json.loads((out / "bulkload-300.json").read_text())
    assert result["command"] == "python -m bench.bulkload " + " ".join(argv)
    rates = [r["rate_per_s"] for r in result["runs"]]
    assert len(rates) == 2 and all(rate > 0 for rate in rates) and result["median_per_s"] == bulkload.median(rates)
    assert (out / "bulkload-300.png").read_bytes()[:8] == PNG_SIGNATURE
    summary = (out / "bulkload-300.md").read_text()
    assert f"{result['median_per_s']:,}/s" in summary and f"| {result['bytes_per_identifier']} |" in summary
    for n, rate in enumerate(rates, 1):
        assert f"| {n} | {rate:,} |" in summary
