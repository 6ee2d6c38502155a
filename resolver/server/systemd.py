"""The systemd side of `idnode serve`, without libsystemd: readiness notifications over $NOTIFY_SOCKET
(sd_notify), the watchdog interval, and sockets handed over by socket activation (sd_listen_fds).

Every function is a no-op outside systemd, so the same code runs under a terminal, in tests and as a unit.
Imports only the standard library.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3  #: sd_listen_fds(3): passed descriptors start at 3


def notify(*fields: str, environ: dict[str, str] | None = None) -> bool:
    """Send `FIELD=value` lines to the service manager, e.g. notify("READY=1", "STATUS=serving").

    Returns False when not run under systemd (no $NOTIFY_SOCKET) or when sending failed; a failure is logged
    once at DEBUG and never raised: notifications are advisory for the program, not for the manager."""
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET")
    if not address or not fields:
        return False
    if address.startswith("@"):
        target: str | bytes = b"\0" + address[1:].encode()  # abstract namespace (sd_notify(3))
    elif address.startswith("/"):
        target = address
    else:
        log.debug("NOTIFY_SOCKET %r is neither a path nor an abstract address; not notifying", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.setblocking(False)  # a manager that does not read must never stall the supervisor's loop
            sock.sendto("\n".join(fields).encode(), target)
        return True
    except OSError as exc:
        log.debug("sd_notify to %s failed: %s", address, exc)
        return False


def ready(status: str = "") -> bool:
    return notify("READY=1", *((f"STATUS={status}",) if status else ()))


def reloading(status: str = "reloading configuration") -> bool:
    """RELOADING=1 with MONOTONIC_USEC, as systemd 253+ requires for Type=notify-reload (harmless before)."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={status}")


def stopping(status: str = "stopping") -> bool:
    return notify("STOPPING=1", f"STATUS={status}")


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def watchdog_ping() -> bool:
    return notify("WATCHDOG=1")


def watchdog_interval_s(environ: dict[str, str] | None = None, pid: int | None = None) -> float | None:
    """How often to send WATCHDOG=1 (half of WatchdogSec=, as sd_watchdog_enabled(3) advises), or None
    when the watchdog is off or meant for another process."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    target = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if target and target != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 2_000_000


@dataclass(frozen=True)
class InheritedSocket:
    """A listening socket passed by systemd: its FileDescriptorName= and what kind of socket it is."""

    fd: int
    name: str
    kind: int  # socket.SOCK_DGRAM or socket.SOCK_STREAM
    family: int

    @property
    def is_udp(self) -> bool:
        return self.kind == socket.SOCK_DGRAM


def listen_fds(
    environ: dict[str, str] | None = None, pid: int | None = None, unset: bool = True
) -> list[InheritedSocket]:
    """The sockets of socket activation (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES), or [] when there are none
    or they are meant for another process. With `unset` the variables are removed, as sd_listen_fds(1) does,
    so that programs started later do not take the descriptors for their own."""
    env = os.environ if environ is None else environ
    count, owner = env.get("LISTEN_FDS", ""), env.get("LISTEN_PID", "")
    if not count.isdigit() or not owner.isdigit() or int(owner) != (os.getpid() if pid is None else pid):
        return []
    names = env.get("LISTEN_FDNAMES", "").split(":") if env.get("LISTEN_FDNAMES") else []
    if unset:
        for key in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            env.pop(key, None)
    sockets = []
    for i in range(int(count)):
        fd = SD_LISTEN_FDS_START + i
        os.set_inheritable(fd, True)  # the workers are forked and use them too
        probe = socket.socket(fileno=fd)
        try:
            kind, family = probe.type, probe.family
        finally:
            probe.detach()  # the descriptor stays open; `probe` only asked what it is
        name = names[i] if i < len(names) and names[i] else "unknown"
        sockets.append(InheritedSocket(fd, name, int(kind), int(family)))
    return sockets
