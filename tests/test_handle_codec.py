"""Unit tests of the Handle codec: bounds, error classes, version negotiation, digests, answers."""

from __future__ import annotations

import hashlib
import ipaddress
import struct

import pytest

from resolver.handle.constants import (
    ENVELOPE_BYTES,
    HEADER_BYTES,
    MAX_HANDLE_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_REQUEST_INDEXES,
    MAX_REQUEST_TYPES,
    EnvelopeFlag,
    HashOption,
    OpCode,
    OpFlag,
    ResponseCode,
)
from resolver.handle.envelope import Envelope, decode_envelope, encode_envelope, negotiate_version
from resolver.handle.errors import (
    EnvelopeError,
    HandleProtocolError,
    InvalidHandleError,
    InvalidValueError,
    UnexpectedResponseError,
    UnsupportedOperationError,
)
from resolver.handle.message import (
    Header,
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
    encode_resolution_body,
    encode_resolution_request,
    encode_resolution_response,
    encode_response,
    request_digest,
    split_request_digest,
)
from resolver.handle.values import (
    HandleValue,
    Interface,
    ServerInfo,
    SiteInfo,
    decode_admin,
    decode_site,
    encode_site,
    encode_value,
    hash_part_of,
    pick_server,
)
from resolver.handle.wire import Reader, pack_counted, pack_string
from tests.vectors import VECTORS

EXPIRATION = 0x6500_0000


def u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


def request_message(body: bytes, *, op_flags: int = 0, version=(2, 3), suggested=(2, 10)) -> bytes:
    return encode_request(
        OpCode.RESOLUTION,
        body,
        request_id=42,
        expiration=EXPIRATION,
        op_flags=op_flags,
        version=version,
        suggested_version=suggested,
    )


def with_length_fields(data: bytes, *, message_length: int | None = None, body_length: int | None = None):
    out = bytearray(data)
    if message_length is not None:
        out[16:20] = u32(message_length)
    if body_length is not None:
        out[40:44] = u32(body_length)
    return bytes(out)


# --- the spec's code tables are all present ------------------------------------------------------

#: The op codes of the protocol description (handle-protocol.md § Op codes), number -> name where it names one.
DOCUMENTED_OP_CODES = {
    1: "RESOLUTION", 2: "GET_SITE_INFO", 100: "CREATE_HANDLE", 101: "DELETE_HANDLE", 102: "ADD_VALUE",
    103: "REMOVE_VALUE", 104: "MODIFY_VALUE", 105: "LIST_HANDLES", 200: "RESPONSE_TO_CHALLENGE",
    201: "VERIFY_CHALLENGE", 300: "HOME_NA", 301: "UNHOME_NA", 302: "LIST_HOMED_NAS", 2000: "LOGIN",
    2001: "LOGIN_ID_SYSTEM", 400: None, 401: None, 402: None, 1000: None, 1001: None, 1002: None, 1003: None,
}

#: The response codes of the protocol description (§ Response codes), number -> name where it names one.
DOCUMENTED_RESPONSE_CODES = {
    1: "SUCCESS", 2: "ERROR", 3: "SERVER_TOO_BUSY", 4: "PROTOCOL_ERROR", 5: "OPERATION_NOT_SUPPORTED",
    6: "RECURSION_COUNT_TOO_HIGH", 7: "SERVER_BACKUP", 100: "HANDLE_NOT_FOUND", 101: "HANDLE_ALREADY_EXISTS",
    102: "INVALID_HANDLE", 200: "VALUES_NOT_FOUND", 201: "VALUE_ALREADY_EXISTS", 202: "INVALID_VALUE",
    300: "OUT_OF_DATE_SITE_INFO", 301: "SERVER_NOT_RESP", 302: "SERVICE_REFERRAL", 303: "PREFIX_REFERRAL",
    400: "INVALID_ADMIN", 401: "INSUFFICIENT_PERMISSIONS", 402: "AUTHENTICATION_NEEDED",
    403: "AUTHENTICATION_FAILED", 404: "INVALID_CREDENTIAL", 405: "AUTHEN_TIMEOUT", 406: "AUTHEN_ERROR",
    407: None, 408: None, 3001: None, 500: None, 501: None, 502: None, 503: None, 504: None, 505: None,
}


