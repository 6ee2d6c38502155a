"""Test collectors for the security log upload: a small syslog receiver in Python (TCP, TLS, UDP) and a real
rsyslogd run with a generated configuration; both hand back the messages they received, in order."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

from resolver.security.events import Event, SecurityEvents, decode_event
from resolver.security.relp_sender import RelpSender
from resolver.security.syslog import FrameDecoder, SyslogMessage, decode_message, encode_frame, encode_message

WAIT_S = 15.0  #: the longest a test waits for messages to arrive


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def idnode_bodies(raw_messages: list[bytes]) -> list[dict]:
    """The JSON bodies of the idnode messages among `raw_messages` (probes and others left out)."""
    out = []
    for raw in raw_messages:
        message = decode_message(raw)
        if message.app_name == "idnode":
            out.append(json.loads(message.msg))
    return out


def emit(events: SecurityEvents, start: int, stop: int) -> None:
    """Write events numbered `start`..`stop - 1` (the number ends the handle: 88.100.7/ITEM-<n>)."""
    for i in range(start, stop):
        events.write("88.100.7", f"10.0.0.1:{i}", "create", f"88.100.7/ITEM-{i}")


def queued(events: SecurityEvents) -> list[Event]:
    """The events waiting in the queue `events` keeps open, oldest first (left in the queue)."""
    assert events.queue is not None
    return [decode_event(raw) for _, raw in events.queue.peek(10**6, 1 << 30)]


def written_items(raw_messages: list[bytes]) -> list[int]:
    """The numbers of the `emit`ted write events among `raw_messages`, in the order they arrived."""
    return [int(b["handle"].rsplit("-", 1)[1]) for b in idnode_bodies(raw_messages) if b["event"] == "write"]


class PyCollector:
    """A syslog receiver on 127.0.0.1: octet-counted TCP (optionally TLS) or UDP. `stop()` closes the port and
    every connection as a collector that shuts down does; `start()` listens again on the same port."""

    def __init__(self, transport: str = "tcp", port: int = 0, ssl_context: ssl.SSLContext | None = None):
        self.transport = transport
        self.port = port or free_port(socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM)
        self.ssl_context = ssl_context
        self.messages: list[bytes] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None

    def start(self) -> PyCollector:
        kind = socket.SOCK_DGRAM if self.transport == "udp" else socket.SOCK_STREAM
        listener = socket.socket(socket.AF_INET, kind)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        if kind == socket.SOCK_STREAM:
            listener.listen(8)
            threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        else:
            threading.Thread(target=self._datagrams, args=(listener,), daemon=True).start()
        self._listener = listener
        return self

    def stop(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        if self._listener is not None:
            _shut(self._listener)
            self._listener = None
        for s in sockets:
            _shut(s)

    def received(self) -> list[bytes]:
        with self._lock:
            return list(self.messages)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.ssl_context is not None:
                conn.settimeout(WAIT_S)
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
                conn.settimeout(None)
        except (OSError, ssl.SSLError):
            conn.close()
            return
        with self._lock:
            self._sockets.append(conn)
            self.connections += 1
        decoder = FrameDecoder()
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                conn.close()
                return
            frames = decoder.feed(data)
            with self._lock:
                self.messages.extend(frames)

    def _datagrams(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            with self._lock:
                self.messages.append(data)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


# -- rsyslogd ------------------------------------------------------------------------------------------------


def rsyslogd_path() -> str | None:
    found = shutil.which("rsyslogd")
    if found:
        return found
    for candidate in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def rsyslog_has_gtls() -> bool:
    """Whether rsyslog's GnuTLS network stream driver (Debian package rsyslog-gnutls) is installed."""
    return bool(glob.glob("/usr/lib/*/rsyslog/lmnsd_gtls.so") or glob.glob("/usr/lib/rsyslog/lmnsd_gtls.so"))


def rsyslog_has_relp() -> bool:
    """Whether rsyslog's RELP input (Debian package rsyslog-relp) is installed."""
    return bool(glob.glob("/usr/lib/*/rsyslog/imrelp.so") or glob.glob("/usr/lib/rsyslog/imrelp.so"))


