"""Handle values and the typed data they carry (HS_ADMIN, HS_VLIST, HS_SITE): dataclasses and their wire codec.

Each record has an ``encode_x``/``decode_x`` pair with ``decode_x(encode_x(r)) == r``. Imports no
asyncio, socket or lmdb.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from .constants import (
    DEFAULT_PERMISSIONS,
    IPV4_PREFIX_BYTES,
    SITE_ADDRESS_BYTES,
    HashOption,
    ResponseCode,
)
from .errors import HandleProtocolError, InvalidValueError
from .wire import COUNT_BYTES, U16, U32, Buffer, Reader, pack_counted, pack_string

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# § Handle value: index u32 · timestamp u32 · ttlType u8 · ttl i32 · permissions u8.
_VALUE_FIXED = struct.Struct(">IIBiB")
# A reference is at least an empty handle string and an index.
_REFERENCE_MIN_BYTES = COUNT_BYTES + 4
# A value is at least its fixed part, an empty type, empty data and an empty reference list.
VALUE_MIN_BYTES = _VALUE_FIXED.size + 3 * COUNT_BYTES


@dataclass(frozen=True, slots=True)
class Reference:
    """A pointer to another handle's value (§ Handle value: references)."""

    handle: str
    index: int


@dataclass(frozen=True, slots=True)
class HandleValue:
    """One typed value of a handle (§ Handle value). ``ttl`` is seconds (``ttl_type`` 0) or Unix time (1)."""

    index: int
    type: str
    data: bytes
    timestamp: int = 0
    ttl_type: int = 0
    ttl: int = 86400
    permissions: int = DEFAULT_PERMISSIONS
    references: tuple[Reference, ...] = ()


def encode_value(value: HandleValue) -> bytes:
    """The wire form of one value; out-of-range fields raise :class:`InvalidValueError`."""
    try:
        parts = [
            _VALUE_FIXED.pack(value.index, value.timestamp, value.ttl_type, value.ttl, value.permissions),
            pack_string(value.type),
            pack_counted(value.data),
            U32.pack(len(value.references)),
        ]
        for ref in value.references:
            parts.append(pack_string(ref.handle))
            parts.append(U32.pack(ref.index))
    except struct.error as exc:
        raise InvalidValueError(f"value {value.index!r} cannot be encoded: {exc}") from None
    return b"".join(parts)


def decode_value(reader: Reader) -> HandleValue:
    index, timestamp, ttl_type, ttl, permissions = reader.get_struct(_VALUE_FIXED)
    type_ = reader.get_string()
    data = reader.get_counted_bytes()
    count = reader.get_count(_REFERENCE_MIN_BYTES)
    references = tuple(Reference(reader.get_string(), reader.get_u32()) for _ in range(count))
    return HandleValue(index, type_, data, timestamp, ttl_type, ttl, permissions, references)


def encode_values(values: Iterable[HandleValue]) -> bytes:
    """A value list: u32 count + values (the tail of a resolution answer's body)."""
    encoded = [encode_value(v) for v in values]
    return U32.pack(len(encoded)) + b"".join(encoded)


def decode_values(reader: Reader) -> tuple[HandleValue, ...]:
    count = reader.get_count(VALUE_MIN_BYTES)
    return tuple(decode_value(reader) for _ in range(count))


# --- HS_ADMIN ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdminData:
    """Data of an HS_ADMIN value: who (``handle``:``index``) may do what (``AdminPermission`` bits)."""

    handle: str
    index: int
    permissions: int


def encode_admin(admin: AdminData) -> bytes:
    """HS_ADMIN data: u16 permissions · handle string · u32 index."""
    try:
        return U16.pack(admin.permissions) + pack_string(admin.handle) + U32.pack(admin.index)
    except struct.error as exc:
        raise InvalidValueError(f"HS_ADMIN cannot be encoded: {exc}") from None


