"""/metrics follows the Prometheus conventions: a real scrape of a running node (every family present: queries,
latencies, flushes, the store, the security log queue, the build) passes `promtool check metrics` without a lint
warning, and `idnode_build_info` names the build."""

from __future__ import annotations

import asyncio
import platform
import shutil
import subprocess
from importlib import metadata

import pytest
from prometheus_client.parser import text_string_to_metric_families

from resolver import buildinfo, metrics
from resolver.client import HandleClient
from tests.http_helpers import call, http_node
from tests.servers import free_port, wait_until

REQUESTS = 200  #: latencies are sampled one request in 64: a few samples at least
FAMILIES = (  #: one of each kind the node exports, so that the lint sees them all
    "idnode_queries_total",
    "idnode_query_duration_seconds_bucket",
    "idnode_resolution_flushes_total",
    "idnode_identifiers",
    "idnode_security_queue_events",
    "idnode_build_info",
)


def test_build_info_names_version_commit_and_python(store):
    body, _ = metrics.metrics_response(store)
    found = {
        family.name: family
        for family in text_string_to_metric_families(body.decode())
        if family.name.endswith("info")
    }
    (sample,) = found["idnode_build_info"].samples
    assert sample.value == 1
    assert sample.labels == {
        "version": metadata.version("idnode"), "commit": buildinfo.commit(), "python": platform.python_version(),
    }  # fmt: skip


async def _resolve_many(port: int) -> None:
    async with HandleClient("127.0.0.1", port) as client:
        for n in range(REQUESTS):
            await client.resolve(f"88.100.1/BATCH-2024-{n:06d}")


def test_a_real_scrape_passes_promtool(demo_store_copy):
    promtool = shutil.which("promtool")
    if promtool is None:
        print("promtool is not installed (Debian package prometheus; .ci/run installs it)")
        pytest.skip("promtool not installed: apt-get install prometheus (.ci/run installs it)")
    collector = f"127.0.0.1:{free_port()}"  # nothing listens: events wait in the queue, whose figures show
    with http_node(demo_store_copy, workers=1, extra=("--collector", collector)) as node:
        asyncio.run(_resolve_many(node.port))

        def scrape_with_every_family():
            body = call(node.http_port, "GET", "/metrics").body.decode()
            return body if all(f"\n{name}" in body for name in FAMILIES) else ""

        body = wait_until(scrape_with_every_family, "every metric family in /metrics")
    lint = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True)
    assert lint.returncode == 0 and lint.stdout + lint.stderr == "", lint.stdout + lint.stderr
