"""The frame of every console page: one stylesheet inline (allowed by its hash in the Content-Security-Policy,
so no `'unsafe-inline'` and no request for assets), the header with who is signed in and a sign-out form, the
security headers, and error pages. `page_errors` turns what a handler raises (HttpError, a full disk, the
writer away) into an HTML page with the same status the API would give, never a traceback."""

from __future__ import annotations

import base64
import functools
import hashlib
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from resolver.console.markup import Html, render
from resolver.http.common import HttpError
from resolver.writer.client import WriterUnavailable
from storage.store import StoreFullError

log = logging.getLogger(__name__)

STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,"Noto Sans CJK SC","PingFang SC",sans-serif;margin:0;color:#1d2733;background:#f5f7fa}
header{background:#17324d;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center}
header a,header button{color:#fff}
header .who{margin-left:auto;font-size:.9rem}
header form{display:inline}
header button{background:none;border:1px solid #8fb3d9;border-radius:4px;padding:.2rem .6rem;cursor:pointer}
main{padding:1rem;max-width:1200px;margin:0 auto}
h1{font-size:1.35rem;margin:.2rem 0 1rem}
h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
section{background:#fff;border:1px solid #dde3ea;border-radius:6px;padding:.8rem 1rem;margin-bottom:1rem;overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.92rem}
th,td{border-bottom:1px solid #e6ebf0;padding:.35rem .45rem;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.wrap{word-break:break-all}
.ok{color:#17693a;font-weight:600}.bad{color:#b3261e;font-weight:600}.muted{color:#5d6b78;font-size:.88rem}
.err{color:#b3261e}
.flash{background:#e8f4ea;border:1px solid #9cc9a5;padding:.5rem .8rem;border-radius:4px}
.flash.error{background:#fbeaea;border-color:#e3a3a0}
form.stack label{display:block;margin:.7rem 0 .2rem;font-weight:600}
form.stack input[type=text],form.stack input[type=url],form.stack input[type=password],form.stack select,form.stack textarea{width:100%;max-width:36rem;padding:.4rem;font-size:1rem}
.check{display:block;color:#5d6b78;font-size:.85rem;margin-top:.15rem}
.inline input,.inline select{padding:.3rem;font-size:.95rem;max-width:100%}
button.primary{background:#1f5fa0;color:#fff;border:0;border-radius:4px;padding:.5rem 1rem;font-size:1rem;margin-top:.8rem;cursor:pointer}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:.8rem}
.card{background:#fff;border:1px solid #dde3ea;border-radius:6px;padding:.7rem .9rem}
.card .value{font-size:1.4rem;font-weight:700}
svg{max-width:100%;height:auto}
svg text{font-size:11px;fill:#33404d}
nav.pages a{margin-right:1rem}
"""
STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
#: no script at all, the one stylesheet above, forms only to this node, never framed
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src 'sha256-{STYLE_HASH}'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # for browsers without frame-ancestors
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # signed-in pages stay out of shared and back-button caches
}

NO_HTML = Html("")

_FRAME = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{style}</style></head>
<body><header><strong>标识解析 idnode</strong>{nav}</header>
<main>{body}</main></body></html>
"""


def nav(user: str | None = None, csrf: str | None = None, links: tuple[tuple[str, str], ...] = ()) -> Html:
    """The header's links, and who is signed in with a sign-out button (a POST carrying the CSRF token)."""
    parts = [render('<a href="{}">{}</a>', href, label) for href, label in links]
    if user is not None and csrf is not None:
        parts.append(render(
            '<span class="who">{} <form method="post" action="/logout"><input type="hidden" name="csrf" '
            'value="{}"><button>退出 sign out</button></form></span>', user, csrf,
        ))  # fmt: skip
    return Html(" ".join(parts))


def page(title: str, body: Html, *, status: int = 200, header: Html = NO_HTML, lang: str = "zh-CN",
         headers: dict[str, str] | None = None) -> web.Response:  # fmt: skip
    text = render(_FRAME, lang=lang, title=title, style=Html(STYLE), nav=header, body=body)
    response = web.Response(text=text, status=status, content_type="text/html", charset="utf-8")
    response.headers.update(SECURITY_HEADERS)
    if headers:
        response.headers.update(headers)
    return response


def error_page(
    status: int, message: str, header: Html = NO_HTML, headers: dict | None = None
) -> web.Response:
    body = render(
        '<section><h1>{}</h1><p class="err">{}</p><p><a href="/admin">/admin</a> · <a href="/ent">/ent</a> · '
        '<a href="/">/</a></p></section>', _TITLES.get(status, f"error {status}"), message,
    )  # fmt: skip
    return page(_TITLES.get(status, "error"), body, status=status, header=header, headers=headers)


_TITLES = {
    400: "请求有误 · bad request",
    403: "无权访问 · not allowed",
    404: "未找到 · not found",
    413: "太大 · too large",
    429: "稍后再试 · too many attempts",
    503: "暂不可用 · unavailable",
    507: "存储已满 · store full",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def page_errors(handler: Handler) -> Handler:
    """What `handler` raises as an HTML error page (HttpError: its status and message; a full disk 507; the
    writer away 503 with Retry-After); redirects pass."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except HttpError as exc:
            headers = {k: v for k, v in (exc.headers or {}).items() if k == "Retry-After"}
            return error_page(exc.status, exc.message, headers=headers or None)
        except StoreFullError as exc:
            log.debug("a page's write was refused: %s", exc)
            return error_page(507, "the store's disk is full; nothing was written")
        except WriterUnavailable as exc:
            return error_page(503, str(exc), headers={"Retry-After": "1"})
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error_page(exc.status, exc.reason)

    return wrapped
