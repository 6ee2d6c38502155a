"""Metadata templates: what an industry's identifiers must carry, checked on every write, and the reference
walk (`idnode trace`) that follows identifier references from one record to the next.

A prefix has one template document: a scenario name and a list of templates. A template applies to the
identifiers whose suffix matches its `suffixPattern` (the first that matches wins); its fields sit at value
indexes from 2000 up, each with a type, a required flag and constraints (length, pattern, enum, identifier
reference), and optional labels for people (`"label": {"zh": "批次", "en": "Batch"}`, on templates and fields:
the identifier pages show them in the reader's language). An identifier no template applies to is not checked. Template documents are stored as JSON in
the store's `templates` database, keyed by prefix, and read inside each write transaction, so a check always
uses the current templates. Setting and deleting a document are entries of the write log (storage/entries.py),
applied by `apply_*` in the writer's transaction. Pure logic plus those reads; never imports the servers.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from resolver.handle.constants import Permission
from resolver.handle.describe import describe_data, value_lines
from resolver.handle.values import HandleValue
from storage import audit, entries
from storage.audit import Actor
from storage.entries import encode_entry, submit_one, unwrap
from storage.keys import InvalidHandle, handle_key, normalize_prefix
from storage.store import Store, Transaction
from storage.writes import TemplateViolation, decode_record_values

MIN_FIELD_INDEX = 2000  #: template fields sit above the conventional indexes (URL 1, HS_ADMIN 100, keys 300)
MAX_FIELD_INDEX = 0xFFFFFFFF  #: index is a u32 on the wire
MAX_TEMPLATES = 64  #: templates per prefix; more is a modelling mistake
MAX_FIELDS = 128  #: fields per template
MAX_PATTERN_CHARS = 512  #: regular expressions stay short enough to read (and to bound their cost)
MAX_ENUM_VALUES = 1024  #: allowed values of an enum field
MAX_DOCUMENT_BYTES = 256 * 1024  #: one prefix's template document
MAX_LABEL_CHARS = 64  #: a label names a field for a person: a few words, not a description
MAX_LABEL_LANGUAGES = 16  #: languages per label; a node speaks a handful
MAX_TRACE_DEPTH = 12  #: `idnode trace` follows references this deep
MAX_TRACE_NODES = 500  #: and visits at most this many identifiers
_COMPILED_CACHE = 256  #: compiled template documents kept per process

_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_LANGUAGE_RE = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{1,8})*")  # BCP 47 tags as Accept-Language carries them
_FIELD_KEYS = {"name", "index", "type", "required", "description", "minLength", "maxLength", "pattern", "enum",
               "reference", "label"}  # fmt: skip
_REFERENCE_KEYS = {"prefixes", "template", "mustExist"}


class TemplateError(ValueError):
    """A template document is malformed; the message names the part that is wrong."""


@dataclass(frozen=True, slots=True)
class Reference:
    prefixes: tuple[bytes, ...] = ()  # normalized; empty = any prefix
    template: str | None = None  # the target must be an identifier this template applies to
    must_exist: bool = True


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    index: int
    type: str
    required: bool = False
    min_length: int | None = None
    max_length: int | None = None
    pattern: re.Pattern | None = None
    enum: frozenset[str] | None = None
    reference: Reference | None = None
    labels: tuple[tuple[str, str], ...] = ()  # (language, label) pairs, as the document gives them


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    suffix_pattern: re.Pattern
    fields: tuple[Field, ...]
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TemplateSet:
    """The compiled template document of one prefix."""

    prefix: str
    scenario: str
    templates: tuple[Template, ...]
    document: dict

    def template_for(self, suffix: str) -> Template | None:
        for template in self.templates:
            if template.suffix_pattern.fullmatch(suffix):
                return template
        return None


# -- parsing a document --------------------------------------------------------------------------------------


def _fail(where: str, why: str) -> TemplateError:
    return TemplateError(f"{where}: {why}")


def _int(obj: dict, key: str, where: str, low: int, high: int) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is not int or not low <= value <= high:
        raise _fail(f"{where}.{key}", f"an integer in {low}..{high}")
    return value


def _regex(text: Any, where: str) -> re.Pattern:
    if not isinstance(text, str) or not text or len(text) > MAX_PATTERN_CHARS:
        raise _fail(where, f"a regular expression of 1..{MAX_PATTERN_CHARS} characters")
    try:
        return re.compile(text)
    except (re.error, OverflowError, RecursionError) as exc:  # a{4294967296} overflows, not a re.error
        raise _fail(where, f"not a regular expression: {exc}") from exc


def _parse_labels(obj: Any, where: str) -> tuple[tuple[str, str], ...]:
    if obj is None:
        return ()
    if not isinstance(obj, dict) or not 0 < len(obj) <= MAX_LABEL_LANGUAGES:
        raise _fail(
            where,
            f'an object of 1..{MAX_LABEL_LANGUAGES} labels by language, e.g. {{"zh": "批次", "en": "Batch"}}',
        )
    for language, text in obj.items():
        if not _LANGUAGE_RE.fullmatch(language):
            raise _fail(f"{where}.{language}", "a language tag such as zh, en or zh-CN")
        if not isinstance(text, str) or not 0 < len(text) <= MAX_LABEL_CHARS or not text.isprintable():
            raise _fail(f"{where}.{language}", f"a label of 1..{MAX_LABEL_CHARS} printable characters")
    return tuple(obj.items())


def _parse_reference(obj: Any, where: str) -> Reference:
    if obj is True:
        return Reference()
    if not isinstance(obj, dict) or set(obj) - _REFERENCE_KEYS:
        raise _fail(where, f"true or an object with {', '.join(sorted(_REFERENCE_KEYS))}")
    prefixes = obj.get("prefixes", [])
    if not isinstance(prefixes, list) or not all(isinstance(p, str) and p for p in prefixes):
        raise _fail(f"{where}.prefixes", "a list of prefixes")
    template = obj.get("template")
    if template is not None and not isinstance(template, str):
        raise _fail(f"{where}.template", "a template name")
    must_exist = obj.get("mustExist", True)
    if not isinstance(must_exist, bool):
        raise _fail(f"{where}.mustExist", "true or false")
    return Reference(tuple(normalize_prefix(p.encode()) for p in prefixes), template, must_exist)


def _parse_field(obj: Any, where: str) -> Field:
    if not isinstance(obj, dict):
        raise _fail(where, "a field is an object")
    unknown = set(obj) - _FIELD_KEYS
    if unknown:
        raise _fail(where, f"unknown key {sorted(unknown)[0]!r}")
    name = obj.get("name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise _fail(f"{where}.name", "a name of letters, digits and _ starting with a letter")
    index = _int(obj, "index", where, MIN_FIELD_INDEX, MAX_FIELD_INDEX)
    if index is None:
        raise _fail(f"{where}.index", f"is required (an index from {MIN_FIELD_INDEX})")
    vtype = obj.get("type")
    if not isinstance(vtype, str) or not vtype or len(vtype) > 128:
        raise _fail(f"{where}.type", "the value type, 1..128 characters")
    required = obj.get("required", False)
    if not isinstance(required, bool):
        raise _fail(f"{where}.required", "true or false")
    min_length = _int(obj, "minLength", where, 0, 1 << 20)
    max_length = _int(obj, "maxLength", where, 0, 1 << 20)
    if min_length is not None and max_length is not None and min_length > max_length:
        raise _fail(where, "minLength is above maxLength")
    enum = obj.get("enum")
    if enum is not None:
        if not isinstance(enum, list) or not enum or len(enum) > MAX_ENUM_VALUES:
            raise _fail(f"{where}.enum", f"a list of 1..{MAX_ENUM_VALUES} strings")
        if not all(isinstance(e, str) for e in enum):
            raise _fail(f"{where}.enum", "every allowed value is a string")
    return Field(
        name=name,
        index=index,
        type=vtype,
        required=required,
        min_length=min_length,
        max_length=max_length,
        pattern=_regex(obj["pattern"], f"{where}.pattern") if "pattern" in obj else None,
        enum=frozenset(enum) if enum is not None else None,
        reference=_parse_reference(obj["reference"], f"{where}.reference") if "reference" in obj else None,
        labels=_parse_labels(obj.get("label"), f"{where}.label"),
    )


def _parse_template(obj: Any, where: str) -> Template:
    if not isinstance(obj, dict):
        raise _fail(where, "a template is an object {name, suffixPattern, fields}")
    name = obj.get("name")
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise _fail(f"{where}.name", "a name of letters, digits and _ starting with a letter")
    fields = obj.get("fields")
    if not isinstance(fields, list) or not fields or len(fields) > MAX_FIELDS:
        raise _fail(f"{where}.fields", f"a list of 1..{MAX_FIELDS} fields")
    parsed = tuple(_parse_field(f, f"{where}.fields[{n}]") for n, f in enumerate(fields))
    for attr in ("name", "index"):
        seen: set = set()
        for n, f in enumerate(parsed):
            if getattr(f, attr) in seen:
                raise _fail(f"{where}.fields[{n}].{attr}", f"{getattr(f, attr)!r} is used by another field")
            seen.add(getattr(f, attr))
    pattern = _regex(obj.get("suffixPattern", ".*"), f"{where}.suffixPattern")
    return Template(name, pattern, parsed, _parse_labels(obj.get("label"), f"{where}.label"))


def parse_document(obj: Any) -> TemplateSet:
    """A template document `{"prefix", "scenario", "description"?, "templates": [...]}`, checked whole."""
    if not isinstance(obj, dict):
        raise _fail("document", "an object {prefix, scenario, templates}")
    prefix = obj.get("prefix")
    if not isinstance(prefix, str) or "/" in prefix or not prefix:
        raise _fail("prefix", "the prefix the templates apply to")
    scenario = obj.get("scenario", "")
    if not isinstance(scenario, str):
        raise _fail("scenario", "a name")
    templates = obj.get("templates")
    if not isinstance(templates, list) or not templates or len(templates) > MAX_TEMPLATES:
        raise _fail("templates", f"a list of 1..{MAX_TEMPLATES} templates")
    parsed = tuple(_parse_template(t, f"templates[{n}]") for n, t in enumerate(templates))
    names = [t.name for t in parsed]
    if len(set(names)) != len(names):
        raise _fail("templates", "two templates share a name")
    return TemplateSet(prefix, scenario, parsed, obj)


# -- storing documents ---------------------------------------------------------------------------------------

_compiled: dict[bytes, TemplateSet] = {}


def _compile(raw: bytes) -> TemplateSet:
    found = _compiled.get(raw)
    if found is None:
        if len(_compiled) >= _COMPILED_CACHE:
            _compiled.clear()
        found = _compiled[raw] = parse_document(json.loads(raw))
    return found


def template_set_in(store: Store, txn: Transaction, prefix_key: bytes) -> TemplateSet | None:
    raw = txn.get(prefix_key, db=store.templates_db)
    return _compile(raw) if raw is not None else None


def set_templates(target: Any, document: Any, actor: Actor | None = None) -> TemplateSet:
    """Check a template document and store it for its prefix (which must be known), replacing any other:
    a `set_templates` entry of the write log. Audited (template-set on 0.NA/<prefix>) as `actor`'s, default
    this `idnode` command's user. `target`: a Store or the writer's client."""
    template_set = parse_document(document)
    raw = json.dumps(document, ensure_ascii=False, sort_keys=True).encode()
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise _fail("document", f"larger than {MAX_DOCUMENT_BYTES} bytes")
    detail = {"scenario": template_set.scenario, "templates": [t.name for t in template_set.templates]}
    entry = encode_entry(entries.SET_TEMPLATES, {
        "prefix": template_set.prefix, "document": raw, "detail": detail, "time_ns": time.time_ns(),
        "actor": entries.actor_args(actor or audit.cli_actor()),
    })  # fmt: skip
    unwrap(submit_one(target, entry))
    return template_set


def apply_set_templates(store: Store, txn: Transaction, args: dict) -> None:
    """Applied in the writer: the document was checked when its entry was made."""
    prefix = args["prefix"]
    key = normalize_prefix(prefix.encode())
    actor = Actor(*args["actor"])
    if txn.get(key, db=store.prefixes_db) is None:
        raise _fail("prefix", f"{prefix} is not known here (add it with `idnode prefix add`)")
    txn.put(key, args["document"], db=store.templates_db)
    audit.record(store, txn, actor.identity, actor.source, audit.TEMPLATE_SET, f"0.NA/{prefix}", args["detail"],
                 now_ns=args["time_ns"])  # fmt: skip


def get_templates(store: Store, prefix: str) -> dict | None:
    with store.env.begin(db=store.templates_db) as txn:
        raw = txn.get(normalize_prefix(prefix.encode()))
    return json.loads(raw) if raw is not None else None


def delete_templates(target: Any, prefix: str, actor: Actor | None = None) -> bool:
    """Delete the prefix's template document; False when it had none (nothing written, nothing audited)."""
    entry = encode_entry(entries.DELETE_TEMPLATES, {
        "prefix": prefix, "time_ns": time.time_ns(), "actor": entries.actor_args(actor or audit.cli_actor()),
    })  # fmt: skip
    return unwrap(submit_one(target, entry))


