"""A chunk of input lines turned into store items: the unit of parsing and of one write transaction.

NDJSON input is cut into chunks at line boundaries by byte offset, so worker processes can each read their own
chunks straight from the file; line numbers are known once the chunks before are counted.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

import orjson

from resolver.handle.errors import HandleProtocolError
from storage.jsonvalues import ValueEncoder, ValueFormatError, encoded_record_from_json
from storage.keys import InvalidHandle, written_handle_key
from storage.lineshapes import Filled, LineShapes
from storage.records import pack_encoded_shared


@dataclass
class Chunk:
    first_line: int  # line number of the chunk's first line (1-based); 0 when not yet known
    line_count: int  # lines this chunk accounts for when it commits (up to, not including, a bad line)
    items: list[tuple[bytes, bytes]]  # (key, record) of the good lines
    end_offset: int = -1  # byte offset in the file just after the committed lines (NDJSON)
    error: str | None = None  # why the line after the good ones failed ("field: reason")
    shared: dict[bytes, bytes] = field(default_factory=dict)  # shared values the items refer to
    start_offset: int = -1  # byte offset in the file of the chunk's first line (NDJSON)
    crc32: int | None = None  # of the file's bytes start_offset..end_offset (NDJSON): a logged reference's check

    def located_error(self) -> str:
        """`line N: reason` with N counted in the whole file (first_line must be known)."""
        return f"line {self.first_line + self.line_count}: {self.error}"


def validate_handle(handle: str, case_sensitive: bool) -> bytes:
    """The store key of a handle from input, or ValueFormatError naming the handle field."""
    try:
        return written_handle_key(handle.encode(), case_sensitive)
    except InvalidHandle as exc:
        shown = f": {handle!r}" if len(handle) <= 100 else ""  # a 2 KiB handle would drown the message
        raise ValueFormatError(f"handle: {exc}{shown}") from exc


def parse_ndjson(data: bytes, start_offset: int, now_s: int, case_sensitive: bool) -> Chunk:
    """Parse whole NDJSON lines (`data` begins at byte `start_offset` of the file). On a bad line, the chunk
    keeps the lines before it and says which (relative) line failed.

    A line of a shape seen before in the chunk is filled into its learned template (storage/lineshapes.py);
    any other line takes the general parser, and teaches its shape."""
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()  # the newline that ends the last line starts no new line
    encoder = ValueEncoder(now_s)
    shapes = LineShapes(case_sensitive)
    record_of = shapes.record_of
    items: list[tuple[bytes, bytes]] = []
    append = items.append
    shared: dict[bytes, bytes] = {}
    for n, line in enumerate(lines):
        filled = record_of(line)
        if filled is None:
            if not line.strip():
                continue
            try:
                filled = _parse_line(line, encoder, shapes, case_sensitive)
            except (ValueError, RecursionError, HandleProtocolError) as exc:  # JSON and value format errors
                offset = start_offset + sum(len(good) + 1 for good in lines[:n])
                return Chunk(0, n, items, offset, error=str(exc), shared=shared, start_offset=start_offset,
                             crc32=zlib.crc32(memoryview(data)[: offset - start_offset]))  # fmt: skip
        key, record, one_shared = filled
        if one_shared is not None:
            shared[one_shared[0]] = one_shared[1]
        append((key, record))
    return Chunk(0, len(lines), items, start_offset + len(data), shared=shared, start_offset=start_offset,
                 crc32=zlib.crc32(data))  # fmt: skip


def _parse_line(line: bytes, encoder: ValueEncoder, shapes: LineShapes, case_sensitive: bool) -> Filled:
    """(key, record, shared value) of one line by the general parser; its shape is learned on the way."""
    obj = orjson.loads(line)
    handle, encoded, all_public = encoded_record_from_json(obj, encoder)
    key = validate_handle(handle, case_sensitive)
    filled = (key, *pack_encoded_shared(encoded, all_public))
    shapes.learn(line, obj, encoded, all_public, filled)
    return filled


def line_start_at_or_after(f: BinaryIO, position: int, start: int, size: int) -> int:
    """The first line boundary at or after `position` (a chunk begins there), between `start` and `size`."""
    if position <= start:
        return start
    if position >= size:
        return size
    f.seek(position - 1)
    return position - 1 + len(f.readline())


def chunk_bounds(f: BinaryIO, index: int, start: int, size: int, chunk_bytes: int) -> tuple[int, int]:
    """Byte range [begin, end) of chunk `index` of the file from `start`: whole lines, about chunk_bytes."""
    begin = line_start_at_or_after(f, start + index * chunk_bytes, start, size)
    end = line_start_at_or_after(f, start + (index + 1) * chunk_bytes, start, size)
    return begin, end
