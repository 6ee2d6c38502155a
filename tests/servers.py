"""Running a real `idnode serve` on 127.0.0.1 for integration tests: free ports, start, wait until it is ready,
reload, stop.

Ready means what systemd would be told: the node runs under a $NOTIFY_SOCKET of the test's own, and the
supervisor sends READY=1 only once every worker listens on every port. The ports are then probed once each
(Handle UDP and TCP, and the HTTP and DNS ports when given), with requests that no counter of resolutions
sees. A reload is observed the same way: RELOADING=1, then READY=1 with the outcome in STATUS=. The node's
output is read as it comes (a thread), so tests can wait for a log line and the pipe never fills.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from resolver.handle.constants import OpCode
from resolver.handle.message import decode_response, encode_request, encode_site_info_request
from resolver.handle.udp import Reassembler
from resolver.server.sockets import free_udp_tcp_port

START_TIMEOUT_S = 30.0  #: a worker opens the store and binds in well under a second; CI machines are slow
RELOAD_TIMEOUT_S = 60.0  #: every worker is replaced one at a time, each started and drained
SIGNAL_SEEN_S = 10.0  #: the supervisor looks at its signals every 0.2 s; far above that, it ignored one
PROBE_TIMEOUT_S = 2.0  #: one probe's wait for an answer on loopback, after READY: far above its real time
POLL_S = 0.02  #: how often a wait looks at its condition
#: Probes come from a loopback address of their own, so the per-source rate limits, connection caps and
#: proven-source checks the tests exercise from 127.0.0.1 (and .2 to .9) never see them.
PROBE_SOURCE = "127.0.0.99"
REPO = Path(__file__).resolve().parents[1]


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP."""
    return free_udp_tcp_port(host)


def idnode(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "resolver.cli", *args], capture_output=True, text=True, **kwargs
    )


