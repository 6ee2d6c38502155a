"""The HTTP face of one worker: the aiohttp application (routes, error translation) and its start on the
worker's own SO_REUSEPORT sockets, beside the Handle UDP/TCP listeners, in the worker's event loop.

Every error leaves as JSON `{"responseCode", "message", ...}` with a 4xx/5xx status (the browser's pages
excepted); nothing escapes a handler. Access logging is off: nothing is logged per request at INFO.
"""

from __future__ import annotations

import logging
import socket

from aiohttp import web

from resolver.handle.constants import ResponseCode
from resolver.http import admin, batch, health, resolve, stats, writes
from resolver.http.common import MAX_BATCH_BODY_BYTES, HttpError, json_response
from resolver.http.context import CONTEXT, HttpContext
from resolver.metrics import WorkerHealth

log = logging.getLogger(__name__)

HTTP_BACKLOG = 1024  #: pending connections per listener
SHUTDOWN_TIMEOUT_S = 5.0  #: in-flight requests get this long to finish when the worker stops


@web.middleware
async def errors_as_json(request: web.Request, handler) -> web.StreamResponse:
    try:
        # A new read transaction for every request: it sees every committed write, and adopts a map that
        # another process grew before any other read of this request could fail on it.
        request.app[CONTEXT].service.refresh()
        return await handler(request)
    except HttpError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise  # redirects
        code = ResponseCode.PROTOCOL_ERROR if exc.status < 500 else ResponseCode.ERROR
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return json_response({"responseCode": int(code), "message": exc.reason}, exc.status, headers or None)
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return json_response({"responseCode": int(ResponseCode.ERROR), "message": "internal error"}, 500)


def build_app(ctx: HttpContext) -> web.Application:
    # aiohttp's own body limit only backs up the per-route limits (read_body), which are smaller.
    app = web.Application(middlewares=[errors_as_json], client_max_size=MAX_BATCH_BODY_BYTES + 1)
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
    router.add_get("/", resolve.index_page)
    router.add_post("/", resolve.tunnel)
    router.add_get("/{handle:.+}", resolve.browse)
    return app


async def _no_such_api(request: web.Request) -> web.Response:
    raise HttpError(404, ResponseCode.PROTOCOL_ERROR, f"no such API: {request.method} {request.path}")


def http_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket shared by every worker through SO_REUSEPORT (like the Handle TCP listener)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def free_http_port(host: str) -> int:
    """A concrete port for `--http-port 0`, chosen once by the parent so that every worker binds the same."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


async def start_http(store, service, frontend, binds: list[str], port: int, health=None) -> web.AppRunner:
    """Serve HTTP on `port` of every bind address; the caller awaits `runner.cleanup()` when stopping."""
    ctx = HttpContext(store, service, frontend, health or WorkerHealth())
    runner = web.AppRunner(build_app(ctx), access_log=None, handle_signals=False)
    await runner.setup()
    for host in binds:
        site = web.SockSite(
            runner, http_socket(host, port), backlog=HTTP_BACKLOG, shutdown_timeout=SHUTDOWN_TIMEOUT_S
        )
        await site.start()
    return runner
