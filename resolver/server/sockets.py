"""Listening sockets that every worker binds to the same address with SO_REUSEPORT, so the kernel spreads
requests over the workers (UDP and TCP for Handle and DNS, TCP for HTTP). IPv6 sockets are IPv6-only, so an
IPv4 and an IPv6 bind of the same port do not collide."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

UDP_RECEIVE_BUFFER_BYTES = 4 << 20  #: absorbs bursts while the worker is busy; the kernel caps it at rmem_max
#: Linux's default net.ipv4.ip_unprivileged_port_start: lower ports need CAP_NET_BIND_SERVICE
FIRST_UNPRIVILEGED_PORT = 1024


def udp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER_BYTES)
    except OSError:
        pass  # a smaller buffer only costs burst tolerance
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def tcp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def free_udp_tcp_port(host: str, attempts: int = 50) -> int:
    """A port free for both UDP and TCP on `host` (for port 0: every worker must bind the same one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(attempts):
        with (
            socket.socket(family, socket.SOCK_STREAM) as tcp,
            socket.socket(family, socket.SOCK_DGRAM) as udp,
        ):
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError("no port free for both UDP and TCP")


@dataclass(frozen=True)
class BindProblem:
    """A listening address this process cannot have: `errno` of the bind (EADDRINUSE, EACCES, ...)."""

    host: str
    port: int
    proto: str  # "udp" | "tcp"
    errno: int
    reason: str  # strerror of the bind

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}/{self.proto}"


def bind_problems(binds: list[str], udp_tcp_ports: list[int], tcp_ports: list[int]) -> list[BindProblem]:
    """Why each listening port the node needs cannot be bound, tried with plain sockets before any worker
    starts. Our workers share their ports through SO_REUSEPORT, which the kernel also grants to any other
    process of the same user, so a second node started on the same port would silently take part of the
    first one's traffic: a plain socket, which the kernel refuses while anyone holds the port, finds it. Port 0
    (any free port) is tried too: it still proves the address is on this host and may be bound."""
    problems = []
    checks = [(p, socket.SOCK_DGRAM) for p in udp_tcp_ports] + [
        (p, socket.SOCK_STREAM) for p in udp_tcp_ports + tcp_ports
    ]
    for host in binds:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for port, kind in checks:
            with socket.socket(family, kind) as sock:
                if kind == socket.SOCK_STREAM:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not a holder
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind((host, port))
                except OSError as exc:
                    proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
                    problems.append(BindProblem(host, port, proto, exc.errno or 0, exc.strerror or str(exc)))
    return problems


def describe_bind_problems(problems: list[BindProblem]) -> str:
    """One line naming the cause of each kind of failure and what to do about it."""
    in_use = [p.where for p in problems if p.errno == errno.EADDRINUSE]
    denied = [p for p in problems if p.errno == errno.EACCES]
    absent = list(dict.fromkeys(p.host for p in problems if p.errno == errno.EADDRNOTAVAIL))
    known = (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL)
    parts = []
    if in_use:
        parts.append(
            f"{', '.join(in_use)} already in use by another process; a second node on the same port would take "
            "part of its traffic (SO_REUSEPORT), so this one does not start"
        )
    if denied:
        low = [p for p in denied if p.port < FIRST_UNPRIVILEGED_PORT]
        text = f"{', '.join(p.where for p in denied)}: permission denied"
        if low:
            text += (
                f" (ports below {FIRST_UNPRIVILEGED_PORT} need root or CAP_NET_BIND_SERVICE: use a port >= "
                f"{FIRST_UNPRIVILEGED_PORT}, or grant the capability, as idnode.service does with "
                "AmbientCapabilities=CAP_NET_BIND_SERVICE)"
            )
        parts.append(text)
    if absent:
        parts.append(
            f"{', '.join(absent)}: not an address of this host (EADDRNOTAVAIL): bind an address the host has "
            "(`ip -brief address`), or 0.0.0.0 / :: for all of them"
        )
    parts += [f"{p.where}: cannot bind: {p.reason}" for p in problems if p.errno not in known]
    return "; ".join(parts)
