"""systemd integration without systemd: sd_notify over $NOTIFY_SOCKET (path and abstract addresses), the
watchdog interval, socket activation (LISTEN_FDS) parsing, and a real `idnode serve` that reports READY,
RELOADING, STOPPING and WATCHDOG and serves (and reloads) on sockets handed over as systemd would."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from resolver.server import systemd
from tests.servers import free_port
from tests.processes import node_workers
from tests.test_reload import Load, wait_for_workers

ROOT = Path(__file__).resolve().parents[1]


def notify_listener(abstract: bool, tmp_path: Path) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if abstract:
        name = f"idnode-test-{uuid.uuid4().hex}"
        sock.bind(b"\0" + name.encode())
        address = "@" + name
    else:
        address = str(tmp_path / "notify.sock")
        sock.bind(address)
    sock.settimeout(5)
    return sock, address


@pytest.mark.parametrize("abstract", [False, True])
def test_notify_sends_one_datagram_of_fields(tmp_path, abstract):
    sock, address = notify_listener(abstract, tmp_path)
    with sock:
        assert systemd.notify("READY=1", "STATUS=serving", environ={"NOTIFY_SOCKET": address})
        assert sock.recv(4096) == b"READY=1\nSTATUS=serving"


def test_notify_is_a_no_op_outside_systemd(tmp_path):
    assert systemd.notify("READY=1", environ={}) is False
    assert systemd.notify("READY=1", environ={"NOTIFY_SOCKET": "relative"}) is False
    assert systemd.notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "absent.sock")}) is False


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process():
    assert systemd.watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert (
        systemd.watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    )
    assert systemd.watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert systemd.watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
    assert systemd.watchdog_interval_s({}) is None


def test_listen_fds_reads_names_and_kinds_and_unsets_the_variables():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    saved = [os.dup(3), os.dup(4)]  # fds 3 and 4 belong to someone in this process: put them back after
    try:
        os.dup2(udp.fileno(), 3)
        os.dup2(tcp.fileno(), 4)
        env = {"LISTEN_FDS": "2", "LISTEN_PID": str(os.getpid()), "LISTEN_FDNAMES": "handle:dns"}
        found = systemd.listen_fds(env)
        assert [(s.fd, s.name, s.is_udp, s.family) for s in found] == [
            (3, "handle", True, socket.AF_INET),
            (4, "dns", False, socket.AF_INET6),
        ]
        assert env == {}
        assert systemd.listen_fds({"LISTEN_FDS": "2", "LISTEN_PID": "1"}) == []  # meant for another process
    finally:
        os.dup2(saved[0], 3)
        os.dup2(saved[1], 4)
        for fd in saved:
            os.close(fd)
        udp.close()
        tcp.close()


class ActivatedNode:
    """`idnode serve` started as systemd would start idnode.service with idnode.socket: UDP and TCP sockets
    at fds 3 and 4 named `handle`, LISTEN_PID set to the server's own pid, a NOTIFY_SOCKET and a watchdog."""

    def __init__(self, store: Path, tmp_path: Path, workers: int = 2):
        self.port = free_port()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(128)
        self.notify, address = notify_listener(True, tmp_path)
        self.notify.settimeout(0.2)
        self.messages: list[bytes] = []
        self._output: str | None = None
        # Copies far above 4, which bash then moves to 3 and 4 just before it becomes the server.
        self._high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, 100) for s in (self.udp, self.tcp)]
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "LISTEN_FDS": "2",
            "LISTEN_FDNAMES": "handle:handle",
            "NOTIFY_SOCKET": address,
            "WATCHDOG_USEC": "400000",
        }
        # `exec` keeps the shell's pid, so LISTEN_PID=$$ names the server, as systemd's does.
        high_udp, high_tcp = self._high
        command = f'exec 3<&{high_udp} 4<&{high_tcp} {high_udp}<&- {high_tcp}<&-; LISTEN_PID=$$ exec "$@"'
        server = [
            sys.executable,
            "-m",
            "resolver.cli",
            "serve",
            "--data",
            str(store),
            "--workers",
            str(workers),
        ]
        server += ["--handle-port", "1", "--log-format", "json"]  # the port flag must be ignored: activated
        self.process = subprocess.Popen(
            ["bash", "-c", command, "bash", *server],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            pass_fds=tuple(self._high),
        )
        self.host = "127.0.0.1"

    def wait_for(self, field: bytes, timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(field in m.split(b"\n") for m in self.messages):
                return
            try:
                self.messages.append(self.notify.recv(4096))
            except TimeoutError:
                if self.process.poll() is not None:
                    break
        output = self.stop() if self.process.poll() is not None else "(still running)"
        raise AssertionError(f"no {field!r} from the node; got {self.messages}; output:\n{output}")

    def stop(self) -> str:
        if self._output is not None:
            return self._output
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, _ = self.process.communicate(timeout=20)
        self._output = out
        for fd in self._high:
            os.close(fd)
        self._high = []
        self.udp.close()
        self.tcp.close()
        return out

    def close(self) -> None:
        self.notify.close()


def test_activated_node_notifies_and_reloads_on_the_shared_sockets(demo_store_copy, tmp_path):
    node = ActivatedNode(demo_store_copy, tmp_path)
    try:
        node.wait_for(b"READY=1")
        pid = node.process.pid
        first = wait_for_workers(pid, 2)
        node.wait_for(b"WATCHDOG=1")
        node.messages.clear()
        load = Load(node.host, node.port)

        def reload() -> None:
            node.process.send_signal(signal.SIGHUP)
            wait_for_workers(pid, 2, not_in=first)

        asyncio.run(load.run_while(reload))
        node.wait_for(b"RELOADING=1")
        node.wait_for(b"READY=1")
        assert len(node_workers(pid)) == 2
        output = node.stop()
        node.wait_for(b"STOPPING=1", timeout_s=1)
    finally:
        output = node.stop()
        node.close()
    assert node.process.returncode == 0, output
    assert load.udp_lost == 0 and load.udp_wrong == 0 and load.tcp_failed == 0, vars(load)
    assert load.udp_ok > 50 and load.tcp_ok > 50, vars(load)
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    activation = [e for e in lines if e.get("event") == "socket_activation"]
    assert activation and "handle(udp), handle(tcp)" in activation[0]["msg"], output
