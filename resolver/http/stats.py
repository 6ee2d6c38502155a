"""`GET /api/stats`: identifiers held, registrations and resolutions per day and per protocol, enterprises
known and connected, all as persisted (each worker adds its resolution counts every few seconds). Per-prefix
figures go to the operator (every prefix) and to an enterprise (its own prefix); anonymous callers get totals."""

from __future__ import annotations

from aiohttp import web

from resolver.http.common import json_response
from resolver.http.context import CONTEXT
from resolver.reports import collect_stats


async def get_stats(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    identity = await ctx.auth.identify(request)
    stats = collect_stats(ctx.store, per_prefix=identity is not None)
    if identity is not None and identity.prefix is not None:
        own = identity.prefix.decode()
        for kind in ("registrations", "resolutions"):
            block = stats[kind]
            block["per_prefix"] = {p: n for p, n in block["per_prefix"].items() if p.upper() == own}
    return json_response({"responseCode": 1, **stats})
