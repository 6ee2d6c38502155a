"""The supervisor under load: SIGHUP replaces every worker while clients resolve continuously over UDP and TCP
and none of their requests fails; the configuration file is read again on reload (and a broken one is
refused while the node keeps serving); a worker that dies is restarted; SIGTERM stops cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from bench.datagen import Dataset
from resolver.client import HandleClient, ResolveError, read_resolution
from resolver.handle.constants import OpCode
from resolver.handle.message import (
    ResolutionRequest,
    decode_response,
    encode_request,
    encode_resolution_request,
)
from tests.processes import node_workers
from tests.servers import running_node

DATASET = Dataset(2000, 1, "88.100", 8)
UDP_TIMEOUT_S = 2.0  #: far above an answer's time on loopback: a timeout here is a lost datagram
RELOAD_WAIT_S = 30.0
LOAD_AROUND = 50  #: requests answered over each of UDP and TCP before a reload starts and after it ends


@pytest.fixture()
def store_dir(demo_store_copy) -> Path:
    return demo_store_copy


def wait_for_workers(
    pid: int, count: int, not_in: set[int] = frozenset(), timeout_s: float = RELOAD_WAIT_S
) -> set[int]:
    """Wait until `pid` has exactly `count` children, none of them in `not_in`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = node_workers(pid)
        if len(pids) == count and not pids & not_in:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"workers of {pid}: {node_workers(pid)}, wanted {count} not in {not_in}")


