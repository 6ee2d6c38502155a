"""One worker process: opens the store (after fork), binds the Handle UDP and TCP listeners with SO_REUSEPORT,
answers until SIGTERM/SIGINT, then flushes its counts and closes cleanly."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import socket

import uvloop

from resolver.config import ServeConfig
from resolver.frontend import HandleFrontend
from resolver.handle.values import Interface, InterfaceProtocol, InterfaceType, ServerInfo, SiteInfo, encode_site
from resolver.server.tcp import HandleTcpProtocol
from resolver.server.udp import HandleUdpProtocol
from resolver.service import ResolutionService
from storage.store import Store

log = logging.getLogger(__name__)

UDP_RECEIVE_BUFFER_BYTES = 4 << 20  #: absorbs bursts while the worker is busy; the kernel caps it at rmem_max
TCP_BACKLOG = 1024  #: pending connections per listener


def node_site(config: ServeConfig) -> bytes:
    """The node's own HS_SITE: TCP listed before UDP, because ID-SDK talks the first interface it sees."""
    interfaces = (
        Interface(InterfaceType.QUERY, InterfaceProtocol.TCP, config.handle_port),
        Interface(InterfaceType.QUERY, InterfaceProtocol.UDP, config.handle_port),
    )
    if config.http_port:
        interfaces += (Interface(InterfaceType.BOTH, InterfaceProtocol.HTTP, config.http_port),)
    server = ServerInfo(1, ipaddress.ip_address(config.published_address), b"", interfaces)
    return encode_site(SiteInfo(serial=1, attributes=(("desc", "idnode secondary node"),), servers=(server,)))


def _udp_socket(host: str, port: int) -> socket.socket:
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


def _tcp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


class Worker:
    def __init__(self, config: ServeConfig):
        self.config = config
        self.store = Store(config.data_dir)
        self.service = ResolutionService(self.store, config.node_prefix, node_site(config))
        self.frontend = HandleFrontend(self.service)
        self._closers: list = []

    def after_batch(self) -> None:
        self.service.refresh()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for host in self.config.binds:
            udp, _ = await loop.create_datagram_endpoint(
                lambda: HandleUdpProtocol(self.frontend, self.after_batch),
                sock=_udp_socket(host, self.config.handle_port),
            )
            self._closers.append(udp)
            tcp = await loop.create_server(
                lambda: HandleTcpProtocol(self.frontend, self.after_batch, self.config.tcp_idle_timeout_s),
                sock=_tcp_socket(host, self.config.handle_port),
                backlog=TCP_BACKLOG,
            )
            self._closers.append(tcp)

    async def housekeeping(self) -> None:
        """Every second: pick up prefix changes; every flush interval: persist resolution counts."""
        loop = asyncio.get_running_loop()
        next_flush = loop.time() + self.config.counter_flush_interval_s
        while True:
            await asyncio.sleep(self.config.prefix_reload_interval_s)
            try:
                self.service.reload_prefixes()
                if loop.time() >= next_flush:
                    self.service.flush_counts()
                    next_flush = loop.time() + self.config.counter_flush_interval_s
            except Exception:
                log.exception("housekeeping failed; trying again in a second")

    def close(self) -> None:
        for closer in self._closers:
            closer.close()
        try:
            self.service.flush_counts()
        finally:
            self.store.close()


async def _serve(config: ServeConfig) -> None:
    worker = Worker(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await worker.start()
    housekeeping = asyncio.create_task(worker.housekeeping())
    try:
        await stop.wait()
    finally:
        housekeeping.cancel()
        worker.close()


def run_worker(config: ServeConfig) -> None:
    """Entry point of a worker process."""
    uvloop.run(_serve(config))
