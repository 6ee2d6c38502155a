"""Identifier writes of the HTTP API: create or replace, update or add some values, remove values, delete, and
batches. Each is one entry of the write log (`*_entry` builds it; storage/entries.py), applied by `*_in` in
the writer's transaction: it checks what it must there (the prefix is hosted here, the writer may write under
it, the record passes the prefix's templates), counts new identifiers as registrations and records who wrote
what in the audit trail (storage/audit.py) in the same transaction. This is the one write policy: the HTTP API,
`idnode register` and the scenarios all apply it through the log. A refused write raises before anything is
put and its transaction is aborted, so it leaves the store as it was (and no audit entry); an atomic batch is
refused whole the same way. The public functions (`put_identifier(target, ...)`) build the entry, submit it to
a Store or the writer's client, and return its result or raise its refusal.

Every refusal is a `WriteError` carrying the Handle response code it maps to; the HTTP layer turns that into a
status. Never imports the servers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import lmdb
import orjson

from resolver.handle.constants import ResponseCode
from resolver.handle.errors import HandleProtocolError
from resolver.handle.values import HandleValue, decode_value, encode_value
from resolver.handle.wire import Reader
from storage import audit, entries
from storage.audit import Actor
from storage.enterprises import ADMIN_SUFFIX
from storage.entries import encode_entry, submit_one, unwrap
from storage.jsonvalues import ValueEncoder, ValueFormatError, encoded_record_from_json
from storage.keys import InvalidHandle, written_handle_key
from storage.records import RecordError, SharedLookup, pack_encoded, pack_record, split_values, unpack_record
from storage.store import REGISTRATIONS, PrefixInfo, Store, counter_key, today

MAX_BATCH_ITEMS = 2_000  #: identifiers per batch: one transaction stays short (~10 ms) for the other writers
REGISTRATIONS_HTTP = f"{REGISTRATIONS}.http"  #: counter kind of identifiers created over the HTTP API
REGISTRATIONS_CLI = f"{REGISTRATIONS}.cli"  #: ... created by `idnode register` and `idnode scenario load`
REGISTRATIONS_HANDLE = f"{REGISTRATIONS}.handle"  #: ... created over the Handle protocol (CREATE_HANDLE)
_RESERVED_SUFFIX = ADMIN_SUFFIX.encode()
#: outcome of put_identifier / delete_identifier -> audit operation
AUDIT_OPERATIONS = {
    "created": audit.CREATE,
    "replaced": audit.REPLACE,
    "updated": audit.UPDATE,
    "deleted": audit.DELETE,
    "values removed": audit.REMOVE_VALUES,
}


class WriteError(Exception):
    """A write was refused; nothing of it was stored. `code` is the Handle response code it maps to."""

    def __init__(self, code: ResponseCode, message: str, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


class AbortWith(Exception):  # noqa: N818 - not an error: a result that must leave nothing behind
    """Raised by an apply function to return `result` while the entry's transaction is aborted (an atomic
    batch refused whole: its per-item results are the answer, nothing of it is stored)."""

    def __init__(self, result: Any):
        super().__init__("aborted with a result")
        self.result = result


class TemplateViolation(WriteError):
    """A record does not satisfy its prefix's metadata template; `field` names the template field."""

    def __init__(self, field: str, message: str):
        super().__init__(ResponseCode.INVALID_VALUE, f"{field}: {message}", field)


class RecordChecker(Protocol):
    """Checks a record before it is written (resolver/templates.py implements it with templates)."""

    def wants(self, txn: lmdb.Transaction, prefix_key: bytes) -> bool:
        """Whether records under this prefix are checked (only then are their values decoded)."""
        ...

    def check(
        self,
        txn: lmdb.Transaction,
        handle: str,
        values: Sequence[HandleValue],
        exists: Callable[[bytes], bool],
    ) -> None:
        """Raise TemplateViolation when the record may not be written; `exists(key)` says whether an
        identifier exists, counting the ones this transaction writes."""
        ...


