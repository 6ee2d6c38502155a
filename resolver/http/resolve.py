"""Reading over HTTP: the REST resolution `GET /api/handles/{handle}`, the listing `GET /api/handles?prefix=`,
the browser's `GET /{handle}` (redirect to the first URL value, or a page of the values), and the native
protocol tunnelled as a POST of application/x-hdl-message to any path. Resolutions go through the resolution
service and are counted as "http" (the tunnel's as "handle": it is the Handle protocol, whatever carries it)."""

from __future__ import annotations

import logging
from urllib.parse import quote, urlsplit

from aiohttp import web

from resolver.handle.constants import MAX_HANDLE_BYTES, ResponseCode
from resolver.handle.values import HandleValue, decode_values
from resolver.handle.wire import Reader
from resolver.http.common import (
    MAX_TUNNEL_BODY_BYTES,
    HttpError,
    check_handle,
    json_response,
    query_indexes,
    query_int,
    query_types,
    read_body,
)
from resolver.http.context import CONTEXT
from resolver.pages import errors
from resolver.pages.facts import gather
from resolver.pages.i18n import LANGUAGES, negotiate
from resolver.pages.identifier import render_identifier
from resolver.pages.layout import Reader as PageReader
from resolver.pages.response import page_response
from storage.jsonvalues import value_to_json
from storage.keys import NA_PREFIX, normalize_prefix

log = logging.getLogger(__name__)

HDL_MESSAGE_TYPE = (
    "application/x-hdl-message"  #: handle-protocol.md, transports: the tunnelled native message
)
DEFAULT_PAGE_SIZE = 1000  #: handles per page of a listing when pageSize is not given
MAX_PAGE_SIZE = 10_000  #: handles per page of a listing at most
MAX_LIST_SCAN = 1_000_000  #: keys a listing walks at most (its offset and count): bounds the worker's time
REDIRECT_SCHEMES = ("http", "https")  #: a browser is only ever sent to these; other URL values are shown

_MESSAGES = {
    ResponseCode.HANDLE_NOT_FOUND: "Handle Not Found",
    ResponseCode.VALUES_NOT_FOUND: "Values Not Found",
    ResponseCode.SERVER_NOT_RESP: "That prefix doesn't live here",
    ResponseCode.INVALID_HANDLE: "Invalid Handle",
    ResponseCode.ERROR: "the stored record cannot be read",
}


def _values(payload: bytes) -> tuple[HandleValue, ...]:
    return decode_values(Reader(payload))


def _resolve(request: web.Request, handle: str, indexes=(), types=(), public_only=True):
    ctx = request.app[CONTEXT]
    ctx.service.refresh()  # every write committed before this request is visible to it
    ctx.service.reload_prefixes()  # and every prefix change (cheap when there was none)
    return ctx.service.resolve(handle.encode(), tuple(indexes), types, public_only, counter=ctx.http_counter)


async def get_handle(request: web.Request) -> web.Response:
    """`GET /api/handles/{handle}[?type=T&index=N...]`: the values as the Handle.Net REST API gives them.
    With the prefix administrator's (or the operator's) credentials, values without PUBLIC_READ too."""
    ctx = request.app[CONTEXT]
    handle = check_handle(request.match_info["handle"])
    indexes = query_indexes(request) or ()
    types = query_types(request)
    public_only = True
    identity = await ctx.auth.identify(request)
    if identity is not None:
        public_only = not identity.administers(normalize_prefix(handle.split("/", 1)[0].encode()))
    code, payload = _resolve(request, handle, indexes, types, public_only)
    if code == ResponseCode.SUCCESS:
        values = [value_to_json(v) for v in _values(payload)]
        return json_response({"responseCode": 1, "handle": handle, "values": values})
    if code == ResponseCode.VALUES_NOT_FOUND:  # Handle.Net: the handle exists, nothing selected: HTTP 200
        return json_response({"responseCode": 200, "handle": handle, "values": []})
    if code == ResponseCode.SERVICE_REFERRAL:
        referral = ctx.service.referral_handle(handle.encode()).decode()
        raise HttpError(
            404, code, f"served by the enterprise's own node: resolve {referral} for its HS_SITE", handle=handle,
            referral={"handle": referral, "values": [value_to_json(v) for v in _values(payload)]},
        )  # fmt: skip
    status = 404 if code == ResponseCode.HANDLE_NOT_FOUND else 500 if code == ResponseCode.ERROR else 400
    raise HttpError(status, code, _MESSAGES.get(code, ""), handle=handle)


