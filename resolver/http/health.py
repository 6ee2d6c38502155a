"""Operations endpoints on the HTTP port: Prometheus exposition (`/metrics`, every worker's figures merged)
and the health checks (`/healthz` alive, `/readyz` store open and answering). The logic lives in
resolver.metrics; these only put it on the wire."""

from __future__ import annotations

import asyncio

from aiohttp import web

from resolver import metrics
from resolver.http.context import CONTEXT


async def get_metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    # Merging every process's metric files reads a few small files: off the event loop.
    # The security queue's figures come through the worker's own SecurityEvents (the queue is open here).
    body, content_type = await asyncio.to_thread(
        metrics.metrics_response, ctx.store, security_queue=ctx.events.queue_stats
    )
    return web.Response(body=body, headers={"Content-Type": content_type})


def _health_response(answer: metrics.HealthAnswer) -> web.Response:
    return web.Response(body=answer.body(), status=answer.status, content_type="application/json")


async def get_healthz(request: web.Request) -> web.Response:
    return _health_response(metrics.healthz(request.app[CONTEXT].health))


async def get_readyz(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return _health_response(metrics.readyz(ctx.health, ctx.store))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", get_metrics)
    app.router.add_get("/healthz", get_healthz)
    app.router.add_get("/readyz", get_readyz)
