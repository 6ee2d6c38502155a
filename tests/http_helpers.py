"""HTTP test helpers: a running node with an HTTP port, and a plain client (http.client: redirects are not
followed, every status is returned rather than raised)."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tests.servers import free_port, running_node

HTTP_START_TIMEOUT_S = 20.0  #: every worker has bound its HTTP socket well within this


@dataclass
class Reply:
    status: int
    headers: dict
    body: bytes

    @property
    def json(self):
        return json.loads(self.body)


def basic(user: str, secret: str) -> str:
    """An Authorization header value; the user percent-encoded as pyhandle sends it."""
    return "Basic " + base64.b64encode(f"{quote(user)}:{secret}".encode()).decode()


def call(
    port: int, method: str, path: str, body=None, auth: tuple[str, str] | None = None, headers=None
) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        sent = dict(headers or {})
        if auth is not None:
            sent["Authorization"] = basic(*auth)
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body, ensure_ascii=False).encode()
            sent.setdefault("Content-Type", "application/json")
        conn.request(method, quote(path, safe="/?&=%:"), body=body, headers=sent)
        response = conn.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        conn.close()


@contextlib.contextmanager
def http_node(
    data_dir: Path,
    workers: int = 2,
    extra: tuple[str, ...] = (),
    stats_status: Callable[[int], int] = lambda port: call(port, "GET", "/api/stats").status,
):
    """`idnode serve` with Handle UDP/TCP and HTTP (and `extra` flags); the node gets `http_port`. It is ready
    when `stats_status(port)`, the status of GET /api/stats (default: over plain HTTP), is 200."""
    port = free_port()
    with running_node(data_dir, workers=workers, extra=("--http-port", str(port), *extra)) as node:
        deadline = time.monotonic() + HTTP_START_TIMEOUT_S
        while True:
            try:
                if stats_status(port) == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the node's HTTP port did not answer")
            time.sleep(0.05)
        node.http_port = port
        yield node
