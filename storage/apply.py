"""Applying write-log entries to the store: one registry, entry kind -> apply function(store, txn, args, ctx).

`apply_batch_in` applies entries in position order inside the caller's write transaction and records the last
applied position there too (`Store.set_applied_position_in`), so an entry is applied exactly once however the
process dies: either its changes and its position commit together, or neither does. An entry at or below the
applied position (a replay after a crash) is skipped. Each entry runs in a nested transaction (LMDB's child
transaction), so an entry that is refused or fails leaves nothing behind while the others of the batch commit.

A refusal by the store's rules (WriteError, EnterpriseError, TemplateError) is a RESULT, decided by the entry
and the store alone, so every member applying the same log reaches the same state. An entry that cannot be
decoded or names an unknown kind is fatal (ApplyError): the apply loop must stop there, with nothing of that
entry applied. Any other exception of an apply function propagates as EntryFailed (which entry, why); the
embedded log leaves such an entry out of the log and answers it as failed (storage/log.py).

Every change of an identifier is noted for the DNS zone journal through `identifier_changed` (a bulk-load
chunk through `identifiers_loaded`, a prefix change that moves identifiers into or out of the zone through
`zonejournal.note_prefix_change`), in the entry's own transaction. Never imports the servers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import lmdb

from resolver import templates
from storage import counters, enterprises, entries, loader, members, writes, zonejournal
from storage.entries import EntryError, Result, decode_entry, ok, refusal_of
from storage.keys import normalize_prefix
from storage.store import Store

log = logging.getLogger(__name__)


class ApplyError(Exception):
    """An entry this node cannot apply (undecodable, or a kind this version does not know): the apply loop
    stops at it, and nothing of it is applied. Upgrade the node, or restore a store from a member that can."""


class EntryFailed(Exception):
    """Applying the entry at `index` of a batch raised `cause` (a fault, not a refusal); the batch's
    transaction must be aborted."""

    def __init__(self, index: int, position: int, cause: BaseException):
        super().__init__(f"entry at position {position} failed: {cause!r}")
        self.index = index
        self.position = position
        self.cause = cause


@dataclass(frozen=True, slots=True)
class Context:
    """What an apply function may know beyond its args: the entry's log position, and for a load chunk the
    records already parsed by the loader (a chunk logged by reference need not be parsed again)."""

    position: int
    payload: Any = None


# -- the zone journal's hooks --------------------------------------------------------------------------------


def identifier_changed(store: Store, txn: lmdb.Transaction, position: int, key: bytes, old_raw: bytes | None) -> None:
    """Every identifier key an entry creates, replaces or deletes, with the record it held before (None when it
    did not exist), noted for DNS IXFR in the entry's transaction."""
    zonejournal.note_change(store, txn, position, key, old_raw)


def identifiers_loaded(store: Store, txn: lmdb.Transaction, position: int, first_key: bytes, last_key: bytes) -> None:
    """A bulk-load chunk wrote keys first_key..last_key (not noted one by one)."""
    zonejournal.note_bulk(store, txn, position, first_key, last_key)


def _prefix_entry(apply: Callable[[Store, lmdb.Transaction, dict], Any]) -> Apply:
    """A prefix entry, noted for the zone journal when it moves identifiers into or out of the DNS zone."""

    def run(store: Store, txn: lmdb.Transaction, args: dict, ctx: Context) -> Any:
        try:
            key = normalize_prefix(enterprises.validate_prefix(args["prefix"]).encode())
        except enterprises.EnterpriseError:
            return apply(store, txn, args)  # refused by the apply function the same way, nothing to note
        was_hosted = zonejournal.hosted_in(store, txn, key)
        value = apply(store, txn, args)
        zonejournal.note_prefix_change(store, txn, ctx.position, key, was_hosted)
        return value

    return run


def _changed(store: Store, txn: lmdb.Transaction, ctx: Context) -> Callable[[bytes, bytes | None], None]:
    return lambda key, old_raw: identifier_changed(store, txn, ctx.position, key, old_raw)


# -- the registry --------------------------------------------------------------------------------------------

Apply = Callable[[Store, lmdb.Transaction, dict, Context], Any]

