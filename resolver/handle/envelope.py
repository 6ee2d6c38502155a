"""The 20-byte message envelope (§ Message envelope) and protocol version negotiation.

Imports no asyncio, socket or lmdb.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from .constants import (
    ENVELOPE_BYTES,
    ENVELOPE_SUGGESTED_MAJOR_MASK,
    MAX_MESSAGE_BYTES,
    SERVER_VERSION,
)
from .errors import EnvelopeError
from .wire import Buffer

# § Message envelope: major · minor · flags|suggested major · suggested minor · session · request ·
# sequence · message length.
ENVELOPE = struct.Struct(">BBBBIIII")
assert ENVELOPE.size == ENVELOPE_BYTES


class Envelope(NamedTuple):
    """The envelope in front of every message and every UDP chunk.

    An immutable record (a NamedTuple rather than a frozen dataclass: it is built per request on the
    server's hot path, and costs a third as much). ``flags`` holds only ``EnvelopeFlag`` bits; the
    suggested major version shares its byte on the wire.
    """

    major: int = SERVER_VERSION[0]
    minor: int = SERVER_VERSION[1]
    flags: int = 0
    suggested_major: int = SERVER_VERSION[0]
    suggested_minor: int = SERVER_VERSION[1]
    session_id: int = 0
    request_id: int = 0
    sequence: int = 0
    #: Header + body + credential section; the envelope itself is not counted.
    message_length: int = 0


def decode_envelope(data: Buffer) -> Envelope:
    """Read the envelope at the start of ``data``; :class:`EnvelopeError` if short or oversized."""
    if len(data) < ENVELOPE_BYTES:
        raise EnvelopeError(f"{len(data)} bytes cannot hold a {ENVELOPE_BYTES}-byte envelope")
    major, minor, flag_byte, s_minor, session_id, request_id, sequence, length = ENVELOPE.unpack_from(data)
    if length > MAX_MESSAGE_BYTES:
        raise EnvelopeError(f"MessageLength {length} exceeds {MAX_MESSAGE_BYTES}")
    return Envelope(
        major,
        minor,
        flag_byte & ~ENVELOPE_SUGGESTED_MAJOR_MASK,
        flag_byte & ENVELOPE_SUGGESTED_MAJOR_MASK,
        s_minor,
        session_id,
        request_id,
        sequence,
        length,
    )


def encode_envelope(envelope: Envelope) -> bytes:
    mask = ENVELOPE_SUGGESTED_MAJOR_MASK
    if envelope.flags & mask or envelope.suggested_major > mask:
        raise ValueError("envelope flags overlap the suggested major version bits")
    return ENVELOPE.pack(
        envelope.major,
        envelope.minor,
        envelope.flags | envelope.suggested_major,
        envelope.suggested_minor,
        envelope.session_id,
        envelope.request_id,
        envelope.sequence,
        envelope.message_length,
    )


def negotiate_version(envelope: Envelope) -> tuple[int, int]:
    """The version to answer at: the lower of the client's suggestion and ours (§ Message envelope).

    A suggested major of 0 means the client suggests the envelope's own version.
    """
    if envelope.suggested_major:
        client = (envelope.suggested_major, envelope.suggested_minor)
    else:
        client = (envelope.major, envelope.minor)
    return client if client < SERVER_VERSION else SERVER_VERSION