async def list_handles(request: web.Request) -> web.Response:
    """`GET /api/handles?prefix=P[&page=N&pageSize=M]`: the handles under a prefix, for its administrator or
    the operator. Pages count from 0; totalCount is a string, as Handle.Net sends it ("N+" past the limit)."""
    ctx = request.app[CONTEXT]
    identity = await ctx.auth.require(request)
    prefix_text = request.query.get("prefix", "")
    if prefix_text.upper().startswith("0.NA/"):
        prefix_text = prefix_text[5:]
    if not prefix_text or "/" in prefix_text:
        raise HttpError(
            400, ResponseCode.PROTOCOL_ERROR, "prefix: give the prefix to list, e.g. ?prefix=88.100.7"
        )
    prefix = normalize_prefix(prefix_text.encode())
    if prefix == NA_PREFIX or not identity.administers(prefix):
        raise HttpError(
            403, ResponseCode.INSUFFICIENT_PERMISSIONS, f"{identity.user} may not list {prefix_text}"
        )
    page = query_int(request, "page", 0, 0, MAX_LIST_SCAN)
    page_size = query_int(request, "pageSize", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
    offset = page * page_size
    if offset + page_size > MAX_LIST_SCAN:
        raise HttpError(
            400, ResponseCode.PROTOCOL_ERROR, f"page: listings reach {MAX_LIST_SCAN:,} handles at most"
        )
    start = prefix + b"/"
    handles, count, capped = [], 0, False
    ctx.service.refresh()
    store = ctx.store
    with store.env.begin(db=store.handles) as txn, txn.cursor() as cursor:
        if cursor.set_range(start):
            for key in cursor.iternext(values=False):
                if not key.startswith(start):
                    break
                if count >= MAX_LIST_SCAN:
                    capped = True
                    break
                if offset <= count < offset + page_size:
                    handles.append(key.decode(errors="replace"))
                count += 1
    return json_response(
        {
            "responseCode": 1,
            "prefix": prefix_text,
            "totalCount": f"{count}+" if capped else str(count),
            "page": page,
            "pageSize": page_size,
            "handles": handles,
        }
    )


# -- browsers and QR codes ------------------------------------------------------------------------------------


def _first_url(values: tuple[HandleValue, ...]) -> str | None:
    for value in values:
        if value.type.upper() == "URL":
            try:
                url = value.data.decode("utf-8").strip()
            except UnicodeDecodeError:
                continue
            parts = urlsplit(url)
            if (
                parts.scheme.lower() in REDIRECT_SCHEMES
                and parts.netloc
                and url.isprintable()
                and " " not in url
            ):
                return url  # never a control character or space into the Location header
    return None


def _reader(request: web.Request) -> PageReader:
    """The page's reader: language from `?lang=` or Accept-Language; the path and query for the switch."""
    chosen = request.query.get("lang")
    lang = negotiate(request.headers.get("Accept-Language"), chosen)
    query = tuple((k, v) for k, v in request.query.items() if k != "lang")
    return PageReader(lang, chosen == lang, request.path, query)


async def browse(request: web.Request) -> web.Response:
    """`GET /{handle}`: a QR-code scan or a browser. Redirects (302) to the first http(s) URL value; shows the
    identifier's page (resolver/pages) when there is none, or with `?noredirect`; a page saying what happened
    otherwise (invalid, not found, unknown prefix, referral)."""
    handle = request.match_info["handle"]
    reader = _reader(request)
    try:
        check_handle(handle)
    except HttpError:
        return page_response(errors.invalid_page(reader, handle, MAX_HANDLE_BYTES))
    code, payload = _resolve(request, handle)
    try:
        if code == ResponseCode.SUCCESS:
            values = _values(payload)
            url = None if "noredirect" in request.query else _first_url(values)
            if url is not None:
                raise web.HTTPFound(url)
            return page_response(_identifier_page(request, reader, handle, values))
        if code == ResponseCode.VALUES_NOT_FOUND:
            return page_response(_identifier_page(request, reader, handle, ()))
        if code == ResponseCode.SERVICE_REFERRAL:
            return page_response(errors.referral_page(reader, handle, _values(payload)))
        if code == ResponseCode.HANDLE_NOT_FOUND:
            return page_response(errors.not_found_page(reader, handle))
        if code == ResponseCode.SERVER_NOT_RESP:
            return page_response(errors.unknown_prefix_page(reader, handle))
        if code == ResponseCode.INVALID_HANDLE:
            return page_response(errors.invalid_page(reader, handle, MAX_HANDLE_BYTES))
        return page_response(errors.unreadable_page(reader, handle))
    except web.HTTPException:
        raise
    except Exception:  # a page that cannot be made is a page saying so, not a JSON 500 in a phone's browser
        log.exception("the page of %r could not be made", handle)
        return page_response(errors.unreadable_page(reader, handle, 500, "internal"))


def _identifier_page(request: web.Request, reader: PageReader, handle: str, values: tuple[HandleValue, ...]):
    return render_identifier(gather(request.app[CONTEXT].store, handle, values), reader)


async def index_page(request: web.Request) -> web.Response:
    """`GET /`: a form to look an identifier up (`/?handle=X` redirects to `/X`; with `noredirect`, and
    `lang`, to `/X?noredirect&lang=..`, as the pages' search box asks)."""
    wanted = request.query.get("handle", "").strip()
    if wanted:
        query = []
        if "noredirect" in request.query:
            query.append("noredirect")
        if request.query.get("lang") in LANGUAGES:
            query.append(f"lang={request.query['lang']}")
        raise web.HTTPFound("/" + quote(wanted) + ("?" + "&".join(query) if query else ""))
    return page_response(errors.home_page(_reader(request)))


# -- the native protocol, tunnelled ---------------------------------------------------------------------------


@web.middleware
async def tunnel_on_any_path(request: web.Request, handler) -> web.StreamResponse:
    """A POST with Content-Type application/x-hdl-message is the tunnelled native protocol whatever its path,
    routed by its content type: CNRI's Java client falls back to the HTTP interface of an HS_SITE and posts
    to `/<percent-encoded handle>` there."""
    if request.method == "POST" and request.content_type == HDL_MESSAGE_TYPE:
        return await tunnel(request)
    return await handler(request)


async def tunnel(request: web.Request) -> web.Response:
    """`POST /` (or any path, see tunnel_on_any_path) with Content-Type application/x-hdl-message: one native
    request message, answered in kind."""
    if request.content_type != HDL_MESSAGE_TYPE:
        raise HttpError(
            415,
            ResponseCode.PROTOCOL_ERROR,
            f"POST / carries a Handle message: Content-Type {HDL_MESSAGE_TYPE}",
        )
    body = await read_body(request, MAX_TUNNEL_BODY_BYTES)
    ctx = request.app[CONTEXT]
    ctx.service.refresh()
    answer = ctx.frontend.answer_message(body)
    if answer is not None and answer.__class__ is not bytes:  # a recursion to an enterprise node
        answer = await answer
    if answer is None:
        raise HttpError(400, ResponseCode.PROTOCOL_ERROR, "the body is not a readable Handle message")
    return web.Response(body=answer, content_type=HDL_MESSAGE_TYPE)
