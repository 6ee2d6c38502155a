"""HTTP test helpers: a running node with an HTTP port, and a plain client (http.client: redirects are not
followed, every status is returned rather than raised)."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tests.servers import free_port, running_node


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
def http_node(data_dir: Path, workers: int = 2, extra: tuple[str, ...] = ()):
    """`idnode serve` with Handle UDP/TCP and HTTP (and `extra` flags) on a free port, `node.http_port`; ready
    as tests.servers.RunningNode says (every worker listens on every port)."""
    with running_node(data_dir, workers=workers, extra=("--http-port", str(free_port()), *extra)) as node:
        yield node