@pytest.mark.parametrize("number,name", sorted(DOCUMENTED_OP_CODES.items()))
def test_every_documented_op_code_exists(number, name):
    assert OpCode(number)
    if name is not None:
        assert OpCode(number).name == name


@pytest.mark.parametrize("number,name", sorted(DOCUMENTED_RESPONSE_CODES.items()))
def test_every_documented_response_code_exists(number, name):
    assert ResponseCode(number)
    if name is not None:
        assert ResponseCode(number).name == name


# --- errors --------------------------------------------------------------------------------------


def test_error_carries_response_code_and_default_message():
    assert HandleProtocolError().response_code == ResponseCode.PROTOCOL_ERROR
    assert str(HandleProtocolError()) == "The message does not follow the Handle protocol."
    assert InvalidHandleError("x").response_code == ResponseCode.INVALID_HANDLE
    assert (
        HandleProtocolError("busy", ResponseCode.SERVER_TOO_BUSY).response_code
        == ResponseCode.SERVER_TOO_BUSY
    )
    assert HandleProtocolError("m").message == "m"
    assert issubclass(UnexpectedResponseError, EnvelopeError)


# --- Reader --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "read, data",
    [
        (lambda r: r.get_u8(), b""),
        (lambda r: r.get_u16(), b"\x01"),
        (lambda r: r.get_u32(), b"\x01\x02\x03"),
        (lambda r: r.get_i32(), b"\x01\x02\x03"),
        (lambda r: r.get_bytes(3), b"ab"),
        (lambda r: r.get_bytes(-1), b"ab"),
        (lambda r: r.get_u32s(2), b"\x00" * 7),
        (lambda r: r.get_counted_bytes(), b"\x00\x00\x00"),  # short length field
        (lambda r: r.get_counted_bytes(), u32(5) + b"abcd"),  # overlong count
        (lambda r: r.get_counted_bytes(), u32(0xFFFFFFFF) + b"abcd"),
        (lambda r: r.get_counted_bytes(max_bytes=3), u32(4) + b"abcd"),
        (lambda r: r.get_string(), u32(2) + b"\xc3\x28"),  # invalid UTF-8
        (lambda r: r.get_count(4), u32(3) + b"\x00" * 11),  # 3 items cannot fit in 11 bytes
        (lambda r: r.get_count(1, max_items=2), u32(3) + b"abc"),
        (lambda r: r.skip(1), b""),
    ],
)
def test_reader_refuses_to_over_read(read, data):
    with pytest.raises(HandleProtocolError):
        read(Reader(data))


def test_reader_reads_fields():
    data = b"\x01" + b"\x02\x03" + u32(4) + struct.pack(">i", -2) + pack_counted(b"abc") + pack_string("é")
    reader = Reader(memoryview(data))
    assert reader.get_u8() == 1
    assert reader.get_u16() == 0x0203
    assert reader.get_u32() == 4
    assert reader.get_i32() == -2
    assert reader.get_counted_bytes(max_bytes=3) == b"abc"
    assert reader.get_string() == "é"
    assert reader.at_end() and reader.remaining() == 0


def test_counted_bytes_may_fill_exactly_what_remains():
    assert Reader(u32(4) + b"abcd").get_counted_bytes() == b"abcd"
    assert Reader(u32(3) + b"\x00" * 12).get_count(4) == 3


def test_restrict_to_bounds_reads_and_requires_all_consumed():
    reader = Reader(b"abcdef")
    with reader.restrict_to(2):
        assert reader.remaining() == 2
        with pytest.raises(HandleProtocolError):
            reader.get_bytes(3)
        assert reader.get_bytes(2) == b"ab"
    assert reader.remaining() == 4  # the outer bound is back

    with pytest.raises(HandleProtocolError, match="unread"):
        with reader.restrict_to(2):
            reader.get_u8()
    with pytest.raises(HandleProtocolError):
        with reader.restrict_to(10):
            pass


