"""HTTP requests aiohttp's parser refuses (a bad request line or header, invalid chunked encoding, headers
over the limits, a body that does not match its framing): answered 400 with the JSON error body, counted once
(`idnode_http_bad_requests_total`), logged only at debug and without a traceback. Left to aiohttp, each one is
an ERROR line with a traceback, and a chunked body that turns bad after its head was read leaves the handler
waiting for the rest until the body deadline.

`BadRequestHandler` is aiohttp's RequestHandler with that behaviour; app.py builds one per connection. The
middleware (app.py) turns a refused body that a handler was reading into the same 400 (`is_bad_body`,
`answer_bad_body`).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from resolver import metrics
from resolver.handle.constants import ResponseCode

log = logging.getLogger(__name__)

BAD_REQUEST = 400
MAX_REASON_CHARS = 200  #: of the parser's message in the answer: it quotes the offending bytes, which may be long


class RefusedBody(RequestPayloadError):
    """The parser refused the stream while a handler was reading the body of the request before the refusal
    (already counted)."""


def is_bad_body(exc: BaseException) -> bool:
    """Whether a handler failed because the body it read was refused by the parser."""
    return isinstance(exc, HttpProcessingError | RequestPayloadError)


def bad_request_response(reason: str) -> web.Response:
    """400 with the JSON error body; the connection is closed after it (the stream cannot be trusted)."""
    body = {"responseCode": int(ResponseCode.PROTOCOL_ERROR), "message": f"malformed HTTP request: {reason}"}
    response = web.Response(
        body=orjson.dumps(body), status=BAD_REQUEST, content_type="application/json"
    )
    response.force_close()
    return response


def reason_of(exc: BaseException | None) -> str:
    message = getattr(exc, "message", None) or str(exc or "") or "unreadable"
    first = str(message).strip().splitlines()[0] if str(message).strip() else "unreadable"
    return first.rstrip(":")[:MAX_REASON_CHARS]


def answer_bad_body(exc: BaseException) -> web.Response:
    """The 400 for a body refused while its handler read it, counted unless the parser's refusal was already."""
    if not isinstance(exc, RefusedBody):
        metrics.http_bad_request()
    log.debug("malformed HTTP request body: %s", reason_of(exc))
    return bad_request_response(reason_of(exc))


class _WatchedParser:
    """aiohttp's request parser, telling its connection when it refuses the stream."""

    __slots__ = ("_parser", "_on_refused")

    def __init__(self, parser: Any, on_refused):
        self._parser = parser
        self._on_refused = on_refused

    def feed_data(self, data: bytes, *args: Any, **kwargs: Any):
        try:
            return self._parser.feed_data(data, *args, **kwargs)
        except HttpProcessingError as exc:
            self._on_refused(exc)
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


class BadRequestHandler(RequestHandler):
    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # aiohttp keeps its parser in BaseProtocol._parser and catches the parser's errors itself.
        self._parser = _WatchedParser(self._parser, self._refused)

    def _refused(self, exc: HttpProcessingError) -> None:
        metrics.http_bad_request()
        log.debug("malformed HTTP request: %s", reason_of(exc))
        # aiohttp's C parser raises mid-body without ending the body it was feeding: a handler reading it
        # would wait for the body deadline. Fail that body now (the handler answers 400 through the middleware).
        request = self._current_request
        if request is not None and not request.content.is_eof():
            request.content.set_exception(RefusedBody(reason_of(exc)))

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status == BAD_REQUEST and isinstance(exc, HttpProcessingError):  # the parser's refusal, counted
            return bad_request_response(reason_of(exc))
        return super().handle_error(request, status, exc, message)

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info")
        if isinstance(exc, BaseException) and is_bad_body(exc):
            # a body refused after its handler answered (aiohttp reads what is left of it): nothing to report
            log.debug("malformed HTTP request body after the answer: %s", reason_of(exc))
            return
        super().log_exception(*args, **kwargs)