def apply_delete_templates(store: Store, txn: Transaction, args: dict) -> bool:
    prefix = args["prefix"]
    actor = Actor(*args["actor"])
    if not txn.delete(normalize_prefix(prefix.encode()), db=store.templates_db):
        return False
    audit.record(store, txn, actor.identity, actor.source, audit.TEMPLATE_DELETE, f"0.NA/{prefix}",
                 now_ns=args["time_ns"])  # fmt: skip
    return True


def all_template_sets(store: Store) -> dict[bytes, TemplateSet]:
    with store.env.begin(db=store.templates_db) as txn:
        return {key: _compile(raw) for key, raw in txn.cursor()}


# -- checking records ----------------------------------------------------------------------------------------


def _text(value: HandleValue, field: Field) -> str:
    try:
        return value.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TemplateViolation(field.name, f"index {field.index} must be UTF-8 text") from exc


def check_record(
    template_set: TemplateSet,
    handle: str,
    values: Sequence[HandleValue],
    exists: Callable[[bytes], bool],
    case_sensitive: bool,
    templates_of: Callable[[bytes], TemplateSet | None],
) -> str | None:
    """Check one record against its prefix's templates; raise TemplateViolation naming the field. Returns the
    name of the template that applied, or None when none did."""
    suffix = handle[handle.find("/") + 1 :]
    template = template_set.template_for(suffix)
    if template is None:
        return None
    by_index = {v.index: v for v in values}
    for field in template.fields:
        value = by_index.get(field.index)
        if value is None:
            if field.required:
                raise TemplateViolation(field.name, f"is required (index {field.index}, type {field.type})")
            continue
        if value.type.upper() != field.type.upper():
            raise TemplateViolation(
                field.name, f"index {field.index} must have type {field.type}, not {value.type or '(none)'}"
            )
        text = _text(value, field)
        if field.min_length is not None and len(text) < field.min_length:
            raise TemplateViolation(field.name, f"shorter than {field.min_length} characters")
        if field.max_length is not None and len(text) > field.max_length:
            raise TemplateViolation(field.name, f"longer than {field.max_length} characters")
        if field.pattern is not None and not field.pattern.fullmatch(text):
            raise TemplateViolation(field.name, f"{text!r} does not match {field.pattern.pattern!r}")
        if field.enum is not None and text not in field.enum:
            allowed = ", ".join(sorted(field.enum)[:10])
            raise TemplateViolation(field.name, f"{text!r} is not one of: {allowed}")
        if field.reference is not None:
            _check_reference(field, text, exists, case_sensitive, templates_of)
    return template.name


