"""Fuzz invariants: every decoder returns a record or raises HandleProtocolError, nothing else; and a
server built on the codec answers any input with a well-formed response or drops it."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolver.handle.constants import ENVELOPE_BYTES, OpCode, ResponseCode
from resolver.handle.errors import HandleProtocolError
from resolver.handle.message import (
    decode_error_body,
    decode_message,
    decode_request,
    decode_resolution_request,
    decode_resolution_response_body,
    decode_response,
    decode_site_info_request,
    encode_error_answer,
    encode_error_response,
    encode_message,
    encode_resolution_response,
    encode_response,
    split_request_digest,
)
from resolver.handle.tcp import FrameBuffer
from resolver.handle.udp import Reassembler
from resolver.handle.values import decode_admin, decode_site, decode_value, decode_values
from resolver.handle.wire import Reader

VECTORS_PATH = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "handle-v2.10.json"
VECTORS: dict[str, bytes] = {v["name"]: bytes.fromhex(v["hex"]) for v in json.loads(VECTORS_PATH.read_text())}
MESSAGES = [
    n
    for n, d in VECTORS.items()
    if len(d) >= 48 and not n.startswith(("value_", "hs_site", "large_response_udp"))
]
EXPIRATION = 0x6500_0000
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INTERESTING_U32 = [0, 1, 3, 4, 19, 20, 24, 491, 492, 2048, 2049, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF]


def serve(data: bytes) -> bytes | None:
    """One message through the codec as a server uses it; must never raise."""
    try:
        request = decode_request(data)
        op_code = request.header.op_code
        if op_code == OpCode.RESOLUTION:
            query = decode_resolution_request(request.body)
            return encode_resolution_response(request, query.handle, b"\x00\x00\x00\x00", EXPIRATION)
        if op_code == OpCode.GET_SITE_INFO:
            decode_site_info_request(request.body)
            return encode_response(request, ResponseCode.SUCCESS, VECTORS["hs_site_record"], EXPIRATION)
        return encode_error_response(request, ResponseCode.OPERATION_NOT_SUPPORTED, "", EXPIRATION)
    except HandleProtocolError as exc:
        return encode_error_answer(data, exc, EXPIRATION)


def check_decoders(data: bytes) -> None:
    """Each decoder either returns or raises HandleProtocolError; anything else fails the test."""
    decoders = [
        decode_message,
        decode_resolution_request,
        decode_site_info_request,
        decode_site,
        decode_admin,
        decode_error_body,
        lambda d: decode_value(Reader(d)),
        lambda d: decode_values(Reader(d)),
        lambda d: decode_resolution_response_body(d, has_digest=False),
        lambda d: decode_resolution_response_body(d, has_digest=True),
        lambda d: split_request_digest(d, has_digest=True),
        lambda d: Reassembler().feed(("192.0.2.1", 2641), d, 0.0),
        lambda d: FrameBuffer().feed(d),
    ]
    for decode in decoders:
        try:
            decode(data)
        except HandleProtocolError:
            pass

    answer = serve(data)
    if answer is not None:
        # Whatever we send back is itself a well-formed response to the same request id.
        response = decode_response(answer)
        assert response.envelope.request_id == int.from_bytes(data[8:12], "big")


@st.composite
def mutated(draw, names=tuple(VECTORS)):
    data = bytearray(VECTORS[draw(st.sampled_from(names))])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["byte", "u32", "truncate", "insert", "delete"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "byte" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "u32":
            data[pos : pos + 4] = draw(st.sampled_from(INTERESTING_U32)).to_bytes(4, "big")
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
    if draw(st.booleans()) and len(data) >= ENVELOPE_BYTES:
        # Keep MessageLength consistent so the mutation reaches the header and body decoders.
        data[16:20] = (len(data) - ENVELOPE_BYTES).to_bytes(4, "big")
    return bytes(data)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes(data):
    check_decoders(data)


@FUZZ
@given(mutated())
def test_mutated_vectors(data):
    check_decoders(data)


@FUZZ
@given(st.sampled_from(MESSAGES), st.data())
def test_mutated_bodies_in_well_framed_messages(name, data):
    """Mutate only the body, then frame it properly, so every example exercises the body decoders."""
    message = decode_message(VECTORS[name])
    body = bytearray(message.body)
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, max(len(body) - 1, 0)))
        if data.draw(st.booleans()):
            body[pos : pos + 4] = data.draw(st.sampled_from(INTERESTING_U32)).to_bytes(4, "big")
        else:
            del body[pos : pos + data.draw(st.integers(1, 6))]
    header = message.header._replace(response_code=0)  # as a request, so the server path is taken
    framed = encode_message(message.envelope, header, bytes(body))
    check_decoders(framed)
    check_decoders(bytes(body))
