"""What every HTTP handler shares: the one error type and its JSON answer, the status a Handle response code
maps to, body and query limits, and JSON in and out."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import web

from resolver.handle.constants import (
    ENVELOPE_BYTES,
    MAX_HANDLE_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_REQUEST_INDEXES,
    MAX_REQUEST_TYPES,
    ResponseCode,
)
from storage.writes import TemplateViolation, WriteError

MAX_RECORD_BODY_BYTES = 1 << 20  #: PUT of one identifier: far above any real record, far below memory
MAX_BATCH_BODY_BYTES = 8 << 20  #: POST /api/batch: 2,000 records of up to 4 KiB each
MAX_ADMIN_BODY_BYTES = 1 << 20  #: operator API bodies (template documents are at most 256 KiB)
MAX_TUNNEL_BODY_BYTES = ENVELOPE_BYTES + MAX_MESSAGE_BYTES  #: one native message, as on TCP
READ_CHUNK_BYTES = 64 * 1024  #: bodies are read in pieces this size, so a limit stops an upload early
BODY_READ_TIMEOUT_S = 120.0  #: a body must arrive within this (8 MiB at 70 KB/s); a trickle cannot hold a handler
JSON_TYPE = "application/json"

# Handle response code -> HTTP status, as the Handle.Net REST API answers (VALUES_NOT_FOUND: 200 on reads,
# 400 on deletes, where pyhandle expects it).
_STATUS = {
    ResponseCode.SUCCESS: 200,
    ResponseCode.ERROR: 500,
    ResponseCode.SERVER_TOO_BUSY: 429,
    ResponseCode.PROTOCOL_ERROR: 400,
    ResponseCode.OPERATION_NOT_SUPPORTED: 400,
    ResponseCode.HANDLE_NOT_FOUND: 404,
    ResponseCode.HANDLE_ALREADY_EXISTS: 409,
    ResponseCode.INVALID_HANDLE: 400,
    ResponseCode.VALUES_NOT_FOUND: 400,
    ResponseCode.VALUE_ALREADY_EXISTS: 409,
    ResponseCode.INVALID_VALUE: 400,
    ResponseCode.SERVER_NOT_RESP: 400,
    ResponseCode.SERVICE_REFERRAL: 404,
    ResponseCode.INSUFFICIENT_PERMISSIONS: 403,
    ResponseCode.AUTHENTICATION_NEEDED: 401,
    ResponseCode.AUTHENTICATION_FAILED: 401,
}


class HttpError(Exception):
    """A request answered with an error: HTTP status, Handle response code, message, extra JSON fields."""

    def __init__(
        self, status: int, code: ResponseCode, message: str, headers: dict | None = None, **extra: Any
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers
        self.extra = extra

    def response(self) -> web.Response:
        body = {"responseCode": int(self.code), **self.extra, "message": self.message}
        return json_response(body, self.status, self.headers)


def status_of(code: ResponseCode) -> int:
    return _STATUS.get(code, 400)


def error_from_write(exc: WriteError, handle: str | None = None) -> HttpError:
    extra: dict[str, Any] = {}
    if handle is not None:
        extra["handle"] = handle
    if exc.field:
        extra["field"] = exc.field
    status = 422 if isinstance(exc, TemplateViolation) else status_of(exc.code)
    return HttpError(status, exc.code, exc.message, **extra)


def json_response(obj: Any, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type=JSON_TYPE, headers=headers)


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, ResponseCode.PROTOCOL_ERROR, f"the body is not JSON: {exc}") from exc


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it passes `limit` bytes (before reading anything when
    Content-Length says so), and with 408 when it has not arrived within BODY_READ_TIMEOUT_S."""
    timeout_s = BODY_READ_TIMEOUT_S
    too_large = HttpError(
        413, ResponseCode.PROTOCOL_ERROR, f"the body is larger than {limit:,} bytes", limit=limit
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                chunk = await request.content.read(READ_CHUNK_BYTES)
                if not chunk:
                    return b"".join(chunks)
                size += len(chunk)
                if size > limit:
                    raise too_large
                chunks.append(chunk)
    except TimeoutError:
        raise HttpError(
            408, ResponseCode.PROTOCOL_ERROR, f"the body did not arrive within {timeout_s:g} s"
        ) from None


def query_indexes(request: web.Request, allow_various: bool = False) -> list[int] | None:
    """The repeatable `?index=` as integers; None when absent, or when `various` (every index in the body)."""
    raw = request.query.getall("index", [])
    if not raw:
        return None
    if allow_various and raw == ["various"]:
        return None
    if len(raw) > MAX_REQUEST_INDEXES:
        raise HttpError(400, ResponseCode.PROTOCOL_ERROR, f"index: at most {MAX_REQUEST_INDEXES} of them")
    out = []
    for text in raw:
        if not text.isdigit() or int(text) > 0xFFFFFFFF:
            raise HttpError(
                400, ResponseCode.PROTOCOL_ERROR, f"index: {text!r} is not an index (0..4294967295)"
            )
        out.append(int(text))
    return out


def query_types(request: web.Request) -> tuple[bytes, ...]:
    raw = request.query.getall("type", [])
    if len(raw) > MAX_REQUEST_TYPES:
        raise HttpError(400, ResponseCode.PROTOCOL_ERROR, f"type: at most {MAX_REQUEST_TYPES} of them")
    return tuple(t.encode() for t in raw)


def query_bool(request: web.Request, name: str, default: bool) -> bool:
    text = request.query.get(name)
    if text is None:
        return default
    if text.lower() in ("true", "1", "yes", ""):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise HttpError(400, ResponseCode.PROTOCOL_ERROR, f"{name}: true or false, not {text!r}")


def query_int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise HttpError(400, ResponseCode.PROTOCOL_ERROR, f"{name}: an integer in {low}..{high}")
    return int(text)


def check_handle(handle: str) -> str:
    if not handle or len(handle.encode()) > MAX_HANDLE_BYTES or "/" not in handle or handle.startswith("/"):
        raise HttpError(
            400, ResponseCode.INVALID_HANDLE, f"not a valid handle (prefix/suffix, at most {MAX_HANDLE_BYTES} bytes)",
            handle=handle[:MAX_HANDLE_BYTES],
        )  # fmt: skip
    return handle