APPLY: dict[str, Apply] = {
    entries.PUT_IDENTIFIER: lambda s, t, a, c: writes.apply_put_identifier(s, t, a, _changed(s, t, c)),
    entries.DELETE_IDENTIFIER: lambda s, t, a, c: writes.apply_delete_identifier(s, t, a, _changed(s, t, c)),
    entries.PUT_BATCH: lambda s, t, a, c: writes.apply_put_batch(s, t, a, _changed(s, t, c)),
    entries.ADD_PREFIX: _prefix_entry(enterprises.apply_add_prefix),
    entries.SET_PREFIX_ENABLED: _prefix_entry(enterprises.apply_set_prefix_enabled),
    entries.ISSUE_CREDENTIAL: lambda s, t, a, c: enterprises.apply_issue_credential(s, t, a, _changed(s, t, c)),
    entries.SET_OPERATOR_SECRET: lambda s, t, a, c: enterprises.apply_set_operator_secret(s, t, a),
    entries.SET_TEMPLATES: lambda s, t, a, c: templates.apply_set_templates(s, t, a),
    entries.DELETE_TEMPLATES: lambda s, t, a, c: templates.apply_delete_templates(s, t, a),
    entries.ADD_COUNTS: lambda s, t, a, c: counters.apply_add_counts(s, t, a),
    entries.MARK_SEEN: lambda s, t, a, c: enterprises.apply_mark_seen(s, t, a),
    entries.LOAD_CHUNK: lambda s, t, a, c: loader.apply_load_chunk(
        s, t, a, c.payload, lambda first, last: identifiers_loaded(s, t, c.position, first, last)
    ),
    entries.LOAD_DONE: lambda s, t, a, c: loader.apply_load_done(s, t, a),
    entries.SET_MEMBER: lambda s, t, a, c: members.apply_set_member(s, t, a),
    entries.REMOVE_MEMBER: lambda s, t, a, c: members.apply_remove_member(s, t, a),
}
assert set(APPLY) == entries.KINDS, "every entry kind has its apply function"


def apply_entry(store: Store, txn: lmdb.Transaction, position: int, raw: bytes, payload: Any = None) -> Result:
    """Apply one entry in a child transaction of `txn`: its result; ApplyError when it cannot be decoded or
    its kind is unknown. Other exceptions propagate after the child is aborted."""
    try:
        kind, args = decode_entry(raw)
    except EntryError as exc:
        raise ApplyError(f"entry at position {position}: {exc}") from exc
    child = store.env.begin(write=True, parent=txn)
    try:
        value = APPLY[kind](store, child, args, Context(position, payload))
    except writes.AbortWith as abort:
        child.abort()
        return ok(abort.result)
    except BaseException as exc:
        child.abort()
        refused = refusal_of(exc) if isinstance(exc, Exception) else None
        if refused is None:
            raise
        return refused
    child.commit()
    return ok(value)


def apply_batch_in(
    store: Store,
    txn: lmdb.Transaction,
    items: Sequence[tuple[int, bytes]],
    payloads: Sequence[Any] | None = None,
) -> list[Result | None]:
    """Apply (position, entry) pairs in order inside `txn` and record the last position applied. An entry at or
    below the applied position is skipped (None in its place: it was applied before); a position that does
    not follow the applied one is ApplyError (a gap in the log). A failing entry raises EntryFailed."""
    applied = store.applied_position(txn)
    results: list[Result | None] = []
    for index, (position, raw) in enumerate(items):
        if position <= applied:
            results.append(None)
            continue
        if position != applied + 1:
            raise ApplyError(f"the log jumps from position {applied} to {position}: entries are missing")
        try:
            results.append(apply_entry(store, txn, position, raw, payloads[index] if payloads else None))
        except (ApplyError, lmdb.MapFullError, lmdb.MapResizedError):
            raise  # the map is full or was grown elsewhere: Store.write grows or adopts it and runs all again
        except Exception as exc:
            raise EntryFailed(index, position, exc) from exc
        applied = position
    store.set_applied_position_in(txn, applied)
    return results


def apply_batch(store: Store, items: Sequence[tuple[int, bytes]]) -> list[Result | None]:
    """`apply_batch_in` in a write transaction of its own (a member applying a replicated log)."""
    return store.write(lambda txn: apply_batch_in(store, txn, items))
