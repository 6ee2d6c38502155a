"""The stored form of one identifier, and the selection of its values for an answer.

A record is msgpack `[SCHEMA_VERSION, values_tail, all_public]` where `values_tail` is exactly the bytes a
resolution answer carries after the handle: u32 value count followed by the encoded values. The common
question (no filters, public values) is then answered by copying `values_tail` when `all_public` is true;
anything else walks the encoded values, which costs a few microseconds and is rare.

A bulk-loaded record may instead be `[SCHEMA_VERSION, values_head, all_public, shared_id]`: its last value
is one that many identifiers carry byte for byte (the HS_ADMIN naming their prefix's administrator), stored
once in the store's shared values under `shared_id` (content-addressed: the first bytes of its SHA-256), and
the tail is `values_head + shared value`. That saves about 50 bytes an identifier, which is what keeps tens
of millions of identifiers under 300 bytes each.

Imports msgpack and the codec's value encoder, never lmdb or the servers.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Collection, Sequence

import msgpack

from resolver.handle.values import HandleValue, encode_value

SCHEMA_VERSION = 1  #: bump when the record layout changes; readers refuse versions they do not know
PUBLIC_READ = 0x02  #: permission bit (handle-protocol.md, handle value)
SHARED_TYPES = (b"HS_ADMIN",)  #: value types stored once when they end a bulk-loaded record
SHARED_ID_BYTES = 8  #: of the SHA-256 of a shared value: collisions are out of reach at any store size

SharedLookup = Callable[[bytes], "bytes | None"]

_U32 = struct.Struct(">I")
_BIN8_HEADERS = [bytes((0xC4, n)) for n in range(0x100)]  # most record bodies are under 256 bytes
# Offsets inside one encoded value: index u32, timestamp u32, ttlType u8, ttl i32, permissions u8, type...
_PERMISSIONS_AT = 13
_TYPE_AT = 14


class RecordError(ValueError):
    """A stored record cannot be decoded (wrong schema version or corrupt bytes)."""


def pack_record(values: Sequence[HandleValue]) -> bytes:
    """The stored record of an identifier with these values, in this order."""
    encoded = [encode_value(v) for v in values]
    all_public = all(v.permissions & PUBLIC_READ for v in values)
    return pack_encoded(encoded, all_public)


def pack_encoded(encoded_values: Sequence[bytes], all_public: bool) -> bytes:
    return pack_body(_U32.pack(len(encoded_values)) + b"".join(encoded_values), all_public)


def pack_body(body: bytes, all_public: bool, sid: bytes | None = None) -> bytes:
    """The record of a values body: u32 count + encoded values, the last one left out when it is the shared
    value `sid` names."""
    if sid is None:
        return msgpack.packb([SCHEMA_VERSION, body, all_public])
    return msgpack.packb([SCHEMA_VERSION, body, all_public, sid])


def record_frame(all_public: bool, sid: bytes | None = None) -> tuple[bytes, bytes]:
    """(before, after) such that `before + bin_header(len(body)) + body + after == pack_body(body, all_public,
    sid)`: msgpack writes an array as its header followed by each element, so a record can be assembled from
    parts without building the list (the bulk loader's templates, storage/lineshapes.py)."""
    packer = msgpack.Packer()
    rest = [all_public] if sid is None else [all_public, sid]
    before = packer.pack_array_header(2 + len(rest)) + packer.pack(SCHEMA_VERSION)
    return before, b"".join(packer.pack(element) for element in rest)


def bin_header(length: int) -> bytes:
    """The msgpack header of a bin field of `length` bytes: bin 8, 16 or 32 by size (msgpack spec, bin format)."""
    if length < 0x100:
        return _BIN8_HEADERS[length]
    if length < 0x10000:
        return b"\xc5" + length.to_bytes(2, "big")
    return b"\xc6" + length.to_bytes(4, "big")


def shared_id(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()[:SHARED_ID_BYTES]


def split_shared(encoded_values: Sequence[bytes]) -> tuple[Sequence[bytes], bytes | None]:
    """(the values stored in the record, the last value when it is stored once as a shared value, or None)."""
    if encoded_values and value_type(encoded_values[-1]) in SHARED_TYPES:
        return encoded_values[:-1], encoded_values[-1]
    return encoded_values, None


def pack_encoded_shared(
    encoded_values: Sequence[bytes], all_public: bool
) -> tuple[bytes, tuple[bytes, bytes] | None]:
    """(record, (shared id, shared value) the store must hold) — sharing the last value when its type is one
    of SHARED_TYPES; otherwise (the plain record, None)."""
    stored, shared = split_shared(encoded_values)
    body = _U32.pack(len(encoded_values)) + b"".join(stored)
    if shared is None:
        return pack_body(body, all_public), None
    sid = shared_id(shared)
    return pack_body(body, all_public, sid), (sid, shared)


def unpack_record(raw: bytes, shared: SharedLookup | None = None) -> tuple[bytes, bool]:
    """(values_tail, all_public) of a stored record; `shared(id)` gives a shared value (Store.shared_value)."""
    try:
        fields = msgpack.unpackb(raw)
        if len(fields) == 3:
            version, tail, all_public = fields
        else:
            version, head, all_public, sid = fields
            value = shared(sid) if shared is not None else None
            if value is None:
                raise RecordError(f"record ends with shared value {bytes(sid).hex()}, which is missing")
            tail = head + value
    except (ValueError, TypeError, msgpack.ExtraData) as exc:
        if isinstance(exc, RecordError):
            raise
        raise RecordError(f"undecodable record: {exc}") from exc
    if version != SCHEMA_VERSION:
        raise RecordError(f"record schema version {version!r}, this node reads {SCHEMA_VERSION}")
    return tail, all_public


def split_values(tail: bytes) -> list[bytes]:
    """The encoded values inside a values tail, each as its own bytes."""
    try:
        (count,) = _U32.unpack_from(tail, 0)
        pos = 4
        values = []
        for _ in range(count):
            start = pos
            pos += _TYPE_AT
            pos += 4 + _U32.unpack_from(tail, pos)[0]  # type
            pos += 4 + _U32.unpack_from(tail, pos)[0]  # data
            (ref_count,) = _U32.unpack_from(tail, pos)
            pos += 4
            for _ in range(ref_count):
                pos += 4 + _U32.unpack_from(tail, pos)[0] + 4  # handle + index
            if pos > len(tail):
                raise RecordError("value runs past the end of the record")
            values.append(tail[start:pos])
    except struct.error as exc:
        raise RecordError(f"truncated record: {exc}") from exc
    if pos != len(tail):
        raise RecordError("trailing bytes after the last value")
    return values


def value_index(encoded: bytes) -> int:
    return _U32.unpack_from(encoded, 0)[0]


def data_length_at(encoded: bytes) -> int:
    """Offset of the u32 data length in an encoded value (the data follows it)."""
    return _TYPE_AT + 4 + _U32.unpack_from(encoded, _TYPE_AT)[0]


def value_type(encoded: bytes) -> bytes:
    (length,) = _U32.unpack_from(encoded, _TYPE_AT)
    return encoded[_TYPE_AT + 4 : _TYPE_AT + 4 + length]


def value_is_public(encoded: bytes) -> bool:
    return bool(encoded[_PERMISSIONS_AT] & PUBLIC_READ)


def type_matches(value_type_upper: bytes, wanted_upper: bytes) -> bool:
    """The type rule of OC_RESOLUTION: case-insensitive; a wanted type ending in '.' also matches the type
    without the dot and every type starting with it (`HS_SITE.` matches `HS_SITE` and `HS_SITE.PREFIX`)."""
    if value_type_upper == wanted_upper:
        return True
    if wanted_upper.endswith(b"."):
        return value_type_upper == wanted_upper[:-1] or value_type_upper.startswith(wanted_upper)
    return False


def select_values(
    tail: bytes,
    all_public: bool,
    indexes: Collection[int] = (),
    types: Collection[bytes] = (),
    public_only: bool = True,
) -> tuple[int, bytes]:
    """(count, u32 count + encoded values) of the values an OC_RESOLUTION with these filters returns.

    No filters selects every value; otherwise a value is selected when its index is listed OR its type matches
    a listed type. With `public_only` only values with PUBLIC_READ count. The order of the record is kept.
    """
    if not indexes and not types and (all_public or not public_only):
        return _U32.unpack_from(tail, 0)[0], tail  # the common question: the stored bytes as they are
    index_set = frozenset(indexes)
    wanted_types = [t.upper() for t in types]
    chosen = []
    for encoded in split_values(tail):
        if public_only and not value_is_public(encoded):
            continue
        if index_set or wanted_types:
            if value_index(encoded) not in index_set:
                vtype = value_type(encoded).upper()
                if not any(type_matches(vtype, w) for w in wanted_types):
                    continue
        chosen.append(encoded)
    return len(chosen), _U32.pack(len(chosen)) + b"".join(chosen)