# -- keys and records ----------------------------------------------------------------------------------------


def key_for(store: Store, handle: str) -> bytes:
    """The store key of `handle`, or WriteError INVALID_HANDLE."""
    try:
        return written_handle_key(handle.encode(), store.case_sensitive)
    except InvalidHandle as exc:
        raise WriteError(ResponseCode.INVALID_HANDLE, f"handle: {exc}") from exc


def decode_record_values(raw: bytes, shared: SharedLookup | None = None) -> list[HandleValue]:
    """The values of a stored record, decoded (for updates and checks; the hot path never does this).
    `shared` resolves shared values (Store.shared_value) of bulk-loaded records."""
    tail, _ = unpack_record(raw, shared)
    return [decode_value(Reader(encoded)) for encoded in split_values(tail)]


def check_prefix(store: Store, txn: lmdb.Transaction, key: bytes, allowed_prefix: bytes | None) -> bytes:
    """The prefix key of `key` after checking the writer may write there and the prefix is hosted here."""
    slash = key.find(b"/")
    prefix = key[:slash]
    if allowed_prefix is not None and prefix != allowed_prefix:
        raise WriteError(
            ResponseCode.INSUFFICIENT_PERMISSIONS,
            f"the administrator of {allowed_prefix.decode()} may write only under {allowed_prefix.decode()}/",
        )
    if key[slash + 1 :].upper() == _RESERVED_SUFFIX:
        raise WriteError(
            ResponseCode.INSUFFICIENT_PERMISSIONS,
            f"{key.decode(errors='replace')} is the prefix's admin identity, managed by `idnode prefix credential`",
        )
    raw = txn.get(prefix, db=store.prefixes_db)
    if raw is None:
        raise WriteError(
            ResponseCode.SERVER_NOT_RESP, f"prefix {prefix.decode(errors='replace')} is not served here"
        )
    info = PrefixInfo.unpack(raw)
    if info.state == "disabled":
        raise WriteError(ResponseCode.SERVER_NOT_RESP, f"prefix {info.prefix} is disabled")
    if info.state == "referral":
        raise WriteError(
            ResponseCode.SERVER_NOT_RESP,
            f"prefix {info.prefix} is served by the enterprise's own node, not here",
        )
    return prefix


def _registrations(
    prefixes: Iterable[bytes], now_s: float | None, kind: str = REGISTRATIONS_HTTP
) -> dict[bytes, int]:
    day = today(now_s)
    counts: dict[bytes, int] = {}
    for prefix in prefixes:
        ckey = counter_key(kind, day, prefix)
        counts[ckey] = counts.get(ckey, 0) + 1
    return counts


def _check_indexes_unique(values: Sequence[HandleValue]) -> None:
    seen: set[int] = set()
    for v in values:
        if v.index in seen:
            raise WriteError(ResponseCode.INVALID_VALUE, f"values: index {v.index} appears twice", "values")
        seen.add(v.index)


# -- one identifier ------------------------------------------------------------------------------------------

#: Called for every identifier key a write creates, replaces or deletes, with the record it held before (None
#: when it did not exist), inside the write's transaction: storage/apply.py notes them for the DNS zone journal.
Changed = Callable[[bytes, bytes | None], None]


def _no_note(key: bytes, old_raw: bytes | None) -> None:
    pass


def check_handle_key(handle: str) -> None:
    """WriteError INVALID_HANDLE when `handle` cannot be written (checked before an entry is made; whether a
    handle is valid does not depend on the store's case rule)."""
    try:
        written_handle_key(handle.encode(), False)
    except InvalidHandle as exc:
        raise WriteError(ResponseCode.INVALID_HANDLE, f"handle: {exc}") from exc


def _time_ns(now_s: float | None) -> int:
    return time.time_ns() if now_s is None else int(now_s * 1_000_000_000)


