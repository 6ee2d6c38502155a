"""Running a real `idnode serve` on 127.0.0.1 for integration tests: free ports, start, wait, stop."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from resolver.server.sockets import free_udp_tcp_port

START_TIMEOUT_S = 20.0  #: a worker opens the store and binds in well under a second; CI machines are slow


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP."""
    return free_udp_tcp_port(host)


def idnode(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "resolver.cli", *args], capture_output=True, text=True, **kwargs
    )


def _answers_tcp(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class RunningNode:
    def __init__(
        self, data_dir: Path, workers: int | None = 2, binds: tuple[str, ...] = ("127.0.0.1",), extra=()
    ):
        self.host = binds[0]
        self.port = free_port(self.host)
        args = ["serve", "--data", str(data_dir), "--handle-port", str(self.port)]
        if workers is not None:  # None: the configuration file (extra=("--config", FILE)) decides
            args += ["--workers", str(workers)]
        for bind in binds:
            args += ["--bind", bind]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "resolver.cli", *args, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers_tcp(self.host, self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"idnode serve did not start:\n{self.output}")
            time.sleep(0.05)
        time.sleep(0.2 * (workers or 1))  # let every worker bind, so SO_REUSEPORT spreads over all of them
        self.output = ""

    def stop(self, timeout_s: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            out, _ = self.process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
        self.output = out or ""
        return self.process.returncode


@contextlib.contextmanager
def running_node(data_dir: Path, **kwargs):
    node = RunningNode(data_dir, **kwargs)
    try:
        yield node
    finally:
        node.stop()
