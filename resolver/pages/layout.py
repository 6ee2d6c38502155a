"""The frame every page of the node shares: the document head, one small inline style sheet (no external
asset, no font, no script), a header with the language switch, the search box, a footer; and the
Content-Security-Policy that allows exactly that style sheet.

Mobile-first: one column at phone widths (390 px), labels above their data; from WIDE_MIN_PX a label column
beside the data. Long identifiers break anywhere rather than widen the page. Pure: builds strings."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from html import escape
from urllib.parse import quote, urlencode

from resolver.pages.i18n import HTML_LANG, LANGUAGES, t

MAX_SEARCH_CHARS = 512  #: the search box takes what a handle can hold (common.MAX_HANDLE_BYTES) and no more
SEARCH_EXAMPLE = "88.100.101/PART-000001"  #: shown under the search box: a scenario identifier of the demo
WIDE_MIN_PX = 700  #: from this width the label column sits beside the data

#: The one style sheet, inline so that a page is one request; its hash is what the CSP allows.
STYLE = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans CJK SC","Microsoft YaHei",sans-serif;color:#1b1f24;background:#f4f6f8}
a{color:#0b5cad}
header.top,main,footer{max-width:60rem;margin:0 auto;padding:0 1rem}
header.top{display:flex;flex-wrap:wrap;gap:.25rem 1rem;justify-content:space-between;align-items:center;padding-top:.6rem;padding-bottom:.6rem;font-size:.9rem}
header.top .site{font-weight:600;color:#1b1f24;text-decoration:none}
nav.langs a,nav.langs strong{margin-left:.6rem}
main{background:#fff;border-radius:.5rem;padding-top:1rem;padding-bottom:1rem}
h1{font-size:1.35rem;line-height:1.3;margin:.2rem 0 .4rem;overflow-wrap:anywhere}
h2{font-size:1.05rem;margin:1.4rem 0 .5rem;padding-bottom:.2rem;border-bottom:1px solid #e3e7eb}
.kind{display:inline-block;font-size:.8rem;color:#4a5560;background:#e9eef3;border-radius:1rem;padding:.05rem .6rem;margin:0}
.handle{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9rem;color:#4a5560;overflow-wrap:anywhere;margin:.2rem 0}
.button{display:inline-block;background:#0b5cad;color:#fff;padding:.5rem 1rem;border-radius:.4rem;text-decoration:none;margin:.5rem 0}
dl.fields{margin:0}
dl.fields>div{padding:.45rem 0;border-bottom:1px solid #eef1f4}
dt{font-size:.8rem;color:#5b6670}
dd{margin:0;overflow-wrap:anywhere}
dd .more{display:block;font-size:.85rem;color:#5b6670}
.note{color:#5b6670;font-size:.9rem}
ol.chain{list-style:none;margin:0;padding:0 0 0 .9rem;border-left:2px solid #c9d3dc}
ol.chain li{position:relative;margin:0 0 .8rem;padding-left:.6rem;overflow-wrap:anywhere}
ol.chain li::before{content:"";position:absolute;left:-1.3rem;top:.45rem;width:.7rem;height:.7rem;border-radius:50%;background:#0b5cad}
ol.chain li.dim::before{background:#c9d3dc}
ol.chain .d1{margin-left:.8rem}ol.chain .d2{margin-left:1.6rem}ol.chain .d3{margin-left:2.4rem}
ol.chain .edge{display:block;font-size:.8rem;color:#5b6670}
ol.chain .sum{display:block}
ol.chain time,ol.chain .kind{margin-right:.4rem}
details{margin-top:1.2rem}
summary{cursor:pointer;color:#0b5cad}
ul.tech{list-style:none;padding:0;margin:.5rem 0;font-size:.85rem}
ul.tech li{padding:.35rem 0;border-bottom:1px solid #eef1f4;overflow-wrap:anywhere}
ul.tech .meta{color:#5b6670;display:block}
form.search{margin:1.2rem 0 .4rem;display:flex;flex-wrap:wrap;gap:.4rem}
form.search label{flex-basis:100%;font-size:.9rem}
form.search input[type=text]{flex:1 1 12rem;min-width:0;font:inherit;padding:.45rem .6rem;border:1px solid #b8c2cc;border-radius:.4rem}
form.search button{font:inherit;padding:.45rem 1rem;border:0;border-radius:.4rem;background:#0b5cad;color:#fff}
footer{font-size:.85rem;color:#5b6670;padding-top:.8rem;padding-bottom:1.5rem}
@media (min-width:700px){
main{padding:1.5rem 2rem}
h1{font-size:1.6rem}
dl.fields>div{display:grid;grid-template-columns:14rem 1fr;gap:1rem}
dt{font-size:.9rem}
}
""".strip()
STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
#: Nothing but the inline style sheet above: no script, image, font, frame or connection; forms post back
#: here; no page can be framed (clickjacking) or change its base URL.
CONTENT_SECURITY_POLICY = f"default-src 'none'; style-src '{STYLE_HASH}'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"


