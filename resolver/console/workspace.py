"""An enterprise's workspace, `GET /ent`: its identifiers a page at a time, searchable by the beginning of the
handle and by the text of a template field, with links to edit each one and to the public page. Pages are
keyed by the last handle shown (storage/browse.py), so page 500 costs what page 1 does; a field search looks
at a bounded number of records per page and offers to go on."""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from resolver.console.layout import page
from resolver.console.login import PageUser, signed_in
from resolver.console.markup import Html, join, render
from resolver.handle.constants import MAX_HANDLE_BYTES
from resolver.handle.describe import describe_data
from resolver.handle.values import HandleValue
from resolver.http.context import CONTEXT
from resolver.templates import TemplateSet, template_set_in
from storage import browse
from storage.keys import handle_key

PAGE_ROWS = 50  #: identifiers per page: a phone scrolls it, a desk reads it at once
MAX_SEARCH_CHARS = 256  #: searched text longer than this is not a search
SUMMARY_CHARS = 80  #: of an identifier's summary shown in the list


def template_set_of(ctx, prefix_key: bytes) -> TemplateSet | None:
    with ctx.store.env.begin() as txn:
        return template_set_in(ctx.store, txn, prefix_key)


def summary(values: list[HandleValue], template_set: TemplateSet | None, suffix: str) -> tuple[str, str]:
    """(template name or "", a line that tells the identifier apart: its DESC, else its first field)."""
    template = template_set.template_for(suffix) if template_set else None
    for v in values:
        if v.type.upper() == "DESC":
            text = describe_data(v.type, v.data)[0]
            return (template.name if template else ""), text[:SUMMARY_CHARS]
    if template is not None:
        by_index = {v.index: v for v in values}
        for f in template.fields:
            if f.index in by_index:
                value = by_index[f.index]
                return template.name, f"{f.name}: {describe_data(value.type, value.data)[0]}"[:SUMMARY_CHARS]
    return (template.name if template else ""), ""


def field_indexes(template_set: TemplateSet | None) -> dict[str, list[int]]:
    """Template field name -> the value indexes it has in the prefix's templates (a name may recur)."""
    out: dict[str, list[int]] = {}
    for template in template_set.templates if template_set else ():
        for f in template.fields:
            if f.index not in out.setdefault(f.name, []):
                out[f.name].append(f.index)
    return out


def edit_href(handle: str) -> str:
    from urllib.parse import quote

    return "/ent/edit/" + quote(handle, safe="/")


def public_href(handle: str) -> str:
    from urllib.parse import quote

    return "/" + quote(handle, safe="/") + "?noredirect"


@signed_in(operator=False)
async def identifiers(request: web.Request, user: PageUser) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    ctx.service.refresh()
    prefix_key = user.identity.prefix
    assert prefix_key is not None
    prefix = prefix_key.decode()
    query = request.query
    q = query.get("q", "").strip()[:MAX_SEARCH_CHARS]
    field = query.get("field", "")
    text = query.get("value", "").strip()[:MAX_SEARCH_CHARS]
    after_text = query.get("after", "")[: MAX_HANDLE_BYTES + 1]
    template_set = template_set_of(ctx, prefix_key)
    fields = field_indexes(template_set)
    base = prefix_key + b"/"
    start = handle_key(base + q.encode(), ctx.store.case_sensitive) if q else base
    after = after_text.encode() if after_text.encode().startswith(start) else None
    total, more_total = browse.count_under(ctx.store, base)
    if field in fields and text:
        wanted, needle = set(fields[field]), text.casefold()

        def matches(values: list[HandleValue]) -> bool:
            return any(
                v.index in wanted and needle in v.data.decode("utf-8", "replace").casefold() for v in values
            )

        listing = browse.search_page(ctx.store, start, after, PAGE_ROWS, matches)
    else:
        field = ""
        listing = browse.list_page(ctx.store, start, after, PAGE_ROWS)
    rows = []
    for key, values in listing.rows:
        handle = key.decode(errors="replace")
        template, line = summary(values, template_set, handle[len(prefix) + 1 :])
        rows.append(render(
            '<tr><td class="wrap"><a href="{}">{}</a></td><td>{}</td><td class="wrap">{}</td>'
            '<td><a href="{}">公开页 public</a></td></tr>',
            edit_href(handle), handle, template, line, public_href(handle),
        ))  # fmt: skip
    options = join(
        [render('<option value="">（任意 any field）</option>')]
        + [render('<option value="{0}"{1}>{0}</option>', name, Html(" selected" if name == field else ""))
           for name in sorted(fields)]
    )  # fmt: skip
    searching = render(
        '<form class="inline" method="get" action="/ent"><label>标识开头 handle begins with {prefix}/ '
        '<input type="text" name="q" value="{q}" size="18"></label> '
        '<label>字段 field <select name="field">{options}</select></label> '
        '<label>含 contains <input type="text" name="value" value="{text}" size="14"></label> '
        "<button>搜索 search</button></form>",
        prefix=prefix, q=q, options=options, text=text,
    )  # fmt: skip
    counted = f"{total:,}+" if more_total else f"{total:,}"
    if listing.scanned:
        found = render(
            '<p class="muted">{} found among {:,} identifiers looked at on this page.</p>',
            len(rows),
            listing.scanned,
        )
    else:
        found = render('<p class="muted">{} shown.</p>', len(rows))
    more = Html("")
    if listing.next_after is not None:
        params = {"q": q, "field": field, "value": text, "after": listing.next_after.decode(errors="replace")}
        more = render(
            '<nav class="pages"><a href="/ent?{}">下一页 next page →</a></nav>',
            urlencode({k: v for k, v in params.items() if v}),
        )
    first = render('<a href="/ent">第一页 first page</a>') if after is not None else Html("")
    news = join(
        render('<a href="/ent/new?template={0}">新建 new {0}</a>', t.name) for t in template_set.templates
    ) if template_set else render('<a href="/ent/new">新建 new identifier</a>')  # fmt: skip
    body = render(
        "<h1>{prefix} 的标识 · identifiers</h1>"
        '<section><p>{counted} identifiers under {prefix}/ · {news} · <a href="/ent/upload">批量上传 upload</a></p>'
        "{searching}</section>"
        "<section>{found}<table><tr><th>标识 handle</th><th>模板 template</th><th>摘要 summary</th><th></th></tr>"
        "{rows}</table>{more} {first}</section>",
        prefix=prefix, counted=counted, news=news, searching=searching, found=found, rows=join(rows), more=more,
        first=first,
    )  # fmt: skip
    return page(f"{prefix} identifiers", body, header=user.header())
