"""bench/compare.py: dnsperf output parsed, the query file's mix, the tool check, bench/echo_server.py's answers,
and one tiny real run (idnode's DNS view under dnsperf) whose files must carry what it measured (a benchmark is
not a test: no timings here)."""

from __future__ import annotations

import json
import shutil

import dns.message
import dns.rcode
import pytest

from bench import compare, echo_server
from bench.datagen import Dataset
from resolver.dnsview import name_to_handle
from tests.bench_helpers import PNG_SIGNATURE

DNSPERF_OUTPUT = """DNS Performance Testing Tool
Version 2.10.0

Statistics:

  Queries sent:         1545331
  Queries completed:    1545300 (100.00%)
  Queries lost:         31 (0.00%)

  Response codes:       NOERROR 1390749 (90.00%), NXDOMAIN 154551 (10.00%)
  Average packet size:  request 52, response 301
  Run time (s):         10.000093
  Queries per second:   154528.562915

  Average Latency (s):  0.000174 (min 0.000012, max 0.012051)
  Latency StdDev (s):   0.000086
"""


def test_dnsperf_output_is_parsed():
    parsed = compare.parse_dnsperf(DNSPERF_OUTPUT)
    assert parsed["answers_per_s"] == pytest.approx(154528.56, abs=0.01)
    assert parsed["completed"] == 1545300 and parsed["lost"] == 31
    assert parsed["rcodes"] == {"NOERROR": 1390749, "NXDOMAIN": 154551}
    assert parsed["latency_avg_s"] == pytest.approx(0.000174)
    with pytest.raises(RuntimeError):
        compare.parse_dnsperf("dnsperf: error: could not open file")


def test_query_file_mixes_types_and_absent_names(tmp_path):
    dataset = Dataset(500, 1)
    path = tmp_path / "queries.txt"
    info = compare.write_queries(path, dataset, 1000, 0.2, seed=1)
    lines = path.read_text().splitlines()
    assert len(lines) == 1000 and info["missing"] == 200
    types = [line.split()[1] for line in lines]
    assert types.count("TXT") == types.count("URI") == 500
    existing = {dataset.handle_at(i) for i in range(dataset.count)}
    present = sum(name_to_handle(line.split()[0]) in existing for line in lines)
    assert present == 800


def test_missing_tools_name_the_packages(monkeypatch, capsys):
    monkeypatch.setattr(
        compare.shutil, "which", lambda tool: None if tool in ("nsd", "dnsperf") else "/bin/x"
    )
    assert compare.main(["--servers", "nsd,idnode", "--out", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "apt-get install -y dnsperf nsd" in err


@pytest.mark.skipif(
    shutil.which("dnsperf") is None or shutil.which("taskset") is None,
    reason="dnsperf not installed: apt-get install dnsperf (.ci/run installs it)",
)
def test_a_tiny_real_run_writes_what_it_measured(tmp_path):
    out = tmp_path / "results"
    argv = ["--servers", "idnode", "--no-handle", "--count", "300", "--rounds", "1", "--seconds", "1",
            "--warmup", "0.5", "--queries", "1000", "--settle", "0", "--workdir", str(tmp_path / "work"),
            "--out", str(out)]  # fmt: skip
    assert compare.main(argv) == 0
    report = json.loads((out / "compare.json").read_text())
    [row] = report["summary"]
    assert row["key"] == "idnode" and row["rounds"] == 1 and row["median_answers_per_s"] > 0
    assert (out / "compare.png").read_bytes()[:8] == PNG_SIGNATURE
    summary = (out / "compare.md").read_text()
    assert f"| **{row['median_answers_per_s']:,}** |" in summary


@pytest.mark.parametrize("edns", [False, True])
def test_echo_server_answers_with_the_question_and_one_record(edns):
    query = dns.message.make_query("a.b.id.test.", "TXT", use_edns=0 if edns else False)
    reply = dns.message.from_wire(echo_server.answer(query.to_wire()))
    assert reply.id == query.id and reply.question == query.question and reply.rcode() == dns.rcode.NOERROR
    assert len(reply.answer) == 1 and (reply.edns == 0) == edns


def test_echo_server_ignores_what_is_not_a_query():
    assert echo_server.answer(b"\x00" * 5) is None
    answer = echo_server.answer(dns.message.make_query("x.", "A").to_wire())
    assert echo_server.answer(answer) is None  # never answers an answer
