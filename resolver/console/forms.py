"""One identifier created or edited through a form built from its prefix's template: a field per template
field, its checks written next to it (required, type, pattern, lengths, allowed values, what it must refer
to), plus the URL and description every identifier may carry. What is sent is written by the HTTP API's own
write (resolver/http/writes.py: write_identifier, the write policy and template checks through the node's
writer); a refusal is shown next to the field it names, with what was typed kept.

Editing replaces the fields of the form and keeps every other value as it is (HS_ADMIN, keys, values the
form does not show). The form carries a digest of the record as it was read: when the record changed in
between (another tab, the API), the edit is refused rather than silently undoing that change."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from resolver.console.layout import page
from resolver.console.login import FORM, PageUser, redirect, signed_in
from resolver.console.markup import Html, join, render
from resolver.console.workspace import edit_href, public_href, template_set_of
from resolver.handle.constants import ResponseCode
from resolver.handle.describe import describe_data, plain_text
from resolver.handle.values import HandleValue, encode_value
from resolver.http.common import HttpError, check_handle, error_from_write
from resolver.http.context import CONTEXT, actor_of
from resolver.http.writes import write_identifier
from resolver.templates import Field, Template, TemplateSet
from storage import browse
from storage.jsonvalues import ValueFormatError, value_from_json
from storage.keys import handle_key
from storage.writes import WriteError

MAX_FIELD_CHARS = 4096  #: one field's text; a template's maxLength is usually far below
URL_INDEX, DESC_INDEX = 1, 2  #: where a new identifier's URL and description go (the demo's convention)


@dataclass(frozen=True, slots=True)
class FormField:
    """One input: its form name, label, value index and type, and (for template fields) the field."""

    name: str
    label: str
    index: int
    type: str
    field: Field | None = None
    description: str = ""


def _descriptions(template_set: TemplateSet | None, template: Template | None) -> dict[str, str]:
    if template_set is None or template is None:
        return {}
    for t in template_set.document.get("templates", []):
        if isinstance(t, dict) and t.get("name") == template.name:
            return {
                f.get("name"): str(f.get("description", ""))
                for f in t.get("fields", [])
                if isinstance(f, dict)
            }
    return {}


def form_fields(
    template_set: TemplateSet | None, template: Template | None, values: list[HandleValue]
) -> list[FormField]:
    """The inputs of the form: URL and DESC (at the index they hold, or a free one), then the template's."""
    taken = {v.index for v in values}
    if template is not None:
        taken |= {f.index for f in template.fields}
    out = []
    for name, label, vtype, default in (("url", "网址 URL", "URL", URL_INDEX), ("desc", "描述 description", "DESC",
                                                                                DESC_INDEX)):  # fmt: skip
        held = next((v.index for v in values if v.type.upper() == vtype), None)
        index = held if held is not None else default
        while held is None and index in taken:
            index += 1
        taken.add(index)
        out.append(FormField(name, label, index, vtype))
    descriptions = _descriptions(template_set, template)
    for f in template.fields if template else ():
        out.append(FormField(f"f.{f.name}", f.name, f.index, f.type, f, descriptions.get(f.name, "")))
    return out


def checks_text(f: Field) -> list[str]:
    """A template field's checks in words, as shown next to its input."""
    out = [("必填 required" if f.required else "可选 optional"), f"type {f.type}", f"index {f.index}"]
    if f.min_length is not None and f.max_length is not None:
        out.append(f"{f.min_length}–{f.max_length} characters")
    elif f.min_length is not None:
        out.append(f"at least {f.min_length} characters")
    elif f.max_length is not None:
        out.append(f"at most {f.max_length} characters")
    if f.pattern is not None:
        out.append(f"matches {f.pattern.pattern}")
    if f.enum is not None:
        out.append("one of " + ", ".join(sorted(f.enum)))
    if f.reference is not None:
        ref = f.reference
        where = " or ".join(p.decode() for p in ref.prefixes) if ref.prefixes else "any prefix"
        what = f"a {ref.template} identifier" if ref.template else "an identifier"
        out.append(f"{what} under {where}" + (" that exists" if ref.must_exist else ""))
    return out


