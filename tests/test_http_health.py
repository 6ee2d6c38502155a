"""Operations endpoints on a real node's HTTP port: Prometheus metrics merged across workers, and health."""

from __future__ import annotations

import asyncio
import time

from bench.datagen import Dataset
from resolver.client import HandleClient
from tests.http_helpers import call, http_node

DATASET = Dataset(2000, 1, "88.100", 8)
PUBLISH_WAIT_S = 10.0  #: workers publish their counts once a second


def metric(text: str, name: str, **labels) -> float:
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_and_health_on_the_http_port(demo_store_copy):
    with http_node(demo_store_copy, workers=2) as node:
        assert call(node.http_port, "GET", "/healthz").status == 200
        ready = call(node.http_port, "GET", "/readyz")
        assert ready.status == 200 and ready.json["checks"]["listening"] is True

        async def resolve_some():
            async with HandleClient(node.host, node.port) as client:
                for i in range(25):
                    assert (await client.resolve(DATASET.handle_at(i))).ok

        asyncio.run(resolve_some())
        deadline = time.monotonic() + PUBLISH_WAIT_S
        while True:
            reply = call(node.http_port, "GET", "/metrics")
            text = reply.body.decode()
            answered = sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("idnode_queries_total") and 'code="success"' in line
            )
            if answered >= 25 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/plain")
        assert answered >= 25
        assert metric(text, "idnode_identifiers") == 2000
