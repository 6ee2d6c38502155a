"""What to check when `idnode resolve` (or `idnode bench`) gets no Handle answer: one line that names the likely
cause (no server, a wrong port, the HTTP port) instead of a bare timeout or errno. Imports no server code.
"""

from __future__ import annotations

import asyncio

from resolver.client import HandleClient, NoAnswer, NotHandle, Refused, ResolveError, format_address
from resolver.config import DEFAULT_HANDLE_PORT

PROBE_TIMEOUT_S = 1.0  #: a local HTTP server answers the TCP probe at once; a remote one within a second


def check_server(port: int) -> str:
    """The question to ask about a server that did not answer on `port`."""
    return f"is `idnode serve` running there, and is {port} its Handle port?"


def http_hint(host: str, port: int) -> str:
    return (
        f"{format_address(host, port)} speaks HTTP, not the Handle protocol; the Handle port is "
        f"{DEFAULT_HANDLE_PORT} unless `idnode serve --handle-port` says otherwise"
    )


async def _tcp_speaks(host: str, port: int, handle: str, timeout_s: float) -> str:
    """What answers a Handle request over TCP on host:port: "http", "handle", or "" (nothing, or unknown)."""
    try:
        async with HandleClient(host, port, tcp=True, timeout_s=timeout_s) as client:
            await client.resolve(handle)
    except NotHandle:
        return "http"
    except (ResolveError, OSError, TimeoutError):
        return ""
    return "handle"


def explain_resolve_failure(exc: BaseException, host: str, port: int, tcp: bool, handle: str) -> str:
    """One line for a failed resolution: the client's reason and what to check. A UDP request that got no
    answer is tried once more over TCP (briefly), which tells an HTTP port, or a Handle server whose UDP is
    filtered, from nothing at all."""
    if isinstance(exc, NotHandle):
        return http_hint(host, port)
    if not tcp and isinstance(exc, NoAnswer | Refused):
        spoken = asyncio.run(_tcp_speaks(host, port, handle, PROBE_TIMEOUT_S))
        if spoken == "http":
            return http_hint(host, port)
        if spoken == "handle":
            return f"{exc}, but it answers over TCP: try --tcp (is UDP to {port} filtered on the way?)"
    if isinstance(exc, NoAnswer | Refused):
        return f"{exc}: {check_server(port)}"
    return str(exc)
