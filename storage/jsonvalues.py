"""Handle values in the JSON form of the Handle.Net REST API, as bulk files and the HTTP API carry them.

`{"index": 1, "type": "URL", "data": {"format": "string", "value": "https://..."}, "ttl": 86400,
"timestamp": "2025-07-01T08:00:00Z", "permissions": "1110", "references": [{"handle": "...", "index": 1}]}`
(handle-protocol.md, "Value JSON"). Every error names the field that is wrong. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import struct
from datetime import UTC, datetime
from typing import Any

from resolver.handle.errors import HandleProtocolError
from resolver.handle.values import (
    AdminData,
    HandleValue,
    Interface,
    Reference,
    ServerInfo,
    SiteInfo,
    decode_admin,
    decode_site,
    encode_admin,
    encode_site,
    encode_value,
)
from resolver.handle.wire import COUNT_BYTES

DEFAULT_TTL_S = 86400  #: the reference server's default relative TTL
DEFAULT_PERMISSIONS = "1110"  #: adminRead adminWrite publicRead, not publicWrite (handle-protocol.md)
MAX_INDEX = 0xFFFFFFFF  #: index is a u32 on the wire
MAX_TYPE_BYTES = 1024  #: a type is a short name; longer is a mistake, not data
TTL_RELATIVE, TTL_ABSOLUTE = 0, 1
_PROTOCOL_NAMES = {"UDP": 0, "TCP": 1, "HTTP": 2, "HTTPS": 3}
_U32 = struct.Struct(">I")


class ValueFormatError(ValueError):
    """A value in JSON form is malformed; the message names the field."""


def _fail(field: str, why: str) -> ValueFormatError:
    return ValueFormatError(f"{field}: {why}")


def parse_timestamp(text: str, field: str) -> int:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _fail(field, f"not an ISO-8601 time: {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = int(moment.timestamp())
    if not 0 <= seconds <= MAX_INDEX:
        raise _fail(field, "outside the u32 range of Unix seconds")
    return seconds


def format_timestamp(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _int_field(obj: dict, key: str, field: str, low: int, high: int, default: int | None = None) -> int:
    value = obj.get(key, default)
    if value is None:
        raise _fail(field, "is required")
    if not isinstance(value, int) or isinstance(value, bool):
        raise _fail(field, f"must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise _fail(field, f"{value} is outside {low}..{high}")
    return value


def _str_field(obj: dict, key: str, field: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if not isinstance(value, str):
        raise _fail(field, "must be a string" if value is not None else "is required")
    return value


def _permission_bits(text: Any, field: str, width: int) -> int:
    if not isinstance(text, str) or len(text) != width or set(text) - {"0", "1"}:
        raise _fail(field, f"must be a string of {width} binary digits")
    return int(text, 2)


def _parse_admin(value: Any, field: str) -> bytes:
    if not isinstance(value, dict):
        raise _fail(field, "an admin value is an object {handle, index, permissions}")
    handle = _str_field(value, "handle", f"{field}.handle")
    index = _int_field(value, "index", f"{field}.index", 0, MAX_INDEX)
    permissions = _permission_bits(value.get("permissions", "011111111111"), f"{field}.permissions", 12)
    return encode_admin(AdminData(handle=handle, index=index, permissions=permissions))


def _parse_key_bytes(value: Any, field: str) -> bytes:
    if value in (None, ""):
        return b""
    if isinstance(value, dict):
        return _decode_text_bytes(value.get("format", "base64"), value.get("value", ""), field)
    if isinstance(value, str):
        return _decode_text_bytes("base64", value, field)
    raise _fail(field, "a key is a base64 string or {format, value}")


def _parse_interface(obj: Any, field: str) -> Interface:
    if not isinstance(obj, dict):
        raise _fail(field, "an interface is an object")
    protocol = obj.get("protocol", "TCP")
    if isinstance(protocol, str) and protocol.upper() in _PROTOCOL_NAMES:
        protocol = _PROTOCOL_NAMES[protocol.upper()]
    if protocol not in _PROTOCOL_NAMES.values():
        raise _fail(f"{field}.protocol", "one of UDP, TCP, HTTP, HTTPS")
    if "type" in obj:
        kind = _int_field(obj, "type", f"{field}.type", 0, 3)
    else:
        kind = (1 if obj.get("admin") else 0) | (2 if obj.get("query", True) else 0)
    port = _int_field(obj, "port", f"{field}.port", 0, MAX_INDEX)
    return Interface(type=kind, protocol=protocol, port=port)


def _parse_server(obj: Any, field: str) -> ServerInfo:
    if not isinstance(obj, dict):
        raise _fail(field, "a server is an object")
    try:
        address = ipaddress.ip_address(_str_field(obj, "address", f"{field}.address"))
    except ValueError as exc:
        raise _fail(f"{field}.address", "not an IP address") from exc
    interfaces = obj.get("interfaces", [])
    if not isinstance(interfaces, list):
        raise _fail(f"{field}.interfaces", "must be a list")
    return ServerInfo(
        server_id=_int_field(obj, "serverId", f"{field}.serverId", 0, MAX_INDEX, default=1),
        address=address,
        public_key=_parse_key_bytes(obj.get("publicKey"), f"{field}.publicKey"),
        interfaces=tuple(_parse_interface(i, f"{field}.interfaces[{n}]") for n, i in enumerate(interfaces)),
    )


def _parse_attribute(obj: Any, field: str) -> tuple[str, str]:
    if not isinstance(obj, dict):
        raise _fail(field, "an attribute is {name, value}")
    return _str_field(obj, "name", f"{field}.name"), _str_field(obj, "value", f"{field}.value")


def site_from_json(value: Any, field: str = "site") -> SiteInfo:
    """HS_SITE data from its JSON object form (the REST API's `site` format)."""
    if not isinstance(value, dict):
        raise _fail(field, "a site value is an object")
    major, minor = 2, 10
    if "protocolVersion" in value:
        try:
            major, minor = (int(p) for p in str(value["protocolVersion"]).split("."))
        except ValueError as exc:
            raise _fail(f"{field}.protocolVersion", "must look like '2.10'") from exc
    attributes = value.get("attributes", [])
    servers = value.get("servers", [])
    if not isinstance(attributes, list) or not isinstance(servers, list):
        raise _fail(field, "attributes and servers must be lists")
    return SiteInfo(
        version=_int_field(value, "version", f"{field}.version", 0, 0xFFFF, default=1),
        protocol_major=major,
        protocol_minor=minor,
        serial=_int_field(value, "serialNumber", f"{field}.serialNumber", 0, 0xFFFF, default=1),
        primary=bool(value.get("primarySite", True)),
        multi_primary=bool(value.get("multiPrimary", False)),
        hash_option=_int_field(value, "hashOption", f"{field}.hashOption", 0, 255, default=0),
        hash_filter=_decode_text_bytes("hex", value.get("hashFilter", ""), f"{field}.hashFilter"),
        attributes=tuple(_parse_attribute(a, f"{field}.attributes[{n}]") for n, a in enumerate(attributes)),
        servers=tuple(_parse_server(s, f"{field}.servers[{n}]") for n, s in enumerate(servers)),
    )


def site_to_json(site: SiteInfo) -> dict:
    return {
        "version": site.version,
        "protocolVersion": f"{site.protocol_major}.{site.protocol_minor}",
        "serialNumber": site.serial,
        "primarySite": site.primary,
        "multiPrimary": site.multi_primary,
        "hashOption": site.hash_option,
        "hashFilter": site.hash_filter.hex(),
        "attributes": [{"name": n, "value": v} for n, v in site.attributes],
        "servers": [
            {
                "serverId": s.server_id,
                "address": str(s.address),
                "publicKey": {"format": "base64", "value": base64.b64encode(s.public_key).decode()},
                "interfaces": [
                    {"type": i.type, "protocol": _protocol_name(i.protocol), "port": i.port}
                    for i in s.interfaces
                ],
            }
            for s in site.servers
        ],
    }


def _protocol_name(number: int) -> str:
    return next((name for name, n in _PROTOCOL_NAMES.items() if n == number), str(number))


def _parse_vlist(value: Any, field: str) -> bytes:
    if not isinstance(value, list):
        raise _fail(field, "a vlist is a list of {handle, index}")
    parts = [_U32.pack(len(value))]
    for n, item in enumerate(value):
        if not isinstance(item, dict):
            raise _fail(f"{field}[{n}]", "must be {handle, index}")
        handle = _str_field(item, "handle", f"{field}[{n}].handle").encode()
        parts += [
            _U32.pack(len(handle)),
            handle,
            _U32.pack(_int_field(item, "index", f"{field}[{n}].index", 0, MAX_INDEX)),
        ]
    return b"".join(parts)


def _decode_text_bytes(fmt: str, value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise _fail(field, f"a {fmt} value is a string")
    try:
        if fmt == "base64":
            return base64.b64decode(value, validate=True)
        if fmt == "hex":
            return bytes.fromhex(value)
    except (binascii.Error, ValueError) as exc:
        raise _fail(field, f"not valid {fmt}") from exc
    return value.encode()


def data_from_json(data: Any, field: str = "data") -> bytes:
    """The raw bytes of a value's `data` (a bare string, or {format, value})."""
    if isinstance(data, str):
        return data.encode()
    if not isinstance(data, dict):
        raise _fail(field, "must be a string or {format, value}")
    fmt = data.get("format", "string")
    value = data.get("value")
    if fmt in ("string", "base64", "hex"):
        return _decode_text_bytes(fmt, value, f"{field}.value")
    if fmt == "admin":
        return _parse_admin(value, f"{field}.value")
    if fmt == "site":
        return encode_site(site_from_json(value, f"{field}.value"))
    if fmt == "vlist":
        return _parse_vlist(value, f"{field}.value")
    if fmt == "key":
        return _parse_key_bytes(value, f"{field}.value")
    raise _fail(f"{field}.format", f"unknown format {fmt!r} (string, base64, hex, admin, site, vlist, key)")


def value_from_json(obj: Any, now_s: int, field: str = "value") -> HandleValue:
    """A handle value from its JSON form; `now_s` stamps values that carry no timestamp."""
    if not isinstance(obj, dict):
        raise _fail(field, "a value is an object")
    index = _int_field(obj, "index", f"{field}.index", 1, MAX_INDEX)
    vtype = _str_field(obj, "type", f"{field}.type", default="")
    if len(vtype.encode()) > MAX_TYPE_BYTES:
        raise _fail(f"{field}.type", f"longer than {MAX_TYPE_BYTES} bytes")
    if "data" not in obj:
        raise _fail(f"{field}.data", "is required")
    data = data_from_json(obj["data"], f"{field}.data")
    ttl_type, ttl = TTL_RELATIVE, DEFAULT_TTL_S
    if "ttl" in obj:
        raw_ttl = obj["ttl"]
        if isinstance(raw_ttl, str):
            ttl_type, ttl = TTL_ABSOLUTE, parse_timestamp(raw_ttl, f"{field}.ttl")
            ttl = ttl if ttl < 2**31 else 2**31 - 1
        else:
            ttl = _int_field(obj, "ttl", f"{field}.ttl", -(2**31), 2**31 - 1)
    timestamp = now_s
    if obj.get("timestamp") is not None:
        stamp = obj["timestamp"]
        if isinstance(stamp, int) and not isinstance(stamp, bool) and 0 <= stamp <= MAX_INDEX:
            timestamp = stamp
        elif isinstance(stamp, str):
            timestamp = parse_timestamp(stamp, f"{field}.timestamp")
        else:
            raise _fail(f"{field}.timestamp", "an ISO-8601 string or Unix seconds")
    permissions = _permission_bits(obj.get("permissions", DEFAULT_PERMISSIONS), f"{field}.permissions", 4)
    refs = obj.get("references", [])
    if not isinstance(refs, list):
        raise _fail(f"{field}.references", "must be a list")
    references = []
    for n, ref in enumerate(refs):
        if not isinstance(ref, dict):
            raise _fail(f"{field}.references[{n}]", "must be {handle, index}")
        references.append(
            Reference(
                handle=_str_field(ref, "handle", f"{field}.references[{n}].handle"),
                index=_int_field(ref, "index", f"{field}.references[{n}].index", 0, MAX_INDEX),
            )
        )
    return HandleValue(
        index=index,
        type=vtype,
        data=data,
        timestamp=timestamp,
        ttl_type=ttl_type,
        ttl=ttl,
        permissions=permissions,
        references=tuple(references),
    )


def data_to_json(vtype: str, data: bytes) -> dict | str:
    """`data` in the most readable JSON form: admin and site objects for HS_ADMIN and HS_SITE, a string for
    UTF-8 text, base64 otherwise."""
    upper = vtype.upper()
    try:
        if upper == "HS_ADMIN":
            admin = decode_admin(data)
            return {
                "format": "admin",
                "value": {
                    "handle": admin.handle,
                    "index": admin.index,
                    "permissions": format(admin.permissions, "012b"),
                },
            }
        if upper in ("HS_SITE", "HS_SITE.PREFIX"):
            return {"format": "site", "value": site_to_json(decode_site(data))}
    except HandleProtocolError:
        pass  # not decodable as its type claims: fall through to the raw forms
    try:
        return {"format": "string", "value": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"format": "base64", "value": base64.b64encode(data).decode()}


def value_to_json(value: HandleValue) -> dict:
    out: dict[str, Any] = {
        "index": value.index,
        "type": value.type,
        "data": data_to_json(value.type, value.data),
    }
    out["ttl"] = format_timestamp(value.ttl) if value.ttl_type == TTL_ABSOLUTE else value.ttl
    if value.timestamp:
        out["timestamp"] = format_timestamp(value.timestamp)
    if value.permissions != int(DEFAULT_PERMISSIONS, 2):
        out["permissions"] = format(value.permissions, "04b")
    if value.references:
        out["references"] = [{"handle": r.handle, "index": r.index} for r in value.references]
    return out


def record_from_json(obj: Any, now_s: int) -> tuple[str, list[HandleValue]]:
    """(handle, values) of one identifier record `{"handle": ..., "values": [...]}`."""
    if not isinstance(obj, dict):
        raise _fail("record", "must be an object {handle, values}")
    handle = _str_field(obj, "handle", "handle")
    values = obj.get("values")
    if not isinstance(values, list):
        raise _fail("values", "must be a list")
    parsed = [value_from_json(v, now_s, f"values[{n}]") for n, v in enumerate(values)]
    seen: set[int] = set()
    for v in parsed:
        if v.index in seen:
            raise _fail("values", f"index {v.index} appears twice")
        seen.add(v.index)
    return handle, parsed


_FAST_KEYS = frozenset(("index", "type", "data", "ttl", "permissions"))
_NO_REFERENCES = b"\x00\x00\x00\x00"


class ValueEncoder:
    """Values in JSON form straight to wire bytes, for bulk registration.

    Millions of values share a few shapes (the same index, type, ttl and permissions; the same HS_ADMIN per
    prefix), so the fixed part of a value is built and validated once per shape by the full parser above and
    then reused; only the data differs per value. Anything of another shape (references, timestamps, other
    formats) takes the full path. Both paths give the same bytes (tests/test_jsonvalues.py).
    """

    def __init__(self, now_s: int):
        self.now_s = now_s
        self._heads: dict[tuple, tuple[bytes, bool]] = {}
        self._admin: dict[tuple, bytes] = {}

    def encode(self, obj: Any, position: int = 0) -> tuple[int, bytes, bool]:
        """(index, encoded value, has PUBLIC_READ) of the value at `position` of a record's values."""
        if type(obj) is dict and obj.keys() <= _FAST_KEYS:
            index, ttl, data = obj.get("index"), obj.get("ttl", DEFAULT_TTL_S), obj.get("data")
            # Exact type checks: a bool is an int to isinstance and hashes like 0 or 1.
            if type(index) is int and type(ttl) is int:
                raw = data.encode() if type(data) is str else self._fast_data(data)
                if raw is not None:
                    shape = (index, obj.get("type"), ttl, obj.get("permissions"))
                    try:
                        head = self._heads.get(shape)
                    except TypeError:  # an unhashable type or permissions: the full path says what is wrong
                        head = None
                        shape = None
                    if shape is not None:
                        if head is None:
                            head = self._heads[shape] = self._head(obj, f"values[{position}]")
                        return index, head[0] + _U32.pack(len(raw)) + raw + _NO_REFERENCES, head[1]
        value = value_from_json(obj, self.now_s, f"values[{position}]")
        return value.index, encode_value(value), bool(value.permissions & 0x02)

    def _head(self, obj: dict, field: str) -> tuple[bytes, bool]:
        """The fixed part and type of a value of this shape, validated by the full parser."""
        value = value_from_json({**obj, "data": ""}, self.now_s, field)
        encoded = encode_value(value)
        return encoded[: -(2 * COUNT_BYTES)], bool(value.permissions & 0x02)

    def _fast_data(self, data: Any) -> bytes | None:
        """The bytes of a `{"format": "string" or "admin", "value"}` data object (an admin value parsed once,
        then cached), or None: the full path. A plain string's bytes the caller takes itself."""
        if type(data) is not dict or len(data) != 2:
            return None
        fmt, value = data.get("format"), data.get("value")
        if fmt == "string" and type(value) is str:
            return value.encode()
        if fmt == "admin" and type(value) is dict and len(value) == 3:
            key = (value.get("handle"), value.get("index"), value.get("permissions"))
            if type(key[0]) is str and type(key[1]) is int and type(key[2]) is str:
                admin = self._admin.get(key)
                if admin is None:
                    admin = self._admin[key] = _parse_admin(value, "data.value")
                return admin
        return None


def encoded_record_from_json(obj: Any, encoder: ValueEncoder) -> tuple[str, list[bytes], bool]:
    """(handle, encoded values, all public) of one identifier record, by the encoder's fast path."""
    if type(obj) is not dict:
        raise _fail("record", "must be an object {handle, values}")
    handle = _str_field(obj, "handle", "handle")
    values = obj.get("values")
    if type(values) is not list:
        raise _fail("values", "must be a list")
    encoded, indexes, all_public = [], set(), True
    for n, v in enumerate(values):
        index, raw, public = encoder.encode(v, n)
        if index in indexes:
            raise _fail("values", f"index {index} appears twice")
        indexes.add(index)
        encoded.append(raw)
        all_public = all_public and public
    return handle, encoded, all_public