def put_identifier_entry(
    handle: str,
    values: Sequence[HandleValue],
    *,
    overwrite: bool = True,
    indexes: Sequence[int] | None = None,
    allowed_prefix: bytes | None = None,
    check: bool = False,
    now_s: float | None = None,
    actor: Actor | None = None,
    counter_kind: str = REGISTRATIONS_HTTP,
) -> bytes:
    """The log entry of `put_identifier` (WriteError at once for what needs no store to refuse)."""
    check_handle_key(handle)
    _check_indexes_unique(values)
    args = {
        "handle": handle, "values": [encode_value(v) for v in values], "overwrite": overwrite,
        "indexes": list(indexes) if indexes is not None else None, "allowed": allowed_prefix, "check": check,
        "time_ns": _time_ns(now_s), "actor": entries.actor_args(actor or audit.cli_actor()),
    }  # fmt: skip
    if counter_kind != REGISTRATIONS_HTTP:  # entries of the HTTP API stay as they were
        args["counter"] = counter_kind
    return encode_entry(entries.PUT_IDENTIFIER, args)


def put_identifier(
    target: Any,
    handle: str,
    values: Sequence[HandleValue],
    *,
    overwrite: bool = True,
    indexes: Sequence[int] | None = None,
    allowed_prefix: bytes | None = None,
    checker: RecordChecker | bool | None = None,
    now_s: float | None = None,
    actor: Actor | None = None,
    counter_kind: str = REGISTRATIONS_HTTP,
) -> str:
    """Create or replace `handle` with `values` ("created" or "replaced"), or with `indexes` set only the
    values at those indexes, adding the ones that are new ("updated"). `overwrite=False` refuses an existing
    identifier (HANDLE_ALREADY_EXISTS), or with `indexes` an existing value (VALUE_ALREADY_EXISTS). With
    `checker`, the record is checked against its prefix's templates. The write is audited as `actor`'s
    (default: this `idnode` command's user). `target`: a Store (written through its log in this process) or
    a Submitter (the writer's client)."""
    entry = put_identifier_entry(
        handle, values, overwrite=overwrite, indexes=indexes, allowed_prefix=allowed_prefix,
        check=bool(checker), now_s=now_s, actor=actor, counter_kind=counter_kind,
    )  # fmt: skip
    return unwrap(submit_one(target, entry))


def apply_put_identifier(store: Store, txn: lmdb.Transaction, args: dict, changed: Changed = _no_note) -> str:
    values = [decode_value(Reader(v)) for v in args["values"]]
    return put_identifier_in(
        store, txn, args["handle"], values, overwrite=args["overwrite"], indexes=args["indexes"],
        allowed_prefix=args["allowed"], checker=_checker(store, args["check"]), now_ns=args["time_ns"],
        actor=Actor(*args["actor"]), changed=changed, counter_kind=args.get("counter", REGISTRATIONS_HTTP),
    )  # fmt: skip


def _checker(store: Store, check: bool) -> RecordChecker | None:
    if not check:
        return None
    from resolver.templates import TemplateChecker  # the template rules are pure logic in resolver/

    return TemplateChecker(store)


