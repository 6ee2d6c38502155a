"""bench/protocols.py: a round's record, the median round and the summary (pure functions), the arguments it
refuses, one tiny real run on 127.0.0.1 whose files must carry what it measured, and an interrupted run (a
benchmark is not a test: no rates asserted)."""

from __future__ import annotations

import json
import os

import pytest

from bench import protocols
from tests.bench_helpers import PNG_SIGNATURE


def bench_result(rate: float, errors: dict | None = None, lost: int = 0, malformed: int = 0) -> dict:
    """What `idnode bench --json` writes, as far as the summary reads it."""
    answers = round(rate * 10)
    return {
        "answers_per_s": rate, "answers": answers, "not_found": answers // 10, "errors": errors or {}, "lost": lost,
        "malformed": malformed, "send_errors": 0, "receive_errors": 0,
        "latency_us": {"min": 50.0, "p50": 2500.0, "p90": 2700.0, "p99": 3750.0, "p99.9": 6770.0, "max": 9000.0},
        "server_cpu": {"4242": 0.99}, "generator_cpu": 0.68, "machine_busy": {"cores": 1.9, "of": 2},
        "other_load": [{"pid": 7, "name": "python", "cpu": 0.12}],
    }  # fmt: skip


def round_of(key: str, number: int, rate: float, **kwargs) -> dict:
    record = protocols.round_record(key, number, bench_result(rate, **kwargs))
    files = {ext: f"/work/rounds/{key}-{number}.{ext}" for ext in ("json", "png", "md")}
    command = f"idnode bench {key} --json $WORK/rounds/{key}-{number}.json"
    return {
        **record,
        "started": f"19:1{number}:00",
        "waited_for_quiet_s": 1.0,
        "command": command,
        "files": files,
    }


def series() -> list[dict]:
    return [
        round_of("udp", 1, 84_326.0),
        round_of("udp", 2, 102_160.0),
        round_of("udp", 3, 99_030.0),
        round_of("http", 1, 13_349.0, errors={"500": 3}),
        {"key": "http", "round": 2, "started": "19:20:00", "waited_for_quiet_s": 1.0, "command": "x",
         "failed": "idnode bench exited with 1: refused"},
        round_of("http", 3, 14_524.0, malformed=2),
    ]  # fmt: skip


def test_a_round_keeps_rates_latency_errors_and_cores():
    record = protocols.round_record(
        "udp", 2, bench_result(100_000.0, errors={"PROTOCOL_ERROR": 3}, malformed=1)
    )
    assert record["answers_per_s"] == 100_000.0 and record["latency_us"]["p99.9"] == 6770.0
    assert record["errors"] == 4 and record["error_codes"] == {"PROTOCOL_ERROR": 3}
    assert record["not_found_share"] == 0.1 and record["server_cores"] == 0.99
    assert record["others_cores"] == pytest.approx(
        1.9 - 0.99 - 0.68
    )  # the machine beyond server and generator


def test_the_median_round_is_a_measured_round():
    rounds = [round_of("udp", n, rate) for n, rate in enumerate([300.0, 100.0, 200.0], 1)]
    assert protocols.median_round(rounds)["round"] == 3
    four = [round_of("udp", n, rate) for n, rate in enumerate([100.0, 400.0, 200.0, 300.0], 1)]
    assert (
        protocols.median_round(four)["answers_per_s"] == 200.0
    )  # the lower middle: measured, not flattering
    ties = [round_of("udp", n, 5.0) for n in (1, 2, 3)]
    assert protocols.median_round(ties)["round"] == 2
    failed = {"key": "udp", "round": 4, "failed": "exit 1"}
    assert protocols.median_round([*rounds, failed])["round"] == 3
    assert protocols.median_round([failed]) is None


def test_summary_takes_the_median_round_and_counts_every_error():
    udp, http = protocols.summarize([("udp", "UDP"), ("http", "HTTP")], series())
    assert udp["median_round"] == 3 and udp["median_answers_per_s"] == 99_030.0
    assert udp["answers_per_s"] == [84_326.0, 102_160.0, 99_030.0] and udp["errors"] == 0
    assert http["median_round"] == 1 and http["answers_per_s"] == [13_349.0, None, 14_524.0]
    assert http["errors"] == 5 and http["failed"] == ["idnode bench exited with 1: refused"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--protocols", "udp,smtp"], "unknown smtp"),
        (["--protocols", ","], "none given"),
        (["--rounds", "0"], "--rounds 0"),
        (["--duration", "0"], "--duration"),
        (["--missing", "1"], "--missing"),
        (["--server-cpu", "1", "--client-cpu", "1"], "two distinct CPUs"),
    ],
)
def test_bad_arguments_are_refused_with_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        protocols.main(argv)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One tiny store for the real runs below (built by the first, reused by the others as a real series would)."""
    return tmp_path_factory.mktemp("protocols-work")


def tiny_run(workdir, out) -> list[str]:
    return ["--count", "300", "--rounds", "1", "--duration", "1", "--warmup", "0.2", "--protocols", "udp",
            "--settle", "0", "--no-pin", "--workdir", str(workdir), "--out", str(out)]  # fmt: skip


def server_pid(report: dict) -> int:
    command = report["rounds"][0]["command"].split()
    return int(command[command.index("--server-pid") + 1])


def test_a_tiny_real_run_writes_what_it_measured_and_stops_its_server(workdir, tmp_path, capsys):
    out = tmp_path / "results"
    assert protocols.main(tiny_run(workdir, out)) == 0
    for name in ("protocols.json", "protocols.md", "loadgen-udp.json", "loadgen-udp.md"):
        assert (out / name).exists(), name
    assert (out / "protocols.png").read_bytes()[:8] == PNG_SIGNATURE
    report = json.loads((out / "protocols.json").read_text())
    [record] = report["rounds"]
    assert record["key"] == "udp" and "failed" not in record and record["errors"] == 0
    assert record["answers_per_s"] > 0
    [row] = report["summary"]
    assert row["median_answers_per_s"] == record["answers_per_s"]
    measured = f"| **{record['answers_per_s']:,.0f}** |"
    assert measured in (out / "protocols.md").read_text() and measured in capsys.readouterr().out
    assert json.loads((out / "loadgen-udp.json").read_text())["answers_per_s"] == record["answers_per_s"]
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid(report), 0)


def test_an_interrupted_run_stops_its_server_and_writes_nothing(workdir, tmp_path, monkeypatch):
    started = []

    def interrupted(targets, *_):
        started.append(targets[0].node.entry.process)
        raise KeyboardInterrupt

    monkeypatch.setattr(protocols, "run_rounds", interrupted)
    out = tmp_path / "results"
    assert protocols.main(tiny_run(workdir, out)) == 130
    assert started and started[0].poll() is not None and not out.exists()
