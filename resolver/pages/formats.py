"""A value's data as HTML, by its kind: a web address as a link (http and https only), an email address as a
mailto link, a date as a date in the reader's language, an identifier reference as a link to its page with
the referenced item's label, HS_ADMIN/HS_SITE/HS_VLIST and binary data in words (resolver/handle/describe.py,
the rule `idnode resolve` follows), and text as text. Everything that came from the store is escaped here.
Pure: no I/O."""

from __future__ import annotations

import re
from datetime import date
from html import escape
from urllib.parse import urlsplit

from resolver.handle.describe import describe_data, plain_text
from resolver.handle.values import HandleValue
from resolver.pages.i18n import format_date, text_language
from resolver.pages.layout import Reader, lang_attr

LINK_SCHEMES = ("http", "https")  #: web addresses that become links; others (javascript:, data:) stay text
MAX_LINKED_CHARS = 2048  #: longer "addresses" are shown as text: no browser or QR code carries more
MAX_REFERENCE_CHARS = 256  #: a text value is taken for an identifier reference up to this length

_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_EMAIL = re.compile(r"[^\s@<>\"'()\[\],;:\\]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,63}")
_HANDLE = re.compile(r"(?:0\.NA|\d+(?:\.\d+)*)/[^\s<>\"']+")


def as_date(text: str) -> date | None:
    """The calendar date a value holds as YYYY-MM-DD (what the scenario templates ask for), or None."""
    match = _DATE.fullmatch(text)
    if match is None:
        return None
    try:
        return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        return None


def date_html(day: date, lang: str) -> str:
    return f'<time datetime="{day.isoformat()}">{escape(format_date(day, lang))}</time>'


def web_address(text: str) -> str | None:
    """`text` when it is an http(s) URL a browser may be sent to, else None."""
    if len(text) > MAX_LINKED_CHARS or not text.isprintable() or " " in text:
        return None
    parts = urlsplit(text)
    return text if parts.scheme.lower() in LINK_SCHEMES and parts.netloc else None


def looks_like_handle(text: str) -> bool:
    return len(text) <= MAX_REFERENCE_CHARS and _HANDLE.fullmatch(text) is not None


def reference_html(handle: str, reader: Reader, label: str = "", missing: bool = False) -> str:
    """A link to the page of `handle`, with the referenced item's label under it when there is one."""
    link = f'<a href="{escape(reader.handle_href(handle))}">{escape(handle)}</a>'
    if label:
        link += f'<span class="more"{lang_attr(text_language(label), reader.lang)}>{escape(label)}</span>'
    return link


def data_html(value: HandleValue, reader: Reader) -> str:
    """The data of `value` for a page (one HTML fragment, escaped)."""
    text = plain_text(value.type, value.data)
    if text is None:  # structured or binary: in words, one line each (describe.py writes English)
        lines = describe_data(value.type, value.data)
        return (
            f"<span{lang_attr('en', reader.lang)}>" + "<br>".join(escape(line) for line in lines) + "</span>"
        )
    kind = value.type.upper()
    url = web_address(text.strip())
    if url is not None:
        return f'<a href="{escape(url)}" rel="noopener noreferrer">{escape(url)}</a>'
    if kind == "EMAIL" and _EMAIL.fullmatch(text.strip()):
        address = text.strip()
        return f'<a href="mailto:{escape(address)}">{escape(address)}</a>'
    day = as_date(text.strip())
    if day is not None:
        return date_html(day, reader.lang)
    if looks_like_handle(text):
        return reference_html(text, reader)
    return f"<span{lang_attr(text_language(text), reader.lang)}>{escape(text)}</span>"
