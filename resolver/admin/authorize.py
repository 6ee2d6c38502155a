"""Who may do what to a handle: HS_ADMIN permission bits, following HS_VLIST groups (handle-admin.md §2c).

An HS_ADMIN value grants its permission bits to the admin it names (`index:handle`; index 0 = any index of that
handle). When the name is not the identity itself it may be a group: the HS_VLIST value at that index of that
handle lists members, each matched the same way, groups of groups included, to MAX_GROUP_DEPTH. Pure logic over
a lookup function; no store, no sockets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from resolver.handle.constants import AdminPermission, OpCode
from resolver.handle.errors import InvalidValueError
from resolver.handle.values import HandleValue, decode_admin, decode_vlist

MAX_GROUP_DEPTH = 8  #: nested admin groups followed; deeper (or a cycle) grants nothing
MAX_GROUP_LOOKUPS = 64  #: handles read for one decision, so a crafted web of groups costs bounded work

#: The permission an operation needs on its admin values (handle-admin.md §2c).
NEEDED = {
    OpCode.CREATE_HANDLE: AdminPermission.ADD_HANDLE,
    OpCode.DELETE_HANDLE: AdminPermission.DELETE_HANDLE,
    OpCode.ADD_VALUE: AdminPermission.ADD_VALUE,
    OpCode.MODIFY_VALUE: AdminPermission.MODIFY_VALUE,
    OpCode.REMOVE_VALUE: AdminPermission.REMOVE_VALUE,
    OpCode.LIST_HANDLES: AdminPermission.LIST_HANDLES,
}
#: ... and when the values changed are HS_ADMIN values themselves.
NEEDED_FOR_ADMIN_VALUES = {
    OpCode.ADD_VALUE: AdminPermission.ADD_ADMIN,
    OpCode.MODIFY_VALUE: AdminPermission.MODIFY_ADMIN,
    OpCode.REMOVE_VALUE: AdminPermission.REMOVE_ADMIN,
}

Lookup = Callable[[str], Sequence[HandleValue] | None]  # all values of a handle (none filtered), None: absent


def needed_permission(op_code: int, touches_admin: bool) -> int:
    if touches_admin and op_code in NEEDED_FOR_ADMIN_VALUES:
        return int(NEEDED_FOR_ADMIN_VALUES[op_code])
    return int(NEEDED[op_code])


def _same(a: str, b: str) -> bool:
    return a.upper() == b.upper()  # prefixes are case-insensitive; suffixes compared as the store keys them


def is_authorized(
    admin_values: Iterable[HandleValue], identity: str, index: int, needed: int, lookup: Lookup
) -> bool:
    """Whether one of `admin_values` (the HS_ADMIN values that govern the handle) grants `needed` to
    `index:identity`, directly or through groups."""
    budget = [MAX_GROUP_LOOKUPS]
    for value in admin_values:
        if value.type != "HS_ADMIN":
            continue
        try:
            admin = decode_admin(value.data)
        except InvalidValueError:
            continue  # a malformed admin value grants nothing
        if admin.permissions & needed != needed:
            continue
        if _member(admin.handle, admin.index, identity, index, lookup, MAX_GROUP_DEPTH, set(), budget):
            return True
    return False


def _member(handle: str, ref_index: int, identity: str, index: int, lookup: Lookup, depth: int,
            seen: set[tuple[str, int]], budget: list[int]) -> bool:  # fmt: skip
    if _same(handle, identity) and ref_index in (0, index):
        return True
    key = (handle.upper(), ref_index)
    if depth <= 0 or key in seen or budget[0] <= 0:
        return False
    seen.add(key)
    budget[0] -= 1
    values = lookup(handle)
    for value in values or ():
        if value.type != "HS_VLIST" or (ref_index and value.index != ref_index):
            continue
        try:
            members = decode_vlist(value.data)
        except InvalidValueError:
            continue
        for member in members:
            if _member(member.handle, member.index, identity, index, lookup, depth - 1, seen, budget):
                return True
    return False


def admin_values(values: Iterable[HandleValue]) -> list[HandleValue]:
    return [v for v in values if v.type == "HS_ADMIN"]