def _check_reference(field, text, exists, case_sensitive, templates_of) -> None:
    ref: Reference = field.reference
    try:
        key = handle_key(text.encode(), case_sensitive)
    except InvalidHandle as exc:
        raise TemplateViolation(field.name, f"{text!r} is not an identifier (prefix/suffix)") from exc
    prefix = key[: key.find(b"/")]
    if ref.prefixes and prefix not in ref.prefixes:
        allowed = ", ".join(p.decode() for p in ref.prefixes)
        raise TemplateViolation(field.name, f"{text} is not under {allowed}")
    if ref.template is not None:
        target = templates_of(prefix)
        applied = target.template_for(text[text.find("/") + 1 :]) if target else None
        if applied is None or applied.name != ref.template:
            raise TemplateViolation(field.name, f"{text} is not a {ref.template} identifier")
    if ref.must_exist and not exists(key):
        raise TemplateViolation(field.name, f"{text} does not exist")


class TemplateChecker:
    """The write path's RecordChecker (storage/writes.py): checks records against their prefix's templates,
    read from the write transaction itself."""

    def __init__(self, store: Store):
        self.store = store

    def wants(self, txn: Transaction, prefix_key: bytes) -> bool:
        return txn.get(prefix_key, db=self.store.templates_db) is not None

    def check(self, txn, handle: str, values: Sequence[HandleValue], exists: Callable[[bytes], bool]) -> None:
        prefix_key = normalize_prefix(handle[: handle.find("/")].encode())
        template_set = template_set_in(self.store, txn, prefix_key)
        if template_set is None:
            return
        check_record(
            template_set,
            handle,
            values,
            exists,
            self.store.case_sensitive,
            lambda p: template_set_in(self.store, txn, p),
        )