class Rsyslogd:
    """A private rsyslogd: its own configuration, work directory and pid file under `directory`, listening
    on 127.0.0.1:`port` (imtcp, imtcp over TLS, imudp, or imrelp, plain or over TLS) and writing every
    message it receives, raw (the octet count removed), one a line to `output`.

    For RELP its main queue is direct: a message is written to `output` before imrelp acknowledges it, so
    what it acknowledged survives a SIGKILL (with the default in-memory queue rsyslog itself would lose
    acknowledged messages that were still queued)."""

    def __init__(
        self, directory: Path, transport: str = "tcp", port: int = 0, tls: dict[str, str] | None = None
    ):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.transport = transport
        self.port = port or free_port(socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM)
        self.tls = tls or {}
        self.output = self.directory / "messages.log"
        self.pidfile = self.directory / "rsyslogd.pid"
        self.conf = self.directory / "rsyslog.conf"
        self.proc: subprocess.Popen | None = None
        self._probes = 0
        self._write_conf()

    def _write_conf(self) -> None:
        work = self.directory / "work"
        work.mkdir(exist_ok=True)
        lines = []
        if self.transport == "tls":
            lines.append(
                f'global(workDirectory="{work}" maxMessageSize="64k" defaultNetstreamDriver="gtls" '
                f'defaultNetstreamDriverCAFile="{self.tls["ca"]}" '
                f'defaultNetstreamDriverCertFile="{self.tls["cert"]}" '
                f'defaultNetstreamDriverKeyFile="{self.tls["key"]}")'
            )
            lines.append(
                'module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" '
                f'streamDriver.authMode="{self.tls.get("auth_mode", "anon")}")'
            )
        else:
            lines.append(f'global(workDirectory="{work}" maxMessageSize="64k")')
            lines.append(f'module(load="{self.input_module}")')
        options = ""
        if self.transport.startswith("relp"):
            lines.append('main_queue(queue.type="Direct")')
        if self.transport == "relp-tls":
            options = (
                f' tls="on" tls.caCert="{self.tls["ca"]}" tls.myCert="{self.tls["cert"]}" '
                f'tls.myPrivKey="{self.tls["key"]}" tls.authMode="{self.tls.get("relp_auth_mode", "certvalid")}"'
            )
        lines += [
            'template(name="raw" type="string" string="%rawmsg%\\n")',
            f'ruleset(name="collect") {{ action(type="omfile" file="{self.output}" template="raw") }}',
            f'input(type="{self.input_module}" address="127.0.0.1" port="{self.port}" ruleset="collect"{options})',
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def input_module(self) -> str:
        return {"udp": "imudp", "relp": "imrelp", "relp-tls": "imrelp"}.get(self.transport, "imtcp")

    def start(self) -> Rsyslogd:
        binary = rsyslogd_path()
        assert binary is not None
        log = open(self.directory / "rsyslogd.out", "ab")
        self.proc = subprocess.Popen(
            [binary, "-n", "-f", str(self.conf), "-i", str(self.pidfile)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        self._await_ready()
        return self

    def _await_ready(self) -> None:
        """Send probe messages until one is written to the output file: then the input listens and the
        output works. Probes carry APP-NAME `probe`, so `messages()` callers can leave them out."""
        self._probes += 1
        marker = f"probe-{self._probes}-{time.monotonic_ns()}"
        probe = encode_message(SyslogMessage(13, 6, None, "test", "probe", "-", "PROBE", msg=marker.encode()))
        deadline = time.monotonic() + WAIT_S
        while marker.encode() not in self._read():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"rsyslogd exited: {(self.directory / 'rsyslogd.out').read_text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"rsyslogd not ready: {(self.directory / 'rsyslogd.out').read_text()}")
            try:
                self._send_probe(probe)
            except OSError:
                pass
            time.sleep(0.1)

    def _send_probe(self, probe: bytes) -> None:
        if self.transport.startswith("relp"):
            self._send_relp_probe(probe)
            return
        if self.transport == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(probe, ("127.0.0.1", self.port))
            return
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as raw:
            sock: socket.socket = raw
            if self.transport == "tls":
                context = ssl.create_default_context(cafile=self.tls["ca"])
                if self.tls.get("client_cert"):
                    context.load_cert_chain(self.tls["client_cert"], self.tls["client_key"])
                sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
            sock.sendall(encode_frame(probe))
            time.sleep(0.05)  # let rsyslog read it before the close
            if self.transport == "tls":
                sock.close()

    def _send_relp_probe(self, probe: bytes) -> None:
        context = None
        if self.transport == "relp-tls":
            context = ssl.create_default_context(cafile=self.tls["ca"])
            context.load_cert_chain(self.tls["client_cert"], self.tls["client_key"])
        sender = RelpSender(
            "127.0.0.1", self.port, ssl_context=context, connect_timeout_s=2, send_timeout_s=2
        )
        try:
            sender.connect()
            sender.send([("probe", probe)])
            sender.acknowledged(2.0)
        finally:
            sender.close()

    def pause(self) -> None:
        """SIGSTOP: rsyslogd stops reading; its kernel still accepts connections and buffers what arrives."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL, as a crash: what rsyslogd had not written to `output` is gone. `start()` runs it again."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None
        self.pidfile.unlink(missing_ok=True)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def _read(self) -> bytes:
        try:
            return self.output.read_bytes()
        except FileNotFoundError:
            return b""

    def messages(self) -> list[bytes]:
        return [line for line in self._read().split(b"\n") if line]