def test_restrict_to_does_not_mask_the_inner_error():
    reader = Reader(b"abcdef")
    with pytest.raises(KeyError):
        with reader.restrict_to(4):
            raise KeyError("inner")
    assert reader.remaining() == 6


# --- envelope ------------------------------------------------------------------------------------


def test_envelope_errors():
    with pytest.raises(EnvelopeError):
        decode_envelope(b"\x02\x0a" + b"\x00" * 17)
    too_long = encode_envelope(Envelope(message_length=MAX_MESSAGE_BYTES))[:16] + u32(MAX_MESSAGE_BYTES + 1)
    with pytest.raises(EnvelopeError):
        decode_envelope(too_long)
    assert decode_envelope(too_long[:16] + u32(MAX_MESSAGE_BYTES)).message_length == MAX_MESSAGE_BYTES


def test_envelope_flag_byte_holds_flags_and_suggested_major():
    envelope = Envelope(2, 3, EnvelopeFlag.TC | EnvelopeFlag.CP, 2, 10, 7, 8, 9, 10)
    data = encode_envelope(envelope)
    assert data[2] == 0xA2
    assert decode_envelope(data) == envelope
    with pytest.raises(ValueError):
        encode_envelope(envelope._replace(flags=0x01))
    with pytest.raises(ValueError):
        encode_envelope(envelope._replace(suggested_major=4))


@pytest.mark.parametrize(
    "own, suggested, answer",
    [
        ((2, 3), (2, 10), (2, 10)),  # old clients
        ((2, 10), (2, 11), (2, 10)),  # id-pointer
        ((2, 3), (2, 6), (2, 6)),
        ((2, 5), (0, 0), (2, 5)),  # no suggestion: the envelope's own version
        ((2, 10), (0, 7), (2, 10)),
        ((3, 0), (3, 1), (2, 10)),
    ],
)
def test_negotiate_version(own, suggested, answer):
    assert negotiate_version(Envelope(*own, 0, *suggested)) == answer


# --- whole messages ------------------------------------------------------------------------------

PLAIN = VECTORS["resolve_request_plain"]


def test_trailing_junk_after_message_is_an_error():
    with pytest.raises(HandleProtocolError) as info:
        decode_message(PLAIN + b"\x00")
    assert not isinstance(info.value, EnvelopeError)  # readable envelope: answerable


def test_message_shorter_than_its_envelope_says():
    with pytest.raises(HandleProtocolError):
        decode_message(PLAIN[:-1])


def test_message_too_short_for_header():
    with pytest.raises(HandleProtocolError):
        decode_message(with_length_fields(PLAIN[:40], message_length=20))


def test_body_length_beyond_message():
    with pytest.raises(HandleProtocolError, match="BodyLength"):
        decode_message(with_length_fields(PLAIN, body_length=32))


def test_credential_longer_than_what_remains():
    data = PLAIN[:-4] + u32(1)
    with pytest.raises(HandleProtocolError, match="credential"):
        decode_message(data)


def test_bytes_after_the_credential_are_junk():
    data = with_length_fields(PLAIN + b"xy", message_length=len(PLAIN) + 2 - ENVELOPE_BYTES)
    with pytest.raises(HandleProtocolError, match="credential"):
        decode_message(data)


@pytest.mark.parametrize("extra", [1, 2, 3])
def test_partial_credential_length(extra):
    body_end = len(PLAIN) - 4
    data = with_length_fields(PLAIN[: body_end + extra], message_length=body_end + extra - ENVELOPE_BYTES)
    with pytest.raises(HandleProtocolError):
        decode_message(data)


def test_credential_is_kept_and_missing_section_tolerated():
    data = with_length_fields(PLAIN[:-4] + u32(3) + b"sig", message_length=len(PLAIN) + 3 - ENVELOPE_BYTES)
    assert decode_message(data).credential == b"sig"
    no_section = with_length_fields(PLAIN[:-4], message_length=len(PLAIN) - 4 - ENVELOPE_BYTES)
    assert decode_message(no_section).body == decode_message(PLAIN).body


