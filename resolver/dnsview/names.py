"""Identifier <-> DNS name: the name mapping of the DNS view (scheme and examples in README.md here).

``88.100.7/BRAKE-2025-000123`` is ``brake-2025-000123._.7.100.88.id.test.``: the suffix as escaped labels,
the separator label ``_``, the prefix segments reversed, the zone. A suffix whose readable name would not
fit (labels of 63 bytes, names of 255) gets a digest name ``_h-<base32 of sha-256 of the key>._.<prefix>``
that the server resolves through an index of such keys (:func:`digest_entry`).

Works on text (:func:`handle_to_name`, :func:`name_to_handle`) and on wire labels (:class:`NameMap`, used
by the server's hot path). Imports no asyncio, socket or lmdb.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

from resolver.handle.constants import MAX_HANDLE_BYTES  # handle-protocol.md § Names and prefixes
from storage.keys import NA_PREFIX, InvalidHandle
from storage.keys import handle_key as store_handle_key

from .constants import MAX_LABEL_BYTES, MAX_NAME_BYTES
from .errors import NotAnIdentifier, NotInZone, PrefixNodeName

DEFAULT_ZONE = "id.test."

SEPARATOR = b"_"  #: the label between the suffix labels and the prefix labels
ESCAPE = 0x5F  #: ``_``: starts ``_xx``, a byte in two lower-case hex digits
DIGEST_TAG = b"_h-"  #: starts a digest label; ``_h`` is never an escape, so no readable label starts so
DIGEST_LABEL_BYTES = len(DIGEST_TAG) + 52  #: 256 bits in unpadded base32: 52 characters
ESCAPE_BYTES = 3  #: ``_xx``
#: A suffix label this long may be followed (to its left) by another one: an escape needs 3 bytes.
FULL_CHUNK_MIN_BYTES = MAX_LABEL_BYTES - ESCAPE_BYTES + 1

_UPPER = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LOWER_ASCII = frozenset(range(0x61, 0x7B))
#: Bytes of a name label that stand for themselves (a letter stands for its upper-case key byte).
_NAME_PLAIN = b"abcdefghijklmnopqrstuvwxyz0123456789-"
_KEY_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-")
_HEX = b"0123456789abcdef"
_HEX_VALUE = {c: i for i, c in enumerate(_HEX)}
#: One name fragment per key byte: upper-case letters as lower-case, digits and ``-`` as they are,
#: every other byte (lower-case letters of a case-sensitive node among them) as ``_xx``.
_ENCODE = [(bytes([b]).lower() if b in _KEY_PLAIN else b"_%02x" % b) for b in range(256)]
_ENCODE_PLAIN_KEY = bytes(sorted(_KEY_PLAIN))
#: Escaped bytes that no canonical name carries, per field: a plain byte never, a lower-case letter not in a
#: case-insensitive field, and ``.`` or ``/`` not in a prefix segment (they split the handle).
_NEVER_ESCAPED = frozenset(_KEY_PLAIN)
_FORBIDDEN_CI = _NEVER_ESCAPED | _LOWER_ASCII
_FORBIDDEN_SEGMENT = _FORBIDDEN_CI | {0x2E, 0x2F}


class NameKind(IntEnum):
    """What a name below the zone denotes (:meth:`NameMap.classify`)."""

    IDENTIFIER = 0  #: a readable identifier name; the payload is the handle key
    DIGEST = 1  #: a digest name; the payload is the 32-byte digest
    NODE = 2  #: the apex, a prefix node or a ``_`` label: never data, but identifiers may lie below
    NONE = 3  #: no identifier, and none below either (NXDOMAIN is safe)


@dataclass(frozen=True, slots=True)
class DigestName:
    """A digest name: the identifier is the one whose key hashes to ``digest`` (look it up in an index)."""

    digest: bytes  #: sha-256 of the handle key
    prefix: str | None  #: the prefix the name sits under, or None for a name directly under ``_.<zone>``


def handle_key(handle: str | bytes, case_sensitive: bool = False) -> bytes:
    """The store key of ``handle``: the store's own case rule (``storage.keys.handle_key``), so the DNS view
    can never disagree with the store about which handle a name means. Raises :class:`NotAnIdentifier` for
    text that is not ``prefix/suffix`` with a non-empty prefix within 2048 bytes.
    """
    raw = handle.encode("utf-8") if isinstance(handle, str) else bytes(handle)
    try:
        key = store_handle_key(raw, case_sensitive)
    except InvalidHandle as exc:
        raise NotAnIdentifier(str(exc)) from None
    if len(raw) > MAX_HANDLE_BYTES:
        raise NotAnIdentifier(f"a handle has at most {MAX_HANDLE_BYTES} bytes, this one {len(raw)}")
    return key


def handle_digest(key: bytes) -> bytes:
    """The digest naming ``key`` (a handle key, :func:`handle_key`) in a digest name: its sha-256."""
    return hashlib.sha256(key).digest()


def encode_field(raw: bytes) -> bytes:
    """A key field (prefix segment or suffix) as escaped name text, before it is cut into labels."""
    if not raw.translate(None, _ENCODE_PLAIN_KEY):
        return raw.lower()
    return b"".join([_ENCODE[b] for b in raw])


def decode_label(label: bytes, forbidden: frozenset[int] = _FORBIDDEN_CI) -> bytes | None:
    """The key bytes of one lower-cased name label, or None when it is not a canonical escaped label."""
    if not label.translate(None, _NAME_PLAIN):
        return label.translate(_UPPER)
    out = bytearray()
    i, n = 0, len(label)
    while i < n:
        c = label[i]
        if c == ESCAPE:
            if i + ESCAPE_BYTES > n:
                return None
            hi = _HEX_VALUE.get(label[i + 1])
            lo = _HEX_VALUE.get(label[i + 2])
            if hi is None or lo is None:
                return None
            b = hi * 16 + lo
            if b in forbidden:
                return None
            out.append(b)
            i += ESCAPE_BYTES
        elif c in _NAME_PLAIN:
            out.append(c - 0x20 if 0x61 <= c <= 0x7A else c)
            i += 1
        else:
            return None
    return bytes(out)


def chunk_field(escaped: bytes) -> list[bytes]:
    """Escaped suffix text cut greedily into labels of at most 63 bytes, never inside an escape."""
    n = len(escaped)
    if n <= MAX_LABEL_BYTES:
        return [escaped] if n else []
    chunks = []
    start = 0
    while start < n:
        end = start + MAX_LABEL_BYTES
        if end < n:
            # An escape starting in the last two bytes would be cut: end the label before it.
            cut = escaped.rfind(b"_", end - ESCAPE_BYTES + 1, end)
            if cut != -1:
                end = cut
        chunks.append(escaped[start:end])
        start = end
    return chunks


def wire_length(labels: list[bytes]) -> int:
    """Bytes of a name of these labels (no root among them) in wire form, the root label included."""
    return sum(len(label) for label in labels) + len(labels) + 1


def _zone_labels(zone: str) -> tuple[bytes, ...]:
    text = zone.strip()
    if text in ("", "."):
        return ()
    try:
        labels = tuple(label.encode("ascii").lower() for label in text.rstrip(".").split("."))
    except UnicodeEncodeError:
        raise ValueError(f"zone {zone!r} is not an ASCII domain name") from None
    if any(not label or len(label) > MAX_LABEL_BYTES for label in labels):
        raise ValueError(f"zone {zone!r} has an empty or overlong label")
    return labels


class NameMap:
    """The name mapping for one zone and case rule, on wire labels (lower-cased bytes, no root label)."""

    __slots__ = ("zone_labels", "case_sensitive", "_zone_wire_bytes", "_zone_count")

    def __init__(self, zone: str = DEFAULT_ZONE, case_sensitive: bool = False) -> None:
        self.zone_labels = _zone_labels(zone)
        self.case_sensitive = case_sensitive
        self._zone_count = len(self.zone_labels)
        self._zone_wire_bytes = wire_length(list(self.zone_labels))
        # Every identifier must have a name: the longest name is a digest label and `_` under the zone.
        if self._zone_wire_bytes + DIGEST_LABEL_BYTES + 1 + len(SEPARATOR) + 1 > MAX_NAME_BYTES:
            raise ValueError(f"zone {zone!r} is too long to leave room for digest names")

    @property
    def zone(self) -> str:
        return ".".join(label.decode("ascii") for label in self.zone_labels) + "."

    # --- handle -> name --------------------------------------------------------------------------
    def labels_of_key(self, key: bytes) -> list[bytes]:
        """The labels of the name of the identifier with this store key, zone labels included."""
        slash = key.find(b"/")
        if slash <= 0:
            raise NotAnIdentifier("a handle key is prefix/suffix with a non-empty prefix")
        prefix, suffix = key[:slash], key[slash + 1 :]
        prefix_labels = self._prefix_labels(prefix)
        if prefix_labels is not None:
            labels = chunk_field(encode_field(suffix))
            labels.reverse()
            labels.append(SEPARATOR)
            labels += prefix_labels
            labels += self.zone_labels
            if wire_length(labels) <= MAX_NAME_BYTES:
                return labels
        return self._digest_labels(key, prefix_labels)

    def _prefix_labels(self, prefix: bytes) -> list[bytes] | None:
        """Reversed escaped prefix segments, or None when a segment is empty or too long for a label."""
        labels = []
        for segment in reversed(prefix.split(b".")):
            label = encode_field(segment)
            if not label or len(label) > MAX_LABEL_BYTES:
                return None
            labels.append(label)
        return labels

    def _digest_labels(self, key: bytes, prefix_labels: list[bytes] | None) -> list[bytes]:
        digest_label = DIGEST_TAG + base64.b32encode(handle_digest(key)).rstrip(b"=").lower()
        if prefix_labels is not None:
            labels = [digest_label, SEPARATOR, *prefix_labels, *self.zone_labels]
            if wire_length(labels) <= MAX_NAME_BYTES:
                return labels
        return [digest_label, SEPARATOR, *self.zone_labels]

    def name_of_key(self, key: bytes) -> str:
        return ".".join(label.decode("ascii") for label in self.labels_of_key(key)) + "."

    # --- name -> handle --------------------------------------------------------------------------
    def below_zone(self, labels: list[bytes]) -> list[bytes] | None:
        """The labels left of the zone (lower-cased input), or None when the name is not in the zone."""
        k = self._zone_count
        if len(labels) < k:
            return None
        if k and labels[-k:] != list(self.zone_labels):
            return None
        return labels[: len(labels) - k]

    def classify(self, below: list[bytes]) -> tuple[NameKind, bytes, bool]:
        """(kind, key or digest, interior) for the lower-cased labels of a name left of the zone.

        ``interior`` says that names of identifiers may lie below this one, so a missing identifier here is
        NODATA rather than NXDOMAIN (RFC 8020). Only canonical names (those :meth:`labels_of_key` makes)
        classify as IDENTIFIER; a digest name is checked against its key once the index has given the key.
        """
        try:
            sep = below.index(SEPARATOR)
        except ValueError:
            # The apex or a prefix node: only well-formed prefix labels can have identifiers below them.
            for label in below:
                if decode_label(label, _FORBIDDEN_SEGMENT) is None:
                    return NameKind.NONE, b"", False
            return NameKind.NODE, b"", True
        prefix = self._decode_prefix(below[sep + 1 :])
        if prefix is None:
            return NameKind.NONE, b"", False
        if sep == 0:
            # `_.<prefix>`: the empty suffix, and the parent of every identifier of the prefix.
            if not prefix:
                return NameKind.NODE, b"", True
            return NameKind.IDENTIFIER, prefix + b"/", True
        first = below[0]
        if sep == 1 and first.startswith(DIGEST_TAG):
            digest = _decode_digest(first)
            if digest is None:
                return NameKind.NONE, b"", False
            return NameKind.DIGEST, digest, False
        if not prefix:
            return NameKind.NONE, b"", False
        suffix = self._decode_suffix(below[:sep], prefix)
        if suffix is None:
            return NameKind.NONE, b"", False
        return NameKind.IDENTIFIER, prefix + b"/" + suffix, len(first) >= FULL_CHUNK_MIN_BYTES

    @staticmethod
    def _decode_prefix(labels: list[bytes]) -> bytes | None:
        segments = []
        for label in reversed(labels):
            segment = decode_label(label, _FORBIDDEN_SEGMENT)
            if segment is None:
                return None
            segments.append(segment)
        prefix = b".".join(segments)
        if not prefix.isascii() and not _is_utf8(prefix):
            return None
        return prefix

    def _decode_suffix(self, labels: list[bytes], prefix: bytes) -> bytes | None:
        forbidden = _NEVER_ESCAPED if self.case_sensitive and prefix != NA_PREFIX else _FORBIDDEN_CI
        if len(labels) == 1:
            suffix = decode_label(labels[0], forbidden)
        else:
            chunks = labels[::-1]  # the first chunk of the suffix is the label next to the separator
            for chunk, following in zip(chunks, chunks[1:], strict=False):
                unit = ESCAPE_BYTES if following[0] == ESCAPE else 1
                if len(chunk) + unit <= MAX_LABEL_BYTES:
                    return None  # not cut greedily: the next unit would have fitted
            parts = []
            for chunk in chunks:
                part = decode_label(chunk, forbidden)
                if part is None:
                    return None
                parts.append(part)
            suffix = b"".join(parts)
        if suffix is None or (not suffix.isascii() and not _is_utf8(suffix)):
            return None
        return suffix


def _is_utf8(raw: bytes) -> bool:
    if raw.isascii():
        return True
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _decode_digest(label: bytes) -> bytes | None:
    if len(label) != DIGEST_LABEL_BYTES:
        return None
    text = label[len(DIGEST_TAG) :]
    try:
        digest = base64.b32decode(text.upper() + b"====")
    except ValueError:
        return None
    # base32 leaves 4 spare bits in the last character: only the encoder's own spelling is canonical.
    if base64.b32encode(digest).rstrip(b"=").lower() != text:
        return None
    return digest


@lru_cache(maxsize=16)
def name_map(zone: str = DEFAULT_ZONE, case_sensitive: bool = False) -> NameMap:
    """The (cached) :class:`NameMap` of a zone and case rule."""
    return NameMap(zone, case_sensitive)


def text_labels(name: str) -> list[bytes]:
    """Lower-cased wire labels of a name in text form (trailing dot optional; no escapes in labels)."""
    text = name.strip()
    if text in ("", "."):
        return []
    try:
        labels = [label.encode("ascii").lower() for label in text.rstrip(".").split(".")]
    except UnicodeEncodeError:
        raise NotAnIdentifier(f"{name!r} is not an ASCII domain name") from None
    if any(not label or len(label) > MAX_LABEL_BYTES for label in labels):
        raise NotAnIdentifier(f"{name!r} has an empty or overlong label")
    return labels


def handle_to_name(handle: str, zone: str = DEFAULT_ZONE, case_sensitive: bool = False) -> str:
    """The DNS name (absolute, lower-case text) of the identifier ``handle`` in ``zone``.

    Deterministic; identifiers that differ only in ASCII case share a name unless ``case_sensitive``.
    """
    return name_map(zone, case_sensitive).name_of_key(handle_key(handle, case_sensitive))


def name_to_handle(name: str, zone: str = DEFAULT_ZONE, case_sensitive: bool = False) -> str | DigestName:
    """The handle (in store-key form: upper-cased as the node's case rule says) that ``name`` denotes.

    Digest names give a :class:`DigestName`, resolved through the server's index. Raises
    :class:`NotInZone` outside the zone, :class:`PrefixNodeName` for the apex and prefix nodes, and
    :class:`NotAnIdentifier` for any other name (DNS case does not matter).
    """
    nmap = name_map(zone, case_sensitive)
    below = nmap.below_zone(text_labels(name))
    if below is None:
        raise NotInZone(f"{name!r} is not in zone {nmap.zone}")
    kind, payload, _interior = nmap.classify(below)
    if kind is NameKind.IDENTIFIER:
        return payload.decode("utf-8")
    if kind is NameKind.DIGEST:
        sep = below.index(SEPARATOR)
        prefix = nmap._decode_prefix(below[sep + 1 :]) if sep + 1 < len(below) else None
        return DigestName(payload, prefix.decode("utf-8") if prefix else None)
    if kind is NameKind.NODE:
        raise PrefixNodeName(f"{name!r} is a node of the prefix tree, not an identifier")
    raise NotAnIdentifier(f"{name!r} does not name an identifier")


def digest_entry(handle: str | bytes, zone: str = DEFAULT_ZONE, case_sensitive: bool = False) -> bytes | None:
    """The digest under which the server must index this identifier's key, or None when it has a readable
    name (the common case, needing no index entry). ``handle`` is text or UTF-8 bytes."""
    key = handle_key(handle, case_sensitive)
    labels = name_map(zone, case_sensitive).labels_of_key(key)
    if labels[0].startswith(DIGEST_TAG):
        return handle_digest(key)
    return None
