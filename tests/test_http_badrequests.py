"""Malformed HTTP on a real `idnode serve`: raw bytes aiohttp's parser refuses (request line, headers, chunked
framing, oversized heads) are answered 400 with the JSON error body, nothing of them reaches the log as an
error or a traceback, and /metrics counts each once in idnode_http_bad_requests_total. A chunked body that
turns bad after its handler started reading it is answered at once, not after the body deadline."""

from __future__ import annotations

import json
import re
import socket

import pytest

from storage.enterprises import add_prefix, issue_credential
from storage.store import Store
from tests.http_helpers import basic, http_node

ANSWER_TIMEOUT_S = 10.0  #: far above a real answer on loopback; far below the 120 s body deadline


def _authorized(user: str, secret: str) -> bytes:
    return f"Authorization: {basic(user, secret)}\r\n".encode()


def malformed(user: str, secret: str) -> dict[str, bytes]:
    auth = _authorized(user, secret)
    chunked_put = b"PUT /api/handles/88.100.7/X HTTP/1.1\r\nHost: x\r\n" + auth + b"Transfer-Encoding: chunked\r\n\r\n"
    return {
        "request line": b"GARBAGE\r\n\r\n",
        "request line, extra field": b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        "version": b"GET / HTTP/9.x\r\nHost: x\r\n\r\n",
        "header without colon": b"GET / HTTP/1.1\r\nHost x\r\n\r\n",
        "control byte in a header": b"GET / HTTP/1.1\r\nHost: x\x01y\r\n\r\n",
        "header line too long": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
        "too many headers": b"GET / HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: y\r\n" % n for n in range(300))
        + b"\r\n",
        "chunk size": chunked_put + b"zz\r\nabc\r\n0\r\n\r\n",
        "chunk size after a good chunk": chunked_put + b"5\r\n[{\"ha\r\nXXXX\r\n",
        "Content-Length with Transfer-Encoding": b"POST /api/batch HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "Content-Length not a number": b"POST /api/batch HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    }


def read_answer(sock: socket.socket) -> tuple[int, dict]:
    """(status, JSON body) of the one answer before the server closes the connection."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head, "no answer"
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split(b" ")[1]), json.loads(body[: _length(data)])


def _length(data: bytes) -> int:
    match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", data)
    return int(match.group(1)) if match else 1 << 30


def bad_request_count(port: int) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT_S) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    match = re.search(rb"(?m)^idnode_http_bad_requests_total (\S+)$", data)
    assert match, "idnode_http_bad_requests_total is not on /metrics"
    return float(match.group(1))


@pytest.fixture()
def node(tmp_path):
    path = tmp_path / "store"
    with Store(path, create=True) as store:
        add_prefix(store, "88.100.7", "Org")
        credential = issue_credential(store, "88.100.7")
    with http_node(path, workers=2) as running:
        running.credential = credential
        yield running


def test_malformed_requests_are_400_counted_and_not_logged_as_errors(node):
    cases = malformed(*node.credential)
    before = bad_request_count(node.http_port)
    for name, data in cases.items():
        with socket.create_connection(("127.0.0.1", node.http_port), timeout=ANSWER_TIMEOUT_S) as sock:
            sock.sendall(data)
            status, body = read_answer(sock)
        assert status == 400, name
        assert body["responseCode"] == 4 and body["message"].startswith("malformed HTTP request"), (name, body)
    assert bad_request_count(node.http_port) == before + len(cases)
    assert "Traceback" not in node.output, node.output
    assert "Error handling request" not in node.output, node.output
    assert " ERROR " not in node.output, node.output


def test_a_chunked_body_refused_while_its_handler_reads_it_is_answered_at_once(node):
    """The head is taken and the handler runs (the server says 100 Continue) before the bad chunk arrives.
    aiohttp's C parser leaves that handler waiting for the body's end; the answer must not wait for the body
    deadline (120 s), and is counted once."""
    before = bad_request_count(node.http_port)
    with socket.create_connection(("127.0.0.1", node.http_port), timeout=ANSWER_TIMEOUT_S) as sock:
        sock.sendall(
            b"POST /api/batch HTTP/1.1\r\nHost: x\r\n" + _authorized(*node.credential)
            + b"Expect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n"
        )  # fmt: skip
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = sock.recv(1)
            assert chunk, "closed before 100 Continue"
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100"), interim
        sock.sendall(b'5\r\n[{"ha\r\n')
        sock.sendall(b"XXXX\r\n")
        status, body = read_answer(sock)
    assert status == 400 and body["responseCode"] == 4, body
    assert bad_request_count(node.http_port) == before + 1
    assert "Traceback" not in node.output, node.output