@pytest.mark.parametrize("flag", [EnvelopeFlag.CP, EnvelopeFlag.EC])
def test_compressed_or_encrypted_payload_is_not_supported(flag):
    data = bytearray(PLAIN)
    data[2] |= flag
    with pytest.raises(UnsupportedOperationError):
        decode_message(bytes(data))


def test_request_and_response_directions():
    with pytest.raises(UnexpectedResponseError):
        decode_request(VECTORS["resolve_response_public"])
    with pytest.raises(HandleProtocolError):
        decode_response(PLAIN)


def test_encode_message_fills_lengths_and_refuses_oversize():
    envelope = Envelope(2, 10, 0, 2, 10, 1, 2, 0, 999)
    header = Header(OpCode.RESOLUTION, 0, 0, body_length=999)
    message = decode_message(encode_message(envelope, header, b"body", b"cred"))
    assert message.envelope.message_length == HEADER_BYTES + 4 + 4 + 4
    assert message.header.body_length == 4
    assert (message.body, message.credential) == (b"body", b"cred")
    with pytest.raises(HandleProtocolError):
        encode_message(envelope, header, bytes(MAX_MESSAGE_BYTES))


# --- resolution requests -------------------------------------------------------------------------


def test_handle_length_limit():
    longest = b"8" * MAX_HANDLE_BYTES
    assert decode_resolution_request(pack_counted(longest) + bytes(8)).handle == longest
    with pytest.raises(InvalidHandleError) as info:
        decode_resolution_request(pack_counted(longest + b"8") + bytes(8))
    assert info.value.response_code == ResponseCode.INVALID_HANDLE


@pytest.mark.parametrize("filters", [bytes(8), u32(1) + u32(1) + bytes(4)])
def test_handle_must_be_utf8(filters):
    with pytest.raises(InvalidHandleError):
        decode_resolution_request(pack_counted(b"88.100.1/\xff") + filters)


def test_handle_count_beyond_body_is_a_protocol_error():
    with pytest.raises(HandleProtocolError) as info:
        decode_resolution_request(u32(100) + b"88.100.1/x")
    assert info.value.response_code == ResponseCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    "body",
    [
        b"",
        pack_counted(b"88.100.1/A"),  # lists missing
        pack_counted(b"88.100.1/A") + u32(0),  # type list missing
        pack_counted(b"88.100.1/A") + u32(2) + u32(1),  # index list short
        pack_counted(b"88.100.1/A") + u32(0) + u32(1) + u32(5) + b"URL",  # type overlong
        pack_counted(b"88.100.1/A")
        + u32(MAX_REQUEST_INDEXES + 1)
        + bytes(4 * (MAX_REQUEST_INDEXES + 1))
        + u32(0),
    ],
)
def test_malformed_resolution_bodies(body):
    with pytest.raises(HandleProtocolError):
        decode_resolution_request(body)


def test_index_and_type_list_limits():
    request = ResolutionRequest(
        b"88.100.1/A", tuple(range(MAX_REQUEST_INDEXES)), (b"URL",) * MAX_REQUEST_TYPES
    )
    assert decode_resolution_request(encode_resolution_request(request)) == request
    too_many_types = ResolutionRequest(b"88.100.1/A", (), (b"",) * (MAX_REQUEST_TYPES + 1))
    with pytest.raises(HandleProtocolError):
        decode_resolution_request(encode_resolution_request(too_many_types))


def test_trailing_bytes_inside_the_body_are_ignored():
    request = ResolutionRequest("88.100.1/批次".encode(), (1, 2), (b"URL",))
    body = encode_resolution_request(request)
    assert decode_resolution_request(body + pack_counted(b"auth-bytes")) == request
    plain = ResolutionRequest(b"88.100.1/A")
    assert decode_resolution_request(encode_resolution_request(plain) + b"\x01\x02") == plain


def test_fast_and_general_paths_agree():
    for handle in (b"88.100.1/A", "88.100.1/é".encode(), b""):
        body = encode_resolution_request(ResolutionRequest(handle))
        decoded = decode_resolution_request(memoryview(body))
        assert decoded == ResolutionRequest(handle) and type(decoded.handle) is bytes


