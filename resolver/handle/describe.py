"""Handle values in words, for people: the one rule `idnode resolve`, the browser pages and `idnode trace`
follow, so HS_ADMIN, HS_SITE and HS_VLIST read the same everywhere and never as a Python repr.

`describe_data` gives the lines of a value's data; each surface only lays them out (a terminal indents the
continuation lines, a page joins them with line breaks, a trace joins them on one line). Text values are shown
as they are; data that is not text is shown as its length and leading bytes in hex. Sans-IO: imports the value
codec only.
"""

from __future__ import annotations

import re

from .constants import AdminPermission, HashOption
from .errors import HandleProtocolError
from .values import HandleValue, InterfaceProtocol, InterfaceType, decode_admin, decode_site, decode_vlist

ADMIN_TYPE = "HS_ADMIN"  #: handle-protocol.md, Handle value: well-known types
SITE_TYPES = ("HS_SITE", "HS_SITE.PREFIX")  #: both carry HS_SITE data (handle-protocol.md, HS_SITE data)
VLIST_TYPE = "HS_VLIST"  #: handle-admin.md 2c: an admin group, a list of handle:index
STRUCTURED_TYPES = frozenset((ADMIN_TYPE, *SITE_TYPES, VLIST_TYPE))  #: types whose data is not text
TYPE_COLUMN_CHARS = 12  #: the common types (URL, DESC, HS_ADMIN, HS_SITE) line their data up in a terminal
HEX_SHOWN_BYTES = 32  #: binary data shows this many leading bytes: enough to recognise, short for a line
# C0 and C1 controls but tab and newline: such "text" is data, and printed raw it could drive the terminal.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")

#: The 12 HS_ADMIN bits in words, lowest bit first (handle-admin.md 2c, the reference server's names).
PERMISSION_NAMES: tuple[tuple[AdminPermission, str], ...] = (
    (AdminPermission.ADD_HANDLE, "add handle"),
    (AdminPermission.DELETE_HANDLE, "delete handle"),
    (AdminPermission.ADD_NA, "add derived prefix"),
    (AdminPermission.DELETE_NA, "delete derived prefix"),
    (AdminPermission.MODIFY_VALUE, "modify value"),
    (AdminPermission.REMOVE_VALUE, "remove value"),
    (AdminPermission.ADD_VALUE, "add value"),
    (AdminPermission.MODIFY_ADMIN, "modify admin"),
    (AdminPermission.REMOVE_ADMIN, "remove admin"),
    (AdminPermission.ADD_ADMIN, "add admin"),
    (AdminPermission.READ_VALUE, "read value"),
    (AdminPermission.LIST_HANDLES, "list handles"),
)
_KNOWN_PERMISSION_BITS = sum(bit for bit, _ in PERMISSION_NAMES)

_INTERFACE_USES = {
    InterfaceType.OUT_OF_SERVICE: "out of service",
    InterfaceType.ADMIN: "admin",
    InterfaceType.QUERY: "query",
    InterfaceType.BOTH: "query and admin",
}
_PROTOCOLS = {p.value: p.name for p in InterfaceProtocol}
_HASH_OPTIONS = {
    HashOption.BY_PREFIX: "prefix",
    HashOption.BY_SUFFIX: "suffix",
    HashOption.BY_HANDLE: "handle",
}


def identity(handle: str, index: int) -> str:
    """An admin identity as Handle.Net writes it (and `300:88.100.7/ADMIN` users are written): index:handle."""
    return f"{index}:{handle}"


def permission_names(bits: int) -> list[str]:
    """The HS_ADMIN permission bits in words, lowest bit first; bits beyond the 12 are shown in hex."""
    names = [name for bit, name in PERMISSION_NAMES if bits & bit]
    if bits & ~_KNOWN_PERMISSION_BITS:
        names.append(f"unknown bits 0x{bits & ~_KNOWN_PERMISSION_BITS:x}")
    return names


def describe_admin(data: bytes) -> list[str]:
    admin = decode_admin(data)
    allowed = ", ".join(permission_names(admin.permissions)) or "nothing"
    return [f"admin {identity(admin.handle, admin.index)} may: {allowed}"]


def describe_vlist(data: bytes) -> list[str]:
    members = decode_vlist(data)
    if not members:
        return ["empty admin group"]
    return [f"admin group of {len(members)}: " + ", ".join(identity(m.handle, m.index) for m in members)]


def _name(names: dict, number: int) -> str:
    """A wire number in words; one this node does not know is shown as the number."""
    return names.get(number, f"#{number}")


def describe_site(data: bytes) -> list[str]:
    """A header line (version, serial, protocol, role, attributes), then one line per server: its id, address,
    and every interface as protocol, port and use."""
    site = decode_site(data)
    head = f"site version {site.version}, serial {site.serial}, protocol {site.protocol_major}.{site.protocol_minor}"
    head += ", primary" if site.primary else ", secondary"
    if site.multi_primary:
        head += ", multi-primary"
    if len(site.servers) > 1:
        head += f", servers picked by hash of the {_name(_HASH_OPTIONS, site.hash_option)}"
    head += "".join(f", {name}: {text}" for name, text in site.attributes)
    lines = [head]
    for server in site.servers:
        interfaces = ", ".join(
            f"{_name(_PROTOCOLS, i.protocol)} {i.port} ({_name(_INTERFACE_USES, i.type)})"
            for i in server.interfaces
        )
        line = f"server {server.server_id} {server.address}: {interfaces or 'no interfaces'}"
        if server.public_key:
            line += f"; public key {len(server.public_key)} bytes"
        lines.append(line)
    if not site.servers:
        lines.append("no servers")
    return lines


def describe_binary(data: bytes) -> str:
    shown = data[:HEX_SHOWN_BYTES].hex(" ")
    more = " …" if len(data) > HEX_SHOWN_BYTES else ""
    return f"{len(data)} bytes: {shown}{more}" if data else "empty"


def plain_text(vtype: str, data: bytes) -> str | None:
    """The data as the text it is, or None when it is shown otherwise: a structured type, not UTF-8, or text
    with control characters."""
    if vtype.upper() in STRUCTURED_TYPES:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return None if _CONTROL.search(text) else text


def describe_data(vtype: str, data: bytes) -> list[str]:
    """The lines a person reads for a value of type `vtype` holding `data` (at least one line)."""
    upper = vtype.upper()
    describers = {ADMIN_TYPE: describe_admin, VLIST_TYPE: describe_vlist}
    describer = describe_site if upper in SITE_TYPES else describers.get(upper)
    if describer is not None:
        try:
            return describer(data)
        except HandleProtocolError as exc:  # data that is not what its type says: show what it is
            return [f"unreadable {upper} ({exc}): {describe_binary(data)}"]
    text = plain_text(vtype, data)
    return [text] if text is not None else [describe_binary(data)]


def value_lines(value: HandleValue, indent: str = "  ") -> list[str]:
    """A value for a terminal: index, type and the first line of its data, then the data's further lines
    under its first (what `idnode resolve` and `idnode trace --values` print)."""
    head = f"{indent}{value.index:>6}  {value.type:<{TYPE_COLUMN_CHARS}} "
    described = describe_data(value.type, value.data)
    return [head + described[0]] + [" " * len(head) + more for more in described[1:]]
