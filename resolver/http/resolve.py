"""Reading over HTTP: the REST resolution `GET /api/handles/{handle}`, the listing `GET /api/handles?prefix=`,
the browser's `GET /{handle}` (redirect to the first URL value, or a page of the values), and the native
protocol tunnelled as a POST of application/x-hdl-message to any path. Resolutions go through the resolution
service and are counted as "http" (the tunnel's as "handle": it is the Handle protocol, whatever carries it)."""

from __future__ import annotations

import html
from urllib.parse import quote, urlsplit

from aiohttp import web

from resolver.handle.constants import ResponseCode
from resolver.handle.describe import describe_data, plain_text
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
from storage.jsonvalues import format_timestamp, value_to_json
from storage.keys import NA_PREFIX, normalize_prefix

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


_PAGE = """<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }}
h1 {{ font-size: 1.3rem; word-break: break-all; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .4rem; text-align: left; vertical-align: top; }}
td.data {{ word-break: break-all; }}
.note {{ color: #666; }}
form input {{ width: 22rem; max-width: 80%; }}
</style></head>
<body>{body}</body></html>
"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    text = _PAGE.format(title=html.escape(title), body=body)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _data_html(value: HandleValue) -> str:
    shown = plain_text(value.type, value.data)
    if shown is not None:
        if value.type.upper() == "URL" and urlsplit(shown).scheme.lower() in REDIRECT_SCHEMES:
            return f'<a href="{html.escape(shown)}" rel="noopener noreferrer">{html.escape(shown)}</a>'
        if (
            "/" in shown
            and " " not in shown
            and len(shown) < 256
            and not shown.startswith(("http:", "https:"))
        ):
            return f'<a href="/{html.escape(quote(shown))}?noredirect">{html.escape(shown)}</a>'
        return html.escape(shown)
    # HS_ADMIN, HS_SITE, HS_VLIST and binary data: in words, as `idnode resolve` prints them
    return "<br>".join(html.escape(line) for line in describe_data(value.type, value.data))


def _values_page(handle: str, values: tuple[HandleValue, ...]) -> web.Response:
    rows = "".join(
        f"<tr><td>{v.index}</td><td>{html.escape(v.type)}</td><td class=data>{_data_html(v)}</td>"
        f"<td>{format_timestamp(v.timestamp) if v.timestamp else ''}</td></tr>"
        for v in values
    )
    body = (
        f"<h1>{html.escape(handle)}</h1>"
        "<table><tr><th>index</th><th>type</th><th>data</th><th>timestamp</th></tr>"
        f"{rows}</table>"
        f'<p class=note><a href="/api/handles/{html.escape(quote(handle))}">JSON</a> · 标识解析 idnode</p>'
    )
    return _page(handle, body)


async def browse(request: web.Request) -> web.Response:
    """`GET /{handle}`: a QR-code scan or a browser. Redirects (302) to the first http(s) URL value; shows the
    values as a page when there is none, or with `?noredirect`."""
    handle = request.match_info["handle"]
    try:
        check_handle(handle)
    except HttpError:
        return _page(
            "Invalid handle", f"<h1>Not a handle</h1><p>{html.escape(handle)} is not prefix/suffix.</p>", 404
        )
    code, payload = _resolve(request, handle)
    if code == ResponseCode.SUCCESS:
        values = _values(payload)
        url = None if "noredirect" in request.query else _first_url(values)
        if url is not None:
            raise web.HTTPFound(url)
        return _values_page(handle, values)
    if code == ResponseCode.VALUES_NOT_FOUND:
        return _values_page(handle, ())
    if code == ResponseCode.SERVICE_REFERRAL:
        body = (
            f"<h1>{html.escape(handle)}</h1><p>This identifier is served by its enterprise's own node. "
            f'Its address is the HS_SITE of <a href="/0.NA/{html.escape(quote(handle.split("/", 1)[0]))}'
            f'?noredirect">0.NA/{html.escape(handle.split("/", 1)[0])}</a>.</p>'
        )
        return _page(handle, body, 404)
    message = _MESSAGES.get(code, "cannot be resolved")
    return _page(handle, f"<h1>{html.escape(handle)}</h1><p>{html.escape(message)}.</p>", 404)


async def index_page(request: web.Request) -> web.Response:
    """`GET /`: a form to look an identifier up (`/?handle=X` redirects to `/X`)."""
    wanted = request.query.get("handle", "").strip()
    if wanted:
        raise web.HTTPFound("/" + quote(wanted))
    body = (
        "<h1>标识解析 · Identifier resolution</h1>"
        '<form action="/" method="get"><input name="handle" placeholder="88.100.1/BATCH-2024-000001" autofocus>'
        " <button>resolve</button></form>"
        '<p class=note>REST API: <code>GET /api/handles/{handle}</code> · statistics: <a href="/api/stats">'
        "/api/stats</a></p>"
    )
    return _page("idnode", body)


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
    if answer is None:
        raise HttpError(400, ResponseCode.PROTOCOL_ERROR, "the body is not a readable Handle message")
    return web.Response(body=answer, content_type=HDL_MESSAGE_TYPE)
