"""Every byte vector of the reference encoder decodes, and our encoders reproduce it byte for byte."""

from __future__ import annotations

import ipaddress

import pytest

from resolver.handle.constants import (
    DEFAULT_PERMISSIONS,
    ENVELOPE_BYTES,
    HEADER_BYTES,
    OpCode,
    OpFlag,
    Permission,
    ResponseCode,
)
from resolver.handle.envelope import decode_envelope, negotiate_version
from resolver.handle.message import (
    ResolutionRequest,
    decode_error_body,
    decode_message,
    decode_request,
    decode_resolution_request,
    decode_resolution_response_body,
    decode_response,
    decode_site_info_body,
    decode_site_info_request,
    encode_error_response,
    encode_message,
    encode_resolution_request,
    encode_resolution_response,
    encode_response,
    encode_site_info_body,
    encode_site_info_request,
    request_digest,
)
from resolver.handle.udp import Reassembler, is_chunk, split_datagrams
from resolver.handle.values import (
    AdminData,
    HandleValue,
    Interface,
    InterfaceProtocol,
    InterfaceType,
    Reference,
    ServerInfo,
    SiteInfo,
    decode_admin,
    decode_site,
    decode_value,
    encode_admin,
    encode_site,
    encode_value,
    encode_values,
)
from resolver.handle.wire import Reader
from tests.vectors import VECTORS

EXPIRATION = 0x6500_0000  # § Vectors: timestamps and expirations
CNRI_FLAGS = OpFlag.REC | OpFlag.CA | OpFlag.PO

# Expected content of each request vector: (op code, handle, indexes, types, op flags, envelope prefix).
REQUESTS = {
    "resolve_request_plain": (1, b"88.100.1/ABC123", (), (), CNRI_FLAGS, (2, 3, 0, 2, 10, 0, 0x01020304)),
    "resolve_request_filters": (
        1, b"88.100.1/ABC123", (100, 2), (b"URL", b"HS_"), OpFlag.REC | OpFlag.CA, (2, 3, 0, 2, 10, 0, 7),
    ),
    "resolve_request_rd": (1, b"88.100.1/ABC123", (), (), CNRI_FLAGS | OpFlag.RD, (2, 3, 0, 2, 10, 0, 9)),
    "get_site_info_request": (2, b"/", None, None, CNRI_FLAGS, (2, 3, 0, 2, 10, 0, 5)),
    "resolve_request_prefix": (1, b"0.NA/88.100.7", (), (), CNRI_FLAGS, (2, 3, 0, 2, 10, 0, 11)),
    "resolve_request_delegated": (1, b"88.100.7/X1", (), (), CNRI_FLAGS, (2, 3, 0, 2, 10, 0, 12)),
    "resolve_request_utf8": (
        1, "88.100.1/批次-2025/é".encode(), (), (), CNRI_FLAGS, (2, 3, 0, 2, 10, 0, 13),
    ),
    "client_national_sdk_get_site_info": (2, b"/", None, None, CNRI_FLAGS, (2, 3, 0, 2, 10, 0, 0x2F3337C5)),
    "client_national_sdk_resolve": (
        1, b"88.100.1/ID000000123", (), (), 0, (2, 3, 0, 2, 10, 0, 0x64CC47FB),
    ),
    "client_id_pointer_resolve": (1, b"88.100.1/ID000000123", (), (), CNRI_FLAGS, (2, 10, 0, 2, 11, 0, 1)),
}  # fmt: skip
RESPONSES = [
    "resolve_response_public",
    "resolve_response_rd",
    "error_handle_not_found",
    "error_values_not_found",
    "get_site_info_response",
    "service_referral_response",
    "large_response_whole",
]
VALUES = ["value_0_URL", "value_1_EMAIL", "value_2_DESC", "value_3_HS_ADMIN", "value_4_INTERNAL"]
CHUNKS = ["large_response_udp_chunk_0", "large_response_udp_chunk_1", "large_response_udp_chunk_2"]
SITES = ["hs_site_record"]