def put_identifier_in(
    store: Store,
    txn: lmdb.Transaction,
    handle: str,
    values: Sequence[HandleValue],
    *,
    overwrite: bool,
    indexes: Sequence[int] | None,
    allowed_prefix: bytes | None,
    checker: RecordChecker | None,
    now_ns: int,
    actor: Actor,
    changed: Changed = _no_note,
    counter_kind: str = REGISTRATIONS_HTTP,
) -> str:
    """The write policy of one identifier, in the applying transaction; raises WriteError before anything is
    put when it refuses."""
    key = key_for(store, handle)
    _check_indexes_unique(values)
    prefix = check_prefix(store, txn, key, allowed_prefix)
    old_raw = txn.get(key, db=store.handles)
    if indexes is None:
        if old_raw is not None and not overwrite:
            raise WriteError(ResponseCode.HANDLE_ALREADY_EXISTS, f"{handle} exists already")
        result, outcome = list(values), "created" if old_raw is None else "replaced"
    else:
        if old_raw is None:
            raise WriteError(ResponseCode.HANDLE_NOT_FOUND, f"{handle} does not exist")
        result, outcome = _merge(_decode(old_raw, handle, store), values, indexes, overwrite), "updated"
    if checker is not None and checker.wants(txn, prefix):
        checker.check(txn, handle, result, lambda k: k == key or txn.get(k, db=store.handles) is not None)
    changed(key, bytes(old_raw) if old_raw is not None else None)
    txn.put(key, pack_record(result), db=store.handles)
    store.index_long_keys(txn, (key,))
    if outcome == "created":
        store.add_counts_in(txn, _registrations([prefix], now_ns / 1e9, counter_kind))
    detail = {"indexes": sorted(indexes)} if indexes is not None else None
    audit.record(store, txn, actor.identity, actor.source, AUDIT_OPERATIONS[outcome], handle, detail,
                 now_ns=now_ns)  # fmt: skip
    return outcome


def _decode(raw: bytes, handle: str, store: Store) -> list[HandleValue]:
    try:
        return decode_record_values(raw, store.shared_value)
    except (RecordError, HandleProtocolError) as exc:
        raise WriteError(ResponseCode.ERROR, f"the stored record of {handle} cannot be read: {exc}") from exc


def _merge(
    old: list[HandleValue], new: Sequence[HandleValue], indexes: Sequence[int], overwrite: bool
) -> list[HandleValue]:
    listed = set(indexes)
    given = {v.index: v for v in new}
    for index in given:
        if index not in listed:
            raise WriteError(
                ResponseCode.INVALID_VALUE, f"values: index {index} is not listed in ?index=", "values"
            )
    for index in listed:
        if index not in given:
            raise WriteError(
                ResponseCode.INVALID_VALUE, f"index: {index} is listed but no value has it", "index"
            )
    existing = {v.index for v in old}
    if not overwrite:
        clash = sorted(listed & existing)
        if clash:
            raise WriteError(
                ResponseCode.VALUE_ALREADY_EXISTS, f"index {clash[0]} has a value already", "index"
            )
    merged = [given.get(v.index, v) for v in old]  # replaced in place: the record keeps its order
    merged += [v for v in new if v.index not in existing]
    return merged


def delete_identifier_entry(
    handle: str,
    *,
    indexes: Sequence[int] | None = None,
    allowed_prefix: bytes | None = None,
    check: bool = False,
    now_s: float | None = None,
    actor: Actor | None = None,
) -> bytes:
    """The log entry of `delete_identifier`."""
    check_handle_key(handle)
    return encode_entry(entries.DELETE_IDENTIFIER, {
        "handle": handle, "indexes": list(indexes) if indexes is not None else None, "allowed": allowed_prefix,
        "check": check, "time_ns": _time_ns(now_s), "actor": entries.actor_args(actor or audit.cli_actor()),
    })  # fmt: skip


def delete_identifier(
    target: Any,
    handle: str,
    *,
    indexes: Sequence[int] | None = None,
    allowed_prefix: bytes | None = None,
    checker: RecordChecker | bool | None = None,
    actor: Actor | None = None,
) -> str:
    """Delete `handle` ("deleted") or only its values at `indexes` ("values removed"). A handle that does not
    exist is HANDLE_NOT_FOUND; indexes none of which has a value are VALUES_NOT_FOUND. Audited as `actor`'s
    (default: this `idnode` command's user)."""
    entry = delete_identifier_entry(
        handle, indexes=indexes, allowed_prefix=allowed_prefix, check=bool(checker), actor=actor
    )
    return unwrap(submit_one(target, entry))


