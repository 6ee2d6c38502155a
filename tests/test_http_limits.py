"""Limits of the HTTP port on a real `idnode serve` (one worker): connections per worker and per source
address (more get 503 with a JSON body), idle connections and request heads that never finish closed after
`http_idle_timeout_s`, bodies over their limit refused with 413 before they are read, and a body that does
not arrive in time answered 408 (in-process, with the deadline shortened)."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from resolver.http import common
from storage.enterprises import issue_credential, set_operator_secret
from storage.store import Store
from tests.app_helpers import InProcessApp
from tests.conftest import copy_demo_store
from tests.http_helpers import basic, http_node

OP = ("operator", "operator-secret-for-limits")
ADMIT_WAIT_S = 10.0  #: a closed connection leaves the worker's count within milliseconds


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory, demo_store_dir):
    path = copy_demo_store(demo_store_dir, tmp_path_factory.mktemp("http-limits"))
    with Store(path) as store:
        set_operator_secret(store, OP[1])
        issue_credential(store, "88.100.7")
    return path


def connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))


def read_answer(sock: socket.socket) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 answer with Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
    )
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ")[1]), body


def get(sock: socket.socket, path: str = "/api/stats") -> tuple[int, bytes]:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return read_answer(sock)


def admitted(port: int, source: str = "127.0.0.1") -> socket.socket:
    """A connection from `source` that got a whole 200 (so the worker counts it, kept alive). A connection
    the worker is still closing (the readiness probe's, one the test just closed) may hold a slot for a
    moment: a 503 is asked again until ADMIT_WAIT_S."""
    deadline = time.monotonic() + ADMIT_WAIT_S
    while True:
        sock = connect(port, source)
        status, _ = get(sock)
        if status == 200:
            return sock
        sock.close()
        assert time.monotonic() < deadline, f"{source} still gets {status} after {ADMIT_WAIT_S} s"
        time.sleep(0.02)


def closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> float | None:
    """Seconds until the server closes `sock` (None if it stays open), sending `trickle` a byte at a time."""
    started = time.monotonic()
    sock.settimeout(0.2)
    sent = 0
    while time.monotonic() - started < seconds:
        if sent < len(trickle):
            try:
                sock.sendall(trickle[sent : sent + 1])
            except OSError:
                return time.monotonic() - started
            sent += 1
        try:
            if sock.recv(65536) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic() - started
    return None


def test_connection_caps_per_source_and_per_worker(store_dir):
    extra = (
        "--http-max-connections",
        "3",
        "--http-max-connections-per-source",
        "2",
        "--http-idle-timeout",
        "30",
    )
    with http_node(store_dir, workers=1, extra=extra) as node:
        port = node.http_port
        held = [admitted(port), admitted(port)]
        third = connect(port)
        third.sendall(b"GET /api/stats HTTP/1.1\r\nHost: x\r\n\r\n")
        status, body = read_answer(third)
        assert status == 503 and json.loads(body)["responseCode"] == 3
        third.close()
        other = admitted(port, "127.0.0.2")  # another address still gets in: the per-source cap is 2
        fourth = connect(port, "127.0.0.3")  # but the worker holds 3 now, its total
        fourth.sendall(b"GET /api/stats HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(fourth)[0] == 503
        fourth.close()
        held.pop().close()
        again = admitted(port)  # a slot freed by a close is usable again
        for sock in (*held, other, again):
            sock.close()


def test_idle_and_slow_connections_are_closed(store_dir):
    with http_node(store_dir, workers=1, extra=("--http-idle-timeout", "1")) as node:
        port = node.http_port
        with connect(port) as silent:
            seconds = closed_within(silent, 5)
            assert seconds is not None and 0.5 < seconds < 3.5
        with connect(port) as kept_alive:
            assert get(kept_alive)[0] == 200
            seconds = closed_within(kept_alive, 5)
            assert seconds is not None and seconds < 3.5
        # A request head sent a byte every 0.2 s never finishes within the timeout: closed all the same.
        with connect(port) as slow:
            seconds = closed_within(
                slow, 6, trickle=b"GET /api/stats HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
            )
            assert seconds is not None and seconds < 4


def test_bodies_over_their_limit_get_413_before_they_are_sent(store_dir):
    with http_node(store_dir, workers=1) as node:
        port = node.http_port
        cases = [
            ("PUT", "/api/handles/88.100.7/BIG", common.MAX_RECORD_BODY_BYTES, "application/json"),
            ("POST", "/api/batch", common.MAX_BATCH_BODY_BYTES, "application/x-ndjson"),
            ("POST", "/api/admin/prefixes", common.MAX_ADMIN_BODY_BYTES, "application/json"),
            ("PUT", "/api/admin/templates/88.100.7", common.MAX_ADMIN_BODY_BYTES, "application/json"),
            ("POST", "/", common.MAX_TUNNEL_BODY_BYTES, "application/x-hdl-message"),
        ]
        for method, path, limit, content_type in cases:
            with connect(port) as sock:
                head = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {basic(*OP)}\r\n"
                        f"Content-Type: {content_type}\r\nContent-Length: {limit + 1}\r\n\r\n")  # fmt: skip
                sock.sendall(head.encode())  # and not a byte of the body
                status, body = read_answer(sock)
                answer = json.loads(body)
                assert (status, answer["limit"], answer["responseCode"]) == (413, limit, 4), path
                assert "larger than" in answer["message"]
            # Without Content-Length (chunked) the limit stops the upload as soon as it is passed.
            with connect(port) as sock:
                head = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {basic(*OP)}\r\n"
                        f"Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n")  # fmt: skip
                sock.sendall(head.encode())
                piece = b"x" * 65536
                sent = 0
                try:
                    while sent <= limit:
                        sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                        sent += len(piece)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                assert read_answer(sock)[0] == 413, path


def test_a_body_that_does_not_arrive_in_time_is_408(store_dir, monkeypatch):
    monkeypatch.setattr(common, "BODY_READ_TIMEOUT_S", 0.5)
    app = InProcessApp(store_dir)
    try:

        async def slow_upload() -> tuple[int, dict]:
            reader, writer = await asyncio.open_connection("127.0.0.1", app.client.port)
            writer.write(f"PUT /api/handles/88.100.7/SLOW HTTP/1.1\r\nHost: x\r\nAuthorization: {basic(*OP)}\r\n"
                         "Content-Length: 100\r\n\r\n{\"values\": ".encode())  # fmt: skip
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int(
                next(h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
            )
            body = await reader.readexactly(length)
            writer.close()
            await writer.wait_closed()
            return int(head.split(b" ")[1]), json.loads(body)

        before = app.state()
        status, answer = app.loop.run_until_complete(slow_upload())
        assert status == 408 and answer["responseCode"] == 4 and "did not arrive" in answer["message"]
        assert app.state() == before
    finally:
        app.close()