def decode_admin(data: Buffer) -> AdminData:
    """Read HS_ADMIN data; trailing bytes are ignored, as the reference decoder does."""
    reader = Reader(data)
    try:
        permissions = reader.get_u16()
        handle = reader.get_string()
        index = reader.get_u32()
    except HandleProtocolError as exc:
        raise InvalidValueError(f"malformed HS_ADMIN data: {exc}") from None
    return AdminData(handle, index, permissions)


# --- HS_VLIST ------------------------------------------------------------------------------------


def encode_vlist(members: Iterable[Reference]) -> bytes:
    """HS_VLIST data: u32 count · (handle string · u32 index) per member (handle-admin.md, admin groups)."""
    refs = tuple(members)
    try:
        return U32.pack(len(refs)) + b"".join(pack_string(r.handle) + U32.pack(r.index) for r in refs)
    except struct.error as exc:
        raise InvalidValueError(f"HS_VLIST cannot be encoded: {exc}") from None


def decode_vlist(data: Buffer) -> tuple[Reference, ...]:
    """Read HS_VLIST data: the handle:index pairs of an admin group; trailing bytes are ignored."""
    reader = Reader(data)
    try:
        count = reader.get_count(_REFERENCE_MIN_BYTES)
        return tuple(Reference(reader.get_string(), reader.get_u32()) for _ in range(count))
    except HandleProtocolError as exc:
        raise InvalidValueError(f"malformed HS_VLIST data: {exc}") from None


# --- HS_SITE -------------------------------------------------------------------------------------


class InterfaceType(IntEnum):
    """What a server interface accepts (§ HS_SITE data)."""

    OUT_OF_SERVICE = 0  #: § HS_SITE data
    ADMIN = 1  #: § HS_SITE data
    QUERY = 2  #: § HS_SITE data
    BOTH = 3  #: § HS_SITE data


class InterfaceProtocol(IntEnum):
    """Transport of a server interface (§ HS_SITE data)."""

    UDP = 0  #: § HS_SITE data
    TCP = 1  #: § HS_SITE data
    HTTP = 2  #: § HS_SITE data
    HTTPS = 3  #: § HS_SITE data


_SITE_PRIMARY = 0x80  # § HS_SITE data: flags byte
_SITE_MULTI_PRIMARY = 0x40  # § HS_SITE data: flags byte
# § HS_SITE data: version u16 · major u8 · minor u8 · serial u16 · flags u8 · hash option u8.
_SITE_FIXED = struct.Struct(">HBBHBB")
# § HS_SITE data: interface type u8 · protocol u8 · port u32.
_INTERFACE = struct.Struct(">BBI")
_ATTRIBUTE_MIN_BYTES = 2 * COUNT_BYTES
_SERVER_MIN_BYTES = 4 + SITE_ADDRESS_BYTES + 2 * COUNT_BYTES
_IPV4_PREFIX = bytes(IPV4_PREFIX_BYTES)


@dataclass(frozen=True, slots=True)
class Interface:
    """One way to reach a server: ``InterfaceType``, ``InterfaceProtocol`` and port."""

    type: int
    protocol: int
    port: int


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """One server of a site. IPv6 addresses in ``::/96`` cannot be told from IPv4 on the wire."""

    server_id: int
    address: IPAddress
    public_key: bytes
    interfaces: tuple[Interface, ...]


@dataclass(frozen=True, slots=True)
class SiteInfo:
    """Data of an HS_SITE value: the servers that serve a prefix (§ HS_SITE data)."""

    version: int = 1
    protocol_major: int = 2
    protocol_minor: int = 10
    serial: int = 1
    primary: bool = True
    multi_primary: bool = False
    hash_option: int = 0
    hash_filter: bytes = b""
    attributes: tuple[tuple[str, str], ...] = ()
    servers: tuple[ServerInfo, ...] = ()


def _encode_address(address: IPAddress) -> bytes:
    if address.version == 4:
        return _IPV4_PREFIX + address.packed
    return address.packed


def _decode_address(raw: bytes) -> IPAddress:
    # Right-aligned IPv4 is recognised by its 12 zero bytes, as the reference client does.
    if raw.startswith(_IPV4_PREFIX):
        return ipaddress.IPv4Address(raw[IPV4_PREFIX_BYTES:])
    return ipaddress.IPv6Address(raw)


