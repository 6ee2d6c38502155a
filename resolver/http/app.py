"""The HTTP face of one worker: the aiohttp application (routes, error translation) and its start on the
worker's own SO_REUSEPORT sockets, beside the Handle UDP/TCP listeners, in the worker's event loop.

Every error leaves as JSON `{"responseCode", "message", ...}` with a 4xx/5xx status (the browser's pages
excepted); nothing escapes a handler. Access logging is off: nothing is logged per request at INFO. Refusals
for credentials or rights (401, 403) and login throttling (429) are reported to the security log here.
Requests the parser refuses are 400 without a traceback (badrequests.py); a write refused for want of disk
space is 507, logged once per episode (storefull.py); a write the node's writer cannot take in time (down,
restarting, stuck) is 503 "writer unavailable, retry" with Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

import orjson
from aiohttp import web

from resolver.config import HTTP_IDLE_TIMEOUT_S, HTTP_MAX_CONNECTIONS, HTTP_MAX_CONNECTIONS_PER_SOURCE
from resolver.console import routes as console
from resolver.handle.constants import ResponseCode
from resolver.http import admin, batch, health, resolve, stats, writes
from resolver.http.auth import split_basic
from resolver.http.badrequests import BadRequestHandler, answer_bad_body, is_bad_body
from resolver.http.common import MAX_BATCH_BODY_BYTES, HttpError, json_response
from resolver.http.context import CONTEXT, HttpContext, client_source
from resolver.metrics import WorkerHealth
from resolver.security.events import NO_EVENTS, SecurityEvents
from resolver.server.limits import ConnectionLimiter
from resolver.server.sockets import tcp_socket
from resolver.writer.client import WriterUnavailable
from storage.store import StoreFullError

log = logging.getLogger(__name__)

HTTP_BACKLOG = 1024  #: pending connections per listener
SHUTDOWN_TIMEOUT_S = 5.0  #: in-flight requests get this long to finish when the worker stops
TLS_HANDSHAKE_TIMEOUT_S = 10.0  #: a client that has not finished its TLS handshake by then is dropped
OVERLOADED_LINGER_S = 1.0  #: a refused connection stays open this long at most for its 503 to be read
_OVERLOADED_BODY = orjson.dumps(
    {"responseCode": int(ResponseCode.SERVER_TOO_BUSY), "message": "too many open connections; try again"}
)
_OVERLOADED_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_OVERLOADED_BODY), _OVERLOADED_BODY)
)


@web.middleware
async def errors_as_json(request: web.Request, handler) -> web.StreamResponse:
    try:
        # A new read transaction for every request: it sees every committed write, and adopts a map that
        # another process grew before any other read of this request could fail on it.
        request.app[CONTEXT].service.refresh()
        return await handler(request)
    except HttpError as exc:
        if exc.status in (401, 403, 429):
            _report_refusal(request, exc)
        return exc.response()
    except StoreFullError as exc:
        return request.app[CONTEXT].store_full.refused(exc).response()
    except WriterUnavailable as exc:
        log.debug("a write was refused: %s", exc)  # the writer's outage is logged by the supervisor, once
        return HttpError(503, ResponseCode.SERVER_TOO_BUSY, str(exc), headers={"Retry-After": "1"}).response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects
        code = ResponseCode.PROTOCOL_ERROR if exc.status < 500 else ResponseCode.ERROR
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return json_response({"responseCode": int(code), "message": exc.reason}, exc.status, headers or None)
    except Exception as exc:
        if is_bad_body(exc):  # the body's framing or encoding was refused while the handler read it
            return answer_bad_body(exc)
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return json_response({"responseCode": int(ResponseCode.ERROR), "message": "internal error"}, 500)


def _report_refusal(request: web.Request, exc: HttpError) -> None:
    """A request refused for its credentials or rights (auth-failure: the user it claimed, its address and
    port, the reason), or throttled after failed logins (rate-limited, per address)."""
    events = request.app[CONTEXT].events
    if not events.enabled:
        return
    if exc.status == 429:
        events.rate_limited(request.remote or "?", "http")
        return
    user = ""
    header = request.headers.get("Authorization")
    if header is not None:
        try:
            user = split_basic(header)[0]
        except HttpError:
            pass  # not Basic, not base64: no user to name
    events.auth_failure(user, client_source(request), exc.message, transport="http")


def build_app(ctx: HttpContext) -> web.Application:
    # aiohttp's own body limit only backs up the per-route limits (read_body), which are smaller.
    # The tunnel is routed by content type, not path (resolve.tunnel_on_any_path), inside the error translation.
    app = web.Application(
        middlewares=[errors_as_json, resolve.tunnel_on_any_path], client_max_size=MAX_BATCH_BODY_BYTES + 1
    )
    app[CONTEXT] = ctx
    router = app.router
    router.add_get("/api/handles", resolve.list_handles)
    router.add_get("/api/handles/{handle:.+}", resolve.get_handle)
    router.add_put("/api/handles/{handle:.+}", writes.put_handle)
    router.add_delete("/api/handles/{handle:.+}", writes.delete_handle)
    router.add_post("/api/batch", batch.post_batch)
    router.add_get("/api/stats", stats.get_stats)
    admin.add_routes(app)
    health.add_routes(app)
    router.add_route("*", "/api/{tail:.*}", _no_such_api)
    console.add_routes(app)  # /login, /admin, /ent: the signed-in pages (resolver/console)
    router.add_get("/", resolve.index_page)
    router.add_post("/", resolve.tunnel)
    router.add_get("/{handle:.+}", resolve.browse)
    return app


async def _no_such_api(request: web.Request) -> web.Response:
    raise HttpError(404, ResponseCode.PROTOCOL_ERROR, f"no such API: {request.method} {request.path}")


def http_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket shared by every worker through SO_REUSEPORT (like the Handle TCP listener)."""
    return tcp_socket(host, port)


