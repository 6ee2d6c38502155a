"""Batch upload in the workspace, `GET|POST /ent/upload`: a CSV or NDJSON file in the `idnode load` formats,
written in batches of at most MAX_BATCH_ITEMS by the HTTP API's own batch write (resolver/http/batch.py:
write_batch, the write policy and template checks through the node's writer). Without JavaScript the
progress is the result page: the counts created, replaced and refused, and each refused line with its reason.
Batches are written one after another, so a file larger than one batch is written in part when the node goes
away midway: the page says how far it got. "All or nothing" is offered for files of one batch."""

from __future__ import annotations

import orjson
from aiohttp import web

from resolver.console.layout import page
from resolver.console.login import FORM, MAX_FORM_BYTES, PageUser, signed_in
from resolver.console.markup import Html, join, render
from resolver.console.workspace import edit_href
from resolver.http.batch import write_batch
from resolver.http.common import MAX_BATCH_BODY_BYTES
from resolver.http.context import CONTEXT, actor_of
from resolver.writer.client import WriterUnavailable
from storage.csvinput import csv_records
from storage.store import StoreFullError
from storage.writes import MAX_BATCH_ITEMS

MAX_UPLOAD_BYTES = MAX_BATCH_BODY_BYTES  #: a file as large as the API's largest batch body
MAX_UPLOAD_ITEMS = 10 * MAX_BATCH_ITEMS  #: identifiers per file: ten batches, a few seconds of writing
MAX_ERRORS_SHOWN = 500  #: refused lines listed on the result page; the counts cover them all

_FORM = """<section><h1>批量上传 · Upload identifiers</h1>{message}
<form class="stack" method="post" action="/ent/upload" enctype="multipart/form-data">
<input type="hidden" name="csrf" value="{csrf}">
<label for="file">文件 file (.csv or .ndjson)</label><input type="file" id="file" name="file" accept=".csv,.ndjson,.jsonl,.json,text/csv" required>
<span class="check">NDJSON: one identifier a line, {{"handle", "values"}}, as for <code>idnode load</code> ·
CSV: header handle,index,type,data[,format,ttl,permissions,timestamp], one value a row ·
at most {max_items:,} identifiers and {max_mib} MiB · every identifier under {prefix}/ and checked against its template</span>
<label><input type="checkbox" name="overwrite" value="1"> 覆盖已有 replace identifiers that exist (otherwise they are refused)</label>
<label><input type="checkbox" name="atomic" value="1"> 全部或全不 all or nothing (files of at most {batch:,} identifiers)</label>
<button class="primary">上传 upload</button></form></section>"""


def _form_page(user: PageUser, message: str = "", status: int = 200) -> web.Response:
    flash = render('<p class="flash error">{}</p>', message) if message else Html("")
    body = render(
        _FORM, message=flash, csrf=user.csrf, max_items=MAX_UPLOAD_ITEMS, max_mib=MAX_UPLOAD_BYTES >> 20,
        prefix=user.identity.prefix.decode(), batch=MAX_BATCH_ITEMS,
    )  # fmt: skip
    return page("upload", body, status=status, header=user.header())


@signed_in(operator=False)
async def upload_form(request: web.Request, user: PageUser) -> web.StreamResponse:
    return _form_page(user)


