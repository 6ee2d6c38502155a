"""Cutting a TCP byte stream into whole Handle messages (§ Transports: envelope + MessageLength bytes).

Bytes in, messages out; the caller owns the connection. Imports no asyncio, socket or lmdb.
"""

from __future__ import annotations

from .constants import ENVELOPE_BYTES, MAX_MESSAGE_BYTES
from .errors import EnvelopeError
from .wire import U32, Buffer

_LENGTH_AT = 16  # envelope offset of MessageLength


class FrameBuffer:
    """Collects stream bytes and hands out each complete message (envelope included) in order.

    Copes with partial reads and pipelined requests. A MessageLength over ``max_message_bytes`` raises
    :class:`EnvelopeError` as soon as its envelope arrives, so at most one message plus one read is
    ever buffered; after that error the stream cannot be resynchronised and the connection should close.
    """

    __slots__ = ("_buffer", "max_message_bytes")

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.max_message_bytes = max_message_bytes
        self._buffer = bytearray()

    def __len__(self) -> int:
        """Bytes held for a message not yet complete."""
        return len(self._buffer)

    def feed(self, data: Buffer) -> list[bytes]:
        if self._buffer:
            self._buffer += data
            stream: Buffer = self._buffer
        else:
            stream = data  # common case: nothing left over, so no copy into the buffer
        size = len(stream)
        messages: list[bytes] = []
        start = 0
        while size - start >= ENVELOPE_BYTES:
            (length,) = U32.unpack_from(stream, start + _LENGTH_AT)
            if length > self.max_message_bytes:
                self._buffer = bytearray()
                raise EnvelopeError(f"MessageLength {length} exceeds {self.max_message_bytes}")
            end = start + ENVELOPE_BYTES + length
            if end > size:
                break
            if start == 0 and end == size and type(stream) is bytes:
                messages.append(stream)  # exactly one message in one read: hand it on as it is
            else:
                messages.append(bytes(stream[start:end]))
            start = end
        if stream is self._buffer:
            del self._buffer[:start]
        else:
            self._buffer = bytearray(stream[start:])
        return messages
