"""One worker process: opens the store read-only (after fork), binds the Handle UDP and TCP listeners with
SO_REUSEPORT, answers until SIGTERM/SIGINT, then sends its last counts and closes cleanly. It never writes the
store: HTTP writes, counter deltas (every flush interval) and last-seen marks go to the node's writer
(resolver/writer/), and its read snapshot is renewed every housekeeping pass even when no request comes, so an
idle worker does not pin old pages. It opens its own SecurityEvents
(the security log's queue, after fork): its listeners report rate-limit refusals and malformed requests, the
HTTP API failed logins and writes, and every counter flush adds to the resolution summaries."""

from __future__ import annotations

import asyncio
import functools
import gc
import ipaddress
import logging
import os
import signal
import socket
import time
from collections.abc import Callable

import uvloop

from resolver import metrics
from resolver.admin.datagrams import AdminDatagrams
from resolver.admin.transport import AdminTcpProtocol, build_admin
from resolver.cluster.identity import this_member
from resolver.config import ServeConfig
from resolver.cpus import parse_cpu_list, pin
from resolver.frontend import HandleFrontend
from resolver.handle.values import (
    Interface,
    InterfaceProtocol,
    InterfaceType,
    ServerInfo,
    SiteInfo,
    encode_site,
)
from resolver.recursion.recursor import RecursionMetrics, Recursor
from resolver.security.events import SecurityEvents
from resolver.server.lifecycle import WorkerLink, close_connections, drain_udp
from resolver.server.limits import (
    ConnectionLimiter,
    ExemptNetworks,
    PartialRequestBytes,
    ProvenSources,
    SourceRateLimiter,
    UdpGuard,
)
from resolver.server.sockets import tcp_socket, udp_socket
from resolver.server.stats import QueryStats
from resolver.server.systemd import InheritedSocket
from resolver.server.tcp import HandleTcpProtocol
from resolver.server.udp import HandleUdpProtocol
from resolver.server.udp_batch import batched_listener
from resolver.serverkey import ServerKey
from resolver.service import ResolutionService
from resolver.writer.client import WriterClient
from resolver.writer.feed import CountFeed, SeenFeed
from resolver.writer.server import socket_path
from storage.eventqueue import QueueError
from storage.members import Member, members
from storage.store import Store

log = logging.getLogger(__name__)

TCP_BACKLOG = 1024  #: pending connections per listener
HANDLE_SOCKET_NAMES = ("handle", "idnode.socket", "unknown")  #: FileDescriptorName= of activated Handle sockets
FLUSH_ERROR_LOG_EVERY_S = 60.0  #: a flush that keeps failing (disk full) is logged this often, not every pass
LAST_FLUSH_TIMEOUT_S = 3.0  #: at stop, the last counts get this long to reach the writer (within stop_grace_s)

# What a worker serves, by its slot (`role_of`): everything; Handle and DNS only, when HTTP has processes of
# its own (`http_workers`), so an API batch or a page never takes a turn of a resolving worker's event loop;
# or HTTP only.
ALL, RESOLVE, HTTP = "all", "resolve", "http"


def role_of(slot: int, config: ServeConfig) -> str:
    """Slots 0 .. workers-1 resolve (and serve HTTP unless `http_workers` is set); the `http_workers` slots
    after them serve HTTP alone."""
    if slot >= config.workers:
        return HTTP
    return RESOLVE if config.http_workers else ALL


def worker_slots(config: ServeConfig) -> int:
    """Every serving process of a configuration: the workers and the HTTP workers."""
    return config.workers + config.http_workers


def node_site(config: ServeConfig, cluster: list[Member] | None = None) -> bytes:
    """The node's own HS_SITE: one server, or in a cluster one site with every member as a server (by node
    id, this one included), so a client that gets no answer from one member asks another. TCP is listed
    before UDP, because ID-SDK talks the first interface it sees."""
    me = this_member(config)
    listed = sorted({member.node: member for member in [*(cluster or []), me]}.values(), key=lambda m: m.node)
    if not config.clustered:
        listed = [me]
    servers = tuple(
        ServerInfo(n, ipaddress.ip_address(member.address), b"", _interfaces(member))
        for n, member in enumerate(listed, start=1)
    )
    attributes = (("desc", "idnode secondary node" if not config.clustered else "idnode cluster"),)
    return encode_site(SiteInfo(serial=1, attributes=attributes, servers=servers))


def _interfaces(member: Member) -> tuple[Interface, ...]:
    interfaces = (
        Interface(InterfaceType.QUERY, InterfaceProtocol.TCP, member.handle_port),
        Interface(InterfaceType.QUERY, InterfaceProtocol.UDP, member.handle_port),
    )
    if member.http_port:
        http = InterfaceProtocol.HTTPS if member.http_tls else InterfaceProtocol.HTTP
        interfaces += (Interface(InterfaceType.BOTH, http, member.http_port),)
    return interfaces