def apply_delete_identifier(store: Store, txn: lmdb.Transaction, args: dict, changed: Changed = _no_note) -> str:
    return delete_identifier_in(
        store, txn, args["handle"], indexes=args["indexes"], allowed_prefix=args["allowed"],
        checker=_checker(store, args["check"]), now_ns=args["time_ns"], actor=Actor(*args["actor"]),
        changed=changed,
    )  # fmt: skip


def delete_identifier_in(
    store: Store,
    txn: lmdb.Transaction,
    handle: str,
    *,
    indexes: Sequence[int] | None,
    allowed_prefix: bytes | None,
    checker: RecordChecker | None,
    now_ns: int,
    actor: Actor,
    changed: Changed = _no_note,
) -> str:
    """The delete policy, in the applying transaction; raises WriteError before anything changes."""
    key = key_for(store, handle)
    prefix = check_prefix(store, txn, key, allowed_prefix)
    old_raw = txn.get(key, db=store.handles)
    if old_raw is None:
        raise WriteError(ResponseCode.HANDLE_NOT_FOUND, f"{handle} does not exist")
    old_raw = bytes(old_raw)
    if indexes is None:
        changed(key, old_raw)
        txn.delete(key, db=store.handles)
        audit.record(store, txn, actor.identity, actor.source, audit.DELETE, handle, now_ns=now_ns)
        return "deleted"
    old = _decode(old_raw, handle, store)
    listed = set(indexes)
    kept = [v for v in old if v.index not in listed]
    if len(kept) == len(old):
        raise WriteError(ResponseCode.VALUES_NOT_FOUND, f"{handle} has no value at index {sorted(listed)}")
    if checker is not None and checker.wants(txn, prefix):
        checker.check(txn, handle, kept, lambda k: k == key or txn.get(k, db=store.handles) is not None)
    changed(key, old_raw)
    txn.put(key, pack_record(kept), db=store.handles)
    audit.record(store, txn, actor.identity, actor.source, audit.REMOVE_VALUES, handle,
                 {"indexes": sorted(listed)}, now_ns=now_ns)  # fmt: skip
    return "values removed"


# -- batches -------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class BatchItem:
    """One identifier of a batch, parsed: its key and stored record, or why it could not be parsed."""

    position: int  # 1-based line or array position, for the per-item result
    handle: str = ""
    key: bytes = b""
    record: bytes = b""
    error: WriteError | None = None
    values: Callable[[], Sequence[HandleValue]] | None = None  # decoded values, built only when checked


@dataclass(slots=True)
class BatchResult:
    results: list[dict] = field(
        default_factory=list
    )  # per item: position, handle, responseCode, status/message
    created: int = 0
    replaced: int = 0
    failed: int = 0
    written: bool = False  # False when an atomic batch was refused whole
    first_error: WriteError | None = None  # of the first failed item, in batch order
    results_json: bytes | None = None  # `results` as a JSON array, when they came encoded (to_data)

    def item_results(self) -> list[dict]:
        """The per-item results, decoded from `results_json` when they came encoded."""
        if self.results_json is not None and not self.results:
            self.results = orjson.loads(self.results_json)
        return self.results

    def to_data(self, encoded: bool = False) -> dict:
        """As plain data (a log entry's result). `encoded`: the per-item results as one JSON array (bytes), for
        a serving worker that passes them into its HTTP answer as they are: 2,000 results decoded and encoded
        again would hold its event loop ~1 ms, and its UDP answers with it."""
        first = self.first_error
        results: dict = {"results_json": orjson.dumps(self.results)} if encoded else {"results": self.results}
        return {
            **results, "created": self.created, "replaced": self.replaced, "failed": self.failed,
            "written": self.written,
            "first": None if first is None else [int(first.code), first.message, first.field,
                                                  isinstance(first, TemplateViolation)],
        }  # fmt: skip

    @classmethod
    def from_data(cls, data: dict) -> BatchResult:
        first = data["first"]
        error: WriteError | None = None
        if first is not None:
            code, message, field_name, template = first
            if template:
                error = TemplateViolation(field_name or "", "")
                error.message, error.args = message, (message,)
            else:
                error = WriteError(ResponseCode(code), message, field_name)
        return cls(data.get("results") or [], data["created"], data["replaced"], data["failed"], data["written"],
                   error, data.get("results_json"))  # fmt: skip


