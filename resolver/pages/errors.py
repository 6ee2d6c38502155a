"""The pages for when there is no record to show, each saying what happened in the reader's language with a way
on (the search box, filled with what was asked): not a valid identifier, not registered here, a prefix this
node does not serve, an identifier its enterprise's own node resolves (with that node's addresses, from its
prefix's HS_SITE, and a link to each web interface it has), a record that cannot be read. Also the home page.
Pure: builds strings."""

from __future__ import annotations

from html import escape
from urllib.parse import quote

from resolver.handle.describe import SITE_TYPES, describe_site
from resolver.handle.errors import HandleProtocolError
from resolver.handle.values import HandleValue, InterfaceProtocol, decode_site
from resolver.pages.i18n import t
from resolver.pages.layout import Page, Reader, document, lang_attr, search_form

MAX_SHOWN_CHARS = 200  #: what an error page repeats of a bad request: enough to recognise it, no wall of text
MAX_REFERRAL_LINKS = 8  #: web interfaces of an enterprise node linked from a referral page
WEB_SCHEMES = {
    InterfaceProtocol.HTTP: "http",
    InterfaceProtocol.HTTPS: "https",
}  #: interfaces a browser opens


def _shown(text: str) -> str:
    cut = text[:MAX_SHOWN_CHARS] + ("…" if len(text) > MAX_SHOWN_CHARS else "")
    return f'<code class="handle">{escape(cut)}</code>'


def _error(reader: Reader, status: int, title_key: str, body: str, asked: str, extra: str = "") -> Page:
    title = t(reader.lang, title_key)
    main = f"<h1>{escape(title)}</h1><p>{body}</p>{extra}{search_form(reader, asked[:MAX_SHOWN_CHARS])}"
    return document(reader, title, main, status)


def invalid_page(reader: Reader, asked: str, max_bytes: int) -> Page:
    body = t(reader.lang, "invalid_body").format(handle=_shown(asked), max=max_bytes)
    return _error(reader, 404, "invalid_title", body, asked)


def not_found_page(reader: Reader, handle: str) -> Page:
    prefix = handle.split("/", 1)[0]
    body = t(reader.lang, "not_found_body").format(handle=_shown(handle), prefix=_shown(prefix))
    return _error(reader, 404, "not_found_title", body, handle)


def unknown_prefix_page(reader: Reader, handle: str) -> Page:
    prefix = handle.split("/", 1)[0]
    body = t(reader.lang, "unknown_prefix_body").format(handle=_shown(handle), prefix=_shown(prefix))
    return _error(reader, 404, "unknown_prefix_title", body, handle)


def unreadable_page(reader: Reader, handle: str, status: int = 500, key: str = "unreadable") -> Page:
    body = t(reader.lang, f"{key}_body").format(handle=_shown(handle))
    return _error(reader, status, f"{key}_title", body, handle)


def _web_link(address, port: int, scheme: str, handle: str) -> str:
    host = f"[{address}]" if address.version == 6 else str(address)
    default = {"http": 80, "https": 443}[scheme]
    authority = host if port == default else f"{host}:{port}"
    return f"{scheme}://{authority}/{quote(handle, safe='/')}?noredirect"


def referral_page(reader: Reader, handle: str, site_values: tuple[HandleValue, ...]) -> Page:
    """`handle` is resolved by its enterprise's own node: that node's servers in words, a link to each of
    their web interfaces, and the page of the prefix handle whose HS_SITE says so."""
    lang = reader.lang
    prefix = handle.split("/", 1)[0]
    lines: list[str] = []
    links: list[str] = []
    for value in site_values:
        if value.type.upper() not in SITE_TYPES:
            continue
        try:
            site = decode_site(value.data)
        except HandleProtocolError:
            continue
        lines += describe_site(value.data)[1:]  # the servers, one line each
        for server in site.servers:
            for interface in server.interfaces:
                scheme = WEB_SCHEMES.get(interface.protocol)
                if scheme and len(links) < MAX_REFERRAL_LINKS:
                    links.append(_web_link(server.address, interface.port, scheme, handle))
    servers = "".join(f"<li>{escape(line)}</li>" for line in lines)
    extra = f'<ul class="tech"{lang_attr("en", lang)}>{servers}</ul>' if servers else ""
    extra += "".join(
        f'<p><a class="button" href="{escape(link)}" rel="noopener noreferrer">{t(lang, "referral_open")}</a></p>'
        for link in links
    )
    site_link = f'<a href="{escape(reader.handle_href("0.NA/" + prefix))}">0.NA/{escape(prefix)}</a>'
    extra += f'<p class="note">{t(lang, "referral_site").format(prefix=site_link)}</p>'
    body = t(lang, "referral_body").format(handle=_shown(handle))
    return _error(reader, 404, "referral_title", body, handle, extra)


def home_page(reader: Reader) -> Page:
    lang = reader.lang
    main = (
        f"<h1>{t(lang, 'home_title')}</h1><p>{t(lang, 'home_intro')}</p>{search_form(reader)}"
        f'<p class="note">{t(lang, "api")}: <code>GET /api/handles/{{handle}}</code> · '
        f'<a href="/api/stats">{t(lang, "statistics")}</a></p>'
    )
    return document(reader, t(lang, "home_title"), main)
