"""The UDP load generator against a real `idnode serve` on 127.0.0.1: it gets answers, matches them to its
requests, sorts them by response code and stops by itself. No timing is asserted (bench/ measures speed)."""

from __future__ import annotations

import socket
import struct

import pytest

from bench.datagen import Dataset
from bench.loadgen import (
    DatasetSpec,
    LoadGenError,
    format_result,
    percentiles,
    request_pool,
    run_udp_load,
)
from resolver.handle.message import decode_request, decode_resolution_request
from storage.loader import load_files
from storage.store import Store
from tests.servers import running_node

SPEC = DatasetSpec(2000, seed=1, prefix="88.100", enterprises=8)  #: the conftest's demo_ndjson
DATASET = Dataset(SPEC.count, SPEC.seed, SPEC.prefix, SPEC.enterprises)
MISSING = 0.2


@pytest.fixture(scope="module")
def node(tmp_path_factory, demo_ndjson):
    path = tmp_path_factory.mktemp("loadgen") / "store"
    with Store(path, create=True) as store:
        load_files(store, [demo_ndjson])
    with running_node(path, workers=1) as running:
        yield running


def test_load_against_a_real_node(node):
    result = run_udp_load(
        node.host, node.port, SPEC, duration_s=1.5, warmup_s=0.3, processes=1, sockets_per_process=16,
        window=4, missing_ratio=MISSING, seed=3, timeout_s=2.0, pool_size=4096,
        server_pids=[node.process.pid],
    )  # fmt: skip
    answers = result["answers"]
    assert answers > 100
    assert result["lost"] <= 16 * 4  # at most one window's worth, if the node dropped a burst
    assert set(result["errors"]) <= {"HANDLE_NOT_FOUND"}
    assert result["success"] + result["errors"].get("HANDLE_NOT_FOUND", 0) == answers
    # The pool holds exactly 20% absent handles and is sent in a cycle, so the share is close to it.
    assert result["errors"]["HANDLE_NOT_FOUND"] / answers == pytest.approx(MISSING, abs=0.05)
    assert result["malformed"] == result["late"] == result["receive_errors"] == 0
    assert result["sent"] >= answers
    lat = result["latency_us"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99.9"] <= lat["max"]
    assert result["answers_per_s"] > 0 and result["answers_per_s_timeline"]
    assert set(result["server_cpu"]) == {str(node.process.pid)}
    assert "answers/s" in format_result(result)


def test_several_processes_merge(node):
    result = run_udp_load(
        node.host, node.port, [DATASET.handle_at(5), DATASET.handle_at(1999)], duration_s=0.5,
        warmup_s=0.1, processes=2, sockets_per_process=4, window=2, missing_ratio=0.0, pool_size=64,
    )  # fmt: skip
    assert [p["index"] for p in result["per_process"]] == [0, 1]
    assert all(p["answers"] > 0 for p in result["per_process"])
    assert result["answers"] == sum(p["answers"] for p in result["per_process"]) == result["success"]
    assert result["settings"]["outstanding"] == 2 * 4 * 2


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


def test_request_pool_is_seeded_and_exact():
    pool, names = request_pool(SPEC, 1000, 0.25, seed="x")
    again, names_again = request_pool(SPEC, 1000, 0.25, seed="x")
    assert pool == again and names == names_again
    present = {DATASET.handle_at(i) for i in range(DATASET.count)}
    assert sum(name not in present for name in names) == 250
    message = decode_request(bytes(pool[0]))
    assert decode_resolution_request(message.body).handle == names[0].encode()
    assert struct.unpack_from(">I", pool[0], 8) == (0,)  # the request id the generator patches


def test_bad_arguments_are_refused():
    with pytest.raises(LoadGenError):
        run_udp_load("127.0.0.1", 9, SPEC, duration_s=0)
    with pytest.raises(LoadGenError):
        run_udp_load("127.0.0.1", 9, SPEC, duration_s=1, pool_size=1000)
    with pytest.raises(LoadGenError):
        request_pool(["88.100.1/X"], 10, 1.5, seed=1)


def test_percentiles_nearest_rank():
    values = list(range(1, 1001))
    assert percentiles(values, (50, 90, 99, 99.9, 100)) == {50: 500, 90: 900, 99: 990, 99.9: 999, 100: 1000}
    assert percentiles([7], (50, 99.9)) == {50: 7, 99.9: 7}