def open_events(config: ServeConfig) -> SecurityEvents:
    """This process's security events (disabled without a collector). A queue that cannot be opened is
    logged and the worker serves on without events: the supervisor opened it at start, so this is rare."""
    try:
        return SecurityEvents.open(config.security_log, config.data_dir)
    except QueueError as exc:
        log.error("security events are not queued by worker %d: %s", os.getpid(), exc,
                  extra={"event": "security_queue_error"})  # fmt: skip
        return SecurityEvents(None)


class Worker:
    def __init__(self, config: ServeConfig, inherited: list[InheritedSocket] | None = None, role: str = ALL):
        self.config = config
        self.role = role
        self.store = Store(config.data_dir, readonly=True)  # the writer writes; a worker never takes the lock
        site: bytes | Callable[[], bytes] = node_site(config)
        if config.clustered:
            site = functools.partial(lambda store: node_site(config, members(store)), self.store)
        self.service = ResolutionService(self.store, config.node_prefix, site)
        self.writer = WriterClient(socket_path(config))
        self.counts = CountFeed(self.writer, self.service.counters, config.node_id if config.clustered else "")
        self.seen = SeenFeed(self.writer)
        self.frontend = HandleFrontend(self.service)
        self._key_wiring(config)
        self.events = open_events(config)
        self._closers: list = []
        self._http = None  # the aiohttp runner when HTTP is served (resolver/http)
        # Sockets passed by systemd socket activation, by FileDescriptorName= (the Handle ones are used here).
        self.inherited = list(inherited or [])
        self.stats = QueryStats(config.access_log_sample)
        self.health = metrics.WorkerHealth(config.counter_flush_interval_s)
        self.link = WorkerLink(None)
        self.connections: set[HandleTcpProtocol] = set()
        self._udp_socks: list[socket.socket] = []
        self._tcp_servers: list = []
        self._flush_failing_since: float | None = None
        self._flush_logged_s = 0.0
        self._flushing: asyncio.Task | None = None  # the counts being sent
        self._build_limits(config)
        self.admin = build_admin(self)  # Handle administration and logins over TCP (resolver/admin)
        self.frontend.admin_datagrams = AdminDatagrams(self.admin)  # ... and administration over UDP

    def _build_limits(self, config: ServeConfig) -> None:
        exempt = ExemptNetworks(config.rate_limit_exempt)
        self.proven = ProvenSources(exempt)
        self.tcp_limiter = ConnectionLimiter(config.tcp_max_connections, config.tcp_max_connections_per_source)
        self.tcp_partial = PartialRequestBytes()
        # DNS TCP has caps of its own, with the same settings: a DNS flood cannot lock Handle clients out.
        self.dns_tcp_limiter = ConnectionLimiter(config.tcp_max_connections, config.tcp_max_connections_per_source)

        def rate_limiter() -> SourceRateLimiter | None:
            if not config.udp_rate_limit_per_s:
                return None
            return SourceRateLimiter(config.udp_rate_limit_per_s, config.udp_rate_burst, exempt)

        busy = self.frontend.busy_answer if config.udp_rate_limit_action == "busy" else None
        self.udp_guard = UdpGuard(
            rate_limiter(), self.proven, config.udp_amplification_factor, busy, self.frontend.too_large_answer
        )
        # DNS answers are bounded by the DNS view itself (TC past 512 bytes or the EDNS size): only the rate.
        self.dns_guard = UdpGuard(rate_limiter(), self.proven, 0.0, None, self.frontend.too_large_answer)

    def _key_wiring(self, config: ServeConfig) -> None:
        """The server key (made at first start) signs CT answers and is published in the node's HS_SITE;
        referred prefixes are resolved at the enterprise's node unless `recursion` is off."""
        self.server_key = ServerKey.for_store(config.data_dir)
        self.frontend.signer = self.server_key
        self.service.publish_key(self.server_key.public_key_hs)
        self.recursion_metrics = None
        if config.recursion != "off":
            self.frontend.recursor = Recursor(self.service, config.recursion, config.recursion_timeout_s)
            if metrics.enabled():
                self.recursion_metrics = RecursionMetrics(self.frontend.recursor)

    def _reload_key(self) -> None:
        """After `idnode key rotate`: sign with and publish the new key."""
        key = self.server_key.reloaded()
        if key is not None:
            self.server_key = self.frontend.signer = key
            self.service.publish_key(key.public_key_hs)
            log.info("server key %s reloaded", key.path, extra={"event": "server_key_reloaded"})

    def after_batch(self) -> None:
        self.service.refresh()

    def _handle_sockets(self) -> tuple[list[socket.socket], list[socket.socket]]:
        """(UDP, TCP) Handle sockets: those systemd passed, else our own SO_REUSEPORT ones on every bind."""
        activated = [s for s in self.inherited if s.name in HANDLE_SOCKET_NAMES]
        if activated:
            udp = [socket.socket(fileno=s.fd) for s in activated if s.is_udp]
            tcp = [socket.socket(fileno=s.fd) for s in activated if not s.is_udp]
            for sock in udp + tcp:
                sock.setblocking(False)
            return udp, tcp
        port = self.config.handle_port
        return [udp_socket(h, port) for h in self.config.binds], [tcp_socket(h, port) for h in self.config.binds]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.role != HTTP:
            await self._start_handle(loop)
            if self.config.dns_port is not None:
                await self._start_dns(loop)
        if self.config.http_port is not None and self.role != RESOLVE:
            await self._start_http()
        self.health.listening = True

    async def _start_handle(self, loop: asyncio.AbstractEventLoop) -> None:
        udp_socks, tcp_socks = self._handle_sockets()
        for sock in udp_socks:
            protocol = HandleUdpProtocol(
                self.frontend, self.after_batch, self.stats, self.udp_guard, self.events
            )
            # recvmmsg/sendmmsg batches where built (Linux), else the loop's transport: the same answers.
            udp = batched_listener(loop, sock, protocol, self.config.udp_batch, self.config.udp_c_answers)
            if udp is None:
                udp, _ = await loop.create_datagram_endpoint(lambda p=protocol: p, sock=sock)
            self._closers.append(udp)
            self._udp_socks.append(sock)
        for sock in tcp_socks:
            tcp = await loop.create_server(
                lambda: AdminTcpProtocol(
                    self.frontend,
                    self.after_batch,
                    self.config.tcp_idle_timeout_s,
                    self.stats,
                    self.connections,
                    self.tcp_limiter,
                    self.proven,
                    self.events,
                    self.tcp_partial,
                    admin=self.admin,
                ),
                sock=sock,
                backlog=TCP_BACKLOG,
            )
            self._closers.append(tcp)
            self._tcp_servers.append(tcp)

    async def _start_http(self) -> None:
        from resolver.http.app import start_http  # aiohttp is imported only by nodes that serve HTTP

        self._http = await start_http(
            self.store, self.service, self.frontend, self.config.binds, self.config.http_port, self.health,
            ssl_context=self.config.http_ssl_context(),
            idle_timeout_s=self.config.http_idle_timeout_s,
            max_connections=self.config.http_max_connections,
            max_connections_per_source=self.config.http_max_connections_per_source,
            events=self.events, writer=self.writer, seen=self.seen.add,
        )  # fmt: skip

    async def _start_dns(self, loop: asyncio.AbstractEventLoop) -> None:
        """DNS over UDP and TCP on every bind address, answering from the same store as the Handle view."""
        from resolver.server.dns import DnsZone  # dnslib is imported only by nodes that serve DNS

        # The view, zone transfers, the SOA serial at the store's position and NOTIFY (resolver/server/dns.py).
        dns = DnsZone(self.config, self.store, self.service.values_tail, self.after_batch,
                      self.service.counters["dns"].count)  # fmt: skip
        self.dns_view = dns.view
        if dns.notifier is not None:
            self._closers.append(dns.start_notifier())
        port = self.config.dns_port
        for host in self.config.binds:
            udp, _ = await loop.create_datagram_endpoint(
                lambda: dns.udp_protocol(self.dns_guard, self.events),
                sock=udp_socket(host, port),
            )
            self._closers.append(udp)
            tcp = await loop.create_server(
                lambda: dns.tcp_protocol(self.config.tcp_idle_timeout_s, self.dns_tcp_limiter, self.events),
                sock=tcp_socket(host, port),
                backlog=TCP_BACKLOG,
            )
            self._closers.append(tcp)
            self._tcp_servers.append(tcp)

    async def drain(self) -> None:
        """Leave without refusing a request: stop taking new TCP connections, take this worker's UDP
        sockets out of their SO_REUSEPORT groups and answer what is queued on them, close TCP connections
        between requests (see resolver.server.lifecycle)."""
        self.health.draining = True
        if self._http is not None:
            await self._http.cleanup()  # stops listening, lets in-flight requests finish (bounded)
            self._http = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.stop_grace_s / 2  # the rest of the grace is for flushing
        for server in self._tcp_servers:
            server.close()
        # Sockets of socket activation are shared by every worker: closing ours loses nothing queued.
        await drain_udp(self._udp_socks, leave_group=not any(s.name in HANDLE_SOCKET_NAMES for s in self.inherited))
        await close_connections(self.connections, deadline)

    async def flush(self) -> None:
        """Send resolution counts to the writer, keeping the health state and a rate-limited log of failures
        (counts not acknowledged stay and go again); hand what was written to the security log's resolution
        summary and let it send what is due."""
        now = time.monotonic()
        flushed: dict[bytes, int] = {}
        try:
            await self.counts.flush(flushed)
        except Exception as exc:
            self.health.flush_error = str(exc) or type(exc).__name__
            metrics.flush_result(False)
            if self._flush_failing_since is None or now - self._flush_logged_s >= FLUSH_ERROR_LOG_EVERY_S:
                log.error(
                    "cannot write resolution counts to the store (kept in memory, retrying): %s",
                    self.health.flush_error,
                    extra={"event": "flush_failed"},
                )
                self._flush_logged_s = now
            self._flush_failing_since = self._flush_failing_since or now
            return
        finally:
            self.events.add_resolutions(flushed)
            self.events.tick()
        if self._flush_failing_since is not None:
            log.warning(
                "resolution counts written again after %.0f s of failures",
                now - self._flush_failing_since,
                extra={"event": "flush_recovered"},
            )
            self._flush_failing_since = None
        self.health.flushed_s, self.health.flush_error = now, ""
        metrics.flush_result(True)

    async def housekeeping(self) -> None:
        """Every second: renew the read snapshot (an idle worker must not pin old pages, and sees writes made
        elsewhere), pick up prefix changes, send last-seen marks; every flush interval: send resolution counts.
        Sends run in tasks of their own, so a writer that is slow to answer never delays the heartbeat."""
        loop = asyncio.get_running_loop()
        next_flush = loop.time() + self.config.counter_flush_interval_s
        while True:
            await asyncio.sleep(self.config.prefix_reload_interval_s)
            self.health.housekeeping_s = time.monotonic()
            self.link.heartbeat()
            try:
                self.service.refresh()
                metrics.publish(self.stats)
                metrics.publish_security(self.events)
                self.service.reload_prefixes()
                self._reload_key()
                if self.recursion_metrics is not None:
                    self.recursion_metrics.publish()
                if loop.time() >= next_flush and (self._flushing is None or self._flushing.done()):
                    self._flushing = asyncio.create_task(self.flush())  # its failures are its own business
                    next_flush = loop.time() + self.config.counter_flush_interval_s
                self.seen.kick()
            except Exception:
                log.exception("housekeeping failed; trying again in a second")

    async def last_flush(self) -> None:
        """At stop: the counts and marks not yet acknowledged go to the writer, bounded in time (after a send
        still in flight: the same delta is sent again, and counted once)."""
        try:
            async with asyncio.timeout(LAST_FLUSH_TIMEOUT_S):
                if self._flushing is not None:
                    await self._flushing  # one send at a time
                await self.flush()
                await self.seen.flush()
        except Exception as exc:
            log.error("%d resolutions counted by worker %d could not be written at stop: %s", self.counts.unsent,
                      os.getpid(), exc, extra={"event": "flush_failed"})  # fmt: skip

    def close(self) -> None:
        for closer in self._closers:
            closer.close()
        try:
            self.events.close()  # sends pending window counts and the last, partial resolution summary
        finally:
            self.store.close()
            try:
                metrics.publish(self.stats)
            except Exception:
                log.exception("could not publish the last metrics")


