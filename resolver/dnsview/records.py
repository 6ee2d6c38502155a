"""Handle values as DNS records: TXT for every public value, URI for URL values, and their zone-file lines.

Input is the store's "values tail" (u32 count, then encoded values, handle-protocol.md § Handle value); only
values with PUBLIC_READ are shown. The same rendering feeds the live answers and ``idnode export-zone``, so
NSD or Knot serving the exported zone give the same rdata. Imports no asyncio, socket or lmdb.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .constants import (
    MAX_CHARACTER_STRING_BYTES,
    MAX_TTL_S,
    MAX_TXT_TEXT_BYTES,
    MAX_URI_PRIORITY,
    MIN_TTL_S,
    URI_WEIGHT,
)
from .errors import CorruptValues
from .names import DEFAULT_ZONE, _is_utf8, handle_key, name_map

PUBLIC_READ = 0x02  #: handle-protocol.md § Handle value: permission bit of values shown over DNS
TTL_RELATIVE = 0  #: handle-protocol.md § Handle value: ttl is seconds
TTL_ABSOLUTE = 1  #: handle-protocol.md § Handle value: ttl is the Unix time of expiry
URL_TYPE = b"URL"  #: handle-protocol.md § Handle value: the type shown as URI records too
BASE64_TAG = b"base64:"  #: a TXT field starting so is base64 of bytes that are not shown as text

_VALUE_HEAD = struct.Struct(">IIBiBI")  # index, timestamp, ttlType, ttl, permissions, type length
_U32 = struct.Struct(">I")
_U16X2 = struct.Struct(">HH")
_COUNT_BYTES = _U32.size
#: Smallest encoded value: fixed head with the type length, empty type, empty data, no references.
_MIN_VALUE_BYTES = _VALUE_HEAD.size + 2 * _COUNT_BYTES
_MIN_REFERENCE_BYTES = 2 * _COUNT_BYTES

# Control characters that make data binary: C0 except TAB, LF, CR, and DEL. A type may not hold blanks either,
# so that "index type data" splits at its first two spaces.
_DATA_CONTROLS = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
_TYPE_CONTROLS = bytes(range(0x00, 0x21)) + b"\x7f"
# Deleting these from printable ASCII text leaves nothing: a one-call test for the common case.
_DATA_PRINTABLE = bytes(range(0x20, 0x7F)) + b"\t\n\r"
_TYPE_PRINTABLE = bytes(range(0x21, 0x7F))


@dataclass(frozen=True, slots=True)
class IdentifierRecords:
    """The DNS records of one identifier: a TXT and a URI RRset, each with one TTL (RFC 2181 §5.2)."""

    txt: tuple[tuple[bytes, ...], ...]  #: character-strings of each TXT record, in value order
    txt_ttl_s: int
    uri: tuple[tuple[int, int, bytes], ...]  #: (priority, weight, target) of each URI record
    uri_ttl_s: int
    clock_dependent: bool = False  #: a value expires at an absolute time, so the TTLs follow the clock


def decode_values(tail: bytes) -> list[tuple[int, int, int, int, bytes, bytes]]:
    """(index, ttl_type, ttl, permissions, type, data) of each value in a values tail.

    Every length is checked against what remains, so a corrupt tail raises :class:`CorruptValues`.
    """
    end = len(tail)
    if end < _COUNT_BYTES:
        raise CorruptValues("values tail shorter than its count")
    (count,) = _U32.unpack_from(tail, 0)
    if count * _MIN_VALUE_BYTES > end - _COUNT_BYTES:
        raise CorruptValues(f"{count} values cannot fit in {end} bytes")
    pos = _COUNT_BYTES
    values = []
    for _ in range(count):
        if pos + _MIN_VALUE_BYTES > end:
            raise CorruptValues("value runs past the end of the tail")
        index, _timestamp, ttl_type, ttl, permissions, n = _VALUE_HEAD.unpack_from(tail, pos)
        pos += _VALUE_HEAD.size
        if n > end - pos:
            raise CorruptValues("value type runs past the end of the tail")
        vtype = tail[pos : pos + n]
        pos += n
        if pos + _COUNT_BYTES > end:
            raise CorruptValues("value data length runs past the end of the tail")
        (n,) = _U32.unpack_from(tail, pos)
        pos += _COUNT_BYTES
        if n > end - pos:
            raise CorruptValues("value data runs past the end of the tail")
        data = tail[pos : pos + n]
        pos += n
        if pos + _COUNT_BYTES > end:
            raise CorruptValues("reference count runs past the end of the tail")
        (refs,) = _U32.unpack_from(tail, pos)
        pos += _COUNT_BYTES
        if refs * _MIN_REFERENCE_BYTES > end - pos:
            raise CorruptValues(f"{refs} references cannot fit in the tail")
        for _ in range(refs):
            (n,) = _U32.unpack_from(tail, pos)
            pos += _COUNT_BYTES + n + _COUNT_BYTES
            if pos > end:
                raise CorruptValues("reference runs past the end of the tail")
        values.append((index, ttl_type, ttl, permissions, vtype, data))
    if pos != end:
        raise CorruptValues(f"{end - pos} bytes after the last value")
    return values


def _shows_as_text(raw: bytes, controls: bytes) -> bool:
    if raw.startswith(BASE64_TAG) or len(raw.translate(None, controls)) != len(raw):
        return False
    return _is_utf8(raw)


def txt_field(raw: bytes, printable: bytes = _DATA_PRINTABLE, controls: bytes = _DATA_CONTROLS) -> bytes:
    """A value field as TXT text: UTF-8 text as it is, anything else as ``base64:`` and RFC 4648 base64."""
    if raw.translate(None, printable) or raw.startswith(BASE64_TAG):
        if not _shows_as_text(raw, controls):
            return BASE64_TAG + base64.b64encode(raw)
    return raw


def txt_text(index: int, vtype: bytes, data: bytes) -> bytes:
    """``index type data``: the whole text of a value's TXT record, before it is cut into strings."""
    return b"%d %s %s" % (index, txt_field(vtype, _TYPE_PRINTABLE, _TYPE_CONTROLS), txt_field(data))