def _input(ff: FormField, value: str) -> Html:
    f = ff.field
    if f is not None and f.enum is not None:
        options = [render('<option value="">—</option>')] if not f.required or value not in f.enum else []
        options += [
            render('<option value="{0}"{1}>{0}</option>', e, Html(" selected" if e == value else ""))
            for e in sorted(f.enum)
        ]
        return render(
            '<select id="{0}" name="{0}"{1}>{2}</select>',
            ff.name,
            Html(" required" if f.required else ""),
            join(options),
        )
    attrs = []
    if f is not None and f.required:
        attrs.append(Html(" required"))
    if f is not None and f.max_length is not None:
        attrs.append(render(' maxlength="{}"', f.max_length))
    kind = "url" if ff.type == "URL" else "text"
    return render(
        '<input type="{kind}" id="{name}" name="{name}" value="{value}"{attrs}>',
        kind=kind,
        name=ff.name,
        value=value,
        attrs=join(attrs),
    )


def render_form(
    *, action: str, title: str, fields: list[FormField], typed: dict[str, str], errors: dict[str, str], csrf: str,
    suffix: str | None = None, suffix_check: str = "", version: str = "", kept: list[HandleValue] = (),
    message: str = "", template: str = "",
) -> Html:  # fmt: skip
    rows = []
    if suffix is not None:
        rows.append(render(
            '<label for="suffix">标识后缀 handle suffix</label><input type="text" id="suffix" name="suffix" value="{}" '
            'required><span class="check">{}</span>{}',
            suffix, suffix_check, _error(errors.get("handle")),
        ))  # fmt: skip
    for ff in fields:
        checks = (
            checks_text(ff.field) if ff.field else [f"type {ff.type}", f"index {ff.index}", "可选 optional"]
        )
        described = render(" — {}", ff.description) if ff.description else Html("")
        rows.append(render(
            '<label for="{name}">{label}{described}</label>{input}<span class="check">{checks}</span>{error}',
            name=ff.name, label=ff.label, described=described, input=_input(ff, typed.get(ff.name, "")),
            checks=" · ".join(checks), error=_error(errors.get(ff.name)),
        ))  # fmt: skip
    kept_rows = join(
        render("<tr><td>{}</td><td>{}</td><td class=\"wrap\">{}</td></tr>", v.index, v.type,
               Html("<br>".join(render("{}", line) for line in describe_data(v.type, v.data))))
        for v in kept
    )  # fmt: skip
    kept_html = (
        render("<h2>其他值 other values (kept as they are)</h2><table>{}</table>", kept_rows)
        if kept
        else Html("")
    )
    flash = render('<p class="flash error">{}</p>', message) if message else Html("")
    return render(
        '<section><h1>{title}</h1>{flash}<form class="stack" method="post" action="{action}">'
        '<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="version" value="{version}">'
        '<input type="hidden" name="template" value="{template}">'
        '{rows}<button class="primary">保存 save</button></form>{kept}</section>',
        title=title, flash=flash, action=action, csrf=csrf, version=version, template=template, rows=join(rows),
        kept=kept_html,
    )  # fmt: skip


def _error(message: str | None) -> Html:
    return render('<span class="err" role="alert">{}</span>', message) if message else Html("")


def record_version(values: list[HandleValue]) -> str:
    """A digest of a record's values: the edit form carries it to notice a change made in between."""
    digest = hashlib.sha256()
    for v in values:
        digest.update(encode_value(v))
    return digest.hexdigest()[:32]