def test_site_info_request_handle():
    assert decode_site_info_request(pack_counted(b"/") + b"junk") == b"/"
    with pytest.raises(HandleProtocolError):
        decode_site_info_request(b"")


# --- request digest and answers ------------------------------------------------------------------


@pytest.mark.parametrize(
    "version, hash_type, algorithm",
    [
        ((2, 10), 3, "sha256"),
        ((2, 7), 3, "sha256"),
        ((2, 6), 2, "sha1"),
        ((2, 1), 2, "sha1"),
        ((2, 0), 1, "md5"),
    ],
)
def test_request_digest_hash_by_version(version, hash_type, algorithm):
    digest = request_digest(b"header and body", version)
    assert digest == bytes([hash_type]) + hashlib.new(algorithm, b"header and body").digest()


def test_rd_digest_precedes_every_answer_body():
    data = request_message(encode_resolution_request(ResolutionRequest(b"88.100.1/A")), op_flags=OpFlag.RD)
    request = decode_request(data)
    answer = decode_response(
        encode_error_response(request, ResponseCode.HANDLE_NOT_FOUND, "gone", EXPIRATION)
    )
    assert answer.header.op_flags & OpFlag.RD
    digest, rest = split_request_digest(answer.body, has_digest=True)
    assert digest == request_digest(data[ENVELOPE_BYTES : len(data) - 4], (2, 10))
    assert decode_error_body(rest) == "gone"


def test_answer_at_negotiated_version_uses_its_digest():
    data = request_message(
        encode_resolution_request(ResolutionRequest(b"88.100.1/A")),
        op_flags=OpFlag.RD,
        version=(2, 5),
        suggested=(0, 0),
    )
    answer = encode_resolution_response(decode_request(data), b"88.100.1/A", u32(0), EXPIRATION)
    response = decode_response(answer)
    assert (response.envelope.major, response.envelope.minor) == (2, 5)
    assert (response.envelope.suggested_major, response.envelope.suggested_minor) == (2, 10)
    digest, handle, values = decode_resolution_response_body(response.body, has_digest=True)
    assert digest[0] == 2 and len(digest) == 21  # SHA-1 at 2.5
    assert (handle, values) == (b"88.100.1/A", ())


def test_answer_copies_ids_flags_and_recursion_count():
    data = encode_request(
        OpCode.RESOLUTION,
        encode_resolution_request(ResolutionRequest(b"88.100.1/A")),
        request_id=0xDEADBEEF,
        session_id=77,
        expiration=1,
        op_flags=OpFlag.KC | OpFlag.PO | OpFlag.SDK_TRUSTED_QUERY,
        recursion_count=3,
    )
    request = decode_request(data)
    response = decode_response(
        encode_response(
            request, ResponseCode.SUCCESS, encode_resolution_body(b"88.100.1/A", u32(0)), EXPIRATION
        )
    )
    assert response.envelope.request_id == 0xDEADBEEF and response.envelope.session_id == 77
    assert response.header.op_flags == OpFlag.KC | OpFlag.PO | OpFlag.SDK_TRUSTED_QUERY
    assert response.header.recursion_count == 3
    assert response.header.expiration == EXPIRATION
    assert response.header.site_info_serial == 0xFFFF


def test_oversized_answer_raises_with_error_code():
    request = decode_request(PLAIN)
    with pytest.raises(HandleProtocolError) as info:
        encode_resolution_response(request, b"h", bytes(MAX_MESSAGE_BYTES), EXPIRATION)
    assert info.value.response_code == ResponseCode.ERROR