def split_strings(text: bytes) -> tuple[bytes, ...]:
    """``text`` as character-strings of at most 255 bytes, never cutting a UTF-8 sequence (RFC 1035 §3.3.14).

    Clients join the strings of one record without separators (as RFC 7208 §3.3 does for SPF).
    """
    n = len(text)
    if n <= MAX_CHARACTER_STRING_BYTES:
        return (text,)
    strings = []
    start = 0
    while start < n:
        end = min(start + MAX_CHARACTER_STRING_BYTES, n)
        # Back off over UTF-8 continuation bytes (10xxxxxx) so that each string stays readable text.
        while end < n and end > start + 1 and text[end] & 0xC0 == 0x80:
            end -= 1
        strings.append(text[start:end])
        start = end
    return tuple(strings)


def clamp_ttl(ttl_type: int, ttl: int, now_s: float) -> int:
    """A value's ttl as a DNS TTL: relative seconds, or seconds left to an absolute expiry, clamped."""
    seconds = int(ttl - now_s) if ttl_type == TTL_ABSOLUTE else ttl
    return MIN_TTL_S if seconds < MIN_TTL_S else MAX_TTL_S if seconds > MAX_TTL_S else seconds


def render_records(tail: bytes, now_s: float = 0.0) -> IdentifierRecords:
    """The TXT and URI records of the public values in ``tail``; ``now_s`` only matters for absolute ttls.

    A URL value whose data is empty or not UTF-8 gets no URI record (RFC 7553 §4.4: the target is a URI);
    a value whose TXT text exceeds ``MAX_TXT_TEXT_BYTES`` is left out of the TXT RRset.
    """
    txt = []
    uri = []
    txt_ttl = uri_ttl = MAX_TTL_S
    clock_dependent = False
    for index, ttl_type, ttl, permissions, vtype, data in decode_values(tail):
        if not permissions & PUBLIC_READ:
            continue
        if ttl_type == TTL_ABSOLUTE:
            clock_dependent = True
            ttl_s = clamp_ttl(ttl_type, ttl, now_s)
        else:
            ttl_s = MIN_TTL_S if ttl < MIN_TTL_S else MAX_TTL_S if ttl > MAX_TTL_S else ttl
        # txt_text, with its common case (printable ASCII fields) inline: this runs for every answer.
        shown_type = vtype
        if vtype.translate(None, _TYPE_PRINTABLE) or vtype.startswith(BASE64_TAG):
            shown_type = txt_field(vtype, _TYPE_PRINTABLE, _TYPE_CONTROLS)
        shown_data = data
        if data.translate(None, _DATA_PRINTABLE) or data.startswith(BASE64_TAG):
            shown_data = txt_field(data)
        text = b"%d %s %s" % (index, shown_type, shown_data)
        if len(text) <= MAX_TXT_TEXT_BYTES:
            txt.append((text,) if len(text) <= MAX_CHARACTER_STRING_BYTES else split_strings(text))
            if ttl_s < txt_ttl:
                txt_ttl = ttl_s
        if data and vtype.upper() == URL_TYPE and _is_utf8(data):
            uri.append((min(index, MAX_URI_PRIORITY), URI_WEIGHT, data))
            if ttl_s < uri_ttl:
                uri_ttl = ttl_s
    return IdentifierRecords(tuple(txt), txt_ttl, tuple(uri), uri_ttl, clock_dependent)


