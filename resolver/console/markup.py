"""HTML built so that nothing reaches a page unescaped: `Html` marks text that is already markup, `render`
fills a template (a literal in the code, trusted) escaping every argument that is not `Html`, `join` joins
pieces the same way. A handle, a value, a user name or a message can therefore carry `<script>` and arrive as
text. No I/O."""

from __future__ import annotations

import html
import string
from collections.abc import Iterable
from typing import Any


class Html(str):
    """A string that is markup already: `render` and `join` put it in as it is."""

    __slots__ = ()


def esc(value: Any) -> Html:
    """`value` as HTML text: escaped (quotes too, so it may stand in an attribute), unless it is Html."""
    if isinstance(value, Html):
        return value
    return Html(html.escape(str(value), quote=True))


class _Escaping(string.Formatter):
    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, Html) and not format_spec:
            return value
        return html.escape(format(value, format_spec), quote=True)


_FORMATTER = _Escaping()


def render(template: str, /, *args: Any, **kwargs: Any) -> Html:
    """`template.format(...)` with every argument escaped unless it is Html (format specs such as `{n:,}`
    apply before escaping)."""
    return Html(_FORMATTER.format(template, *args, **kwargs))


def join(parts: Iterable[Any], sep: str = "") -> Html:
    """The parts, each escaped unless Html, joined by `sep` (markup: a literal in the code)."""
    return Html(sep.join(esc(p) for p in parts))