def test_error_answer_boundary():
    # Unreadable envelopes, envelope errors and responses are dropped.
    assert encode_error_answer(b"\x02\x0a", HandleProtocolError(), EXPIRATION) is None
    assert encode_error_answer(PLAIN, EnvelopeError(), EXPIRATION) is None
    response = VECTORS["resolve_response_public"]
    assert encode_error_answer(response, HandleProtocolError(), EXPIRATION) is None

    # A readable envelope with a truncated header: answered, op code unknown (0).
    truncated = PLAIN[:30]
    answer = decode_response(encode_error_answer(truncated, HandleProtocolError("short"), EXPIRATION))
    assert answer.envelope.request_id == 0x01020304
    assert (answer.header.op_code, answer.header.response_code) == (0, ResponseCode.PROTOCOL_ERROR)
    assert decode_error_body(answer.body) == "short"

    # A readable header: op code kept, RD cleared because no digest is computed.
    bad_handle = request_message(pack_counted(b"\xff") + bytes(8), op_flags=OpFlag.RD | OpFlag.PO)
    try:
        decode_resolution_request(decode_request(bad_handle).body)
    except HandleProtocolError as exc:
        answer = decode_response(encode_error_answer(bad_handle, exc, EXPIRATION))
    assert answer.header.op_code == OpCode.RESOLUTION
    assert answer.header.response_code == ResponseCode.INVALID_HANDLE
    assert answer.header.op_flags == OpFlag.PO


# --- values, HS_ADMIN, HS_SITE -------------------------------------------------------------------


def test_out_of_range_value_fields_raise_invalid_value():
    for value in (
        HandleValue(-1, "URL", b""),
        HandleValue(1, "URL", b"", ttl=2**31),
        HandleValue(1, "URL", b"", permissions=256),
    ):
        with pytest.raises(InvalidValueError):
            encode_value(value)


@pytest.mark.parametrize(
    "data", [b"", b"\x0f\xff", b"\x0f\xff" + u32(5) + b"0.NA", b"\x0f\xff" + pack_counted(b"x")]
)
def test_malformed_admin_data(data):
    with pytest.raises(InvalidValueError):
        decode_admin(data)


def test_malformed_site_data():
    good = VECTORS["hs_site_record"]
    for cut in (0, 7, 12, len(good) - 1):
        with pytest.raises(InvalidValueError):
            decode_site(good[:cut])


def test_site_addresses():
    v6 = ipaddress.IPv6Address("2001:db8::1")
    site = SiteInfo(servers=(ServerInfo(7, v6, b"key", (Interface(3, 1, 2641),)),))
    data = encode_site(site)
    assert v6.packed in data
    assert decode_site(data) == site


def _site(count: int) -> SiteInfo:
    server = ServerInfo(0, ipaddress.IPv4Address("192.0.2.1"), b"", ())
    return SiteInfo(servers=tuple(server.__class__(i, server.address, b"", ()) for i in range(count)))


def test_pick_server_rule():
    site = _site(5)
    # Worked by hand: MD5("88.100.1")[-4:] as signed int, absolute value, modulo 5.
    tail = int.from_bytes(hashlib.md5(b"88.100.1").digest()[-4:], "big", signed=True)
    assert pick_server(site, "88.100.1").server_id == abs(tail) % 5
    assert pick_server(site, "88.100.a/x") == pick_server(site, "88.100.A/X")  # ASCII upper-cased
    picks = {pick_server(site, f"88.100.{i}").server_id for i in range(50)}
    assert len(picks) > 1  # the hash spreads handles over servers
    assert pick_server(_site(1), "anything").server_id == 0
    with pytest.raises(HandleProtocolError):
        pick_server(SiteInfo(), "88.100.1")


def test_pick_server_upper_cases_ascii_only():
    site = _site(7)
    expected = abs(int.from_bytes(hashlib.md5("ß".encode()).digest()[-4:], "big", signed=True)) % 7
    assert pick_server(site, "ß").server_id == expected


@pytest.mark.parametrize(
    "option, part",
    [
        (HashOption.BY_PREFIX, "88.100.1"),
        (HashOption.BY_SUFFIX, "A/B"),
        (HashOption.BY_HANDLE, "88.100.1/A/B"),
    ],
)
def test_hash_part_of(option, part):
    assert hash_part_of("88.100.1/A/B", option) == part
    assert hash_part_of("88.100.1", option) == "88.100.1"
