"""bench/wire_latency.py: the server's share of each UDP answer, read off `lo`. A responder that holds each
request 20 ms, asked by a client that itself dawdles 30 ms before reading each answer: the capture pairs every
request with its answer by port and request id (all of them, or one in four) and reports the responder's 20 ms,
not the client's 50."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from bench.wire_latency import WireLatency, period_stats, usable
from resolver.handle.envelope import ENVELOPE

REQUESTS = 20
HOLD_S = 0.020
CLIENT_DAWDLE_S = 0.030

pytestmark = pytest.mark.skipif(usable() is not None, reason=f"wire capture: {usable()}")


def _respond(server: socket.socket, count: int) -> None:
    for _ in range(count):
        data, addr = server.recvfrom(2048)
        time.sleep(HOLD_S)
        server.sendto(data, addr)


@pytest.mark.parametrize("sample_mask", [0, 3])
def test_the_capture_measures_the_server_not_the_client(tmp_path, sample_mask):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:  # fmt: skip
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        responder = threading.Thread(target=_respond, args=(server, REQUESTS), daemon=True)
        responder.start()
        wire = WireLatency(port, tmp_path / "wire.bin", sample_mask=sample_mask)
        wire.start()
        first = time.time_ns()
        for request_id in range(REQUESTS):
            client.sendto(ENVELOPE.pack(2, 10, 0, 0, 0, request_id, 0, 24) + bytes(24), ("127.0.0.1", port))
            time.sleep(CLIENT_DAWDLE_S)  # the client's own delay: not the server's
            client.recvfrom(2048)
        last = time.time_ns()
        responder.join(5)
        pairs = wire.stop()
    assert len(pairs) == len([n for n in range(REQUESTS) if not n & sample_mask])  # all, or one in four
    assert all(first <= sent < last for sent, _ in pairs)
    stats = period_stats(pairs, first, last)
    assert HOLD_S * 1000 <= stats["p50_ms"] < (HOLD_S + CLIENT_DAWDLE_S) * 1000, stats
    assert period_stats(pairs, last, last + 1) == {"answers": 0}


def test_datagrams_of_other_ports_are_not_captured(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", 0))
        watched = other.getsockname()[1] + 1 if other.getsockname()[1] < 65535 else 1024
        wire = WireLatency(watched, tmp_path / "wire.bin", sample_mask=0)
        wire.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            request = ENVELOPE.pack(2, 10, 0, 0, 0, 7, 0, 24) + bytes(24)
            client.sendto(request, other.getsockname())
            other.recvfrom(2048)
            other.sendto(request, client.getsockname())
            client.recvfrom(2048)
        assert wire.stop() == []
