"""A rendered page as an HTTP response, with the headers every page carries: its Content-Security-Policy
(layout.py: the inline style sheet and nothing else), no MIME sniffing, no framing, the language it is in
and that it varies with Accept-Language, and no caching without asking again (records change)."""

from __future__ import annotations

from aiohttp import web

from resolver.pages.i18n import HTML_LANG
from resolver.pages.layout import CONTENT_SECURITY_POLICY, Page

#: Headers of every page; the operator's and enterprises' pages add theirs (sessions, forms) on top.
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
    "Vary": "Accept-Language",
}


def page_response(page: Page, headers: dict[str, str] | None = None) -> web.Response:
    sent = {**PAGE_HEADERS, "Content-Language": HTML_LANG[page.lang], **(headers or {})}
    return web.Response(
        text=page.html, status=page.status, content_type="text/html", charset="utf-8", headers=sent
    )
