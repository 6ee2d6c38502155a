"""Entries of the write log and the results of applying them, as plain msgpack data.

An entry is one change of the store: the msgpack command `[kind, args]`, where `kind` names the apply function
(storage/apply.py) and `args` is a map of plain values (strings, numbers, bytes, lists, maps; never code), so
the same bytes can be kept in the log, sent to the writer over its socket, or replicated to another node, and
every member that applies them reaches the same state. Whatever depends on the moment (the time, a credential's
salt) is decided when the entry is made and travels in it.

A result is `[OK, value]`, or `[REFUSED, kind, message, extra]` for a write the store's rules refused (a
refusal is a result like any other: applying the same entry again refuses it again). `unwrap` turns a result
back into its value or raises the exception the caller would have got from a direct write.

Every write module builds its entries here and submits them with `submit_one` (to a Store: appended and
applied in this process; or to anything with `submit`, such as the writer's client). Imports no lmdb.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import msgpack

#: Entry kinds: one apply function each (storage/apply.py).
PUT_IDENTIFIER = "put_identifier"
DELETE_IDENTIFIER = "delete_identifier"
PUT_BATCH = "put_batch"
ADD_PREFIX = "add_prefix"
SET_PREFIX_ENABLED = "set_prefix_enabled"
ISSUE_CREDENTIAL = "issue_credential"
SET_OPERATOR_SECRET = "set_operator_secret"
SET_TEMPLATES = "set_templates"
DELETE_TEMPLATES = "delete_templates"
ADD_COUNTS = "add_counts"
MARK_SEEN = "mark_seen"
LOAD_CHUNK = "load_chunk"
LOAD_DONE = "load_done"
SET_MEMBER = "set_member"
REMOVE_MEMBER = "remove_member"
KINDS = frozenset({
    PUT_IDENTIFIER, DELETE_IDENTIFIER, PUT_BATCH, ADD_PREFIX, SET_PREFIX_ENABLED, ISSUE_CREDENTIAL,
    SET_OPERATOR_SECRET, SET_TEMPLATES, DELETE_TEMPLATES, ADD_COUNTS, MARK_SEEN, LOAD_CHUNK, LOAD_DONE,
    SET_MEMBER, REMOVE_MEMBER,
})  # fmt: skip

OK = 0  #: result tag: applied, with a value
REFUSED = 1  #: result tag: refused by the store's rules, nothing of it stored

# Refusal kinds (the exception each stands for is rebuilt by `unwrap`).
WRITE = "write"  #: storage.writes.WriteError (extra: code, field, template)
ENTERPRISE = "enterprise"  #: storage.enterprises.EnterpriseError
TEMPLATE = "template"  #: resolver.templates.TemplateError
STORE_FULL = "store_full"  #: storage.store.StoreFullError: no room on the disk, nothing stored
BAD_ENTRY = "bad_entry"  #: the entry cannot be decoded or names no known kind: refused before the log
FAILED = "failed"  #: applying raised something unexpected; the entry was left out of the log
LOG_UNAVAILABLE = "log_unavailable"  #: the cluster's log (NATS JetStream) cannot take writes now: retry

Result = list  # [OK, value] or [REFUSED, kind, message, extra]


class EntryError(Exception):
    """A write could not be applied for a reason other than the store's rules (a bad entry, a failure in
    the writer); nothing of it was stored."""


class WriterUnavailable(Exception):
    """The writer did not take or did not answer the write in time (not running, restarting, stuck); the write
    may or may not have been applied: retry it."""


class LogUnavailable(WriterUnavailable):
    """The cluster's log (NATS JetStream) cannot take writes now (unreachable, no quorum); nothing was logged.
    The node keeps serving reads and takes writes again by itself once the log is back: retry."""


class Submitter(Protocol):
    """What takes entries and answers their results in order: a LocalLog (append and apply in this process)
    or the writer's client."""

    def submit(self, entries: Sequence[bytes], payloads: Sequence[Any] | None = None) -> list[Result]: ...


