"""UDP chunking/reassembly and TCP framing of Handle messages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.handle.constants import (
    ENVELOPE_BYTES,
    MAX_MESSAGE_BYTES,
    UDP_CHUNK_PAYLOAD_BYTES,
    UDP_DATAGRAM_BYTES,
    OpCode,
)
from resolver.handle.envelope import decode_envelope
from resolver.handle.errors import EnvelopeError
from resolver.handle.message import decode_message, encode_request
from resolver.handle.tcp import FrameBuffer
from resolver.handle.udp import Reassembler, chunk_count, is_chunk, split_datagrams
from tests.vectors import VECTORS

SOURCE = ("192.0.2.1", 2641)
TRANSPORT = settings(max_examples=100, deadline=None)


def message_of(payload_bytes: int, request_id: int = 1) -> bytes:
    """A well-formed request whose envelope is followed by exactly ``payload_bytes`` bytes."""
    body = bytes(range(256)) * (payload_bytes // 256 + 1)
    data = encode_request(OpCode.RESOLUTION, body[: payload_bytes - 28], request_id=request_id, expiration=1)
    assert len(data) == ENVELOPE_BYTES + payload_bytes
    return data


# --- UDP -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("payload_bytes, pieces", [(28, 1), (492, 1), (493, 2), (984, 2), (985, 3)])
def test_split_sizes(payload_bytes, pieces):
    message = message_of(payload_bytes)
    datagrams = split_datagrams(message)
    assert len(datagrams) == pieces == chunk_count(payload_bytes)
    assert all(len(d) <= UDP_DATAGRAM_BYTES for d in datagrams)
    if pieces == 1:
        assert datagrams == [message]
    for sequence, datagram in enumerate(datagrams):
        envelope = decode_envelope(datagram)
        assert envelope.sequence == sequence and envelope.message_length == payload_bytes
    assert b"".join(d[ENVELOPE_BYTES:] for d in datagrams) == message[ENVELOPE_BYTES:]


@TRANSPORT
@given(st.integers(28, 5000), st.data())
def test_reassembly_in_any_order_with_duplicates(payload_bytes, data):
    message = message_of(payload_bytes)
    datagrams = split_datagrams(message)
    sequence = list(data.draw(st.permutations(range(len(datagrams)))))
    for piece in data.draw(st.lists(st.sampled_from(range(len(datagrams))), max_size=4)):
        sequence.insert(data.draw(st.integers(0, len(sequence))), piece)

    # Model: a message completes when every distinct piece has been seen; later pieces start over.
    expected, seen = [], set()
    for piece in sequence:
        seen.add(piece)
        complete = len(seen) == len(datagrams)
        expected.append(message if complete else None)
        seen = set() if complete else seen

    reassembler = Reassembler()
    assert [reassembler.feed(SOURCE, datagrams[i], 0.0) for i in sequence] == expected
    assert len(reassembler) == (1 if seen else 0)
    assert reassembler.buffered_bytes == sum(len(datagrams[i]) - ENVELOPE_BYTES for i in seen)


def test_whole_datagram_passes_straight_through():
    reassembler = Reassembler()
    plain = VECTORS["resolve_request_plain"]
    assert not is_chunk(plain)
    assert reassembler.feed(SOURCE, plain, 0.0) == plain
    assert len(reassembler) == 0


def test_messages_are_kept_apart_by_source_and_request_id():
    first, second = message_of(1000, request_id=7), message_of(1200, request_id=7)
    a, b = split_datagrams(first), split_datagrams(second)
    reassembler = Reassembler()
    assert reassembler.feed(("192.0.2.1", 1), a[0], 0.0) is None
    assert reassembler.feed(("192.0.2.2", 1), b[0], 0.0) is None
    assert reassembler.feed(("192.0.2.2", 1), b[1], 0.0) is None
    assert reassembler.feed(("192.0.2.1", 1), a[1], 0.0) is None
    assert len(reassembler) == 2
    assert reassembler.feed(("192.0.2.1", 1), a[2], 0.0) == first
    assert reassembler.feed(("192.0.2.2", 1), b[2], 0.0) == second


def test_reused_request_id_with_another_length_starts_over():
    old, new = message_of(1000), message_of(1100)
    reassembler = Reassembler()
    reassembler.feed(SOURCE, split_datagrams(old)[0], 0.0)
    results = [reassembler.feed(SOURCE, d, 0.0) for d in split_datagrams(new)]
    assert results[-1] == new and len(reassembler) == 0


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: d[:-1],  # a middle piece one byte short
        lambda d: d + b"x",  # one byte long
        lambda d: d[:12] + (9).to_bytes(4, "big") + d[16:],  # sequence beyond the piece count
        lambda d: d[:16] + (MAX_MESSAGE_BYTES + 1).to_bytes(4, "big") + d[20:],
        lambda d: d[:10],
    ],
)
def test_invalid_pieces_raise_envelope_error(mangle):
    piece = split_datagrams(message_of(1200))[1]
    with pytest.raises(EnvelopeError):
        Reassembler().feed(SOURCE, mangle(piece), 0.0)


def test_partial_messages_expire():
    pieces = split_datagrams(message_of(1000))
    reassembler = Reassembler(max_age_s=5.0)
    reassembler.feed(SOURCE, pieces[0], 0.0)
    reassembler.feed(SOURCE, pieces[1], 1.0)
    assert reassembler.feed(SOURCE, pieces[2], 6.0) is None  # the first two pieces are gone
    assert len(reassembler) == 1
    reassembler.expire(100.0)
    assert len(reassembler) == 0 and reassembler.buffered_bytes == 0


def test_pending_count_is_bounded_oldest_evicted():
    reassembler = Reassembler(max_pending=3)
    messages = [message_of(1000, request_id=i) for i in range(5)]
    for message in messages:
        reassembler.feed(SOURCE, split_datagrams(message)[0], 0.0)
    assert len(reassembler) == 3
    rest = split_datagrams(messages[0])[1:]  # the oldest was evicted: its pieces start over
    assert [reassembler.feed(SOURCE, d, 0.0) for d in rest] == [None, None]
    last = split_datagrams(messages[4])[1:]
    assert [reassembler.feed(SOURCE, d, 0.0) for d in last] == [None, messages[4]]


def test_buffered_bytes_are_bounded():
    reassembler = Reassembler(max_buffered_bytes=3 * UDP_CHUNK_PAYLOAD_BYTES)
    for request_id in range(10):
        reassembler.feed(SOURCE, split_datagrams(message_of(2000, request_id))[0], 0.0)
        assert reassembler.buffered_bytes <= 3 * UDP_CHUNK_PAYLOAD_BYTES
    assert len(reassembler) == 3


def test_chunks_from_the_reference_carry_no_tc_but_are_detected():
    for i in range(3):
        chunk = VECTORS[f"large_response_udp_chunk_{i}"]
        assert not chunk[2] & 0x20 and is_chunk(chunk)


# --- TCP -----------------------------------------------------------------------------------------

STREAM_MESSAGES = [
    VECTORS["client_national_sdk_get_site_info"],
    VECTORS["client_national_sdk_resolve"],
    VECTORS["large_response_whole"],
    VECTORS["client_id_pointer_resolve"],
]
STREAM = b"".join(STREAM_MESSAGES)


def test_byte_by_byte():
    frames = FrameBuffer()
    out = []
    for i in range(len(STREAM)):
        out.extend(frames.feed(STREAM[i : i + 1]))
    assert out == STREAM_MESSAGES and len(frames) == 0


def test_pipelined_in_one_read():
    frames = FrameBuffer()
    assert frames.feed(STREAM + STREAM[:30]) == STREAM_MESSAGES
    assert len(frames) == 30
    assert frames.feed(memoryview(STREAM[30:60])) == [STREAM_MESSAGES[0]]
    assert all(decode_message(m) for m in STREAM_MESSAGES)


@TRANSPORT
@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_any_split_of_the_stream(cuts):
    frames = FrameBuffer()
    edges = [0, *sorted(cuts), len(STREAM)]
    out = []
    for start, end in zip(edges, edges[1:], strict=False):
        out.extend(frames.feed(STREAM[start:end]))
    assert out == STREAM_MESSAGES and len(frames) == 0


def test_oversized_message_length_is_refused_at_its_envelope():
    frames = FrameBuffer()
    envelope = VECTORS["client_national_sdk_resolve"][:16] + (MAX_MESSAGE_BYTES + 1).to_bytes(4, "big")
    assert frames.feed(envelope[:19]) == []
    with pytest.raises(EnvelopeError):
        frames.feed(envelope[19:])
    assert len(frames) == 0


def test_largest_allowed_message_is_framed():
    envelope = bytearray(20)
    envelope[16:20] = MAX_MESSAGE_BYTES.to_bytes(4, "big")
    frames = FrameBuffer()
    assert frames.feed(bytes(envelope) + bytes(MAX_MESSAGE_BYTES - 1)) == []
    assert frames.feed(b"\x00") == [bytes(envelope) + bytes(MAX_MESSAGE_BYTES)]