def values_from_form(
    fields: list[FormField], typed: dict[str, str], old: list[HandleValue], now_s: int
) -> tuple[list[HandleValue], dict[str, str]]:
    """The record the form asks for (old values kept unless a form field holds their index; an emptied field
    removes its value) and the errors of fields that are no value at all."""
    managed = {ff.index: ff for ff in fields}
    old_by_index = {v.index: v for v in old}
    out = [v for v in old if v.index not in managed]
    errors: dict[str, str] = {}
    for ff in fields:
        text = typed.get(ff.name, "")
        if not text:
            continue
        previous = old_by_index.get(ff.index)
        if (
            previous is not None
            and previous.type == ff.type
            and plain_text(previous.type, previous.data) == text
        ):
            out.append(previous)  # unchanged: kept with its timestamp, TTL and permissions
            continue
        try:
            value = value_from_json({"index": ff.index, "type": ff.type, "data": text}, now_s, ff.name)
        except ValueFormatError as exc:
            errors[ff.name] = str(exc)
            continue
        if previous is not None:  # changed: keeps its TTL and permissions
            value = dataclasses.replace(
                value, ttl_type=previous.ttl_type, ttl=previous.ttl, permissions=previous.permissions
            )
        out.append(value)
    out.sort(key=lambda v: v.index)
    return out, errors


def _typed(form, fields: list[FormField]) -> dict[str, str]:
    out = {}
    for ff in fields:
        raw = form.get(ff.name, "")
        out[ff.name] = raw.strip()[:MAX_FIELD_CHARS] if isinstance(raw, str) else ""
    return out


def _errors_of(exc: WriteError, fields: list[FormField]) -> dict[str, str]:
    names = {ff.field.name: ff.name for ff in fields if ff.field is not None}
    if exc.field in names:
        return {names[exc.field]: exc.message}
    if exc.code in (ResponseCode.INVALID_HANDLE, ResponseCode.HANDLE_ALREADY_EXISTS):
        return {"handle": exc.message}
    return {}


# -- create ------------------------------------------------------------------------------------------------------


def _template_named(template_set: TemplateSet | None, name: str) -> Template | None:
    if template_set is None:
        return None
    found = next((t for t in template_set.templates if t.name == name), None)
    return found if found is not None else template_set.templates[0]


@signed_in(operator=False)
async def new_form(request: web.Request, user: PageUser) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    prefix = user.identity.prefix.decode()
    template_set = template_set_of(ctx, user.identity.prefix)
    template = _template_named(template_set, request.query.get("template", ""))
    return _new_page(user, prefix, template_set, template, {}, {}, "", status=200)


def _new_page(
    user, prefix, template_set, template, typed, errors, suffix, *, status, message=""
) -> web.Response:
    fields = form_fields(template_set, template, [])
    check = f"{prefix}/… ; must match {template.suffix_pattern.pattern}" if template else f"{prefix}/…"
    choose = Html("")
    if template_set is not None and len(template_set.templates) > 1:
        links = [
            render("<strong>{}</strong>", t.name)
            if t is template
            else render('<a href="/ent/new?template={0}">{0}</a>', t.name)
            for t in template_set.templates
        ]
        choose = render("<p>模板 template: {}</p>", join(links, " · "))
    title = f"新建 new {template.name} identifier" if template else "新建 new identifier"
    body = choose + render_form(
        action="/ent/new", title=title, fields=fields, typed=typed, errors=errors, csrf=user.csrf, suffix=suffix,
        suffix_check=check, message=message, template=template.name if template else "",
    )  # fmt: skip
    return page(title, Html(body), status=status, header=user.header())


@signed_in(operator=False)
async def create(request: web.Request, user: PageUser) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    form = request[FORM]
    prefix = user.identity.prefix.decode()
    template_set = template_set_of(ctx, user.identity.prefix)
    template = _template_named(template_set, str(form.get("template", "")))
    fields = form_fields(template_set, template, [])
    typed = _typed(form, fields)
    suffix = str(form.get("suffix", "")).strip()[:MAX_FIELD_CHARS]
    if not suffix:
        return _new_page(user, prefix, template_set, template, typed, {"handle": "give the handle's suffix"}, suffix,
                         status=400)  # fmt: skip
    handle = f"{prefix}/{suffix}"
    values, errors = values_from_form(fields, typed, [], int(time.time()))
    if errors:
        return _new_page(user, prefix, template_set, template, typed, errors, suffix, status=400)
    try:
        check_handle(handle)
        await write_identifier(
            ctx, user.identity, actor_of(user.identity, request), handle, values, overwrite=False
        )
    except HttpError as exc:
        return _new_page(
            user, prefix, template_set, template, typed, {"handle": exc.message}, suffix, status=exc.status
        )
    except WriteError as exc:
        status = error_from_write(exc).status
        field_errors = _errors_of(exc, fields)
        return _new_page(user, prefix, template_set, template, typed, field_errors, suffix, status=status,
                         message="" if field_errors else exc.message)  # fmt: skip
    return redirect(edit_href(handle) + "?saved=created")