def parse_upload(name: str, data: bytes) -> list[tuple[int, object]]:
    """(line, record or its error) per identifier of an uploaded file: CSV by its name, else NDJSON."""
    text = data.decode("utf-8-sig")
    if name.lower().endswith(".csv"):
        return csv_records(text)
    out: list[tuple[int, object]] = []
    for n, line in enumerate(text.split("\n"), 1):
        if line.strip():
            try:
                out.append((n, orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                out.append((n, exc))
    return out


@signed_in(operator=False, form_limit=MAX_UPLOAD_BYTES + MAX_FORM_BYTES)
async def upload(request: web.Request, user: PageUser) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    form = request[FORM]
    sent = form.get("file")
    if not isinstance(sent, web.FileField):
        return _form_page(user, "choose a file to upload", 400)
    data = sent.file.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        return _form_page(user, f"the file is larger than {MAX_UPLOAD_BYTES >> 20} MiB", 413)
    try:
        records = parse_upload(sent.filename or "", data)
    except UnicodeDecodeError as exc:
        return _form_page(user, f"the file is not UTF-8 text (byte {exc.start})", 400)
    if not records:
        return _form_page(user, "the file holds no identifiers", 400)
    if len(records) > MAX_UPLOAD_ITEMS:
        return _form_page(user, f"{len(records):,} identifiers: at most {MAX_UPLOAD_ITEMS:,} per file", 413)
    atomic = form.get("atomic") == "1"
    if atomic and len(records) > MAX_BATCH_ITEMS:
        return _form_page(user, f"all or nothing takes files of at most {MAX_BATCH_ITEMS:,} identifiers", 400)
    overwrite = form.get("overwrite") == "1"
    actor = actor_of(user.identity, request)
    created = replaced = failed = 0
    refused: list[dict] = []
    written: list[str] = []
    stopped = ""
    for start in range(0, len(records), MAX_BATCH_ITEMS):
        batch = records[start : start + MAX_BATCH_ITEMS]
        try:
            result = await write_batch(ctx, user.identity, actor, batch, atomic=atomic, overwrite=overwrite)
        except (WriterUnavailable, StoreFullError) as exc:
            stopped = f"stopped at line {batch[0][0]}: {exc}; the lines before it were written"
            break
        created += result.created
        replaced += result.replaced
        failed += result.failed
        for entry in result.results:
            if entry["responseCode"] == 1 and result.written:
                if len(written) < MAX_ERRORS_SHOWN:
                    written.append(entry["handle"])
            elif "message" in entry:
                refused.append(entry)
    return _result_page(user, sent.filename or "", len(records), created, replaced, failed, refused, written,
                        atomic, stopped)  # fmt: skip


def _result_page(
    user, filename, total, created, replaced, failed, refused, written, atomic, stopped
) -> web.Response:
    rows = join(
        render('<tr><td class="num">{}</td><td class="wrap">{}</td><td class="wrap err">{}</td></tr>',
               e["position"], e.get("handle", ""), e["message"])
        for e in refused[:MAX_ERRORS_SHOWN]
    )  # fmt: skip
    more = render('<p class="muted">… and {:,} more refused lines.</p>', len(refused) - MAX_ERRORS_SHOWN) if len(
        refused) > MAX_ERRORS_SHOWN else Html("")  # fmt: skip
    nothing = atomic and failed
    summary = render(
        '<div class="cards"><div class="card">文件 file<div class="value wrap">{}</div></div>'
        '<div class="card">标识 identifiers<div class="value">{:,}</div></div>'
        '<div class="card">新建 created<div class="value ok">{:,}</div></div>'
        '<div class="card">替换 replaced<div class="value">{:,}</div></div>'
        '<div class="card">拒绝 refused<div class="value bad">{:,}</div></div></div>',
        filename, total, created, replaced, failed,
    )  # fmt: skip
    notes = []
    if nothing:
        notes.append(
            render(
                '<p class="flash error">all or nothing: {:,} lines were refused, so nothing was written</p>',
                failed,
            )
        )
    if stopped:
        notes.append(render('<p class="flash error">{}</p>', stopped))
    table = render(
        "<h2>被拒绝的行 refused lines</h2><table><tr><th class=num>line</th><th>handle</th><th>reason</th></tr>{}</table>{}",
        rows, more,
    ) if refused else Html("")  # fmt: skip
    done = join(render('<a href="{}">{}</a>', edit_href(h), h) for h in written[:20])
    done_html = (
        render('<h2>已写入 written</h2><p class="wrap">{} {}</p>', done, "…" if len(written) > 20 else "")
        if written
        else Html("")
    )
    body = render(
        '<section><h1>上传结果 · Upload result</h1>{summary}{notes}{table}{done}'
        '<p><a href="/ent/upload">再上传 upload another</a> · <a href="/ent">← 标识 identifiers</a></p></section>',
        summary=summary, notes=join(notes), table=table, done=done_html,
    )  # fmt: skip
    status = 200 if created + replaced or not failed else 422
    return page("upload result", body, status=status, header=user.header())
