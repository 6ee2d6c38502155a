"""bench/bulkload.py: the report parsed, the median, and one tiny run end to end (a benchmark is not a test: no
timings asserted)."""

from __future__ import annotations

import pytest

from bench import bulkload


def test_parse_report_reads_the_last_line_of_idnode_load():
    out = "ids.ndjson: 10 identifiers\nloaded 1,000,000 identifiers (1,000,000 new) in 2.1 s, 483,330/s; the store\n"
    assert bulkload.parse_report(out) == (2.1, 483330)
    with pytest.raises(ValueError):
        bulkload.parse_report("idnode: error\n")


def test_median_of_an_odd_and_an_even_count():
    assert bulkload.median([5, 1, 3]) == 3
    assert bulkload.median([4, 1, 3, 2]) == 3


def test_a_tiny_run_loads_and_reports(tmp_path, capsys):
    assert bulkload.main(["--count", "300", "--runs", "2", "--workdir", str(tmp_path), "--no-wait"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[-1].startswith("median ") and "bytes per identifier" in lines[-1]
    assert (tmp_path / "ids-300-1.ndjson").exists()