SITE = SiteInfo(
    version=1,
    protocol_major=2,
    protocol_minor=10,
    serial=1,
    primary=True,
    multi_primary=False,
    hash_option=2,
    hash_filter=b"",
    attributes=(("desc", "idnode test site"),),
    servers=(
        ServerInfo(
            server_id=1,
            address=ipaddress.IPv4Address("127.0.0.1"),
            public_key=b"",
            interfaces=(
                Interface(InterfaceType.QUERY, InterfaceProtocol.UDP, 2641),
                Interface(InterfaceType.QUERY, InterfaceProtocol.TCP, 2641),
                Interface(InterfaceType.QUERY, InterfaceProtocol.HTTP, 8000),
            ),
        ),
    ),
)


def values_blob(*names: str) -> bytes:
    """A value list built from the separate value vectors, independent of any response vector."""
    return len(names).to_bytes(4, "big") + b"".join(VECTORS[n] for n in names)


def test_every_vector_has_a_check():
    covered = set(REQUESTS) | set(RESPONSES) | set(VALUES) | set(CHUNKS) | set(SITES)
    assert covered == set(VECTORS)


@pytest.mark.parametrize("name", [*REQUESTS, *RESPONSES])
def test_message_decodes_and_reencodes(name):
    data = VECTORS[name]
    message = decode_message(data)
    assert message.envelope.message_length == len(data) - ENVELOPE_BYTES
    assert message.header.body_length == len(message.body)
    assert message.credential == b""
    assert encode_message(*message) == data


@pytest.mark.parametrize("name", REQUESTS)
def test_request_content(name):
    op_code, handle, indexes, types, op_flags, envelope_prefix = REQUESTS[name]
    request = decode_request(VECTORS[name])
    assert tuple(request.envelope)[:7] == envelope_prefix
    assert request.header.op_code == op_code
    assert request.header.response_code == ResponseCode.RESERVED
    assert request.header.op_flags == op_flags
    assert negotiate_version(request.envelope) == (2, 10)
    if op_code == OpCode.RESOLUTION:
        query = decode_resolution_request(request.body)
        assert query == ResolutionRequest(handle, indexes, types)
        encoded = encode_resolution_request(query)
    else:
        assert decode_site_info_request(request.body) == handle
        encoded = encode_site_info_request(handle)
    if name == "client_id_pointer_resolve":
        # id-pointer appends a counted authBytes field (here empty) after the type list.
        assert request.body == encoded + b"\x00\x00\x00\x00"
    else:
        assert request.body == encoded


def test_values():
    decoded = []
    for name in VALUES:
        reader = Reader(VECTORS[name])
        value = decode_value(reader)
        assert reader.at_end()
        assert encode_value(value) == VECTORS[name]
        decoded.append(value)
    url, email, desc, admin, internal = decoded
    assert url == HandleValue(1, "URL", b"https://example.com/a", timestamp=EXPIRATION)
    assert email == HandleValue(2, "EMAIL", b"qa@example.com", timestamp=EXPIRATION)
    assert desc == HandleValue(
        3,
        "DESC",
        "汽车零部件 批次 2025-07".encode(),
        timestamp=EXPIRATION,
        ttl=3600,
        references=(Reference("88.100.1/LOT-7", 1),),
    )
    assert admin.index == 100 and admin.type == "HS_ADMIN" and admin.permissions == DEFAULT_PERMISSIONS
    assert internal.permissions == Permission.ADMIN_READ | Permission.ADMIN_WRITE
    assert not internal.permissions & Permission.PUBLIC_READ


def test_hs_admin_data():
    value = decode_value(Reader(VECTORS["value_3_HS_ADMIN"]))
    assert decode_admin(value.data) == AdminData("0.NA/88.100.1", 200, 0x0FFF)
    assert encode_admin(AdminData("0.NA/88.100.1", 200, 0x0FFF)) == value.data


def test_hs_site_record():
    assert decode_site(VECTORS["hs_site_record"]) == SITE
    assert encode_site(SITE) == VECTORS["hs_site_record"]


def test_resolution_response_public_from_parts():
    request = decode_request(VECTORS["resolve_request_plain"])
    blob = values_blob("value_0_URL", "value_1_EMAIL", "value_2_DESC", "value_3_HS_ADMIN")
    answer = encode_resolution_response(request, b"88.100.1/ABC123", blob, EXPIRATION)
    assert answer == VECTORS["resolve_response_public"]


