"""Splitting a message into 512-byte UDP datagrams and reassembling chunked messages (§ Transports).

Bytes in, bytes out: the caller owns the socket and the clock (``now_s``). Imports no asyncio, socket
or lmdb.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from .constants import (
    ENVELOPE_BYTES,
    MAX_MESSAGE_BYTES,
    UDP_CHUNK_PAYLOAD_BYTES,
    UDP_DATAGRAM_BYTES,
    UDP_MAX_BUFFERED_BYTES,
    UDP_MAX_PENDING_MESSAGES,
    UDP_REASSEMBLY_TIMEOUT_S,
)
from .envelope import decode_envelope
from .errors import EnvelopeError
from .wire import U32, Buffer

_SEQUENCE_AT = 12  # envelope offset of SequenceNumber
_LENGTH_AT = 16  # envelope offset of MessageLength


def split_datagrams(message: bytes) -> list[bytes]:
    """``message`` (envelope + payload) as datagrams of at most 512 bytes.

    A longer message becomes 492-byte payload pieces, each behind a copy of the message's envelope
    with SequenceNumber 0, 1, 2... and the total MessageLength. As in the reference's datagrams the
    envelope flags are left as they are (TC is not set).
    """
    if len(message) <= UDP_DATAGRAM_BYTES:
        return [message]
    head = message[:_SEQUENCE_AT]
    length_field = message[_SEQUENCE_AT + 4 : ENVELOPE_BYTES]
    piece = UDP_CHUNK_PAYLOAD_BYTES
    return [
        b"".join((head, sequence.to_bytes(4, "big"), length_field, message[start : start + piece]))
        for sequence, start in enumerate(range(ENVELOPE_BYTES, len(message), piece))
    ]


def is_chunk(datagram: Buffer) -> bool:
    """Whether a datagram carries only a piece of its message, so it must go through a
    :class:`Reassembler`. Decided by MessageLength, never by TC: the reference sets no TC on pieces."""
    size = len(datagram)
    return size >= ENVELOPE_BYTES and U32.unpack_from(datagram, _LENGTH_AT)[0] != size - ENVELOPE_BYTES


def chunk_count(message_length: int) -> int:
    """How many datagrams carry a payload of ``message_length`` bytes."""
    return max(1, -(-message_length // UDP_CHUNK_PAYLOAD_BYTES))


@dataclass(slots=True)
class _Pending:
    created_s: float
    message_length: int
    chunk_count: int
    #: Envelope of chunk 0, which becomes the whole message's envelope.
    head: bytes | None = None
    payloads: dict[int, bytes] = field(default_factory=dict)
    buffered_bytes: int = 0


class Reassembler:
    """Joins chunked UDP messages, keyed by (source address, RequestId), within bounded memory.

    At most ``max_pending`` messages and ``max_buffered_bytes`` payload bytes are held; beyond that the
    oldest partial message is dropped, as is any older than ``max_age_s``. Duplicate chunks are ignored.
    Clients resend a request they got no answer to, so dropping costs a retry, never a wrong answer.
    """

    def __init__(
        self,
        max_pending: int = UDP_MAX_PENDING_MESSAGES,
        max_age_s: float = UDP_REASSEMBLY_TIMEOUT_S,
        max_buffered_bytes: int = UDP_MAX_BUFFERED_BYTES,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self.max_pending = max_pending
        self.max_age_s = max_age_s
        self.max_buffered_bytes = max_buffered_bytes
        self.max_message_bytes = max_message_bytes
        # Insertion-ordered, so the first entry is always the oldest.
        self._pending: dict[tuple[Hashable, int], _Pending] = {}
        self._buffered_bytes = 0

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def buffered_bytes(self) -> int:
        return self._buffered_bytes

    def feed(self, source: Hashable, datagram: Buffer, now_s: float) -> bytes | None:
        """The whole message (envelope + payload) once complete, else None.

        A datagram that holds its whole message is returned at once, unchanged. Raises
        :class:`EnvelopeError` for a datagram that cannot be a valid chunk; such datagrams are dropped.
        """
        envelope = decode_envelope(datagram)
        payload_bytes = len(datagram) - ENVELOPE_BYTES
        length = envelope.message_length
        if envelope.sequence == 0 and (payload_bytes == length or length <= UDP_CHUNK_PAYLOAD_BYTES):
            # Unchunked (possibly malformed: the message decoder reports length mismatches).
            return bytes(datagram)
        if length > self.max_message_bytes:
            raise EnvelopeError(f"chunked message of {length} bytes exceeds {self.max_message_bytes}")
        count = chunk_count(length)
        sequence = envelope.sequence
        if sequence >= count:
            raise EnvelopeError(f"chunk {sequence} of a {length}-byte message that has {count} chunks")
        last_piece = length - UDP_CHUNK_PAYLOAD_BYTES * (count - 1)
        expected = UDP_CHUNK_PAYLOAD_BYTES if sequence < count - 1 else last_piece
        if payload_bytes != expected:
            raise EnvelopeError(f"chunk {sequence} carries {payload_bytes} bytes, expected {expected}")

        self.expire(now_s)
        key = (source, envelope.request_id)
        pending = self._pending.get(key)
        if pending is not None and pending.message_length != length:
            # The request id was reused for another message: the old one can no longer complete.
            self._discard(key)
            pending = None
        if pending is None:
            pending = _Pending(now_s, length, count)
            self._pending[key] = pending
        if sequence in pending.payloads:
            return None  # duplicate (clients resend)
        pending.payloads[sequence] = bytes(datagram[ENVELOPE_BYTES:])
        pending.buffered_bytes += payload_bytes
        self._buffered_bytes += payload_bytes
        if sequence == 0:
            pending.head = bytes(datagram[:ENVELOPE_BYTES])
        if len(pending.payloads) == count:
            self._discard(key)
            assert pending.head is not None  # chunk 0 is among the `count` distinct chunks
            payloads = pending.payloads
            return pending.head + b"".join([payloads[i] for i in range(count)])
        self._enforce_limits(key)
        return None

    def expire(self, now_s: float) -> None:
        """Drop partial messages older than ``max_age_s``."""
        deadline = now_s - self.max_age_s
        while self._pending:
            key, oldest = next(iter(self._pending.items()))
            if oldest.created_s > deadline:
                break
            self._discard(key)

    def _enforce_limits(self, newest: tuple[Hashable, int]) -> None:
        while self._pending and (
            len(self._pending) > self.max_pending or self._buffered_bytes > self.max_buffered_bytes
        ):
            key = next(iter(self._pending))
            self._discard(key)
            if key == newest:
                break

    def _discard(self, key: tuple[Hashable, int]) -> None:
        pending = self._pending.pop(key)
        self._buffered_bytes -= pending.buffered_bytes