def free_http_port(host: str) -> int:
    """A concrete port for `--http-port 0`, chosen once by the parent so that every worker binds the same."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class _Overloaded(asyncio.Protocol):
    """A connection beyond the caps: answered 503 (JSON) at once. What the client sends is read and dropped,
    so that closing does not reset the connection before the client reads the answer."""

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(_OVERLOADED_ANSWER)
        self.closer = asyncio.get_running_loop().call_later(OVERLOADED_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> None:
        self.transport.close()

    def connection_lost(self, exc) -> None:
        self.closer.cancel()


class _Counted(asyncio.Protocol):
    """Counts a connection against the worker's caps, then hands every event to aiohttp's handler (or, over a
    cap, to _Overloaded)."""

    __slots__ = ("limiter", "make_handler", "inner", "source")

    def __init__(self, limiter: ConnectionLimiter, make_handler):
        self.limiter = limiter
        self.make_handler = make_handler
        self.source: str | None = None

    def connection_made(self, transport) -> None:
        peer = transport.get_extra_info("peername")
        source = peer[0] if isinstance(peer, tuple) else ""
        if self.limiter.open(source):
            self.source = source
            self.inner = self.make_handler()
        else:
            self.inner = _Overloaded()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc) -> None:
        if self.source is not None:
            self.limiter.close(self.source)
            self.source = None
        self.inner.connection_lost(exc)


class _LimitedSite(web.SockSite):
    """aiohttp's SockSite with connection caps: its protocol factory counts every connection."""

    __slots__ = ("_limiter", "_handler_settings")

    def __init__(
        self, runner: web.AppRunner, sock: socket.socket, limiter: ConnectionLimiter, handler_settings: dict,
        **kwargs,
    ):  # fmt: skip
        super().__init__(runner, sock, **kwargs)
        self._limiter = limiter
        self._handler_settings = handler_settings  # the RequestHandler settings the runner was given

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner, as SockSite.start does
        server, limiter = self._runner.server, self._limiter
        assert server is not None
        # A TLS connection is counted once its handshake is done; the handshake has its own short deadline.
        tls = {"ssl": self._ssl_context, "ssl_handshake_timeout": TLS_HANDSHAKE_TIMEOUT_S} if self._ssl_context else {}
        loop = asyncio.get_running_loop()
        settings = self._handler_settings

        def handler() -> BadRequestHandler:  # what `server()` makes, with malformed requests answered quietly
            return BadRequestHandler(server, loop=loop, **settings)

        self._server = await loop.create_server(
            lambda: _Counted(limiter, handler), sock=self._sock, backlog=self._backlog, **tls
        )


async def start_http(
    store,
    service,
    frontend,
    binds: list[str],
    port: int,
    health=None,
    *,
    ssl_context: ssl.SSLContext | None = None,
    idle_timeout_s: float = HTTP_IDLE_TIMEOUT_S,
    max_connections: int = HTTP_MAX_CONNECTIONS,
    max_connections_per_source: int = HTTP_MAX_CONNECTIONS_PER_SOURCE,
    events: SecurityEvents | None = None,
    writer=None,
    seen=None,
) -> web.AppRunner:
    """Serve HTTP (HTTPS with `ssl_context`) on `port` of every bind address; the caller awaits
    `runner.cleanup()` when stopping. The connection caps count across the binds of this worker."""
    ctx = HttpContext(
        store, service, frontend, health or WorkerHealth(), events or NO_EVENTS, writer=writer, seen=seen
    )
    # keepalive_timeout also runs from the moment a connection opens until its first request head is read.
    handler_settings = {"access_log": None, "keepalive_timeout": idle_timeout_s}
    runner = web.AppRunner(build_app(ctx), handle_signals=False, **handler_settings)
    await runner.setup()
    limiter = ConnectionLimiter(max_connections, max_connections_per_source)
    for host in binds:
        site = _LimitedSite(
            runner, http_socket(host, port), limiter, handler_settings, backlog=HTTP_BACKLOG,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S, ssl_context=ssl_context,
        )  # fmt: skip
        await site.start()
    return runner
