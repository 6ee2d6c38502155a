"""The load generator against a real `idnode serve` on 127.0.0.1, over every protocol it speaks: it gets answers,
matches them to its requests, sorts them into found, not found and errors, merges its processes' counts, stops
at a count, and stops by itself; in open loop a slow server is charged from the due time; `idnode bench` writes
what it measured. No rates are asserted (bench/ measures speed)."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time

import pytest

from bench.datagen import Dataset
from bench.loadgen import DatasetSpec, LoadGenError, LoadSpec, format_result, run_load, run_udp_load
from resolver.cli import main as idnode_main
from tests.conftest import copy_demo_store
from tests.http_helpers import http_node
from tests.servers import free_port

SPEC = DatasetSpec(2000, seed=1, prefix="88.100", enterprises=8)  #: the conftest's demo_ndjson
DATASET = Dataset(SPEC.count, SPEC.seed, SPEC.prefix, SPEC.enterprises)
MISSING = 0.2
POOL = 4096  #: requests per process: enough for the mix, cheap to build
PORT_OF = {"udp": "port", "tcp": "port", "dns": "dns_port", "http": "http_port"}
FOUND_MISSING = {
    "udp": ("SUCCESS", "HANDLE_NOT_FOUND"),
    "tcp": ("SUCCESS", "HANDLE_NOT_FOUND"),
    "dns": ("NOERROR", "NXDOMAIN"),
    "http": ("HTTP_200", "HTTP_404"),
}


@pytest.fixture(scope="module")
def node(tmp_path_factory, demo_store_dir):
    path = copy_demo_store(demo_store_dir, tmp_path_factory.mktemp("loadgen"))
    dns_port = free_port()
    with http_node(path, workers=1, extra=("--dns-port", str(dns_port))) as running:
        running.dns_port = dns_port
        yield running


def spec_for(node, protocol: str, **kwargs) -> LoadSpec:
    settings = {"duration_s": 0.5, "warmup_s": 0.1, "missing_ratio": MISSING, "seed": 3, "timeout_s": 2.0,
                "pool_size": POOL, "sockets": 8, **kwargs}  # fmt: skip
    return LoadSpec(protocol, node.host, getattr(node, PORT_OF[protocol]), SPEC, **settings)


def assert_clean(result: dict, protocol: str) -> None:
    found, missing = FOUND_MISSING[protocol]
    answers = result["answers"]
    assert answers > 50
    assert result["errors"] == {}, result["codes"]
    assert result["lost"] == result["malformed"] == result["late"] == result["receive_errors"] == 0
    assert set(result["codes"]) == {found, missing}
    assert result["success"] == result["codes"][found] and result["not_found"] == result["codes"][missing]
    assert result["success"] + result["not_found"] == answers
    # The pool holds exactly 20% absent identifiers and is sent in a cycle, so the share is close to it.
    assert result["not_found"] / answers == pytest.approx(MISSING, abs=0.06)
    lat = result["latency_us"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert sum(result["latency_histogram"]["counts"]) == answers
    assert result["answers_per_s_timeline"]


@pytest.mark.parametrize("protocol", ["udp", "tcp", "dns", "http"])
def test_closed_loop_answers_every_protocol(node, protocol):
    result = run_load(spec_for(node, protocol), server_pids=[node.process.pid])
    assert_clean(result, protocol)
    assert result["settings"]["mode"] == "closed" and result["stopped_by"] == ["duration"]
    assert result["sent"] >= result["answers"]  # closed loop: every answer is followed by a request
    assert set(result["server_cpu"]) == {str(node.process.pid)}
    text = format_result(result)
    assert "answers/s" in text and FOUND_MISSING[protocol][1] in text


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_count_bound_stops_at_the_count(node, protocol):
    result = run_load(spec_for(node, protocol, count=3001, processes=2, warmup_s=0.1))
    assert result["answers"] == 3001
    assert [p["index"] for p in result["per_process"]] == [0, 1] and all(p["answers"] for p in result["per_process"])
    assert sum(p["answers"] for p in result["per_process"]) == 3001  # the processes' counts merged
    assert sum(result["codes"].values()) == 3001
    assert result["stopped_by"] == ["count"]


def test_progress_is_reported(node):
    lines = []
    run_load(spec_for(node, "udp", duration_s=1.1, warmup_s=0.0, sockets=2), progress=lines.append)
    assert lines and "answers/s so far" in lines[-1] and "lost 0" in lines[-1]


def test_cli_writes_json_png_and_markdown(node, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out, png, md = tmp_path / "r.json", tmp_path / "r.png", tmp_path / "r.md"
    argv = ["bench", "tcp", "--server", f"{node.host}:{node.port}", "--dataset-count", "2000", "--enterprises", "8",
            "--count", "500", "--warmup", "0", "--sockets", "2", "--window", "4", "--popularity", "zipf",
            "--json", str(out), "--png", str(png), "--md", str(md), "--quiet"]  # fmt: skip
    assert idnode_main(argv) == 0
    result = json.loads(out.read_text())
    assert result["answers"] == 500 and result["errors"] == {}
    assert result["settings"]["popularity"] == "zipf" and result["command"].startswith("idnode bench tcp")
    assert result["machine"]["cpus"] and "commit" in result["machine"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = md.read_text()
    assert result["command"] in summary and f"commit {result['machine']['commit']}" in summary
    assert "| answers | 500 (" in summary and "| errors | 0 | 0 |" in summary
    assert f"| answers/s | {result['answers_per_s']:,.0f} |" in summary  # what it measured
    assert "Handle TCP" in capsys.readouterr().out


class _SlowHttp(socketserver.StreamRequestHandler):
    """Answers each request of a keep-alive connection 50 ms after it has read it: 20 answers/s at the most."""

    def handle(self):
        while True:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = self.rfile.readline()
                if not line:
                    return
                head += line
            time.sleep(0.05)
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")


def test_open_loop_charges_a_slow_server_from_the_due_time():
    """Requests wait for the one connection while the server is slow: their latency counts from when they were
    due, not from when they could leave (which would show ~50 ms for every answer: coordinated omission)."""
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SlowHttp) as server:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        spec = LoadSpec("http", "127.0.0.1", server.server_address[1], ["88.100.1/X"], rate=100, duration_s=1.0,
                        warmup_s=0, sockets=1, timeout_s=5.0, pool_size=16)  # fmt: skip
        try:
            result = run_load(spec)
        finally:
            server.shutdown()
    assert 5 <= result["answers"] <= 25  # the server's pace, not the schedule's 100/s
    assert result["unsent_at_end"] > 50  # due requests still waiting for the connection
    # The n-th answer comes ~50 ms * n after the start but was due 10 ms * n after it.
    assert result["latency_us"]["p50"] > 150_000
    assert result["errors"] == {} and result["lost"] == 0


def test_nobody_listening_counts_losses_and_stops():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound but never read: requests vanish without an ICMP error
        port = silent.getsockname()[1]
        result = run_udp_load(
            "127.0.0.1", port, SPEC, duration_s=0.6, warmup_s=0.0, sockets_per_process=2, window=2,
            timeout_s=0.1, pool_size=16,
        )  # fmt: skip
    assert result["answers"] == 0
    assert result["lost"] >= 4  # each of the 4 outstanding requests timed out at least once, and was re-sent
    assert result["sent"] >= result["lost"]


def test_nobody_listening_over_tcp_is_refused_clearly():
    port = free_port()
    with pytest.raises(LoadGenError, match="cannot connect"):
        run_load(LoadSpec("tcp", "127.0.0.1", port, SPEC, duration_s=0.5, warmup_s=0, pool_size=16))