# -- following references ------------------------------------------------------------------------------------


@dataclass
class TraceNode:
    handle: str
    template: str | None = None
    summary: str = ""
    missing: bool = False
    links: list[tuple[str, TraceNode]] | None = None  # (field name, target)
    seen_before: bool = False
    values: Sequence[HandleValue] = ()  # every value, for `idnode trace --values`


def trace(store: Store, handle: str, public_only: bool = False) -> TraceNode:
    """The tree of identifiers reachable from `handle` through template reference fields and the values'
    Handle references, read from the store. Each identifier is expanded once (later mentions say so). With
    `public_only` (a page for anyone), values without PUBLIC_READ are left out of summaries and links."""
    expanded: set[bytes] = set()
    with store.env.begin() as txn:

        def templates_of(prefix: bytes) -> TemplateSet | None:
            return template_set_in(store, txn, prefix)

        def visit(target: str, depth: int) -> TraceNode:
            node = TraceNode(target)
            try:
                key = handle_key(target.encode(), store.case_sensitive)
            except InvalidHandle:
                node.missing = True
                return node
            raw = txn.get(key, db=store.handles)
            if raw is None:
                node.missing = True
                return node
            if key in expanded:
                node.seen_before = True
                return node
            expanded.add(key)
            values = decode_record_values(raw, store.shared_value)
            if public_only:
                values = tuple(v for v in values if v.permissions & Permission.PUBLIC_READ)
            template_set = templates_of(key[: key.find(b"/")])
            template = template_set.template_for(target[target.find("/") + 1 :]) if template_set else None
            node.template = template.name if template else None
            node.summary = _summary(values, template)
            node.values = values
            node.links = []
            if depth >= MAX_TRACE_DEPTH or len(expanded) >= MAX_TRACE_NODES:
                return node
            for label, ref in _links(values, template):
                node.links.append((label, visit(ref, depth + 1)))
            return node

        return visit(handle, 0)


