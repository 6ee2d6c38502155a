"""bench/writeplane_load.py and bench/writeplane_reads.py: the split of a stream's answers into the idle, writing
and after periods (a pure function), and one tiny real run of each whose files must carry what it measured (a
benchmark is not a test: no timings asserted). The measured runs are in bench/results/writeplane.md."""

from __future__ import annotations

import array
import json
import os

import pytest

from bench import wire_latency, writeplane_load, writeplane_reads
from bench.load.meter import TIMELINE_INTERVAL_S
from tests.bench_helpers import PNG_SIGNATURE

_NS = 1_000_000_000
needs_two_cpus = pytest.mark.skipif(
    len(os.sched_getaffinity(0)) < 2, reason="the benches pin the node and the generator to two distinct CPUs"
)


def _report(start_ns: int, per_interval: list[list[int]], tail: list[int]) -> dict:
    """A generator process's raw report: latencies (ms) in arrival order, interval by interval, then a tail."""
    latencies = array.array("q", [ms * 1_000_000 for chunk in [*per_interval, tail] for ms in chunk])
    return {
        "index": 0,
        "measure_start_ns": start_ns,
        "elapsed_s": (len(per_interval) + 0.5) * TIMELINE_INTERVAL_S,
        "timeline": [len(chunk) for chunk in per_interval],
        "latencies_ns": latencies.tobytes(),
    }


def test_periods_charge_every_interval_that_overlaps_the_writes_to_them():
    half = int(TIMELINE_INTERVAL_S * _NS)
    start = 10 * _NS
    intervals = [[1, 1], [2, 2], [50, 60], [3, 3], [4]]  # the stall lands in the third interval
    report = _report(start, intervals, tail=[5])
    # The writes run from the middle of the second interval to the middle of the third.
    split = writeplane_load.periods([report], start + half + half // 2, start + 2 * half + half // 2)
    assert split["idle"]["answers"] == 2 and split["idle"]["max_ms"] == 1
    assert split["writing"]["answers"] == 4 and split["writing"]["max_ms"] == 60
    assert (
        split["after"]["answers"] == 4 and split["after"]["max_ms"] == 5
    )  # the tail after the last tick too
    assert split["writing"]["p50_ms"] == 2 and split["writing"]["p99_ms"] == 60


@needs_two_cpus
def test_a_tiny_real_run_writes_what_it_measured(tmp_path):
    out = tmp_path / "results"
    argv = ["--store-count", "300", "--load-count", "3000", "--cases", "load,batches", "--rate", "1000",
            "--idle-s", "1.5", "--after-s", "0.5", "--batches", "3", "--batch-size", "200", "--quiet-wait-s", "0",
            "--workdir", str(tmp_path / "work"), "--out", str(out), "--name", "wp"]  # fmt: skip
    assert writeplane_load.main(argv) == 0
    result = json.loads((out / "wp.json").read_text())
    assert result["command"] == "python -m bench.writeplane_load " + " ".join(argv)
    load, batches = result["runs"]
    assert (load["case"], batches["case"]) == ("load", "batches")
    assert load["writes"]["identifiers"] == 3000 and "3,000" in load["writes"]["loader_said"]
    assert batches["writes"]["identifiers"] == 600 and batches["writes"]["failed"] == 0
    for run in (load, batches):
        assert run["periods"]["idle"]["answers"] > 0 and run["periods"]["after"]["answers"] > 0
        idle, writing = run["periods"]["idle"], run["periods"]["writing"]
        assert run["p99_ratio"] == round(writing["p99_ms"] / idle["p99_ms"], 2)
        assert run["writes"]["seconds"] > 0 and run["write_window_s"][1] > run["write_window_s"][0]
        assert set(run["cpu_cores"]["writing"]) >= {"worker", "writer", "others"}
    table = (out / "wp.md").read_text()
    assert f"**{load['p99_ratio']}**" in table and f"**{batches['p99_ratio']}**" in table
    assert (out / "wp.png").read_bytes()[:8] == PNG_SIGNATURE
    assert not list((tmp_path / "work").glob("store-*"))  # cleaned up without --keep


@pytest.mark.skipif(wire_latency.usable() is not None, reason=f"--wire: {wire_latency.usable()}")
def test_a_tiny_run_with_an_http_worker_and_the_wire(tmp_path):
    out = tmp_path / "results"
    argv = ["--store-count", "300", "--cases", "batches", "--rate", "1000", "--idle-s", "1.5", "--after-s", "0.5",
            "--batches", "3", "--batch-size", "200", "--quiet-wait-s", "0", "--http-workers", "1", "--wire",
            "--workdir", str(tmp_path / "work"), "--out", str(out), "--name", "wp"]  # fmt: skip
    assert writeplane_load.main(argv) == 0
    (run,) = json.loads((out / "wp.json").read_text())["runs"]
    assert run["writes"]["identifiers"] == 600 and "--http-workers 1" in run["node_argv"]
    assert run["cpu_cores"]["writing"]["http"] > 0  # the batches went to the HTTP worker, found by its ports
    wire = run["wire"]
    assert wire["idle"]["answers"] > 0 and wire["writing"]["answers"] > 0
    assert wire["p99_ratio"] == round(wire["writing"]["p99_ms"] / wire["idle"]["p99_ms"], 2)
    # the node's share of an answer is part of what the client waited for
    assert wire["idle"]["p50_ms"] <= run["periods"]["idle"]["p50_ms"]
    assert f"| 1 | {wire['idle']['p50_ms']} / " in (out / "wp.md").read_text()


@needs_two_cpus
def test_a_tiny_real_reads_run_compares_two_trees(tmp_path):
    repo = writeplane_reads.RESULTS.parent.parent
    (tmp_path / "old").symlink_to(repo)  # the same code under two names: the figures, not the trees, differ
    (tmp_path / "new").symlink_to(repo)
    out = tmp_path / "results"
    argv = ["--before-tree", str(tmp_path / "old"), "--after-tree", str(tmp_path / "new"), "--count", "300",
            "--rounds", "1", "--duration", "0.5", "--warmup", "0", "--quiet-wait-s", "0",
            "--workdir", str(tmp_path / "work"), "--out", str(out), "--name", "reads"]  # fmt: skip
    assert writeplane_reads.main(argv) == 0
    result = json.loads((out / "reads.json").read_text())
    assert [r["tree"] for r in result["rounds"]] == ["before", "after"]
    for name in ("before", "after"):
        assert result["summary"][name]["median_answers_per_s"] > 0
    expected = (
        result["summary"]["after"]["median_answers_per_s"]
        / result["summary"]["before"]["median_answers_per_s"]
    )
    assert result["ratio_answers_per_s"] == round(expected, 3)
    assert f"**{result['ratio_answers_per_s']}**" in (out / "reads.md").read_text()