def put_batch_entry(
    items: Sequence[BatchItem],
    *,
    atomic: bool = False,
    overwrite: bool = True,
    allowed_prefix: bytes | None = None,
    check: bool = False,
    now_s: float | None = None,
    counter_kind: str = REGISTRATIONS_HTTP,
    actor: Actor | None = None,
    lines: bytes | None = None,
) -> bytes:
    """The log entry of `put_batch`: every item as [position, handle, record], or [position, handle, code,
    message, field] for one that could not be parsed; or, with `lines` (NDJSON as received, `items` empty),
    the lines themselves, parsed where the entry is applied (`parse_batch_lines`)."""
    rows: list[list] = []
    for item in items:
        if item.error is not None:
            e = item.error
            rows.append([item.position, item.handle, int(e.code), e.message, e.field,
                         isinstance(e, TemplateViolation)])  # fmt: skip
        else:
            rows.append([item.position, item.handle, item.record])
    return encode_entry(entries.PUT_BATCH, {
        "items": rows, **({"lines": lines} if lines is not None else {}), "atomic": atomic, "overwrite": overwrite, "allowed": allowed_prefix, "check": check,
        "time_ns": _time_ns(now_s), "counter": counter_kind, "actor": entries.actor_args(actor or audit.cli_actor()),
    })  # fmt: skip


def put_batch(
    target: Any,
    items: Sequence[BatchItem],
    *,
    atomic: bool = False,
    overwrite: bool = True,
    allowed_prefix: bytes | None = None,
    checker: RecordChecker | bool | None = None,
    now_s: float | None = None,
    counter_kind: str = REGISTRATIONS_HTTP,
    actor: Actor | None = None,
    lines: bytes | None = None,
) -> BatchResult:
    """Write every good item of a batch in one entry and say per item what happened. With `atomic`, one bad
    item refuses the whole batch: nothing is written and `written` is False. Every written item is audited as
    `actor`'s (create or replace), in the same transaction. `lines` (NDJSON, `items` empty) are parsed by
    the writer, not by the caller: a serving worker hands a batch over without spending its CPU on it."""
    entry = put_batch_entry(
        items, atomic=atomic, overwrite=overwrite, allowed_prefix=allowed_prefix, check=bool(checker),
        now_s=now_s, counter_kind=counter_kind, actor=actor, lines=lines,
    )  # fmt: skip
    return BatchResult.from_data(unwrap(submit_one(target, entry)))


def apply_put_batch(store: Store, txn: lmdb.Transaction, args: dict, changed: Changed = _no_note) -> dict:
    items = parse_batch_lines(store, args["lines"], args["time_ns"]) if "lines" in args else []
    for row in args["items"]:
        if len(row) == 3:
            position, handle, record = row
            item = BatchItem(position, handle, record=record)
            try:
                item.key = key_for(store, handle)
            except WriteError as exc:
                item.error = exc
        else:
            position, handle, code, message, field_name, template = row
            error = TemplateViolation(field_name or "", "") if template else WriteError(ResponseCode(code), message,
                                                                                        field_name)  # fmt: skip
            error.message, error.args = message, (message,)
            item = BatchItem(position, handle, error=error)
        items.append(item)
    result = put_batch_in(
        store, txn, items, atomic=args["atomic"], overwrite=args["overwrite"], allowed_prefix=args["allowed"],
        checker=_checker(store, args["check"]), now_ns=args["time_ns"], counter_kind=args["counter"],
        actor=Actor(*args["actor"]), changed=changed,
    )  # fmt: skip
    encoded = "lines" in args  # NDJSON from a serving worker: its answer goes back to HTTP as JSON
    if not result.written:
        raise AbortWith(result.to_data(encoded))
    return result.to_data(encoded)


