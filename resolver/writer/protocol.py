"""The writer's wire format on its Unix socket: frames of a 4-byte big-endian length and a msgpack body.

- request: `[request id, [entry, ...], [payload, ...] or nil]` — entries are the write log's (storage/entries.py);
  a payload travels beside its entry to the apply step and is never logged (a load chunk's parsed records).
- answer: `[request id, [result, ...]]`, one result per entry, in order, sent once every entry is applied and
  committed.

Sans-IO: bytes in, values out. No sockets, no asyncio, no lmdb.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

DEFAULT_SOCKET_NAME = "writer.sock"  #: the writer's socket in the data directory, unless `writer_socket` says
MAX_FRAME_BYTES = 64 << 20  #: a request holds at most one 8 MiB load chunk's records or a batch of 2,000: far below
_LENGTH = struct.Struct(">I")
HEADER_BYTES = _LENGTH.size


class ProtocolError(Exception):
    """A frame that is not the writer's protocol (too large, not msgpack, not the expected shape)."""


def encode_frame(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    if len(body) > MAX_FRAME_BYTES:
        raise ProtocolError(f"a frame of {len(body):,} bytes: at most {MAX_FRAME_BYTES:,}")
    return _LENGTH.pack(len(body)) + body


def frame_length(header: bytes) -> int:
    """The body length a frame header announces; ProtocolError beyond MAX_FRAME_BYTES."""
    (length,) = _LENGTH.unpack(header)
    if length > MAX_FRAME_BYTES:
        raise ProtocolError(f"a frame of {length:,} bytes announced: at most {MAX_FRAME_BYTES:,}")
    return length


def decode_body(body: bytes) -> Any:
    try:
        return msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise ProtocolError(f"a frame that is not msgpack: {exc}") from exc


def encode_request(request_id: int, entries: list[bytes], payloads: list[Any] | None) -> bytes:
    return encode_frame([request_id, list(entries), payloads])


def decode_request(body: bytes) -> tuple[int, list[bytes], list[Any] | None]:
    obj = decode_body(body)
    if (
        type(obj) is not list or len(obj) != 3 or type(obj[0]) is not int or type(obj[1]) is not list
        or not all(type(e) is bytes for e in obj[1])
        or not (obj[2] is None or (type(obj[2]) is list and len(obj[2]) == len(obj[1])))
    ):  # fmt: skip
        raise ProtocolError("a request is [id, [entry, ...], payloads or nil]")
    return obj[0], obj[1], obj[2]


def encode_answer(request_id: int, results: list[Any]) -> bytes:
    return encode_frame([request_id, results])


def decode_answer(body: bytes) -> tuple[int, list[Any]]:
    obj = decode_body(body)
    if type(obj) is not list or len(obj) != 2 or type(obj[0]) is not int or type(obj[1]) is not list:
        raise ProtocolError("an answer is [id, [result, ...]]")
    return obj[0], obj[1]
