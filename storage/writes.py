"""Identifier writes of the HTTP API: create or replace, update or add some values, remove values, delete, and
batches. Each is one LMDB write transaction that checks what it must inside it (the prefix is hosted here,
the writer may write under it, the record passes the prefix's templates) and counts new identifiers as
registrations in the same transaction, and records who wrote what in the audit trail (storage/audit.py) in it
too. A refused write raises before anything is put and the transaction is aborted, so it leaves the store as
it was (and no audit entry); an atomic batch is refused whole the same way.

Every refusal is a `WriteError` carrying the Handle response code it maps to; the HTTP layer turns that into a
status. Never imports the servers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import lmdb

from resolver.handle.constants import ResponseCode
from resolver.handle.errors import HandleProtocolError
from resolver.handle.values import HandleValue, decode_value
from resolver.handle.wire import Reader
from storage import audit
from storage.audit import Actor
from storage.enterprises import ADMIN_SUFFIX
from storage.jsonvalues import ValueEncoder, encoded_record_from_json
from storage.keys import InvalidHandle, written_handle_key
from storage.records import RecordError, SharedLookup, pack_encoded, pack_record, split_values, unpack_record
from storage.store import REGISTRATIONS, PrefixInfo, Store, counter_key, today

MAX_BATCH_ITEMS = 2_000  #: identifiers per batch: one transaction stays short (~10 ms) for the other writers
REGISTRATIONS_HTTP = f"{REGISTRATIONS}.http"  #: counter kind of identifiers created over the HTTP API
REGISTRATIONS_CLI = f"{REGISTRATIONS}.cli"  #: ... created by `idnode register` and `idnode scenario load`
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


def put_identifier(
    store: Store,
    handle: str,
    values: Sequence[HandleValue],
    *,
    overwrite: bool = True,
    indexes: Sequence[int] | None = None,
    allowed_prefix: bytes | None = None,
    checker: RecordChecker | None = None,
    now_s: float | None = None,
    actor: Actor | None = None,
) -> str:
    """Create or replace `handle` with `values` ("created" or "replaced"), or with `indexes` set only the
    values at those indexes, adding the ones that are new ("updated"). `overwrite=False` refuses an existing
    identifier (HANDLE_ALREADY_EXISTS), or with `indexes` an existing value (VALUE_ALREADY_EXISTS). The write
    is audited as `actor`'s (default: this `idnode` command's user)."""
    actor = actor or audit.cli_actor()
    key = key_for(store, handle)
    _check_indexes_unique(values)

    def work(txn: lmdb.Transaction) -> str:
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
        txn.put(key, pack_record(result), db=store.handles)
        store.index_long_keys(txn, (key,))
        if outcome == "created":
            store.add_counts_in(txn, _registrations([prefix], now_s))
        detail = {"indexes": sorted(indexes)} if indexes is not None else None
        audit.record(store, txn, actor.identity, actor.source, AUDIT_OPERATIONS[outcome], handle, detail)
        return outcome

    return store.write(work)


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


def delete_identifier(
    store: Store,
    handle: str,
    *,
    indexes: Sequence[int] | None = None,
    allowed_prefix: bytes | None = None,
    checker: RecordChecker | None = None,
    actor: Actor | None = None,
) -> str:
    """Delete `handle` ("deleted") or only its values at `indexes` ("values removed"). A handle that does not
    exist is HANDLE_NOT_FOUND; indexes none of which has a value are VALUES_NOT_FOUND. Audited as `actor`'s
    (default: this `idnode` command's user)."""
    key = key_for(store, handle)
    actor = actor or audit.cli_actor()

    def work(txn: lmdb.Transaction) -> str:
        prefix = check_prefix(store, txn, key, allowed_prefix)
        old_raw = txn.get(key, db=store.handles)
        if old_raw is None:
            raise WriteError(ResponseCode.HANDLE_NOT_FOUND, f"{handle} does not exist")
        if indexes is None:
            txn.delete(key, db=store.handles)
            audit.record(store, txn, actor.identity, actor.source, audit.DELETE, handle)
            return "deleted"
        old = _decode(old_raw, handle, store)
        listed = set(indexes)
        kept = [v for v in old if v.index not in listed]
        if len(kept) == len(old):
            raise WriteError(
                ResponseCode.VALUES_NOT_FOUND, f"{handle} has no value at index {sorted(listed)}"
            )
        if checker is not None and checker.wants(txn, prefix):
            checker.check(txn, handle, kept, lambda k: k == key or txn.get(k, db=store.handles) is not None)
        txn.put(key, pack_record(kept), db=store.handles)
        audit.record(
            store, txn, actor.identity, actor.source, audit.REMOVE_VALUES, handle, {"indexes": sorted(listed)}
        )
        return "values removed"

    return store.write(work)


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


def put_batch(
    store: Store,
    items: Sequence[BatchItem],
    *,
    atomic: bool = False,
    overwrite: bool = True,
    allowed_prefix: bytes | None = None,
    checker: RecordChecker | None = None,
    now_s: float | None = None,
    counter_kind: str = REGISTRATIONS_HTTP,
    actor: Actor | None = None,
) -> BatchResult:
    """Write every good item of a batch in one transaction and say per item what happened. With `atomic`,
    one bad item refuses the whole batch: nothing is written and `written` is False. Every written item is
    audited as `actor`'s (create or replace), in the same transaction."""
    now_s = time.time() if now_s is None else now_s
    actor = actor or audit.cli_actor()

    def work(txn: lmdb.Transaction) -> BatchResult:
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
        existed: set[int] = set()
        if not all_new:
            for n in good:
                if txn.get(items[n].key, db=store.handles) is not None:
                    existed.add(n)
            if not overwrite:
                for n in existed:
                    errors[n] = WriteError(
                        ResponseCode.HANDLE_ALREADY_EXISTS, f"{items[n].handle} exists already"
                    )
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
            raise _AtomicRefusal(result)
        writes = sorted((items[n].key, items[n].record) for n in range(len(items)) if n not in errors)
        if writes:
            with txn.cursor(store.handles) as cursor:
                cursor.putmulti(writes, append=all_new)
            store.index_long_keys(txn, (key for key, _ in writes))
            created = (prefix_of[n] for n in prefix_of if n not in errors and n not in existed)
            store.add_counts_in(txn, _registrations(created, now_s, counter_kind))
            audit.record_many(store, txn, actor, (
                (audit.REPLACE if n in existed else audit.CREATE, items[n].handle, None)
                for n in range(len(items)) if n not in errors
            ))  # fmt: skip
        result.written = True
        return result

    try:
        return store.write(work)
    except _AtomicRefusal as refusal:
        result = refusal.result
        result.created = result.replaced = 0
        for entry in result.results:
            if entry["responseCode"] == 1:
                entry["status"] = "not written: the atomic batch was refused"
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


def parse_batch_item(position: int, obj: Any, encoder: ValueEncoder, store: Store) -> BatchItem:
    """One record `{"handle", "values"}` of a batch (parsed JSON, or the exception that parsing raised) as a
    BatchItem: its key and stored record, or the error that names what is wrong."""
    item = BatchItem(position)
    if isinstance(obj, Exception):
        item.error = WriteError(ResponseCode.PROTOCOL_ERROR, f"not JSON: {obj}")
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


class _AtomicRefusal(Exception):
    """Aborts the transaction of an atomic batch with a bad item, carrying the per-item results."""

    def __init__(self, result: BatchResult):
        super().__init__("atomic batch refused")
        self.result = result


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
