"""bench/micro.py: which saved runs the report of `make bench-micro` compares and how (made-up runs shaped like
bench/results/micro/*/*.json), the files it refuses, and one tiny real run reported with what it measured (a
benchmark is not a test: no timings asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import micro
from tests.bench_helpers import MACHINE, PNG_SIGNATURE

REPO = Path(__file__).resolve().parent.parent
MACHINE_DIR = "Linux-CPython-3.11-64bit"
COMMIT = MACHINE["commit"] + "5" * 33
OLD_COMMIT = "0ld0000" + "1" * 33


def machine_info(python: str = "3.11.7") -> dict:
    return {"node": "vm", "processor": "", "machine": "x86_64", "python_compiler": "GCC 12.2.0",
            "python_implementation": "CPython", "python_implementation_version": python, "python_version": python,
            "python_build": ["main", "May  9 2026 07:35:25"], "release": "6.18.44-fc-v669", "system": "Linux",
            "cpu": {"arch": "X86_64", "bits": 64, "count": 2, "brand_raw": "AMD EPYC"}}  # fmt: skip


def benchmark(group: str, name: str, median_us: float) -> dict:
    """One case as pytest-benchmark saves it; the spread around the median is made up but of the usual shape."""
    m = median_us / 1e6
    mean = m * 1.02
    stats = {"min": m * 0.93, "max": m * 40, "mean": mean, "stddev": m * 0.4, "rounds": 50_000, "median": m,
             "iqr": m * 0.04, "q1": m * 0.98, "q3": m * 1.02, "iqr_outliers": 900, "stddev_outliers": 300,
             "outliers": "300;900", "ld15iqr": m * 0.93, "hd15iqr": m * 1.08, "ops": 1 / mean,
             "total": mean * 50_000, "iterations": 1}  # fmt: skip
    return {"group": group, "name": name, "fullname": f"bench/test_micro.py::{name}", "params": None, "param": None,
            "extra_info": {}, "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": 5,
                                          "max_time": 1.0, "min_time": 5e-06, "warmup": False},
            "stats": stats}  # fmt: skip


def run(
    medians: dict[str, float], commit: str, when: str, *, dirty: bool = False, python: str = "3.11.7"
) -> dict:
    """A saved run; `medians` maps "group/name" to µs."""
    return {
        "machine_info": machine_info(python),
        "commit_info": {"id": commit, "time": "2026-11-29T18:23:34+00:00", "author_time": "2026-11-29T18:23:34+00:00",
                        "dirty": dirty, "project": "main", "branch": "main"},
        "benchmarks": [benchmark(*key.split("/"), us) for key, us in medians.items()],
        "datetime": when,
        "version": "5.3.1",
    }  # fmt: skip


BEFORE = {"decode-request/test_decode_request": 10.0, "hot-path/test_answer_message_found": 4.0}
AFTER = {**BEFORE, "decode-request/test_decode_request": 12.0, "store-get/test_store_get_missing": 0.12}


def save(storage: Path, number: int, saved: dict, machine_dir: str = MACHINE_DIR) -> Path:
    """Where --benchmark-autosave would put it: <storage>/<machine>/NNNN_<commit>_<date>.json."""
    stamp = saved["datetime"][:19].replace("-", "").replace(":", "").replace("T", "_")
    path = storage / machine_dir / f"{number:04d}_{saved['commit_info']['id']}_{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved, indent=4))
    return path


@pytest.fixture
def storage(tmp_path) -> Path:
    """Two runs of one machine: the decode case went from 10 to 12 µs, a store case is new."""
    storage = tmp_path / "micro"
    save(storage, 1, run(BEFORE, OLD_COMMIT, "2026-11-28T10:00:00.000001+00:00"))
    save(storage, 2, run(AFTER, COMMIT, "2026-11-29T18:31:09.769742+00:00"))
    return storage


def report_of(storage: Path, **picked) -> dict:
    return micro.make_report(*micro.pick_runs(storage, **picked), "make bench-micro", "python -m bench.micro")


def test_the_report_compares_the_newest_run_with_the_one_before(storage):
    cases = {case["name"]: case for case in report_of(storage)["cases"]}
    decode = cases["test_decode_request"]
    assert decode["median_us"] == 12.0 and decode["previous_median_us"] == 10.0 and decode["ratio"] == 1.2
    assert micro.change_text(decode["ratio"]) == "+20%" and micro.beyond_noise(decode["ratio"], 0.1)
    assert cases["test_answer_message_found"]["ratio"] == 1.0
    new = cases["test_store_get_missing"]
    assert new["previous_median_us"] is None and new["ratio"] is None  # not in the run before


def test_cases_keep_their_groups_together_in_the_run_order():
    mixed = {"a/test_one": 1.0, "b/test_two": 2.0, "a/test_three": 3.0}
    cases = micro.compared_cases(run(mixed, COMMIT, "2026-11-29T18:31:09+00:00"), None)
    assert [(c["group"], c["name"]) for c in cases] == [
        ("a", "test_one"),
        ("a", "test_three"),
        ("b", "test_two"),
    ]
    assert all(c["previous_median_us"] is None and c["ratio"] is None for c in cases)


def test_the_commit_is_the_runs_and_head_is_named_beside_it_when_it_differs(storage, tmp_path):
    report = report_of(storage)
    assert report["machine"]["commit"] == COMMIT[:7] and report["machine"]["date"] == "2026-11-29 18:31 UTC"
    assert report["machine"]["head_commit"] != COMMIT[:7]  # the test's checkout is not at the made-up commit
    rows = dict((figure, measured) for figure, measured, _ in micro.summary_rows(report, tmp_path))
    assert (
        rows["commit"]
        == f"timings of {COMMIT[:7]}; HEAD was {report['machine']['head_commit']} when this page was written"
    )


def test_the_previous_run_is_the_newest_older_one_of_the_same_machine(tmp_path):
    storage = tmp_path / "micro"
    save(storage, 1, run(BEFORE, "1" * 40, "2026-11-27T10:00:00+00:00"))
    save(storage, 2, run(BEFORE, "2" * 40, "2026-11-28T10:00:00+00:00", dirty=True))
    save(
        storage,
        1,
        run(BEFORE, "3" * 40, "2026-11-28T12:00:00+00:00", python="3.12.1"),
        "Linux-CPython-3.12-64bit",
    )
    newest = save(storage, 3, run(AFTER, "4" * 40, "2026-11-29T10:00:00+00:00"))
    (current_path, _), (previous_path, previous) = micro.pick_runs(storage)
    assert current_path == newest and previous["commit_info"]["id"] == "2" * 40
    report = report_of(storage)
    assert micro.summary_rows(report, tmp_path)[-2][1].endswith(
        "(commit 2222222 with uncommitted changes, 2026-11-28 10:00 UTC)"
    )


def test_the_first_run_has_nothing_to_compare_with(tmp_path):
    storage = tmp_path / "micro"
    save(storage, 1, run(AFTER, COMMIT, "2026-11-29T18:31:09+00:00"))
    report = report_of(storage)
    assert report["previous"] is None and all(case["ratio"] is None for case in report["cases"])
    assert ("compared with", "no previous run saved on this machine", "") in micro.summary_rows(
        report, tmp_path
    )


def test_against_names_the_run_to_compare_with(storage, tmp_path):
    other = save(
        tmp_path / "elsewhere",
        7,
        run({"decode-request/test_decode_request": 8.0}, "9" * 40, "2026-01-01T00:00:00+00:00"),
    )
    report = report_of(storage, against=other)
    decode = next(case for case in report["cases"] if case["name"] == "test_decode_request")
    assert decode["previous_median_us"] == 8.0 and micro.change_text(decode["ratio"]) == "+50%"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.micro", *args], cwd=REPO, capture_output=True, text=True, check=False
    )


def test_a_tiny_real_run_is_reported_with_what_it_measured(tmp_path):
    """Two cases of bench/test_micro.py timed for real (one round each), then the report of that run."""
    timings = tmp_path / "run.json"
    timed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "bench/test_micro.py", "--benchmark-enable",
         f"--benchmark-json={timings}", "--benchmark-min-rounds=1", "--benchmark-max-time=0.000001",
         "--benchmark-warmup=off", "-k", "test_decode_request or test_store_get_missing"],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert timed.returncode == 0, timed.stdout + timed.stderr
    out = tmp_path / "out"
    done = cli("--run", str(timings), "--storage", str(tmp_path / "none"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "micro.png").read_bytes()[:8] == PNG_SIGNATURE
    cases = json.loads((out / "micro.json").read_text())["cases"]
    assert sorted(case["name"] for case in cases) == ["test_decode_request", "test_store_get_missing"]
    summary = (out / "micro.md").read_text()
    for case in cases:
        assert case["median_us"] > 0
        assert f"| {case['name'][len('test_'):]} | {micro.format_us(case['median_us'])} |" in summary


def test_the_cli_without_a_saved_run_says_so(tmp_path):
    done = cli("--storage", str(tmp_path / "empty"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr == f"bench.micro: {tmp_path / 'empty'}: no saved run (make bench-micro saves one)\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("not json at all", "not JSON"),
        ('{"benchmarks": []}', "no 'commit_info'"),
        (
            json.dumps({**run(BEFORE, COMMIT, "2026-11-29T18:31:09+00:00"), "benchmarks": []}),
            "no benchmarks in it",
        ),
    ],
)
def test_the_cli_refuses_a_file_that_is_not_a_pytest_benchmark_run(tmp_path, content, why):
    bad = tmp_path / "results.json"
    bad.write_text(content)
    done = cli("--run", str(bad), "--storage", str(tmp_path / "none"), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"bench.micro: {bad}: not pytest-benchmark JSON (") and why in done.stderr


def test_a_broken_file_among_the_saved_runs_is_named(storage):
    broken = storage / MACHINE_DIR / "0003_broken.json"
    broken.write_text('{"machine_info": {}}')
    with pytest.raises(micro.MicroReportError, match=f"{broken}: not pytest-benchmark JSON"):
        micro.pick_runs(storage)
