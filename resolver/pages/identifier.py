"""The page of one identifier (`GET /{handle}` with `?noredirect`, or a record without a web address): what the
item is (its template's label, its description), a button to its web address, its template's fields labelled
in the reader's language and formatted by kind, the chain of references `idnode trace` follows as a timeline,
the other values, and the technical details (administrators, sites, every value's index, type and time)
folded away. Pure: renders IdentifierFacts (resolver/pages/facts.py)."""

from __future__ import annotations

import re
from html import escape
from urllib.parse import quote

from resolver.handle.describe import STRUCTURED_TYPES, plain_text
from resolver.handle.values import HandleValue
from resolver.pages.facts import IdentifierFacts
from resolver.pages.formats import as_date, data_html, date_html, reference_html, web_address
from resolver.pages.i18n import TYPE_LABELS, humanize, pick_label, t, text_language
from resolver.pages.layout import Page, Reader, document, lang_attr, search_form
from resolver.templates import Field, Template, TraceNode
from storage.jsonvalues import format_timestamp

MAX_CHAIN_ITEMS = 200  #: timeline entries shown; the trace stops at 500 identifiers, a page long before
_TAGS = re.compile("<[^>]*>")
MAX_INDENT = 3  #: the timeline indents at most this many levels, so a deep chain still fits a phone


def _label_html(text: str, text_lang: str | None, page_lang: str) -> str:
    return f"<span{lang_attr(text_lang, page_lang)}>{escape(text)}</span>"


def field_label(field: Field, lang: str) -> str:
    """A template field's name for the reader: its label in their language, else the name read as English."""
    picked = pick_label(field.labels, lang)
    if picked is None:
        return _label_html(humanize(field.name), "en", lang)
    return _label_html(picked[0], picked[1], lang)


def template_label(template: Template | None, lang: str) -> str:
    if template is None:
        return ""
    picked = pick_label(template.labels, lang)
    text, text_lang = picked if picked else (humanize(template.name), "en")
    return f'<span class="kind"{lang_attr(text_lang, lang)}>{escape(text)}</span>'


def type_label(vtype: str, lang: str) -> str:
    known = TYPE_LABELS.get(vtype.upper())
    if known is None:
        return f"<span>{escape(vtype or '—')}</span>"  # a type code is no language
    return escape(known.get(lang, known["en"]))


def _title(values: tuple[HandleValue, ...]) -> HandleValue | None:
    for value in values:
        if value.type.upper() == "DESC" and plain_text(value.type, value.data):
            return value
    return None


def _first_url(values: tuple[HandleValue, ...]) -> tuple[HandleValue, str] | None:
    for value in values:
        if value.type.upper() == "URL":
            text = plain_text(value.type, value.data)
            url = web_address(text.strip()) if text else None
            if url:
                return value, url
    return None


def _field_values(template: Template | None, values) -> list[tuple[Field, HandleValue]]:
    if template is None:
        return []
    by_index = {v.index: v for v in values}
    return [
        (f, by_index[f.index])
        for f in template.fields
        if f.index in by_index and by_index[f.index].type.upper() == f.type.upper()
    ]


def _node_label(node: TraceNode, lang: str) -> str:
    """The referenced item in words, as `idnode trace` prints it (its description), for a link's second line."""
    if node.missing:
        return t(lang, "not_found_here")
    return node.summary


def _details(facts: IdentifierFacts, reader: Reader, fields: list[tuple[Field, HandleValue]]) -> str:
    lang = reader.lang
    linked = {label: child for label, child in (facts.chain.links or [])} if facts.chain else {}
    rows = []
    for field, value in fields:
        child = linked.get(field.name) if field.reference is not None else None
        text = plain_text(value.type, value.data)
        if field.reference is not None and text:
            data = reference_html(text, reader, _node_label(child, lang) if child else "")
        else:
            data = data_html(value, reader)
        rows.append(f"<div><dt>{field_label(field, lang)}</dt><dd>{data}</dd></div>")
    return f'<h2>{t(lang, "details")}</h2><dl class="fields">{"".join(rows)}</dl>' if rows else ""


def _edge_label(parent: TraceNode, label: str, facts: IdentifierFacts, lang: str) -> str:
    template = facts.template_of(parent.handle)
    for field in template.fields if template else ():
        if field.name == label:
            return field_label(field, lang)
    return type_label(label, lang)


def _node_date(node: TraceNode, facts: IdentifierFacts, lang: str) -> str:
    """The first date among the node's template fields (production, assembly, maintenance date)."""
    for _field, value in _field_values(facts.template_of(node.handle), node.values):
        text = plain_text(value.type, value.data)
        day = as_date(text.strip()) if text else None
        if day is not None:
            return date_html(day, lang)
    return ""


def _text_of(fragment: str) -> str:
    return _TAGS.sub("", fragment)