@dataclass(frozen=True, slots=True)
class Reader:
    """Who reads a page: its language, whether they chose it (`?lang=`, carried on the page's own links), and
    the page's path and query without `lang` (for the language switch)."""

    lang: str
    chosen: bool = False
    path: str = "/"
    query: tuple[tuple[str, str], ...] = ()

    def handle_href(self, handle: str) -> str:
        """The link to an identifier's page (never redirected to its URL: the reader is following a chain)."""
        href = "/" + quote(handle, safe="/") + "?noredirect"
        return href + (f"&lang={self.lang}" if self.chosen else "")

    def href(self, path: str) -> str:
        return path + (("&" if "?" in path else "?") + f"lang={self.lang}" if self.chosen else "")

    def switch_href(self, lang: str) -> str:
        return quote(self.path, safe="/") + "?" + urlencode((*self.query, ("lang", lang)))


@dataclass(frozen=True, slots=True)
class Page:
    """A rendered page: its HTTP status, its language and its HTML."""

    status: int
    lang: str
    html: str


def lang_attr(shown: str | None, page: str) -> str:
    """` lang="x"` for content in another language than the page's, else nothing."""
    return f' lang="{HTML_LANG[shown]}"' if shown and shown != page and shown in HTML_LANG else ""


def search_form(reader: Reader, value: str = "") -> str:
    lang = reader.lang
    hidden = f'<input type="hidden" name="lang" value="{lang}">' if reader.chosen else ""
    example = f"<code>{escape(SEARCH_EXAMPLE)}</code>"
    return (
        '<form class="search" action="/" method="get" role="search">'
        f'<label for="q">{t(lang, "search_label")}</label>'
        f'<input type="text" id="q" name="handle" value="{escape(value)}" maxlength="{MAX_SEARCH_CHARS}" required'
        f' autocapitalize="characters" autocorrect="off" spellcheck="false" placeholder="{escape(SEARCH_EXAMPLE)}">'
        '<input type="hidden" name="noredirect" value="1">'
        f"{hidden}<button>{t(lang, 'search_button')}</button></form>"
        f'<p class="note">{t(lang, "search_hint").format(example=example)}</p>'
    )


def document(reader: Reader, title: str, main: str, status: int = 200, footer: str = "") -> Page:
    """The whole page around `main` (HTML), titled `title` (text)."""
    lang = reader.lang
    switch = "".join(
        f"<strong>{_LANG_NAMES[other]}</strong>"
        if other == lang
        else f'<a href="{escape(reader.switch_href(other))}" lang="{HTML_LANG[other]}" hreflang="{HTML_LANG[other]}">'
        f"{_LANG_NAMES[other]}</a>"
        for other in LANGUAGES
    )
    html = (
        f'<!doctype html><html lang="{HTML_LANG[lang]}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="same-origin">'
        f"<title>{escape(title)} · idnode</title><style>{STYLE}</style></head><body>"
        f'<header class="top"><a class="site" href="{escape(reader.href("/"))}">{t(lang, "site")}</a>'
        f'<nav class="langs" aria-label="{t(lang, "language")}">{switch}</nav></header>'
        f"<main>{main}</main>"
        f"<footer>{footer}</footer></body></html>"
    )
    return Page(status, lang, html)


_LANG_NAMES = {"zh": "中文", "en": "English"}