def _summary(values: Sequence[HandleValue], template: Template | None) -> str:
    for v in values:
        if v.type.upper() == "DESC":
            return v.data.decode("utf-8", errors="replace")
    if template is not None:
        by_index = {v.index: v for v in values}
        for field in template.fields:
            if field.reference is None and field.index in by_index:
                value = by_index[field.index]
                return f"{field.name}={'; '.join(describe_data(value.type, value.data))}"
    return ""


def _links(values: Sequence[HandleValue], template: Template | None) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    ref_fields = {f.index: f for f in template.fields if f.reference is not None} if template else {}
    for v in values:
        field = ref_fields.get(v.index)
        if field is not None and v.type.upper() == field.type.upper():
            out.append((field.name, v.data.decode("utf-8", errors="replace")))
        for ref in v.references:
            out.append((v.type or f"index {v.index}", ref.handle))
    return out


def format_trace(node: TraceNode, indent: str = "", label: str = "", values: bool = False) -> list[str]:
    """The tree as text lines: `label → handle  [template]  summary`; with `values`, each identifier's values
    under it in words (resolver/handle/describe.py, as `idnode resolve` prints them)."""
    head = f"{indent}{label} → " if label else indent
    if node.missing:
        return [f"{head}{node.handle}  (not found)"]
    if node.seen_before:
        return [f"{head}{node.handle}  (shown above)"]
    line = f"{head}{node.handle}"
    if node.template:
        line += f"  [{node.template}]"
    if node.summary:
        line += f"  {node.summary}"
    lines = [line]
    if values:
        pad = indent + "  " + " " * len(f"{label} → " if label else "")
        for value in node.values:
            lines += value_lines(value, pad)
    for link_label, child in node.links or []:
        lines += format_trace(child, indent + "    ", link_label, values)
    return lines


def trace_to_json(node: TraceNode) -> dict:
    out: dict[str, Any] = {"handle": node.handle}
    if node.missing:
        out["missing"] = True
        return out
    if node.seen_before:
        out["seenBefore"] = True
        return out
    out["template"] = node.template
    out["summary"] = node.summary
    out["links"] = [{"field": label, **trace_to_json(child)} for label, child in node.links or []]
    return out