def test_resolution_response_public_client_side():
    response = decode_response(VECTORS["resolve_response_public"])
    assert response.header.response_code == ResponseCode.SUCCESS
    digest, handle, values = decode_resolution_response_body(response.body, has_digest=False)
    assert digest == b""
    assert handle == b"88.100.1/ABC123"
    assert encode_values(values) == values_blob(
        "value_0_URL", "value_1_EMAIL", "value_2_DESC", "value_3_HS_ADMIN"
    )


def test_rd_response_carries_sha256_of_header_and_body():
    request_bytes = VECTORS["resolve_request_rd"]
    request = decode_request(request_bytes)
    answer = encode_resolution_response(request, b"88.100.1/ABC123", values_blob("value_0_URL"), EXPIRATION)
    assert answer == VECTORS["resolve_response_rd"]

    body_end = ENVELOPE_BYTES + HEADER_BYTES + request.header.body_length
    expected_digest = request_digest(request_bytes[ENVELOPE_BYTES:body_end], (2, 10))
    digest, handle, values = decode_resolution_response_body(decode_response(answer).body, has_digest=True)
    assert digest == expected_digest and digest[0] == 3 and len(digest) == 33
    assert handle == b"88.100.1/ABC123" and [v.index for v in values] == [1]


def test_error_responses():
    plain = decode_request(VECTORS["resolve_request_plain"])
    filtered = decode_request(VECTORS["resolve_request_filters"])
    not_found = encode_error_response(plain, ResponseCode.HANDLE_NOT_FOUND, "", EXPIRATION)
    no_values = encode_error_response(
        filtered, ResponseCode.VALUES_NOT_FOUND, "no matching values", EXPIRATION
    )
    assert not_found == VECTORS["error_handle_not_found"]
    assert no_values == VECTORS["error_values_not_found"]
    assert decode_error_body(decode_response(not_found).body) == ""
    assert decode_error_body(decode_response(no_values).body) == "no matching values"


def test_get_site_info_response():
    request = decode_request(VECTORS["get_site_info_request"])
    answer = encode_response(
        request, ResponseCode.SUCCESS, encode_site_info_body(encode_site(SITE)), EXPIRATION
    )
    assert answer == VECTORS["get_site_info_response"]
    assert decode_site_info_body(decode_response(answer).body) == SITE


def test_service_referral_response():
    request = decode_request(VECTORS["resolve_request_delegated"])
    site_value = HandleValue(1, "HS_SITE", VECTORS["hs_site_record"], timestamp=EXPIRATION)
    answer = encode_resolution_response(
        request, b"0.NA/88.100.7", encode_values([site_value]), EXPIRATION, ResponseCode.SERVICE_REFERRAL
    )
    assert answer == VECTORS["service_referral_response"]
    _, handle, values = decode_resolution_response_body(decode_response(answer).body, has_digest=False)
    assert handle == b"0.NA/88.100.7"
    assert decode_site(values[0].data) == SITE


def test_large_response_whole_and_chunks():
    whole = VECTORS["large_response_whole"]
    chunks = [VECTORS[n] for n in CHUNKS]
    response = decode_response(whole)
    _, handle, values = decode_resolution_response_body(response.body, has_digest=False)
    assert len(values) == 12
    request = decode_request(VECTORS["resolve_request_plain"])
    assert encode_resolution_response(request, handle, encode_values(values), EXPIRATION) == whole

    assert split_datagrams(whole) == chunks
    assert all(is_chunk(c) for c in chunks) and not is_chunk(whole)
    for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0]):
        reassembler = Reassembler()
        results = [reassembler.feed(("192.0.2.1", 2641), chunks[i], 0.0) for i in order]
        assert results[:2] == [None, None] and results[2] == whole
        assert len(reassembler) == 0 and reassembler.buffered_bytes == 0


def test_chunk_envelopes_differ_only_in_sequence():
    """What the reference does: no TC flag, total MessageLength, sequence 0, 1, 2."""
    whole_envelope = decode_message(VECTORS["large_response_whole"]).envelope
    for sequence, name in enumerate(CHUNKS):
        chunk = VECTORS[name]
        assert decode_envelope(chunk) == whole_envelope._replace(sequence=sequence)
        assert chunk[2] & 0xE0 == 0  # no CP/EC/TC