def wait_until(predicate: Callable[[], object], what: str, timeout_s: float = START_TIMEOUT_S):
    """Poll `predicate` until it returns something true (returned); AssertionError naming `what` after
    `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(POLL_S)


def _flag(args: tuple[str, ...], name: str) -> int | None:
    """The port given as `name PORT` among `args`, or None."""
    for i, arg in enumerate(args[:-1]):
        if arg == name:
            return int(args[i + 1])
    return None


# -- probes: an answer from the port, never counted as a resolution -----------------------------------------


def _source(host: str) -> tuple[str, int]:
    return ("::1", 0) if ":" in host else (PROBE_SOURCE, 0)


def probe_handle_udp(host: str, port: int) -> None:
    """OC_GET_SITE_INFO over UDP; returns once a response arrives."""
    request = encode_request(OpCode.GET_SITE_INFO, encode_site_info_request(), request_id=1, expiration=2**31 - 1)
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(_source(host))
        sock.settimeout(PROBE_TIMEOUT_S)
        sock.sendto(request, (host, port))
        reassembler, whole = Reassembler(), None
        while whole is None:  # an HS_SITE with several members and their keys comes in 512-byte chunks
            whole = reassembler.feed("node", sock.recv(65535), time.monotonic())
        decode_response(whole)


def probe_tcp(host: str, port: int) -> None:
    """A TCP handshake (HTTP, HTTPS, Handle TCP, DNS TCP): the port listens."""
    with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S, source_address=_source(host)):
        pass


class RunningNode:
    """`idnode serve` with `extra` flags; ready on return (see the module docstring). `output` is what it wrote
    so far (stdout and stderr), `notices` the sd_notify messages it sent, each as a dict."""

    def __init__(
        self, data_dir: Path, workers: int | None = 2, binds: tuple[str, ...] = ("127.0.0.1",), extra=()
    ):
        self.host = binds[0]
        self.port = free_port(self.host)
        self.http_port = _flag(tuple(extra), "--http-port")
        self.dns_port = _flag(tuple(extra), "--dns-port")
        args = ["serve", "--data", str(data_dir), "--handle-port", str(self.port)]
        if workers is not None:  # None: the configuration file (extra=("--config", FILE)) decides
            args += ["--workers", str(workers)]
        for bind in binds:
            args += ["--bind", bind]
        self._lines: list[str] = []
        self.notices: list[dict[str, str]] = []
        self._notify_dir = tempfile.mkdtemp(prefix="idnode-notify-")  # short: AF_UNIX paths hold 107 bytes
        self._notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._notify.bind(os.path.join(self._notify_dir, "notify"))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": self._notify.getsockname()}
        for inherited in ("WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            env.pop(inherited, None)  # a test run under systemd must not hand its own to the node
        self.process = subprocess.Popen(
            [sys.executable, "-m", "resolver.cli", *args, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, cwd=REPO,
            env=env,
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        try:
            self.wait_notice(lambda n: n.get("READY") == "1", "READY=1", timeout_s=START_TIMEOUT_S)
            self.probe()
        except BaseException:
            self.stop()
            raise

    # -- what the node says -----------------------------------------------------------------------------------

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def _read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.append(line)

    def _receive_notices(self, wait_s: float) -> None:
        if self._notify.fileno() < 0:
            return
        readable, _, _ = select.select([self._notify], [], [], wait_s)
        while readable:
            text = self._notify.recv(65536).decode()
            self.notices.append(dict(line.split("=", 1) for line in text.splitlines() if "=" in line))
            readable, _, _ = select.select([self._notify], [], [], 0)

    def wait_notice(
        self, predicate: Callable[[dict[str, str]], bool], what: str, after: int = 0,
        timeout_s: float = START_TIMEOUT_S,
    ) -> int:  # fmt: skip
        """Wait for a notice from index `after` on that satisfies `predicate`; returns its index. Fails at
        once, with the node's output, when the node exits first."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._receive_notices(0)
            for i in range(after, len(self.notices)):
                if predicate(self.notices[i]):
                    return i
            if self.process.poll() is not None:
                self._receive_notices(0)
                if not any(predicate(n) for n in self.notices[after:]):
                    self._reader.join(5)
                    raise RuntimeError(f"idnode serve exited ({self.process.returncode}) before {what}:\n"
                                       f"{self.output}")  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError(f"idnode serve: no {what} within {timeout_s:.0f} s:\n{self.output}")
            self._receive_notices(POLL_S)

    def wait_output(self, text: str, timeout_s: float = START_TIMEOUT_S) -> None:
        """Wait until the node has written `text`."""
        wait_until(lambda: text in self.output or self.process.poll() is not None, repr(text), timeout_s)
        assert text in self.output, f"idnode serve exited without writing {text!r}:\n{self.output}"

    # -- acting on it -----------------------------------------------------------------------------------------

    def probe(self) -> None:
        """Every port the node serves answers: Handle UDP and TCP, and the HTTP and DNS ports it was given."""
        probe_handle_udp(self.host, self.port)
        probe_tcp(self.host, self.port)
        for port in (self.http_port, self.dns_port):
            if port:
                probe_tcp(self.host, port)

    def reload(self, timeout_s: float = RELOAD_TIMEOUT_S) -> str:
        """SIGHUP, then wait for the reload it starts (RELOADING=1) to end (READY=1); returns that READY's
        STATUS=, which says `last reload failed` when the node kept its old configuration."""
        start = len(self.notices)
        self.process.send_signal(signal.SIGHUP)
        reloading = self.wait_notice(lambda n: n.get("RELOADING") == "1", "RELOADING=1 after SIGHUP", start,
                                     SIGNAL_SEEN_S)  # fmt: skip
        done = self.wait_notice(lambda n: n.get("READY") == "1", "READY=1 after the reload", reloading + 1,
                                timeout_s)  # fmt: skip
        return self.notices[done].get("STATUS", "")

    def stop(self, timeout_s: float = 15.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout_s)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._notify.close()
        shutil.rmtree(self._notify_dir, ignore_errors=True)
        return self.process.returncode


@contextlib.contextmanager
def running_node(data_dir: Path, **kwargs):
    node = RunningNode(data_dir, **kwargs)
    try:
        yield node
    finally:
        node.stop()
