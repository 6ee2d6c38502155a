"""Listening sockets that every worker binds to the same address with SO_REUSEPORT, so the kernel spreads
requests over the workers (UDP and TCP for Handle and DNS, TCP for HTTP). IPv6 sockets are IPv6-only, so an
IPv4 and an IPv6 bind of the same port do not collide."""

from __future__ import annotations

import socket

UDP_RECEIVE_BUFFER_BYTES = 4 << 20  #: absorbs bursts while the worker is busy; the kernel caps it at rmem_max


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


def ports_in_use(binds: list[str], udp_tcp_ports: list[int], tcp_ports: list[int]) -> list[str]:
    """The listening ports already held by another process, as "host:port/proto". Our workers share their
    ports through SO_REUSEPORT, which the kernel also grants to any other process of the same user, so a
    second node started on the same port would silently take part of the first one's traffic: check first,
    with plain sockets, which the kernel refuses while anyone holds the port."""
    taken = []
    checks = [(p, socket.SOCK_DGRAM) for p in udp_tcp_ports] + [
        (p, socket.SOCK_STREAM) for p in udp_tcp_ports + tcp_ports
    ]
    for host in binds:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for port, kind in checks:
            if not port:
                continue
            with socket.socket(family, kind) as sock:
                if kind == socket.SOCK_STREAM:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not a holder
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                try:
                    sock.bind((host, port))
                except OSError:
                    taken.append(f"{host}:{port}/{'udp' if kind == socket.SOCK_DGRAM else 'tcp'}")
    return taken