def encode_entry(kind: str, args: dict[str, Any]) -> bytes:
    return msgpack.packb([kind, args], use_bin_type=True)


def decode_entry(raw: bytes) -> tuple[str, dict[str, Any]]:
    """(kind, args) of an entry; EntryError when it is not `[known kind, map]`."""
    try:
        obj = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise EntryError(f"an entry that is not msgpack: {exc}") from exc
    if type(obj) is not list or len(obj) != 2 or type(obj[0]) is not str or type(obj[1]) is not dict:
        raise EntryError("an entry is [kind, args]")
    if obj[0] not in KINDS:
        raise EntryError(f"unknown entry kind {obj[0][:64]!r}")
    return obj[0], obj[1]


def entry_prefix(raw: bytes) -> str | None:
    """The enterprise prefix an entry is about (for a cluster log's subject), None for node-wide entries."""
    try:
        kind, args = decode_entry(raw)
    except EntryError:
        return None
    handle = args.get("handle")
    if isinstance(handle, str) and "/" in handle:
        return handle.split("/", 1)[0].upper()
    prefix = args.get("prefix")
    return prefix.upper() if isinstance(prefix, str) else None


def ok(value: Any = None) -> Result:
    return [OK, value]


def refusal(kind: str, message: str, **extra: Any) -> Result:
    return [REFUSED, kind, message, extra]


def refusal_of(exc: BaseException) -> Result | None:
    """The refusal result of an exception the store's rules raise; None for any other exception."""
    from resolver.templates import TemplateError  # the template rules are pure logic in resolver/
    from storage.enterprises import EnterpriseError
    from storage.store import StoreFullError
    from storage.writes import TemplateViolation, WriteError

    if isinstance(exc, WriteError):
        return refusal(WRITE, exc.message, code=int(exc.code), field=exc.field,
                       template=isinstance(exc, TemplateViolation))  # fmt: skip
    if isinstance(exc, EnterpriseError):
        return refusal(ENTERPRISE, str(exc))
    if isinstance(exc, TemplateError):
        return refusal(TEMPLATE, str(exc))
    if isinstance(exc, StoreFullError):
        return refusal(STORE_FULL, str(exc))
    return None


def is_refused(result: Result) -> bool:
    return result[0] == REFUSED


def unwrap(result: Result) -> Any:
    """The value of an applied entry, or the exception of its refusal raised."""
    if result[0] == OK:
        return result[1]
    raise exception_of(result)


def exception_of(result: Result) -> Exception:
    """The exception a refusal stands for: WriteError (TemplateViolation), EnterpriseError, TemplateError,
    StoreFullError, LogUnavailable, or EntryError."""
    from resolver.handle.constants import ResponseCode
    from resolver.templates import TemplateError
    from storage.enterprises import EnterpriseError
    from storage.store import StoreFullError
    from storage.writes import TemplateViolation, WriteError

    _, kind, message, extra = result
    if kind == WRITE:
        code = ResponseCode(extra["code"])
        if extra.get("template"):
            violation = TemplateViolation(extra.get("field") or "", "")
            violation.message, violation.args = message, (message,)
            return violation
        return WriteError(code, message, extra.get("field"))
    if kind == ENTERPRISE:
        return EnterpriseError(message)
    if kind == TEMPLATE:
        return TemplateError(message)
    if kind == STORE_FULL:
        return StoreFullError(message)
    if kind == LOG_UNAVAILABLE:
        return LogUnavailable(message)
    return EntryError(message)


def submit_one(target: Any, entry: bytes, payload: Any = None) -> Result:
    """Submit one entry to `target`: a Store (appended and applied in this process, storage/log.py) or a
    Submitter. Returns its result."""
    from storage.store import Store

    if isinstance(target, Store):
        from storage.log import LocalLog  # the log applies through every write module, which call this

        target = LocalLog(target)
    return target.submit([entry], None if payload is None else [payload])[0]


def actor_args(actor: Any) -> list[str]:
    """An audit Actor as entry data: [identity, source]."""
    return [actor.identity, actor.source]
