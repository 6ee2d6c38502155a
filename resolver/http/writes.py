"""Writes over HTTP, as the Handle.Net REST API takes them: `PUT /api/handles/{handle}` creates or replaces
(`?overwrite=false` refuses an existing handle; `?index=` sets only the listed values) and
`DELETE /api/handles/{handle}` deletes (`?index=` removes only those values). HTTP Basic credentials of the
prefix's administrator (or the operator) are required. The write is one entry of the write log, applied by the
node's writer with its audit entry (storage/writes.py) before it is answered; a refused one stores nothing. Both are reported to the security log (`write` events,
outcome `ok` or `refused`)."""

from __future__ import annotations

import time

from aiohttp import web

from resolver.handle.constants import ResponseCode
from resolver.handle.errors import HandleProtocolError
from resolver.handle.values import HandleValue
from resolver.http.common import (
    MAX_RECORD_BODY_BYTES,
    HttpError,
    check_handle,
    error_from_write,
    json_response,
    parse_json,
    query_bool,
    query_indexes,
    read_body,
)
from resolver.http.context import CONTEXT, actor_of
from storage.jsonvalues import ValueFormatError, value_from_json
from storage.keys import normalize_prefix
from storage.writes import (
    AUDIT_OPERATIONS,
    WriteError,
    delete_identifier,
    normalize_value_json,
    put_identifier,
)

MAX_VALUES_PER_RECORD = 1000  #: values in one PUT; a record with more is a mistake, not an identifier


def values_from_body(body: bytes, handle: str, now_s: int) -> list[HandleValue]:
    """The values of a PUT body: `{"values": [...]}` (a `handle` in it must name the same handle) or `[...]`."""
    obj = parse_json(body)
    if isinstance(obj, dict):
        named = obj.get("handle")
        if named is not None and (not isinstance(named, str) or named.upper() != handle.upper()):
            raise HttpError(
                400,
                ResponseCode.INVALID_HANDLE,
                "handle: the body names another handle than the URL",
                handle=handle,
            )
        obj = obj.get("values")
    if not isinstance(obj, list):
        raise HttpError(
            400, ResponseCode.INVALID_VALUE, 'values: the body is {"values": [...]} or a list', handle=handle,
            field="values",
        )  # fmt: skip
    if len(obj) > MAX_VALUES_PER_RECORD:
        raise HttpError(
            400, ResponseCode.INVALID_VALUE, f"values: at most {MAX_VALUES_PER_RECORD}", handle=handle
        )
    try:
        return [value_from_json(normalize_value_json(v), now_s, f"values[{n}]") for n, v in enumerate(obj)]
    except (ValueFormatError, HandleProtocolError) as exc:
        field = str(exc).split(":", 1)[0]
        raise HttpError(400, ResponseCode.INVALID_VALUE, str(exc), handle=handle, field=field) from exc


def _allowed(identity, handle: str) -> bytes | None:
    """The prefix the writer is limited to (None: the operator, any hosted prefix); 403 when the handle is
    under another enterprise's prefix."""
    prefix = normalize_prefix(handle.split("/", 1)[0].encode())
    if not identity.administers(prefix):
        raise HttpError(
            403, ResponseCode.INSUFFICIENT_PERMISSIONS,
            f"{identity.user} may write only under {identity.prefix.decode()}/", handle=handle,
        )  # fmt: skip
    return identity.prefix


async def put_handle(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    identity = await ctx.auth.require(request)
    handle = check_handle(request.match_info["handle"])
    allowed = _allowed(identity, handle)
    overwrite = query_bool(request, "overwrite", True)
    indexes = query_indexes(request, allow_various=True)
    various = request.query.getall("index", []) == ["various"]
    values = values_from_body(await read_body(request, MAX_RECORD_BODY_BYTES), handle, int(time.time()))
    if various:
        indexes = [v.index for v in values]
    try:
        outcome = await write_identifier(
            ctx, identity, actor_of(identity, request), handle, values, overwrite=overwrite, indexes=indexes,
            allowed=allowed,
        )  # fmt: skip
    except WriteError as exc:
        raise error_from_write(exc, handle) from exc
    return json_response({"responseCode": 1, "handle": handle}, 201 if outcome == "created" else 200)


async def write_identifier(
    ctx, identity, actor, handle: str, values: list[HandleValue], *, overwrite: bool = True,
    indexes: list[int] | None = None, allowed: bytes | None = None,
) -> str:  # fmt: skip
    """The API's write of one identifier, for `PUT /api/handles` and the enterprise pages alike: the writer's
    rights (HttpError 403 outside its prefix), the write policy with template checks through the node's
    writer, the security log. Returns the outcome ("created", "replaced", "updated"); raises the WriteError
    of a refusal, which is reported first."""
    if allowed is None:
        allowed = _allowed(identity, handle)
    try:
        outcome = await ctx.write(
            put_identifier, handle, values, overwrite=overwrite, indexes=indexes, allowed_prefix=allowed,
            checker=True, actor=actor,
        )  # fmt: skip
    except WriteError as exc:
        _refused(ctx, actor, "put", handle, exc)
        raise
    ctx.after_write()
    ctx.events.write(actor.identity, actor.source, AUDIT_OPERATIONS[outcome], handle)
    return outcome


async def delete_handle(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    identity = await ctx.auth.require(request)
    handle = check_handle(request.match_info["handle"])
    allowed = _allowed(identity, handle)
    indexes = query_indexes(request)
    actor = actor_of(identity, request)
    try:
        outcome = await ctx.write(
            delete_identifier, handle, indexes=indexes, allowed_prefix=allowed, checker=True, actor=actor
        )
    except WriteError as exc:
        _refused(ctx, actor, "delete", handle, exc)
        raise error_from_write(exc, handle) from exc
    ctx.after_write()
    ctx.events.write(actor.identity, actor.source, AUDIT_OPERATIONS[outcome], handle)
    return json_response({"responseCode": 1, "handle": handle})


def _refused(ctx, actor, operation: str, handle: str, exc: WriteError) -> None:
    """A write the store refused (nothing written): a `write` event with outcome `refused` and the reason."""
    ctx.events.write(actor.identity, actor.source, operation, handle, outcome="refused",
                     detail={"code": int(exc.code), "reason": exc.message})  # fmt: skip
