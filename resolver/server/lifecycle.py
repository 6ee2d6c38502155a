"""How a worker starts, tells its supervisor how it is, and leaves without losing requests.

- A pipe from each worker to the supervisor carries one byte READY once every listener is bound, then
  HEARTBEAT from every housekeeping pass (a worker whose loop hangs stops sending them and is replaced).
- Draining (SIGTERM): TCP listeners close first (the other workers' SO_REUSEPORT listeners, or the shared
  socket of socket activation, take new connections); each UDP socket leaves its SO_REUSEPORT group by
  connect()ing to an address that never sends, so the kernel gives new datagrams to the other sockets of
  the group (Linux skips connected sockets when it picks one) while the worker answers what is already
  queued on it; TCP connections close as soon as they hold no partly received request (their answers are
  flushed first). A client that sent on a connection at the moment it closed sees it close without an
  answer and asks again on a new connection, as it must after an idle close anyway.
- The data directory lock: the supervisor holds a shared flock on `idnode.lock` in the data directory
  while it serves (the workers inherit it; several nodes may serve one store), so `idnode restore`, which
  probes it exclusively, can tell a live store even when no read transaction happens to be open.
"""

from __future__ import annotations

import array
import asyncio
import errno
import fcntl
import ipaddress
import logging
import os
import socket
import termios
from pathlib import Path

log = logging.getLogger(__name__)

READY = b"R"  #: worker -> supervisor: every listener is bound, requests are being answered
HEARTBEAT = b"H"  #: worker -> supervisor: housekeeping ran, the event loop is not stuck
UDP_DRAIN_MIN_S = 0.05  #: datagrams the kernel was delivering while the socket left its group land by then
UDP_DRAIN_MAX_S = 2.0  #: a socket still receiving after this long is closed anyway
DRAIN_POLL_S = 0.01  #: how often a draining worker looks at its queues and connections
LOCK_FILE = "idnode.lock"  #: in the data directory; holds the pid of the last supervisor that started


class WorkerLink:
    """The worker's end of its pipe to the supervisor (non-blocking: a full pipe drops a heartbeat)."""

    def __init__(self, fd: int | None):
        self.fd = fd

    def _send(self, byte: bytes) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, byte)
        except BlockingIOError:
            pass
        except OSError as exc:  # the supervisor is gone; the worker keeps serving until it is told to stop
            if exc.errno != errno.EPIPE:
                log.debug("cannot reach the supervisor: %s", exc)

    def ready(self) -> None:
        self._send(READY)

    def heartbeat(self) -> None:
        self._send(HEARTBEAT)


def leave_reuseport_group(sock: socket.socket) -> None:
    """Stop the kernel from choosing this UDP socket for new datagrams, keeping those already queued:
    connect it to its own address (nothing sends from there). Connected sockets are skipped when Linux
    picks a socket of a SO_REUSEPORT group (since 5.8 and the stable kernels before it)."""
    host, port = sock.getsockname()[:2]
    address = ipaddress.ip_address(host.split("%")[0])
    if address.is_unspecified:
        host = "::1" if address.version == 6 else "127.0.0.1"
    sock.connect((host, port))


def pending_bytes(sock: socket.socket) -> int:
    """Size of the next queued datagram (FIONREAD), 0 when the queue is empty or the socket is closed."""
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
    except (OSError, ValueError):
        return 0
    return buf[0]


async def drain_udp(sockets: list[socket.socket], leave_group: bool) -> None:
    """Answer what is queued on `sockets` after they left their groups (the loop keeps reading them)."""
    loop = asyncio.get_running_loop()
    if leave_group:
        for sock in sockets:
            try:
                leave_reuseport_group(sock)
            except OSError as exc:
                log.warning(
                    "UDP socket %s could not leave its SO_REUSEPORT group: %s", sock.getsockname(), exc
                )
    started = loop.time()
    await asyncio.sleep(UDP_DRAIN_MIN_S)
    while loop.time() - started < UDP_DRAIN_MAX_S and any(pending_bytes(s) for s in sockets):
        await asyncio.sleep(DRAIN_POLL_S)


async def close_connections(connections: set, deadline: float) -> None:
    """Close each TCP connection once it holds no partly received request; all of them by `deadline`."""
    loop = asyncio.get_running_loop()
    while connections:
        now = loop.time()
        for protocol in list(connections):
            if now >= deadline or protocol.quiet_for(now) > 0:
                connections.discard(protocol)
                if protocol.transport is not None:
                    protocol.transport.close()  # flushes the answers already written
        if connections:
            await asyncio.sleep(DRAIN_POLL_S)


class DataDirLock:
    """A shared flock on DATA/idnode.lock, held while serving, with the holder's pid written in it."""

    def __init__(self, data_dir: Path):
        self.path = Path(data_dir) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock (shared with other servers of the same store)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise BlockingIOError(f"{self.path.parent} is locked exclusively (a restore?)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.set_inheritable(fd, False)  # workers are forked: they share the open file, and so the lock
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def lock_holder(data_dir: Path) -> int | None:
    """The pid of the live server holding DATA/idnode.lock, or None when the store is not being served."""
    path = Path(data_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
