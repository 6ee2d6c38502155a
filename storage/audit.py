"""The audit trail: every write to the store (HTTP API, batches, `idnode` commands, the loader) recorded
append-only with time, identity, source address, operation and handle, in the named LMDB database `audit` of
the node's store.

A writer calls `record(store, txn, ...)` inside its own write transaction, so an entry exists exactly when
the write committed: an aborted or refused write leaves no entry, and a write cannot commit without one.
Keys are the big-endian time in ns followed by a big-endian sequence number, taken under LMDB's writer lock
from the last key, so keys grow strictly in commit order across processes even when the clock steps back
(an entry then carries the time of the one before it). Values are msgpack records with a schema version.
Nothing in this module updates or deletes an entry.

Never imports the servers.
"""

from __future__ import annotations

import getpass
import os
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import lmdb
import msgpack

from storage.store import Store

AUDIT_SCHEMA_VERSION = 1  #: version of the msgpack audit record
MAX_FIELD_CHARS = 2048  #: identity, source and operation are cut here (a handle is at most 2048 bytes anyway)
_KEY = struct.Struct(">QI")  # time_ns, sequence within that nanosecond

# Operations the writers record (free text is accepted; these keep the trail greppable).
CREATE = "create"  #: a new identifier
REPLACE = "replace"  #: an identifier's record replaced whole
UPDATE = "update"  #: values added or changed
REMOVE_VALUES = "remove-values"  #: some values removed
DELETE = "delete"  #: an identifier deleted
LOAD = "load"  #: a chunk of `idnode load` (handle: the chunk's first; detail: count, last, file, line)
PREFIX_ADD = "prefix-add"  #: handle 0.NA/<prefix>
PREFIX_ENABLE = "prefix-enable"
PREFIX_DISABLE = "prefix-disable"
CREDENTIAL_ISSUE = "credential-issue"
TEMPLATE_SET = "template-set"
TEMPLATE_DELETE = "template-delete"
CLI_SOURCE = "cli"  #: the source of writes made by `idnode` commands on the store directly


@dataclass(frozen=True, slots=True)
class Actor:
    """Who writes and from where, as the audit trail records it: an HTTP caller (`300:88.100.7/ADMIN` or
    `operator`, from `203.0.113.5:40122`) or an `idnode` command (`cli:<user>`, from `cli`)."""

    identity: str
    source: str


