"""Bounded big-endian reading and counted-field writing for the Handle wire format.

Every length-prefixed field of the protocol is read through :class:`Reader`, so a short or overlong
field raises :class:`HandleProtocolError` instead of over-reading. Imports no asyncio, socket or lmdb.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import HandleProtocolError

U8 = struct.Struct(">B")
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
I32 = struct.Struct(">i")

#: Smallest encoding of a counted field: its u32 length alone.
COUNT_BYTES = U32.size

Buffer = bytes | bytearray | memoryview


class Reader:
    """Reads fields from ``data[start:end]``, never past ``end`` (like dnspython's ``dns.wire.Parser``)."""

    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: Buffer, start: int = 0, end: int | None = None) -> None:
        self._data = data
        self._pos = start
        self._end = len(data) if end is None else end
        if not 0 <= start <= self._end <= len(data):
            raise ValueError("reader bounds outside the buffer")

    @property
    def position(self) -> int:
        return self._pos

    def remaining(self) -> int:
        return self._end - self._pos

    def at_end(self) -> bool:
        return self._pos >= self._end

    def _take(self, n: int) -> int:
        """Claim the next ``n`` bytes and return where they start."""
        start = self._pos
        if n < 0 or n > self._end - start:
            raise HandleProtocolError(f"field of {n} bytes at offset {start}, {self._end - start} remain")
        self._pos = start + n
        return start

    def get_u8(self) -> int:
        return self._data[self._take(1)]

    def get_u16(self) -> int:
        return U16.unpack_from(self._data, self._take(2))[0]  # type: ignore[no-any-return]

    def get_u32(self) -> int:
        return U32.unpack_from(self._data, self._take(4))[0]  # type: ignore[no-any-return]

    def get_i32(self) -> int:
        return I32.unpack_from(self._data, self._take(4))[0]  # type: ignore[no-any-return]

    def get_struct(self, fmt: struct.Struct) -> tuple[int, ...]:
        """Several fixed fields in one unpack (the value and header codecs use this)."""
        return fmt.unpack_from(self._data, self._take(fmt.size))

    def get_u32s(self, n: int) -> tuple[int, ...]:
        """``n`` consecutive u32 values (an index list) in one unpack."""
        return struct.unpack_from(f">{n}I", self._data, self._take(4 * n))

    def get_bytes(self, n: int) -> bytes:
        start = self._take(n)
        return bytes(self._data[start : start + n])

    def skip(self, n: int) -> None:
        self._take(n)

    def skip_rest(self) -> None:
        """Ignore what remains (a newer sender's extra fields, an SDK's trailing auth blob)."""
        self._pos = self._end

    def get_counted_bytes(self, max_bytes: int | None = None) -> bytes:
        """A u32 length then that many bytes; the length may exceed neither what remains nor ``max_bytes``."""
        n = self.get_u32()
        if n > self._end - self._pos:
            raise HandleProtocolError(f"counted field of {n} bytes, {self._end - self._pos} remain")
        if max_bytes is not None and n > max_bytes:
            raise HandleProtocolError(f"counted field of {n} bytes, at most {max_bytes} allowed")
        return self.get_bytes(n)

    def get_string(self, max_bytes: int | None = None) -> str:
        """A counted UTF-8 string."""
        raw = self.get_counted_bytes(max_bytes)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HandleProtocolError(f"string is not valid UTF-8: {exc.reason}") from None

    def get_count(self, min_item_bytes: int, max_items: int | None = None) -> int:
        """A u32 list count, checked against the bytes left so a forged count cannot make us allocate."""
        n = self.get_u32()
        if n * min_item_bytes > self._end - self._pos:
            raise HandleProtocolError(f"list of {n} items cannot fit in {self._end - self._pos} bytes")
        if max_items is not None and n > max_items:
            raise HandleProtocolError(f"list of {n} items, at most {max_items} allowed")
        return n

    @contextmanager
    def restrict_to(self, n: int) -> Iterator[None]:
        """Within the block, only the next ``n`` bytes can be read, and all of them must be."""
        if n < 0 or n > self._end - self._pos:
            raise HandleProtocolError(f"section of {n} bytes, {self._end - self._pos} remain")
        saved_end = self._end
        self._end = self._pos + n
        try:
            yield
            # Checked only on normal exit so an error raised inside the block is not masked.
            if self._pos != self._end:
                raise HandleProtocolError(f"{self._end - self._pos} unread bytes at the end of a section")
        finally:
            self._end = saved_end


def pack_counted(data: bytes) -> bytes:
    """A byte array as the wire writes it: u32 length + bytes."""
    return U32.pack(len(data)) + data


def pack_string(text: str) -> bytes:
    """A string as the wire writes it: u32 length + UTF-8 bytes."""
    return pack_counted(text.encode("utf-8"))
