"""The cluster's members as the store knows them: one record per node, replicated through the write log.

A node in cluster mode announces itself with a `set_member` entry (its id, the address and ports clients use)
when it starts and whenever that changes; `idnode cluster remove` takes a member out with `remove_member`.
Because the records arrive through the log, every member holds the same list, so every member's HS_SITE for
the node prefix lists the same servers in the same order (resolver/server/worker.py). A change bumps the
prefix table's version: workers rebuild the prefix handles' values within a second.

The store also remembers which cluster member it is (`cluster-node`): a store that belongs to a cluster must not
take writes applied only here (storage/log.py refuses them), or it would part from the others for good.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import lmdb
import msgpack

from storage.store import Store

_MEMBER = b"cluster-member/"  # meta key prefix: node id -> msgpack record
_NODE = b"cluster-node"  # meta key: the id of the cluster member this store belongs to
MAX_NODE_ID_BYTES = (
    64  #: a node id is a short name (a host name); it lands in counter keys and HS_SITE listings
)


class MemberError(ValueError):
    """A member record that cannot be stored (the message says which field)."""


@dataclass(frozen=True, slots=True)
class Member:
    node: str
    address: str  #: where clients reach it (its site_address)
    handle_port: int
    http_port: int = 0  #: 0: no HTTP interface
    http_tls: bool = False
    joined_s: int = 0


def check_node_id(node: str) -> str:
    if not node or len(node.encode()) > MAX_NODE_ID_BYTES or not all(c.isalnum() or c in "-_." for c in node):
        raise MemberError(f"cluster node id {node!r}: 1-{MAX_NODE_ID_BYTES} letters, digits, '-', '_' or '.'")
    return node


def member_entry_args(member: Member) -> dict:
    check_node_id(member.node)
    return asdict(member)


def apply_set_member(store: Store, txn: lmdb.Transaction, args: dict) -> None:
    member = Member(**args)
    check_node_id(member.node)
    txn.put(_MEMBER + member.node.encode(), msgpack.packb(asdict(member)), db=store.meta)
    store.bump_prefixes_version_in(txn)


def apply_remove_member(store: Store, txn: lmdb.Transaction, args: dict) -> bool:
    removed = txn.delete(_MEMBER + str(args["node"]).encode(), db=store.meta)
    if removed:
        store.bump_prefixes_version_in(txn)
    return removed


def members(store: Store) -> list[Member]:
    """Every member, by node id."""
    out = []
    with store.env.begin(db=store.meta) as txn, txn.cursor() as cursor:
        if cursor.set_range(_MEMBER):
            for key, value in cursor:
                if not bytes(key).startswith(_MEMBER):
                    break
                out.append(Member(**msgpack.unpackb(value)))
    return out


def cluster_node(store: Store) -> str | None:
    """The id of the cluster member this store belongs to; None for a node on its own."""
    raw = store.get_meta(_NODE)
    return raw.decode() if raw else None


def join_cluster(store: Store, node: str) -> None:
    """Mark the store as member `node`'s (the writer does this when it starts in cluster mode)."""
    check_node_id(node)
    store.set_meta(_NODE, node.encode())
