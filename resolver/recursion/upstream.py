"""Asking an enterprise node: the server its HS_SITE names for the handle, over UDP with TCP fallback, within
one deadline. Clients (one UDP endpoint, one TCP connection per server) are kept per worker and reused, in
bounded number. Used by the recursor (resolution) and the prober (GET_SITE_INFO)."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import NamedTuple

from resolver.client import HandleClient, ResolveError, format_address
from resolver.handle.constants import EnvelopeFlag, OpCode
from resolver.handle.message import Message
from resolver.handle.values import (
    InterfaceProtocol,
    InterfaceType,
    ServerInfo,
    SiteInfo,
    hash_part_of,
    pick_server,
)

log = logging.getLogger(__name__)

UDP_SHARE = 0.4  #: share of the deadline UDP gets before TCP is tried (a lost datagram is resent inside it)
MAX_CLIENTS = 256  #: UDP endpoints and TCP connections to enterprise nodes per worker, LRU closed
_QUERY_TYPES = (InterfaceType.QUERY, InterfaceType.BOTH)
_TC = int(EnvelopeFlag.TC)


class Endpoint(NamedTuple):
    """Where to ask one enterprise server: its address and its UDP and TCP query ports (0: none)."""

    host: str
    udp_port: int
    tcp_port: int

    def describe(self) -> str:
        port = self.udp_port or self.tcp_port
        return format_address(self.host, port)


class UpstreamError(Exception):
    """The enterprise node could not be asked or did not answer in time."""


def endpoint_of(server: ServerInfo) -> Endpoint:
    udp = tcp = 0
    for interface in server.interfaces:
        if interface.type not in _QUERY_TYPES:
            continue
        if interface.protocol == InterfaceProtocol.UDP and not udp:
            udp = interface.port
        elif interface.protocol == InterfaceProtocol.TCP and not tcp:
            tcp = interface.port
    return Endpoint(str(server.address), udp, tcp)


def endpoint_for(site: SiteInfo, handle: str) -> Endpoint:
    """The server of `site` a client would ask for `handle` (§ HS_SITE data: hash option, MD5 pick)."""
    endpoint = endpoint_of(pick_server(site, hash_part_of(handle, site.hash_option)))
    if not endpoint.udp_port and not endpoint.tcp_port:
        raise UpstreamError(f"the site's server {endpoint.host} lists no Handle query interface")
    return endpoint


class Upstream:
    """Clients to enterprise nodes, reused; one per worker."""

    def __init__(self, max_clients: int = MAX_CLIENTS):
        self.max_clients = max_clients
        self._clients: OrderedDict[tuple[str, int, bool], HandleClient] = OrderedDict()

    async def _client(self, host: str, port: int, tcp: bool, timeout_s: float) -> HandleClient:
        key = (host, port, tcp)
        client = self._clients.get(key)
        if client is not None and tcp and (client._read_task is None or client._read_task.done()):
            self._clients.pop(key)  # the connection closed: open a new one
            await client.close()
            client = None
        if client is None:
            client = HandleClient(host, port, tcp=tcp, timeout_s=timeout_s)
            await client.open()
            self._clients[key] = client
            while len(self._clients) > self.max_clients:
                _, old = self._clients.popitem(last=False)
                await old.close()
        self._clients.move_to_end(key)
        client.timeout_s = timeout_s
        return client

    async def ask(
        self,
        endpoint: Endpoint,
        op_code: int,
        body: bytes,
        op_flags: int,
        recursion_count: int,
        timeout_s: float,
    ) -> Message:
        """The answer of `endpoint` to one request: UDP first (if it has a UDP interface), TCP when UDP gets no
        answer or an answer truncated for size; UpstreamError when neither answers within `timeout_s`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        problems = []
        if endpoint.udp_port:
            udp_s = timeout_s * UDP_SHARE if endpoint.tcp_port else timeout_s
            try:
                client = await self._client(endpoint.host, endpoint.udp_port, False, udp_s)
                message = await client.request(op_code, body, op_flags, recursion_count)
                if not message.envelope.flags & _TC:
                    return message
                problems.append("UDP answer truncated")
            except (ResolveError, OSError) as exc:
                problems.append(f"UDP: {exc}")
        if endpoint.tcp_port:
            left_s = deadline - loop.time()
            if left_s > 0:
                try:
                    client = await self._client(endpoint.host, endpoint.tcp_port, True, left_s)
                    return await client.request(op_code, body, op_flags, recursion_count)
                except (ResolveError, OSError) as exc:
                    self._forget(endpoint.host, endpoint.tcp_port, True)
                    problems.append(f"TCP: {exc}")
        raise UpstreamError("; ".join(problems) or f"no answer within {timeout_s:g} s")

    async def ask_site_info(self, endpoint: Endpoint, timeout_s: float) -> Message:
        from resolver.handle.message import encode_site_info_request

        return await self.ask(endpoint, OpCode.GET_SITE_INFO, encode_site_info_request(b"/"), 0, 0, timeout_s)

    def _forget(self, host: str, port: int, tcp: bool) -> None:
        client = self._clients.pop((host, port, tcp), None)
        if client is not None:
            asyncio.get_running_loop().create_task(client.close())

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        for client in clients:
            await client.close()