def encode_site(site: SiteInfo) -> bytes:
    """HS_SITE data (also the whole body of a GET_SITE_INFO answer)."""
    flags = (_SITE_PRIMARY if site.primary else 0) | (_SITE_MULTI_PRIMARY if site.multi_primary else 0)
    try:
        parts = [
            _SITE_FIXED.pack(
                site.version, site.protocol_major, site.protocol_minor, site.serial, flags, site.hash_option
            ),
            pack_counted(site.hash_filter),
            U32.pack(len(site.attributes)),
        ]
        for name, text in site.attributes:
            parts.append(pack_string(name))
            parts.append(pack_string(text))
        parts.append(U32.pack(len(site.servers)))
        for server in site.servers:
            parts.append(U32.pack(server.server_id))
            parts.append(_encode_address(server.address))
            parts.append(pack_counted(server.public_key))
            parts.append(U32.pack(len(server.interfaces)))
            for iface in server.interfaces:
                parts.append(_INTERFACE.pack(iface.type, iface.protocol, iface.port))
    except struct.error as exc:
        raise InvalidValueError(f"HS_SITE cannot be encoded: {exc}") from None
    return b"".join(parts)


def _decode_server(reader: Reader) -> ServerInfo:
    server_id = reader.get_u32()
    address = _decode_address(reader.get_bytes(SITE_ADDRESS_BYTES))
    public_key = reader.get_counted_bytes()
    count = reader.get_count(_INTERFACE.size)
    interfaces = tuple(Interface(*reader.get_struct(_INTERFACE)) for _ in range(count))
    return ServerInfo(server_id, address, public_key, interfaces)


def decode_site(data: Buffer) -> SiteInfo:
    """Read HS_SITE data; trailing bytes are ignored, as the reference decoder does."""
    reader = Reader(data)
    try:
        version, major, minor, serial, flags, hash_option = reader.get_struct(_SITE_FIXED)
        hash_filter = reader.get_counted_bytes()
        count = reader.get_count(_ATTRIBUTE_MIN_BYTES)
        attributes = tuple((reader.get_string(), reader.get_string()) for _ in range(count))
        count = reader.get_count(_SERVER_MIN_BYTES)
        servers = tuple(_decode_server(reader) for _ in range(count))
    except HandleProtocolError as exc:
        raise InvalidValueError(f"malformed HS_SITE data: {exc}") from None
    return SiteInfo(
        version=version,
        protocol_major=major,
        protocol_minor=minor,
        serial=serial,
        primary=bool(flags & _SITE_PRIMARY),
        multi_primary=bool(flags & _SITE_MULTI_PRIMARY),
        hash_option=hash_option,
        hash_filter=hash_filter,
        attributes=attributes,
        servers=servers,
    )


def hash_part_of(handle: str, hash_option: int) -> str:
    """The part of ``handle`` a multi-server site hashes on (§ HS_SITE data: hash option)."""
    prefix, slash, suffix = handle.partition("/")
    if not slash or hash_option == HashOption.BY_HANDLE:
        return handle
    return suffix if hash_option == HashOption.BY_SUFFIX else prefix


def pick_server(site: SiteInfo, hash_part: str) -> ServerInfo:
    """The server a client asks (§ HS_SITE data): MD5 of the upper-cased hash part, last 4 digest bytes
    as a signed int, absolute value, modulo the server count."""
    servers = site.servers
    if not servers:
        raise HandleProtocolError("site lists no servers", ResponseCode.SERVER_NOT_RESP)
    # bytes.upper() touches ASCII only, like the reference's upcase; str.upper() would map e.g. 'ß' to 'SS'.
    digest = hashlib.md5(hash_part.encode("utf-8").upper(), usedforsecurity=False).digest()
    (last,) = struct.unpack_from(">i", digest, len(digest) - 4)
    return servers[abs(last) % len(servers)]
