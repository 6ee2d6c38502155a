"""Batch registration: `POST /api/batch` with up to 2,000 identifiers as NDJSON (one record a line) or a JSON
array, in the record form of `idnode load`. The batch is one entry of the write log, applied by the node's
writer in one transaction; the answer says per item what happened. `?atomic=true` makes it all or nothing: one bad item and nothing is written. `?overwrite=false`
refuses identifiers that exist already. Parsing uses the bulk loader's value encoder (shapes built once)."""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from resolver.handle.constants import ResponseCode
from resolver.http.common import (
    MAX_BATCH_BODY_BYTES,
    HttpError,
    error_from_write,
    json_response,
    query_bool,
    read_body,
)
from resolver.http.context import CONTEXT, actor_of
from storage import audit
from storage.jsonvalues import ValueEncoder
from storage.keys import normalize_prefix
from storage.writes import MAX_BATCH_ITEMS, BatchResult, WriteError, parse_batch_item, put_batch


def split_records(body: bytes) -> list[tuple[int, Any]]:
    """(position, parsed JSON or the exception) per record: a JSON array's items (positions from 1), or the
    non-empty lines of NDJSON (positions are line numbers)."""
    stripped = body.lstrip()
    if stripped.startswith(b"["):
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HttpError(400, ResponseCode.PROTOCOL_ERROR, f"the body is not a JSON array: {exc}") from exc
        if not isinstance(items, list):
            raise HttpError(400, ResponseCode.PROTOCOL_ERROR, "the body is not a JSON array")
        _check_count(len(items))
        return list(enumerate(items, 1))
    lines = body.split(b"\n")
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    _check_count(len(numbered))
    out: list[tuple[int, Any]] = []
    for n, line in numbered:
        try:
            out.append((n, orjson.loads(line)))
        except orjson.JSONDecodeError as exc:
            out.append((n, exc))
    return out


def _check_count(count: int) -> None:
    if count > MAX_BATCH_ITEMS:
        raise HttpError(
            413, ResponseCode.PROTOCOL_ERROR, f"{count:,} identifiers: at most {MAX_BATCH_ITEMS:,} per request",
            limit=MAX_BATCH_ITEMS,
        )  # fmt: skip
    if count == 0:
        raise HttpError(400, ResponseCode.PROTOCOL_ERROR, "the batch is empty")


async def post_batch(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    identity = await ctx.auth.require(request)
    atomic = query_bool(request, "atomic", False)
    overwrite = query_bool(request, "overwrite", True)
    records = split_records(await read_body(request, MAX_BATCH_BODY_BYTES))
    result = await write_batch(ctx, identity, actor_of(identity, request), records, atomic=atomic,
                               overwrite=overwrite)  # fmt: skip
    body = {
        "responseCode": 1 if result.written else 2,
        "atomic": atomic,
        "written": result.written,
        "created": result.created,
        "replaced": result.replaced,
        "failed": result.failed,
        "results": result.results,
    }
    if result.written:
        return json_response(body)
    error = error_from_write(result.first_error)
    body["responseCode"] = int(error.code)
    body["message"] = f"atomic batch refused, nothing written: {result.failed} of {len(records)} items failed"
    return json_response(body, error.status)


async def write_batch(
    ctx, identity, actor, records: list[tuple[int, Any]], *, atomic: bool = False, overwrite: bool = True
) -> BatchResult:
    """The API's batch write, for `POST /api/batch` and the enterprise pages' uploads alike: (position, parsed
    record or its parse error) items, at most MAX_BATCH_ITEMS, parsed by the bulk loader's encoder, refused
    outside the writer's prefix, written as one entry through the node's writer with template checks, and
    reported to the security log."""
    encoder = ValueEncoder(int(time.time()))
    items = [parse_batch_item(position, obj, encoder, ctx.store) for position, obj in records]
    if identity.prefix is not None:
        for item in items:
            if item.error is None and not identity.administers(
                normalize_prefix(item.key[: item.key.find(b"/")])
            ):
                item.error = WriteError(
                    ResponseCode.INSUFFICIENT_PERMISSIONS,
                    f"{identity.user} may write only under {identity.prefix.decode()}/",
                )
    result = await ctx.write(
        put_batch, items, atomic=atomic, overwrite=overwrite, allowed_prefix=identity.prefix, checker=True,
        actor=actor,
    )  # fmt: skip
    if result.written:
        ctx.after_write()
    _report(ctx, actor, result)
    return result


def _report(ctx, actor, result) -> None:
    """The batch's writes to the security log: one `write` event per item written (create, replace), and
    per item refused (outcome `refused`; every item when an atomic batch was refused whole)."""
    if not ctx.events.enabled:
        return
    written, refused = [], []
    for entry in result.results:
        handle = entry.get("handle", f"(item {entry['position']})")
        if result.written and entry["responseCode"] == 1:
            written.append((audit.REPLACE if entry["status"] == "replaced" else audit.CREATE, handle))
        else:
            refused.append(("batch", handle))
    if written:
        ctx.events.writes(actor.identity, actor.source, written)
    if refused:
        ctx.events.writes(actor.identity, actor.source, refused, outcome="refused")