class Load:
    """UDP requests from several source ports, each waited for with no retry (a timeout is a lost
    request), and a TCP connection that reconnects once when the node closes it between requests."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.udp_ok = self.udp_lost = self.udp_wrong = 0
        self.tcp_ok = self.tcp_failed = self.tcp_reconnects = 0
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task] = []

    async def udp_loop(self, start: int) -> None:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            await loop.sock_connect(sock, (self.host, self.port))
            i, request_id = start, start * 1_000_000
            while not self.stop.is_set():
                i, request_id = i + 13, request_id + 1
                handle = DATASET.handle_at(i % DATASET.count)
                body = encode_resolution_request(ResolutionRequest(handle.encode()))
                await loop.sock_sendall(
                    sock,
                    encode_request(OpCode.RESOLUTION, body, request_id=request_id, expiration=2_000_000_000),
                )
                try:
                    while True:
                        data = await asyncio.wait_for(loop.sock_recv(sock, 65535), UDP_TIMEOUT_S)
                        message = decode_response(data)
                        if message.envelope.request_id == request_id:
                            break
                except TimeoutError:
                    self.udp_lost += 1
                    continue
                if read_resolution(handle, message).ok:
                    self.udp_ok += 1
                else:
                    self.udp_wrong += 1

    async def tcp_loop(self) -> None:
        client = HandleClient(self.host, self.port, tcp=True, timeout_s=5)
        await client.open()
        i = 0
        while not self.stop.is_set():
            i += 1
            handle = DATASET.handle_at(i % DATASET.count)
            for _attempt in range(2):
                try:
                    result = await client.resolve(handle)
                    break
                except (ResolveError, OSError):
                    # The node closed the connection between two requests (a worker draining): ask again
                    # on a new connection, as clients must after an idle close anyway.
                    await client.close()
                    self.tcp_reconnects += 1
                    client = HandleClient(self.host, self.port, tcp=True, timeout_s=5)
                    await client.open()
            else:
                self.tcp_failed += 1
                continue
            if result.ok:
                self.tcp_ok += 1
            else:
                self.tcp_failed += 1
        await client.close()

    async def answered(self, more: int) -> None:
        """Wait until `more` further requests were answered over UDP and over TCP (or a loop failed)."""
        udp, tcp = self.udp_ok + more, self.tcp_ok + more
        deadline = asyncio.get_running_loop().time() + RELOAD_WAIT_S
        while self.udp_ok < udp or self.tcp_ok < tcp:
            if any(t.done() for t in self.tasks) or asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the load stalled: {vars(self)}")
            await asyncio.sleep(0.01)

    async def run_while(self, action) -> None:
        """Load before, during and after `action` (run in a thread): requests are in flight when it starts,
        and the node has answered more of them after it."""
        self.tasks = [asyncio.create_task(self.udp_loop(k)) for k in range(6)]
        self.tasks.append(asyncio.create_task(self.tcp_loop()))
        try:
            await self.answered(LOAD_AROUND)
            await asyncio.to_thread(action)
            await self.answered(LOAD_AROUND)
        finally:
            self.stop.set()
            await asyncio.gather(*self.tasks)


def events(output: str) -> list[dict]:
    out = []
    for line in output.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def test_reload_replaces_every_worker_without_a_failed_request(store_dir, tmp_path):
    config = tmp_path / "idnode.toml"
    config.write_text('log_format = "json"\n')
    with running_node(store_dir, workers=2, extra=("--config", str(config))) as node:
        pid = node.process.pid
        generations = [wait_for_workers(pid, 2)]
        statuses = []
        load = Load(node.host, node.port)

        def reload_twice() -> None:
            for _ in range(2):
                statuses.append(node.reload())  # RELOADING=1, then READY=1 once every worker is replaced
                generations.append(node_workers(pid))

        asyncio.run(load.run_while(reload_twice))
    assert statuses == ["serving with 2 workers"] * 2
    for before, after in zip(generations, generations[1:], strict=False):
        assert len(after) == 2 and not before & after, generations  # new processes in every slot
    assert load.udp_lost == 0 and load.udp_wrong == 0, vars(load)
    assert load.tcp_failed == 0, vars(load)
    assert load.udp_ok > 100 and load.tcp_ok > 100, vars(load)
    # The TCP connection is closed (between requests) at most once per worker drained.
    assert load.tcp_reconnects <= 4, vars(load)
    done = [e for e in events(node.output) if e.get("event") == "reload_done"]
    assert len(done) == 2, node.output


def test_reload_reads_the_file_again_and_refuses_a_broken_one(store_dir, tmp_path):
    config = tmp_path / "idnode.toml"
    config.write_text('workers = 1\nlog_format = "json"\n')
    with running_node(store_dir, workers=None, extra=("--config", str(config))) as node:
        pid = node.process.pid
        first = wait_for_workers(pid, 1)
        config.write_text('workers = 2\nlog_format = "json"\n')
        assert node.reload() == "serving with 2 workers"  # the changed setting took effect
        second = node_workers(pid)
        assert len(second) == 2 and not first & second
        config.write_text('workers = "many"\n')
        status = node.reload()  # the reload ran (RELOADING=1) and ended, refused
        assert status.startswith("serving with 2 workers; last reload failed:") and "workers" in status
        assert node_workers(pid) == second  # the broken file changed nothing
        assert asyncio.run(resolve_once(node)).ok
    found = events(node.output)
    assert [e["event"] for e in found if e.get("event", "").startswith("reload_")] == [
        "reload_start", "reload_done", "reload_start", "reload_failed"
    ]  # fmt: skip
    failed = next(e for e in found if e.get("event") == "reload_failed")
    assert "workers" in failed["msg"] and str(config) in failed["msg"]


def test_a_worker_that_dies_is_restarted(store_dir):
    with running_node(store_dir, workers=2, extra=("--log-format", "json")) as node:
        pid = node.process.pid
        first = wait_for_workers(pid, 2)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        wait_for_workers(pid, 2, not_in={victim})
        assert asyncio.run(resolve_once(node)).ok
        assert node.stop() == 0
    exited = [e for e in events(node.output) if e.get("event") == "worker_exited"]
    assert len(exited) == 1 and exited[0]["worker"] == victim and "SIGKILL" in exited[0]["msg"]


async def resolve_once(node):
    async with HandleClient(node.host, node.port, timeout_s=3) as client:
        return await client.resolve(DATASET.handle_at(1))


def test_a_taken_port_stops_the_start_naming_the_port(store_dir):
    from tests.servers import free_port, idnode

    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", port))  # without SO_REUSEPORT: nobody can join it
        result = idnode(
            "serve", "--data", str(store_dir), "--handle-port", str(port), "--workers", "2", timeout=60
        )
    assert result.returncode == 2  # refused before any worker starts (resolver.server.sockets.bind_problems)
    assert f"127.0.0.1:{port}/udp already in use" in result.stderr
