"""`http_workers`: HTTP served by processes of its own. With `--workers 1 --http-workers 1` the resolving
worker listens on the Handle ports only and the HTTP worker on the HTTP port only (seen in /proc, as an
operator's `ss -lnp` would), each on its own CPUs; a batch written over HTTP is resolved over Handle UDP at
once; an HTTP worker killed with -9 is started again while Handle answers go on."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from resolver.client import HandleClient
from storage.enterprises import issue_credential
from storage.store import Store
from tests.http_helpers import call, http_node
from tests.processes import listening_ports, node_workers
from tests.servers import wait_until


def allowed_cpus(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no Cpus_allowed_list for {pid}")


def resolve_code(node, handle: str) -> int:
    async def go():
        async with HandleClient(node.host, node.port) as client:
            return (await client.resolve(handle)).response_code

    return asyncio.run(go())


@pytest.fixture()
def store_and_credential(demo_store_copy) -> tuple[Path, tuple[str, str]]:
    with Store(demo_store_copy) as store:
        credential = issue_credential(store, "88.100.7")
    return demo_store_copy, credential


def test_http_workers_serve_http_alone_and_resolving_workers_the_rest(store_and_credential):
    path, credential = store_and_credential
    cpus = sorted(os.sched_getaffinity(0))
    pinning = ("--worker-cpus", str(cpus[0]), "--http-cpus", str(cpus[-1]))
    with http_node(path, workers=1, extra=("--http-workers", "1", *pinning)) as node:
        pids = node_workers(node.process.pid)
        assert len(pids) == 2
        by_ports = {frozenset(listening_ports(pid)): pid for pid in pids}
        handle_ports = frozenset({("udp", node.port), ("tcp", node.port)})
        http_ports = frozenset({("tcp", node.http_port)})
        assert set(by_ports) == {handle_ports, http_ports}, by_ports
        resolver_pid, http_pid = by_ports[handle_ports], by_ports[http_ports]
        assert (allowed_cpus(resolver_pid), allowed_cpus(http_pid)) == (str(cpus[0]), str(cpus[-1]))

        # written through the HTTP worker, resolved by the other one at once
        lines = [json.dumps({"handle": f"88.100.7/SPLIT-{n}", "values": [
            {"index": 1, "type": "URL", "data": f"https://example.com/{n}"}]}) for n in range(300)]  # fmt: skip
        reply = call(node.http_port, "POST", "/api/batch", body=("\n".join(lines) + "\n").encode(),
                     auth=credential, headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
        assert (reply.status, reply.json["created"]) == (200, 300), reply.body[:300]
        assert resolve_code(node, "88.100.7/SPLIT-299") == 1

        os.kill(http_pid, signal.SIGKILL)
        assert resolve_code(node, "88.100.7/SPLIT-0") == 1  # Handle is not the HTTP worker's business
        wait_until(lambda: any(listening_ports(p) == http_ports for p in node_workers(node.process.pid) - {http_pid}),
                   "a new HTTP worker listening")  # fmt: skip
        assert call(node.http_port, "GET", "/api/handles/88.100.7/SPLIT-7").json["responseCode"] == 1
        assert resolver_pid in node_workers(node.process.pid)