# -- edit --------------------------------------------------------------------------------------------------------


def _load(ctx, user: PageUser, handle: str) -> tuple[bytes, list[HandleValue]]:
    check_handle(handle)
    key = handle_key(handle.encode(), ctx.store.case_sensitive)
    if not user.identity.administers(key[: key.find(b"/")]):
        raise HttpError(403, ResponseCode.INSUFFICIENT_PERMISSIONS,
                        f"{user.identity.user} may edit only identifiers under {user.identity.prefix.decode()}/")  # fmt: skip
    ctx.service.refresh()
    values = browse.read_values(ctx.store, key)
    if values is None:
        raise HttpError(404, ResponseCode.HANDLE_NOT_FOUND, f"{handle} does not exist")
    return key, values


def _edit_page(
    user, handle, template_set, template, values, typed, errors, *, status, message="", saved=""
) -> web.Response:
    fields = form_fields(template_set, template, values)
    managed = {ff.index for ff in fields}
    if typed is None:
        typed = {
            ff.name: (plain_text(v.type, v.data) or "")
            for ff in fields
            for v in values
            if v.index == ff.index
        }
    flash = render('<p class="flash">已保存 saved ({})</p>', saved) if saved else Html("")
    links = render(
        '<p><a href="{}">公开页 public page</a> · <a href="/ent">← 标识 identifiers</a></p>',
        public_href(handle),
    )
    title = f"{handle}"
    body = flash + links + render_form(
        action=edit_href(handle), title=title, fields=fields, typed=typed, errors=errors, csrf=user.csrf,
        version=record_version(values), kept=[v for v in values if v.index not in managed], message=message,
        template=template.name if template else "",
    )  # fmt: skip
    return page(title, Html(body), status=status, header=user.header())


@signed_in(operator=False)
async def edit_form(request: web.Request, user: PageUser) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    handle = request.match_info["handle"]
    key, values = _load(ctx, user, handle)
    template_set = template_set_of(ctx, user.identity.prefix)
    template = template_set.template_for(handle[handle.find("/") + 1 :]) if template_set else None
    saved = request.query.get("saved", "")
    return _edit_page(user, handle, template_set, template, values, None, {}, status=200,
                      saved=saved if saved in ("created", "replaced", "updated") else "")  # fmt: skip


@signed_in(operator=False)
async def update(request: web.Request, user: PageUser) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    form = request[FORM]
    handle = request.match_info["handle"]
    key, old = _load(ctx, user, handle)
    template_set = template_set_of(ctx, user.identity.prefix)
    template = template_set.template_for(handle[handle.find("/") + 1 :]) if template_set else None
    fields = form_fields(template_set, template, old)
    typed = _typed(form, fields)
    if form.get("version") != record_version(old):
        return _edit_page(user, handle, template_set, template, old, None, {}, status=409,
                          message="this identifier was changed since the form was opened: here it is as it is now; "
                                  "make your change again")  # fmt: skip
    values, errors = values_from_form(fields, typed, old, int(time.time()))
    if errors:
        return _edit_page(user, handle, template_set, template, old, typed, errors, status=400)
    try:
        outcome = await write_identifier(ctx, user.identity, actor_of(user.identity, request), handle, values)
    except WriteError as exc:
        field_errors = _errors_of(exc, fields)
        return _edit_page(user, handle, template_set, template, old, typed, field_errors,
                          status=error_from_write(exc).status, message="" if field_errors else exc.message)  # fmt: skip
    return redirect(edit_href(handle) + "?saved=" + quote(outcome))
