"""The HTTP application in-process: aiohttp's TestServer on 127.0.0.1 (port 0) over a real LMDB store, driven
synchronously from a test (its own event loop, run for each call). For fuzzing and for tests that read the
node's logs or state between requests; tests/http_helpers.py runs a whole `idnode serve` instead."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from resolver.config import ServeConfig
from resolver.frontend import HandleFrontend
from resolver.http.app import build_app
from resolver.http.context import HttpContext
from resolver.server.worker import node_site
from resolver.service import ResolutionService
from storage.store import Store
from tests.http_helpers import Reply, basic

# What a write can change: identifiers, prefixes, templates, counters and the DNS digest index. Not the
# enterprises database (last-seen times are written on successful logins) nor the audit trail.
WRITABLE_DBS = ("handles", "prefixes_db", "templates_db", "counters_db", "dns_digests_db")


class InProcessApp:
    def __init__(self, store_path: Path, **server_kwargs):
        self.loop = asyncio.new_event_loop()
        self.store = Store(store_path)
        service = ResolutionService(self.store, "88.100", node_site(ServeConfig(data_dir=store_path)))
        self.ctx = HttpContext(self.store, service, HandleFrontend(service))
        self.client = self.loop.run_until_complete(self._start(server_kwargs))

    async def _start(self, server_kwargs: dict) -> TestClient:
        client = TestClient(TestServer(build_app(self.ctx), host="127.0.0.1", **server_kwargs))
        await client.start_server()
        return client

    def call(self, method: str, path: str, body: bytes | None = None, auth=None, headers=None) -> Reply:
        sent = dict(headers or {})
        if auth is not None:
            sent["Authorization"] = basic(*auth)
        return self.loop.run_until_complete(self._call(method, path, body, sent))

    async def _call(self, method: str, path: str, body: bytes | None, headers: dict) -> Reply:
        async with self.client.request(method, path, data=body, headers=headers, allow_redirects=False) as r:
            return Reply(r.status, dict(r.headers), await r.read())

    def state(self) -> str:
        """A digest of every database a write can change: equal before and after means nothing was written."""
        digest = hashlib.sha256()
        with self.store.env.begin() as txn:
            for name in WRITABLE_DBS:
                digest.update(name.encode())
                for key, value in txn.cursor(getattr(self.store, name)):
                    digest.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
        return digest.hexdigest()

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()
        self.store.close()
