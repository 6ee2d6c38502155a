"""Requests in, answers out, through the real chain (frontend → service → LMDB store), checked byte for byte
against the reference encoder's vectors where the vectors show an answer."""

from __future__ import annotations

import pytest

from resolver.frontend import ANSWER_LIFETIME_S, HandleFrontend
from resolver.handle.constants import OpCode, OpFlag, ResponseCode
from resolver.handle.message import (
    ResolutionRequest,
    decode_message,
    decode_resolution_response_body,
    encode_request,
    encode_resolution_request,
)
from resolver.handle.udp import split_datagrams
from resolver.service import ResolutionService
from storage.keys import handle_key
from storage.records import pack_encoded, split_values
from storage.store import PrefixInfo, Store

VECTOR_TIME = 0x65000000  # every timestamp and expiration in the vectors
OP_FLAGS_AT = slice(28, 32)  # envelope (20), op code, response code, then the op flags
AT = int(OpFlag.AT)


def with_at(answer: bytes) -> bytes:
    """`answer` with the AT flag set: the reference encoder's vectors copy the request's flags, the node
    states that it is the primary for what it holds (as the reference server does for a primary site)."""
    flags = int.from_bytes(answer[OP_FLAGS_AT], "big") | AT
    return answer[:28] + flags.to_bytes(4, "big") + answer[32:]


def op_flags(answer: bytes) -> int:
    return decode_message(answer).header.op_flags


def request_for(handle: bytes, flags: int = 0x19000000, **filters) -> bytes:
    return encode_request(
        OpCode.RESOLUTION, encode_resolution_request(ResolutionRequest(handle, **filters)), request_id=7,
        expiration=VECTOR_TIME, op_flags=flags, version=(2, 10),
    )  # fmt: skip


def values_of(vector: bytes):
    message = decode_message(vector)
    return decode_resolution_response_body(message.body, False)[2]


@pytest.fixture()
def frontend(tmp_path, vectors):
    """A node holding the identifiers the vectors resolve, with a clock that makes expirations match."""
    with Store(tmp_path / "store", create=True) as store:
        public = [vectors[f"value_{i}_{name}"] for i, name in enumerate(["URL", "EMAIL", "DESC", "HS_ADMIN"])]
        private = vectors["value_4_INTERNAL"]
        large = decode_message(vectors["large_response_whole"]).body[4 + len(b"88.100.1/ABC123") :]
        store.put_records(
            sorted(
                [
                    (b"88.100.1/ABC123", pack_encoded(public + [private], all_public=False)),
                    (b"88.100.1/LARGE", pack_encoded(split_values(large), all_public=True)),
                    (handle_key("88.100.1/批次-2025/é".encode()), pack_encoded(public, all_public=True)),
                    (b"88.100.1/ID000000123", pack_encoded(public, all_public=True)),
                ]
            )
        )
        site = decode_message(vectors["get_site_info_response"]).body
        referral_site = values_of(vectors["service_referral_response"])[0].data
        store.put_prefix(PrefixInfo("88.100.1", created_s=VECTOR_TIME))
        store.put_prefix(PrefixInfo("88.100.7", state="referral", site=referral_site, created_s=VECTOR_TIME))
        service = ResolutionService(store, "88.100", site)
        yield HandleFrontend(service, clock=lambda: VECTOR_TIME - ANSWER_LIFETIME_S)


@pytest.mark.parametrize(
    ("request_name", "answer_name", "authoritative"),
    [
        ("resolve_request_plain", "resolve_response_public", True),
        ("get_site_info_request", "get_site_info_response", True),
        ("resolve_request_delegated", "service_referral_response", False),  # a referral: not ours
    ],
)
def test_answers_match_the_reference_byte_for_byte(
    frontend, vectors, request_name, answer_name, authoritative
):
    expected = with_at(vectors[answer_name]) if authoritative else vectors[answer_name]
    assert frontend.answer_message(vectors[request_name]) == expected


def test_handle_not_found_matches_reference(frontend, vectors):
    request = bytearray(vectors["resolve_request_plain"])
    request[-27:-12] = b"88.100.1/ABC999"  # same length, absent handle
    answer = decode_message(frontend.answer_message(bytes(request)))
    expected = decode_message(with_at(vectors["error_handle_not_found"]))  # absent from a prefix held here
    assert answer.header == expected.header and answer.body == expected.body


def test_request_digest_matches_reference(frontend, vectors):
    answer = decode_message(frontend.answer_message(vectors["resolve_request_rd"]))
    expected = decode_message(with_at(vectors["resolve_response_rd"]))
    assert answer.envelope == expected.envelope._replace(message_length=answer.envelope.message_length)
    assert answer.header._replace(body_length=0) == expected.header._replace(body_length=0)
    assert (
        decode_resolution_response_body(answer.body, True)[:2]
        == decode_resolution_response_body(expected.body, True)[:2]
    )


def test_filtered_request_selects_union_of_index_and_type(frontend, vectors):
    answer = decode_message(frontend.answer_message(vectors["resolve_request_filters"]))
    assert answer.header.response_code == ResponseCode.SUCCESS
    values = decode_resolution_response_body(answer.body, False)[2]
    assert [v.index for v in values] == [1, 2, 100]  # indexes 100 and 2, or type URL; HS_ matches no type


def test_large_answer_is_chunked_like_the_reference(frontend, vectors):
    request = encode_request(
        OpCode.RESOLUTION, encode_resolution_request(ResolutionRequest(b"88.100.1/LARGE")),
        request_id=0x01020304, expiration=VECTOR_TIME, op_flags=0x19000000, version=(2, 10),
    )  # fmt: skip
    datagrams = frontend.answer_datagram(request, ("127.0.0.1", 5000))
    whole = frontend.answer_message(request)
    assert split_datagrams(whole) == datagrams
    assert len(datagrams) == 3 and all(len(d) <= 512 for d in datagrams)