def _chain(facts: IdentifierFacts, reader: Reader) -> str:
    root = facts.chain
    if root is None or not root.links:
        return ""
    lang = reader.lang
    items: list[str] = []

    def visit(parent: TraceNode, depth: int) -> None:
        for label, node in parent.links or []:
            if len(items) >= MAX_CHAIN_ITEMS:
                return
            indent = f" d{min(depth, MAX_INDENT)}" if depth else ""
            edge = f'<span class="edge">{_edge_label(parent, label, facts, lang)}</span>'
            link = f'<a href="{escape(reader.handle_href(node.handle))}">{escape(node.handle)}</a>'
            if node.missing:
                note = f' <span class="note">({t(lang, "not_found_here")})</span>'
                items.append(f'<li class="dim{indent}">{edge}{escape(node.handle)}{note}</li>')
                continue
            if node.seen_before:
                if node.handle != root.handle:  # a reference back to this page says nothing new
                    note = f' <span class="note">({t(lang, "shown_above")})</span>'
                    items.append(f'<li class="dim{indent}">{edge}{link}{note}</li>')
                continue
            kind = template_label(facts.template_of(node.handle), lang)
            if _text_of(kind) == _text_of(edge):  # "Spare part" twice says it once
                kind = ""
            summary = node.summary
            sum_html = (
                f'<span class="sum"{lang_attr(text_language(summary), lang)}>{escape(summary)}</span>'
                if summary
                else ""
            )
            items.append(
                f'<li class="{indent.strip()}">{edge}{link}<span class="sum">{kind}'
                f"{_node_date(node, facts, lang)}</span>{sum_html}</li>"
            )
            visit(node, depth + 1)

    visit(root, 0)
    return (
        f'<h2>{t(lang, "chain")}</h2><p class="note">{t(lang, "chain_intro")}</p>'
        f'<ol class="chain">{"".join(items)}</ol>'
    )


def _more(values, reader: Reader, shown: set[int]) -> str:
    rows = [
        f"<div><dt>{type_label(v.type, reader.lang)}</dt><dd>{data_html(v, reader)}</dd></div>"
        for v in values
        if v.index not in shown and v.type.upper() not in STRUCTURED_TYPES
    ]
    return f'<h2>{t(reader.lang, "more")}</h2><dl class="fields">{"".join(rows)}</dl>' if rows else ""


def _technical(values, reader: Reader) -> str:
    lang = reader.lang
    if not values:
        return ""
    rows = []
    for v in values:
        meta = [f"{t(lang, 'index')} {v.index}", escape(v.type or "—")]
        if v.timestamp:
            meta.append(
                f'<time datetime="{format_timestamp(v.timestamp)}">{format_timestamp(v.timestamp)}</time>'
            )
        if v.ttl_type == 0:
            meta.append(f"{t(lang, 'ttl')} {t(lang, 'ttl_seconds').format(n=v.ttl)}")
        data = ""
        if v.type.upper() in STRUCTURED_TYPES:
            data = f"<div><b>{type_label(v.type, lang)}</b>: {data_html(v, reader)}</div>"
        rows.append(f'<li><span class="meta">{" · ".join(meta)}</span>{data}</li>')
    return (
        f'<details><summary>{t(lang, "technical")}</summary><ul class="tech">{"".join(rows)}</ul></details>'
    )


def render_identifier(facts: IdentifierFacts, reader: Reader) -> Page:
    lang = reader.lang
    values = facts.values
    template = facts.template
    title_value = _title(values)
    title = plain_text("DESC", title_value.data) if title_value else None
    shown = {title_value.index} if title_value else set()
    head = template_label(template, lang)
    if title:
        head += f"<h1{lang_attr(text_language(title), lang)}>{escape(title)}</h1>"
        head += f'<p class="handle">{escape(facts.handle)}</p>'
    else:
        head += f'<h1 class="handle">{escape(facts.handle)}</h1>'
    url = _first_url(values)
    if url is not None:
        shown.add(url[0].index)
        head += f'<p><a class="button" href="{escape(url[1])}" rel="noopener noreferrer">{t(lang, "open_url")}</a></p>'
    if not values:
        head += f'<p class="note">{t(lang, "no_values")}</p>'
    fields = _field_values(template, values)
    shown.update(value.index for _f, value in fields)
    main = (
        head
        + _details(facts, reader, fields)
        + _chain(facts, reader)
        + _more(values, reader, shown)
        + _technical(values, reader)
        + search_form(reader)
    )
    footer = (
        f'<a href="/api/handles/{escape(quote(facts.handle, safe="/"))}">{t(lang, "json")}</a>'
        f" · {escape(t(lang, 'site'))} idnode"
    )
    return document(reader, title or facts.handle, main, 200, footer)