async def _serve(
    config: ServeConfig, link: WorkerLink, inherited: list[InheritedSocket] | None, role: str
) -> None:
    worker = Worker(config, inherited, role)
    worker.link = link
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await worker.start()
    # What start-up made (modules, the service, caches) lives as long as the worker: out of the collector's
    # sight, a full collection walks only what requests leave behind (a pause of ~1 ms, not ~15 ms).
    gc.freeze()
    link.ready()
    housekeeping = asyncio.create_task(worker.housekeeping())
    try:
        await stop.wait()
        await worker.drain()
    finally:
        housekeeping.cancel()
        await worker.last_flush()
        await worker.writer.close()
        if worker.frontend.recursor is not None:
            await worker.frontend.recursor.close()
        worker.close()


def run_worker(
    config: ServeConfig, link_fd: int | None = None, inherited: list[InheritedSocket] | None = None,
    role: str = ALL,
) -> None:
    """Entry point of a worker process: `link_fd` is its pipe to the supervisor, `inherited` the sockets
    of socket activation, `role` what it serves (`role_of`)."""
    # before any thread: its write threads inherit it
    if role == HTTP:
        pin(parse_cpu_list(config.http_cpus, "http_cpus"))
    else:
        pin(parse_cpu_list(config.worker_cpus, "worker_cpus"))
    uvloop.run(_serve(config, WorkerLink(link_fd), inherited, role))
