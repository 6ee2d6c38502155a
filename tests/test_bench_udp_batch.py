"""bench/udp_batch.py: one tiny real run of every server on 127.0.0.1 whose files must carry what it measured, the
per-round ratio of batched to transport, and the arguments it refuses (a benchmark is not a test: no rate is
asserted beyond "answers came back")."""

from __future__ import annotations

import json
import shutil

import pytest

from bench import udp_batch


def test_a_tiny_run_measures_every_server_and_writes_its_files(tmp_path):
    modes = "batch,batch-python,transport,echo" if shutil.which("cc") else "batch,batch-python,transport"
    out = tmp_path / "out" / "udp"
    code = udp_batch.main([
        "--count", "2000", "--rounds", "1", "--duration", "1", "--warmup", "0.3", "--settle", "0",
        "--modes", modes, "--workdir", str(tmp_path / "work"), "--out", str(out),
    ])  # fmt: skip
    assert code == 0
    report = json.loads(out.with_suffix(".json").read_text())
    rounds = {r["key"]: r for r in report["rounds"]}
    assert set(rounds) == set(modes.split(","))
    for mode, record in rounds.items():
        assert "failed" not in record, record
        assert record["answers_per_s"] > 0 and record["errors"] == 0, mode
        assert record["open_loop"]["answers_per_s"] > 0, mode
        assert record["server_cores"] is not None and record["server_cores"] > 0, mode
    assert "--udp-batch false" in rounds["transport"]["server_command"]
    assert "--udp-batch true --udp-c-answers true" in rounds["batch"]["server_command"]
    assert "--udp-batch true --udp-c-answers false" in rounds["batch-python"]["server_command"]
    ratio = rounds["batch"]["answers_per_s"] / rounds["transport"]["answers_per_s"]
    assert report["summary"]["batch_over_transport_per_round"] == [round(ratio, 3)]
    ratio = rounds["batch"]["answers_per_s"] / rounds["batch-python"]["answers_per_s"]
    assert report["summary"]["batch_over_python_per_round"] == [round(ratio, 3)]
    text = out.with_suffix(".md").read_text()
    assert f"{rounds['batch']['answers_per_s']:,.0f}" in text and "Batched over transport" in text
    assert "C answers over Python answers" in text


@pytest.mark.parametrize(
    "argv",
    [["--modes", "batch,nginx"], ["--rounds", "0"], ["--count", "0"], ["--open-rate", "-5"]],
)
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        udp_batch.parse_args(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err