def test_utf8_handle_resolves_under_the_case_rule(frontend, vectors):
    answer = decode_message(frontend.answer_message(vectors["resolve_request_utf8"]))
    assert answer.header.response_code == ResponseCode.SUCCESS


@pytest.mark.parametrize("name", ["client_national_sdk_resolve", "client_id_pointer_resolve"])
def test_national_sdk_requests_get_public_values(frontend, vectors, name):
    request = decode_message(vectors[name])
    answer = decode_message(frontend.answer_message(vectors[name]))
    assert answer.header.response_code == ResponseCode.SUCCESS
    assert answer.envelope.request_id == request.envelope.request_id
    assert (answer.envelope.major, answer.envelope.minor) == (2, 10)
    assert answer.header.expiration > VECTOR_TIME - ANSWER_LIFETIME_S  # in the future for the SDK
    values = decode_resolution_response_body(answer.body, False)[2]
    assert [v.index for v in values] == [1, 2, 3, 100]


def test_national_sdk_site_info_is_exactly_one_site_record(frontend, vectors):
    answer = decode_message(frontend.answer_message(vectors["client_national_sdk_get_site_info"]))
    assert answer.header.response_code == ResponseCode.SUCCESS
    assert answer.body == decode_message(vectors["get_site_info_response"]).body


def test_prefix_handle_of_referred_prefix_returns_its_site(frontend, vectors):
    answer = decode_message(frontend.answer_message(vectors["resolve_request_prefix"]))
    assert answer.header.response_code == ResponseCode.SUCCESS
    values = decode_resolution_response_body(answer.body, False)[2]
    assert values[0].type == "HS_SITE"
    assert values[0].data == values_of(vectors["service_referral_response"])[0].data


@pytest.mark.parametrize(
    ("handle", "filters", "code", "authoritative"),
    [
        (b"88.100.1/ABC123", {}, ResponseCode.SUCCESS, True),  # fast path
        (b"88.100.1/ABC123", {"types": (b"URL",)}, ResponseCode.SUCCESS, True),  # general path
        (b"88.100.1/ABC999", {}, ResponseCode.HANDLE_NOT_FOUND, True),
        (b"88.100.1/ABC123", {"types": (b"NONE",)}, ResponseCode.VALUES_NOT_FOUND, True),
        (b"0.NA/88.100.1", {}, ResponseCode.SUCCESS, True),  # prefix handle of a hosted prefix
        (b"0.NA/88.100.7", {}, ResponseCode.SUCCESS, True),  # ... of a referred one: registered here
        (b"88.100.7/X1", {}, ResponseCode.SERVICE_REFERRAL, False),
        (b"99.1/X", {}, ResponseCode.SERVER_NOT_RESP, False),  # a prefix this node does not serve
        (b"no-slash/", {}, ResponseCode.SERVER_NOT_RESP, False),
    ],
)
@pytest.mark.parametrize("asked_at", [False, True], ids=["request-without-AT", "request-with-AT"])
def test_at_flag_only_on_answers_from_what_the_node_holds(
    frontend, handle, filters, code, authoritative, asked_at
):
    answer = frontend.answer_message(request_for(handle, 0x19000000 | (AT if asked_at else 0), **filters))
    assert decode_message(answer).header.response_code == code
    assert bool(op_flags(answer) & AT) == authoritative  # the request's own AT bit is never echoed
    assert op_flags(answer) & ~AT == 0x19000000


def test_malformed_request_answer_never_claims_authority(frontend, vectors):
    request = bytearray(request_for(b"88.100.1/ABC123", 0x19000000 | AT))
    request[-4:] = b"\xff\xff\xff\xff"  # a credential section longer than the message
    answer = frontend.answer_message(bytes(request))
    assert decode_message(answer).header.response_code == ResponseCode.PROTOCOL_ERROR
    assert not op_flags(answer) & AT


@pytest.mark.parametrize("asked", [b"88.100.7", b"88.100.1", b"88.100.1".lower()])
@pytest.mark.parametrize("filters", [{}, {"types": (b"HS_SITE",)}], ids=["fast-path", "general-path"])
def test_bare_prefix_is_answered_from_its_prefix_handle(frontend, vectors, asked, filters):
    answer = frontend.answer_message(request_for(asked, **filters))
    prefix_handle = frontend.answer_message(request_for(b"0.NA/" + asked, **filters))
    message = decode_message(answer)
    assert message.header.response_code == ResponseCode.SUCCESS and message.header.op_flags & AT
    _, named, values = decode_resolution_response_body(message.body, False)
    assert named == asked  # the handle as asked, as the reference server names it
    assert values == decode_resolution_response_body(decode_message(prefix_handle).body, False)[2]
    site = values_of(vectors["service_referral_response"])[0].data
    own_site = decode_message(vectors["get_site_info_response"]).body
    assert values[0].type == "HS_SITE" and values[0].data == (site if asked == b"88.100.7" else own_site)


@pytest.mark.parametrize(
    ("asked", "code"),
    [
        (b"99.1", ResponseCode.SERVER_NOT_RESP),  # not a prefix of this node
        (b"88.100.55", ResponseCode.HANDLE_NOT_FOUND),  # under the node's prefix, never registered
        (b"", ResponseCode.INVALID_HANDLE),
    ],
)
def test_bare_prefix_not_served_here(frontend, asked, code):
    assert decode_message(frontend.answer_message(request_for(asked))).header.response_code == code
