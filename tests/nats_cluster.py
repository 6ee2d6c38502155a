"""A real three-server NATS JetStream cluster on 127.0.0.1 for the cluster tests: start, wait, kill, restart.

Each server gets its own client, route and monitoring port and its own JetStream directory. A server is ready
when its monitoring endpoint `/healthz` answers 200, which NATS gives only once JetStream is enabled and, in a
cluster, once the server has caught up with the meta leader; no sleeps. Tests skip (with the reason printed)
when Debian's `nats-server` is not installed.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers import free_port

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
READY_TIMEOUT_S = 30.0  #: a JetStream cluster elects its meta leader in a few seconds; CI machines are slow
CLUSTER_NAME = "idnode-test"


def require_nats_server() -> str:
    """The nats-server binary, or skip the test saying how to get it."""
    if not Path(NATS_SERVER).exists():
        pytest.skip("nats-server not installed: apt-get install nats-server (.ci/run does this as root)")
    return NATS_SERVER


@dataclass
class NatsServer:
    name: str
    workdir: Path
    client_port: int
    route_port: int
    monitor_port: int
    routes: list[int]
    process: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.workdir / f"{self.name}.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    def config_text(self) -> str:
        routes = ", ".join(f"nats-route://127.0.0.1:{port}" for port in self.routes)
        return (
            f"server_name: {self.name}\n"
            f"listen: 127.0.0.1:{self.client_port}\n"
            f"http: 127.0.0.1:{self.monitor_port}\n"
            "max_payload: 8MB\n"  # as README, Cluster, asks: an HTTP batch of 2,000 records is one message
            f"jetstream {{ store_dir: {self.workdir / self.name} }}\n"
            f"cluster {{ name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{self.route_port}\n  routes: [{routes}] }}\n"
        )

    def start(self) -> None:
        config = self.workdir / f"{self.name}.conf"
        config.write_text(self.config_text())
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [NATS_SERVER, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def healthy(self, js_enabled_only: bool = False) -> bool:
        query = "?js-enabled-only=true" if js_enabled_only else ""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.monitor_port}/healthz{query}", timeout=1
            ) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        """kill -9: the server gets no chance to flush or say goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


class NatsCluster:
    """Three JetStream servers routed to each other: the replicated log of the idnode cluster tests."""

    def __init__(self, workdir: Path, size: int = 3):
        require_nats_server()
        workdir.mkdir(parents=True, exist_ok=True)
        ports = [(free_port(), free_port(), free_port()) for _ in range(size)]
        route_ports = [route for _, route, _ in ports]
        self.servers = [
            NatsServer(f"n{i + 1}", workdir, client, route, monitor, route_ports)
            for i, (client, route, monitor) in enumerate(ports)
        ]

    @property
    def urls(self) -> list[str]:
        return [server.url for server in self.servers]

    def start(self, restart: bool = False) -> None:
        for server in self.servers:
            server.start()
        self.wait_healthy(self.servers, restart)

    def wait_healthy(self, servers: list[NatsServer], restart: bool = False) -> None:
        """Every server healthy: at first start, with JetStream ready and current; after a restart, with
        JetStream enabled (the stream's replicas then catch up while the members reconnect, which the tests
        wait for by what the members answer: full health can take long while a consumer of a member that is
        gone for good is not current)."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        for server in servers:
            while not server.healthy(js_enabled_only=restart):
                exited = server.process is not None and server.process.poll() is not None
                if exited or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"NATS server {server.name} not ready:\n{server.log_path.read_text()[-3000:]}"
                    )
                time.sleep(0.1)

    def restart(self, server: NatsServer) -> None:
        server.start()
        self.wait_healthy([server], restart=True)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


@contextlib.contextmanager
def nats_cluster(workdir: Path, size: int = 3):
    cluster = NatsCluster(workdir, size)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