def put_batch_in(
    store: Store,
    txn: lmdb.Transaction,
    items: Sequence[BatchItem],
    *,
    atomic: bool,
    overwrite: bool,
    allowed_prefix: bytes | None,
    checker: RecordChecker | None,
    now_ns: int,
    counter_kind: str,
    actor: Actor,
    changed: Changed = _no_note,
) -> BatchResult:
    """The batch policy, in the applying transaction. An atomic batch with a bad item writes nothing and
    returns its result with `written` False (the caller aborts the transaction)."""
    errors: dict[int, WriteError] = {}
    prefix_of: dict[int, bytes] = {}
    first_seen: dict[bytes, int] = {}
    for n, item in enumerate(items):
        if item.error is not None:
            errors[n] = item.error
            continue
        if item.key in first_seen:
            errors[n] = WriteError(
                ResponseCode.INVALID_VALUE,
                f"{item.handle} appears twice in this batch (first at {items[first_seen[item.key]].position})",
            )
            continue
        first_seen[item.key] = n
        try:
            prefix_of[n] = check_prefix(store, txn, item.key, allowed_prefix)
        except WriteError as exc:
            errors[n] = exc
    good = [n for n in range(len(items)) if n not in errors]
    # The good keys are unique (a repeated one is refused above), so sorted they are strictly ascending.
    all_new = store.appendable(txn, sorted(items[n].key for n in good))
    existed: dict[int, bytes] = {}  # item -> the record it replaces
    if not all_new:
        for n in good:
            old = txn.get(items[n].key, db=store.handles)
            if old is not None:
                existed[n] = bytes(old)
        if not overwrite:
            for n in existed:
                errors[n] = WriteError(ResponseCode.HANDLE_ALREADY_EXISTS, f"{items[n].handle} exists already")
    if checker is not None:
        _check_batch(txn, store, items, prefix_of, errors, checker)
    result = BatchResult()
    for n, item in enumerate(items):
        if n in errors:
            error = errors[n]
            entry = {"position": item.position, "responseCode": int(error.code), "message": error.message}
            if item.handle:
                entry["handle"] = item.handle
            if error.field:
                entry["field"] = error.field
            result.results.append(entry)
            result.failed += 1
            if result.first_error is None:
                result.first_error = error
        else:
            status = "replaced" if n in existed else "created"
            result.results.append({"position": item.position, "handle": item.handle, "responseCode": 1,
                                   "status": status})  # fmt: skip
            if n in existed:
                result.replaced += 1
            else:
                result.created += 1
    if atomic and errors:
        result.created = result.replaced = 0
        for entry in result.results:
            if entry["responseCode"] == 1:
                entry["status"] = "not written: the atomic batch was refused"
        return result
    writes = sorted((items[n].key, items[n].record) for n in range(len(items)) if n not in errors)
    if writes:
        for n in range(len(items)):
            if n not in errors:
                changed(items[n].key, existed.get(n))
        with txn.cursor(store.handles) as cursor:
            cursor.putmulti(writes, append=all_new)
        store.index_long_keys(txn, (key for key, _ in writes))
        created = (prefix_of[n] for n in prefix_of if n not in errors and n not in existed)
        store.add_counts_in(txn, _registrations(created, now_ns / 1e9, counter_kind))
        audit.record_many(store, txn, actor, (
            (audit.REPLACE if n in existed else audit.CREATE, items[n].handle, None)
            for n in range(len(items)) if n not in errors
        ), now_ns=now_ns)  # fmt: skip
    result.written = True
    return result


