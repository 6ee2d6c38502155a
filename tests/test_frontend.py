"""Requests in, answers out, through the real chain (frontend → service → LMDB store), checked byte for byte
against the reference encoder's vectors where the vectors show an answer."""

from __future__ import annotations

import pytest

from resolver.frontend import ANSWER_LIFETIME_S, HandleFrontend
from resolver.handle.constants import OpCode, ResponseCode
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
    ("request_name", "answer_name"),
    [
        ("resolve_request_plain", "resolve_response_public"),
        ("get_site_info_request", "get_site_info_response"),
        ("resolve_request_delegated", "service_referral_response"),
    ],
)
def test_answers_match_the_reference_byte_for_byte(frontend, vectors, request_name, answer_name):
    assert frontend.answer_message(vectors[request_name]) == vectors[answer_name]


def test_handle_not_found_matches_reference(frontend, vectors):
    request = bytearray(vectors["resolve_request_plain"])
    request[-27:-12] = b"88.100.1/ABC999"  # same length, absent handle
    answer = decode_message(frontend.answer_message(bytes(request)))
    expected = decode_message(vectors["error_handle_not_found"])
    assert answer.header == expected.header and answer.body == expected.body


def test_request_digest_matches_reference(frontend, vectors):
    answer = decode_message(frontend.answer_message(vectors["resolve_request_rd"]))
    expected = decode_message(vectors["resolve_response_rd"])
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