def txt_rdata(strings: Sequence[bytes]) -> bytes:
    """Wire rdata of a TXT record (RFC 1035 §3.3.14): each string behind its length byte."""
    return b"".join([bytes((len(s),)) + s for s in strings])


def uri_rdata(priority: int, weight: int, target: bytes) -> bytes:
    """Wire rdata of a URI record (RFC 7553 §4.5): priority, weight, then the target to the end."""
    return _U16X2.pack(priority, weight) + target


# --- zone files ----------------------------------------------------------------------------------
def quote(raw: bytes) -> str:
    """A character-string in master-file form (RFC 1035 §5.1): quoted, ``"`` and ``\\`` escaped, and every
    byte outside printable ASCII as ``\\DDD``, so the file is ASCII and any server reads the same bytes."""
    out = ['"']
    for b in raw:
        if b == 0x22 or b == 0x5C:
            out.append("\\" + chr(b))
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\{b:03d}")
    out.append('"')
    return "".join(out)


def record_lines(owner: str, records: IdentifierRecords) -> list[str]:
    """Master-file lines of an identifier's records at ``owner`` (absolute name)."""
    lines = [
        f"{owner} {records.txt_ttl_s} IN TXT {' '.join(quote(s) for s in strings)}" for strings in records.txt
    ]
    lines += [
        f"{owner} {records.uri_ttl_s} IN URI {priority} {weight} {quote(target)}"
        for priority, weight, target in records.uri
    ]
    return lines


def zone_lines(
    handle: str | bytes,
    values_tail: bytes,
    zone: str = DEFAULT_ZONE,
    case_sensitive: bool = False,
    now_s: float | None = None,
) -> list[str]:
    """Master-file lines (TXT and URI) for one identifier, at the owner name the live view answers for.

    ``handle`` is text, UTF-8 bytes or a store key. ``now_s`` (default: now) fixes the TTL of values with an
    absolute expiry, which a static zone cannot follow. An identifier without public values gives no lines.
    """
    nmap = name_map(zone, case_sensitive)
    owner = nmap.name_of_key(handle_key(handle, case_sensitive))
    return record_lines(owner, render_records(values_tail, time.time() if now_s is None else now_s))