def cli_actor() -> Actor:
    """The actor of an `idnode` command: `cli:<login name>` (the uid when the name cannot be found)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return Actor(f"cli:{user}", CLI_SOURCE)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    time_ns: int
    seq: int
    identity: str
    source: str
    operation: str
    handle: str
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def prefix(self) -> str:
        return handle_prefix(self.handle)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "time": format_time(self.time_ns),
            "timeNs": self.time_ns,
            "identity": self.identity,
            "source": self.source,
            "operation": self.operation,
            "handle": self.handle,
        }
        if self.detail:
            out["detail"] = self.detail
        return out


def format_time(time_ns: int) -> str:
    seconds, rest = divmod(time_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1000:06d}Z"


def handle_prefix(handle: str) -> str:
    """The enterprise prefix a handle is under: `88.100.7` for `88.100.7/X` and for `0.NA/88.100.7`."""
    head, sep, rest = handle.partition("/")
    if sep and head.upper() == "0.NA":
        return rest
    return head


def _cut(text: object) -> str:
    text = str(text)
    return text if len(text) <= MAX_FIELD_CHARS else text[:MAX_FIELD_CHARS]


def record(
    store: Store,
    txn: lmdb.Transaction,
    identity: str,
    source: str,
    operation: str,
    handle: str,
    detail: Mapping[str, Any] | None = None,
    *,
    now_ns: int | None = None,
) -> bytes:
    """Append an audit entry in the caller's write transaction `txn`; returns its key. `identity`: who
    (enterprise user, "operator", "cli:<user>"); `source`: from where ("203.0.113.5:40122", "cli", "load");
    `operation`: what (the constants above); `handle`: on what; `detail`: small extra facts (msgpack types)."""
    _, key = _append(store, txn, identity, source, ((operation, handle, detail),), now_ns)
    return key


def record_many(
    store: Store,
    txn: lmdb.Transaction,
    actor: Actor,
    entries: Iterable[tuple[str, str, Mapping[str, Any] | None]],
    *,
    now_ns: int | None = None,
) -> int:
    """`record` for several writes of one transaction (a batch): one entry per (operation, handle, detail),
    in order, sharing the time. Returns how many were recorded."""
    n, _ = _append(store, txn, actor.identity, actor.source, entries, now_ns)
    return n


def _append(
    store: Store,
    txn: lmdb.Transaction,
    identity: str,
    source: str,
    entries: Iterable[tuple[str, str, Mapping[str, Any] | None]],
    now_ns: int | None,
) -> tuple[int, bytes]:
    """Append the entries after the last key, all at one time; (how many, the last key written)."""
    now = time.time_ns() if now_ns is None else now_ns
    n, key = 0, b""
    with txn.cursor(store.audit_db) as cursor:
        if cursor.last():
            last_ns, last_seq = _KEY.unpack(cursor.key())
        else:
            last_ns, last_seq = -1, 0
        identity, source = _cut(identity), _cut(source)
        for operation, handle, detail in entries:
            if now > last_ns:
                last_ns, last_seq = now, 0
            else:
                last_seq += 1
            key = _KEY.pack(last_ns, last_seq)
            value = msgpack.packb([
                AUDIT_SCHEMA_VERSION, identity, source, _cut(operation), str(handle), dict(detail or {}),
            ])  # fmt: skip
            cursor.put(key, value, append=True)
            n += 1
    return n, key


def _decode(key: bytes, raw: bytes) -> AuditEntry:
    time_ns, seq = _KEY.unpack(key)
    version, identity, source, operation, handle, detail = msgpack.unpackb(raw)
    if version != AUDIT_SCHEMA_VERSION:
        raise ValueError(f"audit record schema {version!r}, this node reads {AUDIT_SCHEMA_VERSION}")
    return AuditEntry(time_ns, seq, identity, source, operation, handle, detail)


def _matches_prefix(handle: str, prefix: str) -> bool:
    """Whether `handle` is under `prefix` or one of its sub-prefixes (case-insensitive)."""
    own = handle_prefix(handle).upper()
    return own == prefix or own.startswith(prefix + ".")


def query(
    store: Store,
    prefix: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
    *,
    newest: bool = False,
) -> list[AuditEntry]:
    """Entries in time order whose handle is under `prefix` (or a sub-prefix of it; 0.NA/<prefix> counts
    too), at or after `since` and before `until` (Unix seconds). With `limit`, the first `limit` matches, or
    with `newest` the last `limit` (still returned oldest first)."""
    want = prefix.upper() if prefix else None
    low = _KEY.pack(max(0, int(since * 1e9)), 0) if since is not None else b""
    high = _KEY.pack(max(0, int(until * 1e9)), 0) if until is not None else None
    found: list[AuditEntry] = []
    with store.env.begin(db=store.audit_db) as txn, txn.cursor() as cursor:
        if newest:  # walk back from the last key before `high`
            if high is not None and cursor.set_range(high):
                positioned = cursor.prev()
            else:
                positioned = cursor.last()
            rows = cursor.iterprev() if positioned else iter(())
        else:
            rows = cursor.iternext() if cursor.set_range(low) else iter(())
        for key, raw in rows:
            if (key < low) if newest else (high is not None and key >= high):
                break
            entry = _decode(key, raw)
            if want and not _matches_prefix(entry.handle, want):
                continue
            found.append(entry)
            if limit is not None and len(found) >= limit:
                break
    if newest:
        found.reverse()
    return found


def count(store: Store) -> int:
    with store.env.begin() as txn:
        return txn.stat(store.audit_db)["entries"]
