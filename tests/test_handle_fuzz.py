"""Fuzz invariants: every decoder returns a record or raises HandleProtocolError, nothing else; and a
server built on the codec answers any input with a well-formed response or drops it."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolver.handle.constants import ENVELOPE_BYTES, UDP_DATAGRAM_BYTES, OpCode, ResponseCode
from resolver.handle.errors import HandleProtocolError
from resolver.handle.message import (
    ResolutionRequest,
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
    encode_request,
    encode_resolution_request,
    encode_resolution_response,
    encode_response,
    split_request_digest,
)
from resolver.handle.tcp import FrameBuffer
from resolver.handle.udp import Reassembler, is_chunk, split_datagrams
from resolver.handle.values import decode_admin, decode_site, decode_value, decode_values
from resolver.handle.wire import Reader
from tests.vectors import VECTORS

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


def mutate(draw, data: bytes, min_rounds: int = 0, kinds=("byte", "u32", "truncate", "insert")) -> bytes:
    """`data` with up to 4 mutations of the given kinds (at least `min_rounds`)."""
    data = bytearray(data)
    for _ in range(draw(st.integers(min_rounds, 4))):
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        kind = draw(st.sampled_from(kinds))
        if kind == "byte" and data:
            data[pos] = draw(st.integers(0, 255))
        elif kind == "u32":
            data[pos : pos + 4] = draw(st.sampled_from(INTERESTING_U32)).to_bytes(4, "big")
        elif kind == "truncate":
            del data[pos:]
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    if draw(st.booleans()) and len(data) >= ENVELOPE_BYTES:
        # Keep MessageLength consistent so the mutation reaches the header and body decoders.
        data[16:20] = (len(data) - ENVELOPE_BYTES).to_bytes(4, "big")
    return bytes(data)


@st.composite
def mutated(draw, names=tuple(VECTORS)):
    data = VECTORS[draw(st.sampled_from(names))]
    return mutate(draw, data, min_rounds=1, kinds=("byte", "u32", "truncate", "insert", "delete"))


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


# -- the server frontend over a real store ------------------------------------------------------------------
# The same inputs through HandleFrontend (resolver/frontend.py), the code the UDP and TCP listeners and the
# HTTP tunnel call: an answer that decodes as a response to the same request id, or a drop; never an
# exception. Served from an LMDB store holding the vectors' identifiers, so resolutions succeed, filter,
# refer and fail as on a node.

FRONTEND_HANDLES = [b"88.100.1/ABC123", b"88.100.1/LARGE", b"88.100.1/NONE", b"88.100.7/REFERRED", b"99.9/X"]


@pytest.fixture(scope="module")
def frontend(tmp_path_factory):
    from resolver.frontend import HandleFrontend
    from resolver.service import ResolutionService
    from storage.records import pack_encoded
    from storage.store import PrefixInfo, Store

    with Store(tmp_path_factory.mktemp("frontend-fuzz") / "store", create=True) as store:
        public = [VECTORS[f"value_{i}_{name}"] for i, name in enumerate(["URL", "EMAIL", "DESC", "HS_ADMIN"])]
        large = public * 40  # an answer of several UDP datagrams
        store.put_records(
            [
                (b"88.100.1/ABC123", pack_encoded([*public, VECTORS["value_4_INTERNAL"]], all_public=False)),
                (b"88.100.1/LARGE", pack_encoded(large, all_public=True)),
            ]
        )
        store.put_prefix(PrefixInfo("88.100.1", created_s=EXPIRATION))
        referral_site = decode_resolution_response_body(decode_message(VECTORS["service_referral_response"]).body, False)
        store.put_prefix(PrefixInfo("88.100.7", state="referral", site=referral_site[2][0].data, created_s=EXPIRATION))
        service = ResolutionService(store, "88.100", VECTORS["hs_site_record"])
        yield HandleFrontend(service, clock=lambda: EXPIRATION)


@st.composite
def requests_to_the_frontend(draw, long: bool = False):
    """Resolution requests for handles the store has, lacks or refers, with filters; or a vector message.
    `long`: with enough type filters to need several UDP datagrams."""
    if not long and draw(st.booleans()):
        return VECTORS[draw(st.sampled_from(MESSAGES))]
    padding = [b"T%04d" % n for n in range(draw(st.integers(90, 300)))] if long else []
    query = ResolutionRequest(
        draw(st.sampled_from(FRONTEND_HANDLES)),
        tuple(draw(st.lists(st.sampled_from([0, 1, 2, 100, 4]), max_size=3))),
        tuple(draw(st.lists(st.sampled_from([b"URL", b"EMAIL", b"HS_", b"INTERNAL", b""]), max_size=3)) + padding),
    )
    return encode_request(
        OpCode.RESOLUTION, encode_resolution_request(query), request_id=draw(st.integers(0, 2**32 - 1)),
        expiration=EXPIRATION,
    )  # fmt: skip


def check_message_answer(data: bytes, answer: bytes | None) -> None:
    if answer is None:
        return
    response = decode_response(answer)
    assert response.envelope.request_id == int.from_bytes(data[8:12], "big")


def check_datagram_answers(data: bytes, answers: list[bytes]) -> None:
    """One whole response, or the pieces of one that a client reassembles into a response."""
    if not answers:
        return
    if len(answers) == 1 and not is_chunk(answers[0]):
        check_message_answer(data, answers[0])
        return
    client = Reassembler()
    whole = None
    for datagram in answers:
        assert is_chunk(datagram) and len(datagram) <= UDP_DATAGRAM_BYTES
        whole = client.feed(("192.0.2.53", 2641), datagram, 0.0) or whole
    assert whole is not None, "the pieces do not make a whole answer"
    decode_response(whole)


@FUZZ
@given(st.data())
def test_frontend_answers_any_message_or_drops_it(frontend, data):
    message = data.draw(st.one_of(requests_to_the_frontend(), st.binary(max_size=300)))
    message = mutate(data.draw, message)
    check_message_answer(message, frontend.answer_message(message))
    check_datagram_answers(message, frontend.answer_datagram(message, ("192.0.2.1", 40000)))


@FUZZ
@given(st.data())
def test_frontend_answers_any_sequence_of_datagrams(frontend, data):
    """Requests split into UDP pieces, mutated, reordered, repeated or mixed with others from the same source:
    the reassembler answers a whole request, refuses a bad piece, or waits; nothing raises."""
    frontend.reassembler = Reassembler()  # pieces left over by an earlier example would change the outcome
    source = ("192.0.2.2", data.draw(st.integers(1, 3)))
    pieces = split_datagrams(data.draw(requests_to_the_frontend(long=True)))
    assert len(pieces) > 1
    if data.draw(st.booleans()):  # in order, each piece perhaps mutated: the whole request when none is
        sequence = list(pieces)
    else:
        sequence = data.draw(st.lists(st.sampled_from(pieces), min_size=1, max_size=len(pieces) + 2))
    answered, intact = False, True
    for datagram in sequence:
        if data.draw(st.integers(0, 3)) == 0:
            datagram = mutate(data.draw, datagram)
            intact = False
        answers = frontend.answer_datagram(datagram, source)
        check_datagram_answers(datagram, answers)
        answered = answered or bool(answers)
    assert frontend.reassembler.buffered_bytes <= 8 << 20
    if intact and sequence == pieces:
        assert answered  # a request sent whole in its pieces is answered
