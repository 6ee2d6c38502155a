"""Hypothesis round trips: decode(encode(x)) == x for every record the Handle codec writes."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolver.handle.constants import MAX_HANDLE_BYTES, ResponseCode
from resolver.handle.envelope import Envelope, decode_envelope, encode_envelope
from resolver.handle.message import (
    Header,
    ResolutionRequest,
    decode_error_body,
    decode_message,
    decode_request,
    decode_resolution_request,
    decode_resolution_response_body,
    decode_response,
    encode_error_body,
    encode_message,
    encode_resolution_body,
    encode_resolution_request,
    encode_resolution_response,
)
from resolver.handle.values import (
    AdminData,
    HandleValue,
    Interface,
    Reference,
    ServerInfo,
    SiteInfo,
    decode_admin,
    decode_site,
    decode_value,
    decode_values,
    encode_admin,
    encode_site,
    encode_value,
    encode_values,
)
from resolver.handle.wire import Reader

ROUND_TRIP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
i32 = st.integers(-(2**31), 2**31 - 1)
text = st.text(st.characters(codec="utf-8"), max_size=40)
blob = st.binary(max_size=200)

references = st.builds(Reference, handle=text, index=u32)
handle_values = st.builds(
    HandleValue,
    index=u32,
    type=text,
    data=blob,
    timestamp=u32,
    ttl_type=st.sampled_from([0, 1]) | u8,
    ttl=i32,
    permissions=u8,
    references=st.lists(references, max_size=3).map(tuple),
)
# IPv6 addresses in ::/96 are written like right-aligned IPv4 and read back as IPv4 (documented).
ipv6 = st.ip_addresses(v=6).filter(lambda a: a.packed[:12] != bytes(12))
addresses = st.ip_addresses(v=4) | ipv6
interfaces = st.builds(Interface, type=u8, protocol=u8, port=u32)
servers = st.builds(
    ServerInfo,
    server_id=u32,
    address=addresses,
    public_key=st.binary(max_size=64),
    interfaces=st.lists(interfaces, max_size=4).map(tuple),
)
sites = st.builds(
    SiteInfo,
    version=u16,
    protocol_major=u8,
    protocol_minor=u8,
    serial=u16,
    primary=st.booleans(),
    multi_primary=st.booleans(),
    hash_option=u8,
    hash_filter=st.binary(max_size=16),
    attributes=st.lists(st.tuples(text, text), max_size=3).map(tuple),
    servers=st.lists(servers, max_size=3).map(tuple),
)
envelopes = st.builds(
    Envelope,
    major=u8,
    minor=u8,
    flags=st.integers(0, 0x3F).map(lambda f: f << 2),
    suggested_major=st.integers(0, 3),
    suggested_minor=u8,
    session_id=u32,
    request_id=u32,
    sequence=u32,
    message_length=st.integers(0, 262_144),
)
# Readable payloads only: CP and EC make the payload opaque, so they are left out of messages.
message_envelopes = envelopes.map(lambda e: e._replace(flags=e.flags & 0x3C))
headers = st.builds(
    Header,
    op_code=u32,
    response_code=u32,
    op_flags=u32,
    site_info_serial=u16,
    recursion_count=u8,
    expiration=u32,
    body_length=u32,
)
handles = text.map(str.encode).filter(lambda h: len(h) <= MAX_HANDLE_BYTES)
resolution_requests = st.builds(
    ResolutionRequest,
    handle=handles | st.just(b"88.100.1/ABC123"),
    indexes=st.lists(u32, max_size=8).map(tuple),
    types=st.lists(st.binary(max_size=12), max_size=4).map(tuple),
)


@ROUND_TRIP
@given(handle_values)
def test_value_round_trip(value):
    reader = Reader(encode_value(value))
    assert decode_value(reader) == value
    assert reader.at_end()


@ROUND_TRIP
@given(st.lists(handle_values, max_size=5))
def test_value_list_round_trip(values):
    reader = Reader(encode_values(values))
    assert decode_values(reader) == tuple(values)
    assert reader.at_end()


@ROUND_TRIP
@given(st.builds(AdminData, handle=text, index=u32, permissions=u16))
def test_admin_round_trip(admin):
    assert decode_admin(encode_admin(admin)) == admin


@ROUND_TRIP
@given(sites)
def test_site_round_trip(site):
    decoded = decode_site(encode_site(site))
    assert decoded == site
    for server in decoded.servers:
        assert isinstance(server.address, ipaddress.IPv4Address | ipaddress.IPv6Address)


@ROUND_TRIP
@given(envelopes)
def test_envelope_round_trip(envelope):
    assert decode_envelope(encode_envelope(envelope)) == envelope


@ROUND_TRIP
@given(message_envelopes, headers, st.binary(max_size=300), st.binary(max_size=40))
def test_message_round_trip(envelope, header, body, credential):
    data = encode_message(envelope, header, body, credential)
    message = decode_message(data)
    assert message.envelope == envelope._replace(message_length=len(data) - 20)
    assert message.header == header._replace(body_length=len(body))
    assert (message.body, message.credential) == (body, credential)
    assert encode_message(*message) == data


@ROUND_TRIP
@given(resolution_requests, st.binary(max_size=20))
def test_resolution_request_round_trip(request, trailing):
    body = encode_resolution_request(request)
    assert decode_resolution_request(body) == request
    # Whatever an SDK appends inside BodyLength is ignored.
    assert decode_resolution_request(body + trailing) == request


@ROUND_TRIP
@given(handles, st.lists(handle_values, max_size=4), st.sampled_from([b"", b"\x03" + bytes(range(32))]))
def test_resolution_body_round_trip(handle, values, digest):
    body = encode_resolution_body(handle, encode_values(values), digest)
    assert decode_resolution_response_body(body, has_digest=bool(digest)) == (digest, handle, tuple(values))


@ROUND_TRIP
@given(text)
def test_error_body_round_trip(message):
    assert decode_error_body(encode_error_body(message)) == message


@ROUND_TRIP
@given(
    message_envelopes,
    resolution_requests,
    st.lists(handle_values, max_size=4),
    u32,
    st.sampled_from([ResponseCode.SUCCESS, ResponseCode.SERVICE_REFERRAL]),
)
def test_server_answer_decodes_on_the_client(envelope, request, values, expiration, code):
    header = Header(1, 0, 0x1900_0000, 0xFFFF, 0, 0)
    request_message = decode_request(encode_message(envelope, header, encode_resolution_request(request)))
    answer = encode_resolution_response(
        request_message, request.handle, encode_values(values), expiration, code
    )
    response = decode_response(answer)
    assert response.envelope.request_id == envelope.request_id
    assert response.header.response_code == code
    assert decode_resolution_response_body(response.body, has_digest=False) == (
        b"",
        request.handle,
        tuple(values),
    )
