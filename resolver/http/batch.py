"""Batch registration: `POST /api/batch` with up to 2,000 identifiers as NDJSON (one record a line) or a JSON
array, in the record form of `idnode load`. The batch is one entry of the write log, applied by the node's
writer in one transaction; the answer says per item what happened. `?atomic=true` makes it all or nothing: one bad item and nothing is written. `?overwrite=false`
refuses identifiers that exist already. Parsing uses the bulk loader's value encoder (shapes built once)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from resolver.handle.constants import ResponseCode
from resolver.http.common import (
    JSON_TYPE,
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
from storage.writes import (
    MAX_BATCH_ITEMS,
    BatchResult,
    WriteError,
    numbered_lines,
    parse_batch_item,
    put_batch,
)

#: Records decoded and parsed between two turns of the event loop (about 1.5 ms of work): a 2,000-record batch
#: then never holds up the worker's resolutions for longer than that (bench/results/writeplane.md: parsed in
#: one go, each batch stopped the loop for ~30 ms and full-speed batches starved Handle UDP of answers).
PARSE_SLICE_RECORDS = 100
#: Bytes of an NDJSON body whose newlines are counted in one turn of the event loop (~60 µs).
COUNT_SLICE_BYTES = 128 << 10


def split_records(body: bytes) -> list[tuple[int, Any]]:
    """(position, parsed JSON or the exception) per record: a JSON array's items (positions from 1), or the
    non-empty lines of NDJSON (positions are line numbers)."""
    numbered, decoded = _numbered(body)
    return numbered if decoded else [(n, _decode_line(line)) for n, line in numbered]


async def read_records(body: bytes) -> list[tuple[int, Any]]:
    """split_records, letting the event loop run between slices of PARSE_SLICE_RECORDS lines."""
    numbered, decoded = _numbered(body)
    if decoded:
        return numbered
    return await in_slices(numbered, lambda pair: (pair[0], _decode_line(pair[1])))


async def in_slices(items: list, fn: Callable[[Any], Any]) -> list:
    """[fn(item) for item in items], yielding to the event loop after every PARSE_SLICE_RECORDS items."""
    out = []
    for start in range(0, len(items), PARSE_SLICE_RECORDS):
        if start:
            await asyncio.sleep(0)  # resolutions that arrived meanwhile are answered now
        out.extend(map(fn, items[start : start + PARSE_SLICE_RECORDS]))
    return out


def _numbered(body: bytes) -> tuple[list[tuple[int, Any]], bool]:
    """(the records, whether they are decoded already): a JSON array's items, or NDJSON's (line number, line)."""
    stripped = body.lstrip()
    if stripped.startswith(b"["):
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HttpError(400, ResponseCode.PROTOCOL_ERROR, f"the body is not a JSON array: {exc}") from exc
        if not isinstance(items, list):
            raise HttpError(400, ResponseCode.PROTOCOL_ERROR, "the body is not a JSON array")
        _check_count(len(items))
        return list(enumerate(items, 1)), True
    numbered = numbered_lines(body)
    _check_count(len(numbered))
    return numbered, False


def _decode_line(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return exc


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
    body = await read_body(request, MAX_BATCH_BODY_BYTES)
    actor = actor_of(identity, request)
    if body.lstrip().startswith(b"["):  # a JSON array is decoded whole here
        records = await read_records(body)
        result = await write_batch(ctx, identity, actor, records, atomic=atomic, overwrite=overwrite)
    else:  # NDJSON goes to the writer as it came: this worker's CPU stays with resolutions
        _check_count(await line_count(body))
        result = await write_batch_lines(ctx, identity, actor, body, atomic=atomic, overwrite=overwrite)
    summary = {
        "responseCode": 1 if result.written else 2,
        "atomic": atomic,
        "written": result.written,
        "created": result.created,
        "replaced": result.replaced,
        "failed": result.failed,
    }
    status = 200
    if not result.written:
        error = error_from_write(result.first_error)
        status = error.status
        summary["responseCode"] = int(error.code)
        summary["message"] = (
            f"atomic batch refused, nothing written: {result.failed} of {len(result.item_results())} items failed"
        )
    if result.results_json is None:
        return json_response({**summary, "results": result.results}, status)
    # the writer's results as they came, spliced in: not decoded and encoded again on this worker's loop
    body = orjson.dumps(summary)[:-1] + b',"results":' + result.results_json + b"}"
    return web.Response(body=body, status=status, content_type=JSON_TYPE)


async def line_count(body: bytes) -> int:
    """The NDJSON items of `body` (non-blank lines), counted without splitting it up and in slices of
    COUNT_SLICE_BYTES with a loop turn between: counting a 1 MB body's newlines takes ~0.5 ms, which in one
    step would hold up every resolution queued behind it. Exact when blank lines are few, which only a body
    near the limit needs."""
    count = 0
    for start in range(0, len(body), COUNT_SLICE_BYTES):
        if start:
            await asyncio.sleep(0)
        count += body.count(b"\n", start, start + COUNT_SLICE_BYTES)
    count += not body.endswith(b"\n")
    if count > MAX_BATCH_ITEMS or not body or body.isspace():
        return len(numbered_lines(body))  # the exact count, for the 413 and the empty batch
    return count


async def write_batch(
    ctx, identity, actor, records: list[tuple[int, Any]], *, atomic: bool = False, overwrite: bool = True
) -> BatchResult:
    """The API's batch write, for `POST /api/batch` and the enterprise pages' uploads alike: (position, parsed
    record or its parse error) items, at most MAX_BATCH_ITEMS, parsed by the bulk loader's encoder, refused
    outside the writer's prefix, written as one entry through the node's writer with template checks, and
    reported to the security log."""
    encoder = ValueEncoder(int(time.time()))
    items = await in_slices(
        records, lambda record: parse_batch_item(record[0], record[1], encoder, ctx.store)
    )
    if identity.prefix is not None:
        for item in items:
            if item.error is None and not identity.administers(
                normalize_prefix(item.key[: item.key.find(b"/")])
            ):
                item.error = WriteError(
                    ResponseCode.INSUFFICIENT_PERMISSIONS,
                    f"{identity.user} may write only under {identity.prefix.decode()}/",
                )
    return await _written(ctx, actor, ctx.write(
        put_batch, items, atomic=atomic, overwrite=overwrite, allowed_prefix=identity.prefix, checker=True,
        actor=actor,
    ))  # fmt: skip


async def write_batch_lines(
    ctx, identity, actor, body: bytes, *, atomic: bool = False, overwrite: bool = True
):
    """`write_batch` of NDJSON as received: parsed by the writer where the entry is applied (the prefix of
    every item checked there against the writer's), so a batch costs the serving worker a copy, not a parse."""
    return await _written(ctx, actor, ctx.write(
        put_batch, [], lines=body, atomic=atomic, overwrite=overwrite, allowed_prefix=identity.prefix,
        checker=True, actor=actor,
    ))  # fmt: skip


async def _written(ctx, actor, writing) -> BatchResult:
    result = await writing
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
    for entry in result.item_results():
        handle = entry.get("handle", f"(item {entry['position']})")
        if result.written and entry["responseCode"] == 1:
            written.append((audit.REPLACE if entry["status"] == "replaced" else audit.CREATE, handle))
        else:
            refused.append(("batch", handle))
    if written:
        ctx.events.writes(actor.identity, actor.source, written)
    if refused:
        ctx.events.writes(actor.identity, actor.source, refused, outcome="refused")