def normalize_value_json(obj: Any) -> Any:
    """Accept what Handle.Net clients send that the bulk format is strict about: pyhandle writes the index of
    an HS_ADMIN value's admin as a string ("200")."""
    if type(obj) is dict:
        data = obj.get("data")
        if type(data) is dict and data.get("format") == "admin":
            admin = data.get("value")
            if type(admin) is dict and type(admin.get("index")) is str and admin["index"].isdigit():
                return {**obj, "data": {**data, "value": {**admin, "index": int(admin["index"])}}}
    return obj


def _decoder(encoded: list[bytes]) -> Callable[[], list[HandleValue]]:
    return lambda: [decode_value(Reader(e)) for e in encoded]


def numbered_lines(body: bytes) -> list[tuple[int, bytes]]:
    """(line number, line) of every non-empty line of NDJSON."""
    return [(n, line) for n, line in enumerate(body.split(b"\n"), 1) if line.strip()]


def parse_batch_lines(store: Store, body: bytes, time_ns: int) -> list[BatchItem]:
    """The items of an NDJSON batch, each line parsed by the bulk loader's encoder at the entry's time (so
    every member applying the entry builds the same records)."""
    encoder = ValueEncoder(time_ns // 1_000_000_000)
    items = []
    for n, line in numbered_lines(body):
        try:
            obj: Any = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            obj = exc
        items.append(parse_batch_item(n, obj, encoder, store))
    return items


def parse_batch_item(position: int, obj: Any, encoder: ValueEncoder, store: Store) -> BatchItem:
    """One record `{"handle", "values"}` of a batch (parsed JSON, or the exception that parsing raised) as a
    BatchItem: its key and stored record, or the error that names what is wrong."""
    item = BatchItem(position)
    if isinstance(obj, Exception):  # a line that is not JSON, or a CSV row that is no value (csvinput)
        text = str(obj) if isinstance(obj, ValueFormatError) else f"not JSON: {obj}"
        item.error = WriteError(ResponseCode.PROTOCOL_ERROR, text)
        return item
    try:
        if type(obj) is dict and type(obj.get("values")) is list:
            obj = {**obj, "values": [normalize_value_json(v) for v in obj["values"]]}
        handle, encoded, all_public = encoded_record_from_json(obj, encoder)
        item.handle = handle
        item.key = key_for(store, handle)
        item.record = pack_encoded(encoded, all_public)
        item.values = _decoder(encoded)
    except WriteError as exc:
        item.error = exc
    except (ValueError, RecursionError, HandleProtocolError) as exc:  # value format errors name the field
        item.error = WriteError(ResponseCode.INVALID_VALUE, str(exc), str(exc).split(":", 1)[0])
    return item


def _check_batch(
    txn: lmdb.Transaction,
    store: Store,
    items: Sequence[BatchItem],
    prefix_of: dict[int, bytes],
    errors: dict[int, WriteError],
    checker: RecordChecker,
) -> None:
    """Template checks of a batch. References may name identifiers of the same batch, so a check counts the
    batch's good items as existing; when an item fails, the items checked against it are checked again."""
    wanted: dict[bytes, bool] = {}
    checked = []
    for n, prefix in prefix_of.items():
        if n in errors:
            continue
        if prefix not in wanted:
            wanted[prefix] = checker.wants(txn, prefix)
        if wanted[prefix]:
            checked.append(n)
    if not checked:
        return
    while True:
        pending = {items[n].key for n in prefix_of if n not in errors}

        def exists(key: bytes, pending=pending) -> bool:
            return key in pending or txn.get(key, db=store.handles) is not None

        failed_now = False
        for n in checked:
            if n in errors:
                continue
            item = items[n]
            try:
                values = item.values() if item.values is not None else decode_record_values(item.record)
                checker.check(txn, item.handle, values, exists)
            except WriteError as exc:
                errors[n] = exc
                failed_now = True
        if not failed_now:
            return
