"""Whole Handle messages: header/body/credential framing, request and response bodies, and answers.

The server's hot path is :func:`decode_request`, :func:`decode_resolution_request` and
:func:`encode_resolution_response`: one ``unpack_from`` per fixed part, one ``pack`` for envelope +
header of the answer, and a single join around value bytes encoded ahead of time. Imports no asyncio,
socket or lmdb.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from typing import NamedTuple

from .constants import (
    ENVELOPE_BYTES,
    ENVELOPE_SUGGESTED_MAJOR_MASK,
    HEADER_BYTES,
    MAX_HANDLE_BYTES,
    MAX_MESSAGE_BYTES,
    MAX_REQUEST_INDEXES,
    MAX_REQUEST_TYPES,
    SERVER_VERSION,
    SHA1_DIGEST_SINCE,
    SHA256_DIGEST_SINCE,
    UNKNOWN_SITE_SERIAL,
    EnvelopeFlag,
    HashType,
    OpFlag,
    ResponseCode,
)
from .envelope import ENVELOPE, Envelope, decode_envelope, encode_envelope, negotiate_version
from .errors import (
    EnvelopeError,
    HandleProtocolError,
    InvalidHandleError,
    UnexpectedResponseError,
    UnsupportedOperationError,
)
from .values import HandleValue, SiteInfo, decode_site, decode_values
from .wire import COUNT_BYTES, U32, Buffer, Reader, pack_counted, pack_string

# § Message header: OpCode · ResponseCode · OpFlag · SiteInfoSerial · RecursionCount · reserved ·
# ExpirationTime · BodyLength. The reserved byte is skipped on read and written as 0.
HEADER = struct.Struct(">IIIHBxII")
# Envelope and header of an answer, packed in one call.
_ANSWER_PREFIX = struct.Struct(">BBBBIIII" + "IIIHBxII")
assert HEADER.size == HEADER_BYTES
assert _ANSWER_PREFIX.size == ENVELOPE_BYTES + HEADER_BYTES

_BODY_START = ENVELOPE_BYTES + HEADER_BYTES
_NO_CREDENTIAL = bytes(COUNT_BYTES)  # § Message header: credential length 0 = none
# Plain ints: an IntFlag operand would make every `&` on the hot path build an enum member.
_UNREADABLE_PAYLOAD = int(EnvelopeFlag.CP | EnvelopeFlag.EC)
_SERVER_MAJOR, _SERVER_MINOR = SERVER_VERSION
_RD = int(OpFlag.RD)
_AT = int(OpFlag.AT)
_DIGEST_BYTES = {HashType.MD5: 16, HashType.SHA1: 20, HashType.SHA256: 32}
_BODY_LENGTH_FIELD = 6  # position of BodyLength in an unpacked HEADER
_TWO_COUNTS = struct.Struct(">II")
# Builds a NamedTuple from an already-checked tuple, skipping the generated __new__'s argument binding.
_new_record = tuple.__new__


class Header(NamedTuple):
    """The 24-byte message header (§ Message header). Immutable; NamedTuple for hot-path speed."""

    op_code: int
    response_code: int
    op_flags: int
    site_info_serial: int = UNKNOWN_SITE_SERIAL
    recursion_count: int = 0
    #: Unix seconds after which the message is stale; ID-SDK rejects answers whose time has passed.
    expiration: int = 0
    body_length: int = 0


class Message(NamedTuple):
    """One whole message. ``credential`` is the credential section's content, without its length."""

    envelope: Envelope
    header: Header
    body: bytes
    credential: bytes = b""


# --- whole messages ------------------------------------------------------------------------------


def encode_message(envelope: Envelope, header: Header, body: bytes, credential: bytes = b"") -> bytes:
    """Envelope + header + body + credential section, with MessageLength and BodyLength filled in."""
    message_length = HEADER_BYTES + len(body) + COUNT_BYTES + len(credential)
    if message_length > MAX_MESSAGE_BYTES:
        raise HandleProtocolError(f"message of {message_length} bytes exceeds {MAX_MESSAGE_BYTES}")
    head = encode_envelope(envelope._replace(message_length=message_length)) + HEADER.pack(
        header.op_code,
        header.response_code,
        header.op_flags,
        header.site_info_serial,
        header.recursion_count,
        header.expiration,
        len(body),
    )
    return b"".join((head, body, U32.pack(len(credential)), credential))


def decode_message(data: Buffer) -> Message:
    """Read exactly one whole message (envelope + MessageLength bytes); anything else raises."""
    # This runs per request, so decode_envelope is inlined: fields are unpacked into locals and checked
    # before any record is built.
    size = len(data)
    if size < ENVELOPE_BYTES:
        raise EnvelopeError(f"{size} bytes cannot hold a {ENVELOPE_BYTES}-byte envelope")
    major, minor, flag_byte, s_minor, session_id, request_id, sequence, length = ENVELOPE.unpack_from(data)
    if length > MAX_MESSAGE_BYTES:
        raise EnvelopeError(f"MessageLength {length} exceeds {MAX_MESSAGE_BYTES}")
    end = ENVELOPE_BYTES + length
    if size != end:
        if size < end:
            raise HandleProtocolError(f"message is {size} bytes, its envelope says {end}")
        raise HandleProtocolError(f"{size - end} trailing bytes after the message")
    if flag_byte & _UNREADABLE_PAYLOAD:
        raise UnsupportedOperationError("compressed or encrypted messages are not supported")
    if end < _BODY_START:
        raise HandleProtocolError(f"MessageLength {length} cannot hold the header")
    header = HEADER.unpack_from(data, ENVELOPE_BYTES)
    body_end = _BODY_START + header[_BODY_LENGTH_FIELD]
    if body_end > end:
        raise HandleProtocolError(f"BodyLength {header[_BODY_LENGTH_FIELD]} runs past the message")
    rest = end - body_end
    if rest == 0:
        # Tolerated: a sender that omits the credential section entirely has nothing to verify.
        credential = b""
    elif rest < COUNT_BYTES:
        raise HandleProtocolError(f"{rest} bytes after the body cannot hold a credential length")
    else:
        (credential_length,) = U32.unpack_from(data, body_end)
        if credential_length != rest - COUNT_BYTES:
            raise HandleProtocolError(
                f"credential section says {credential_length} bytes, {rest - COUNT_BYTES} follow the body"
            )
        credential = bytes(data[body_end + COUNT_BYTES : end]) if credential_length else b""
    envelope = _new_record(
        Envelope,
        (
            major,
            minor,
            flag_byte & ~ENVELOPE_SUGGESTED_MAJOR_MASK,
            flag_byte & ENVELOPE_SUGGESTED_MAJOR_MASK,
            s_minor,
            session_id,
            request_id,
            sequence,
            length,
        ),
    )
    return _new_record(
        Message, (envelope, _new_record(Header, header), bytes(data[_BODY_START:body_end]), credential)
    )


def decode_request(data: Buffer) -> Message:
    """A request as a server receives it; a response (non-zero ResponseCode) is dropped, not answered."""
    message = decode_message(data)
    if message.header.response_code:
        raise UnexpectedResponseError(f"response code {message.header.response_code} in a request")
    return message


def decode_response(data: Buffer) -> Message:
    """A response as a client receives it."""
    message = decode_message(data)
    if not message.header.response_code:
        raise HandleProtocolError("a request where a response was expected")
    return message


def encode_request(
    op_code: int,
    body: bytes,
    *,
    request_id: int,
    expiration: int,
    op_flags: int = 0,
    session_id: int = 0,
    version: tuple[int, int] = SERVER_VERSION,
    suggested_version: tuple[int, int] = SERVER_VERSION,
    recursion_count: int = 0,
    credential: bytes = b"",
) -> bytes:
    """A client request (old clients send ``version=(2, 3)`` and suggest 2.10)."""
    envelope = Envelope(
        version[0], version[1], 0, suggested_version[0], suggested_version[1], session_id, request_id, 0, 0
    )
    header = Header(op_code, 0, op_flags, UNKNOWN_SITE_SERIAL, recursion_count, expiration)
    return encode_message(envelope, header, body, credential)


# --- request bodies ------------------------------------------------------------------------------


class ResolutionRequest(NamedTuple):
    """Body of an OC_RESOLUTION request (§ OC_RESOLUTION). Empty filters select every value."""

    handle: bytes
    indexes: tuple[int, ...] = ()
    types: tuple[bytes, ...] = ()


def _get_handle(reader: Reader) -> bytes:
    length = reader.get_u32()
    if length > reader.remaining():
        raise HandleProtocolError(f"handle of {length} bytes, {reader.remaining()} remain")
    if length > MAX_HANDLE_BYTES:
        raise InvalidHandleError(f"handle of {length} bytes exceeds {MAX_HANDLE_BYTES}")
    handle = reader.get_bytes(length)
    if not handle.isascii():  # the common case needs no decode
        try:
            handle.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidHandleError("handle is not valid UTF-8") from None
    return handle


def decode_resolution_request(body: Buffer) -> ResolutionRequest:
    """handle · index list · type list. Bytes after the type list are ignored: the id-pointer SDK
    appends a counted authBytes field there (§ What the national SDKs do)."""
    # Fast path for what nearly every client sends: an ASCII handle and no filters.
    size = len(body)
    if size >= COUNT_BYTES:
        (length,) = U32.unpack_from(body, 0)
        handle_end = COUNT_BYTES + length
        if length <= MAX_HANDLE_BYTES and handle_end + _TWO_COUNTS.size <= size:
            if _TWO_COUNTS.unpack_from(body, handle_end) == (0, 0):
                handle = bytes(body[COUNT_BYTES:handle_end])
                if handle.isascii():
                    return _new_record(ResolutionRequest, (handle, (), ()))
    reader = Reader(body)
    handle = _get_handle(reader)
    count = reader.get_count(4, MAX_REQUEST_INDEXES)
    indexes = reader.get_u32s(count) if count else ()
    count = reader.get_count(COUNT_BYTES, MAX_REQUEST_TYPES)
    types = tuple([reader.get_counted_bytes() for _ in range(count)]) if count else ()
    return ResolutionRequest(handle, indexes, types)


def encode_resolution_request(request: ResolutionRequest) -> bytes:
    parts = [
        pack_counted(request.handle),
        U32.pack(len(request.indexes)),
        struct.pack(f">{len(request.indexes)}I", *request.indexes),
        U32.pack(len(request.types)),
    ]
    parts.extend(pack_counted(t) for t in request.types)
    return b"".join(parts)


def encode_site_info_request(handle: bytes = b"/") -> bytes:
    """Body of OC_GET_SITE_INFO: just a handle (ID-SDK sends ``/``)."""
    return pack_counted(handle)


def decode_site_info_request(body: Buffer) -> bytes:
    """The handle of an OC_GET_SITE_INFO request; trailing bytes are ignored as in resolution requests."""
    return _get_handle(Reader(body))


# --- response bodies -----------------------------------------------------------------------------


def encode_resolution_body(handle: bytes, values_blob: bytes, digest: bytes = b"") -> bytes:
    """[digest] · handle · ``values_blob`` (already u32 count + values). Also a referral's body.

    A server does not pass ``digest``: :func:`encode_response` prepends it to every answer to an RD
    request. The parameter is for building response bytes by hand (clients, tests).
    """
    return b"".join((digest, U32.pack(len(handle)), handle, values_blob))


def encode_error_body(message: str) -> bytes:
    """An error answer's body: one string, possibly empty (§ Response codes)."""
    return pack_string(message)


def encode_site_info_body(site_data: bytes) -> bytes:
    """A GET_SITE_INFO answer's body is exactly one HS_SITE record, without a length prefix."""
    return site_data


def _get_digest(reader: Reader) -> bytes:
    hash_type = reader.get_u8()
    size = _DIGEST_BYTES.get(hash_type)  # type: ignore[call-overload]
    if size is None:
        raise HandleProtocolError(f"unknown request digest hash type {hash_type}")
    return bytes((hash_type,)) + reader.get_bytes(size)


def split_request_digest(body: Buffer, has_digest: bool) -> tuple[bytes, bytes]:
    """(hash type byte + digest, rest of body). With RD set, EVERY answer's body starts with the digest,
    whatever its response code, so clients split it off before reading the rest."""
    if not has_digest:
        return b"", bytes(body)
    reader = Reader(body)
    digest = _get_digest(reader)
    return digest, reader.get_bytes(reader.remaining())


def decode_resolution_response_body(
    body: Buffer, has_digest: bool
) -> tuple[bytes, bytes, tuple[HandleValue, ...]]:
    """(digest or b"", handle, values) of a SUCCESS or SERVICE_REFERRAL answer."""
    reader = Reader(body)
    digest = _get_digest(reader) if has_digest else b""
    handle = reader.get_counted_bytes()
    return digest, handle, decode_values(reader)


def decode_error_body(body: Buffer) -> str:
    """The message of an error answer; an empty body reads as no message."""
    if not body:
        return ""
    # A garbled message must not hide the response code, so bad UTF-8 is replaced rather than raised.
    return Reader(body).get_counted_bytes().decode("utf-8", errors="replace")


def decode_site_info_body(body: Buffer) -> SiteInfo:
    return decode_site(body)


# --- request digest and answers ------------------------------------------------------------------


def request_digest(message_without_credential: Buffer, version: tuple[int, int]) -> bytes:
    """Hash type byte + digest of the request's header and body (no envelope, no credential section),
    with the hash the answer's version calls for (§ OC_RESOLUTION, RD)."""
    if version >= SHA256_DIGEST_SINCE:
        return b"\x03" + hashlib.sha256(message_without_credential).digest()
    if version >= SHA1_DIGEST_SINCE:
        return b"\x02" + hashlib.sha1(message_without_credential, usedforsecurity=False).digest()
    return b"\x01" + hashlib.md5(message_without_credential, usedforsecurity=False).digest()


def digest_input(request: Message) -> bytes:
    """The request's header and body as sent. The header is re-packed: its one unkept field, the
    reserved byte, is 0 from every known client."""
    h = request.header
    packed = HEADER.pack(
        h.op_code,
        h.response_code,
        h.op_flags,
        h.site_info_serial,
        h.recursion_count,
        h.expiration,
        len(request.body),
    )
    return packed + request.body


def _answer(
    request: Message | None,
    envelope: Envelope,
    op_code: int,
    op_flags: int,
    recursion_count: int,
    response_code: int,
    parts: Iterable[bytes],
    body_length: int,
    expiration: int,
    site_info_serial: int,
    authoritative: bool = False,
) -> bytes:
    major, minor = negotiate_version(envelope)
    # AT in an answer is the server's own statement (§ Message header), never an echo of the request's bit.
    op_flags = (op_flags | _AT) if authoritative else (op_flags & ~_AT)
    if op_flags & _RD and request is not None:
        digest = request_digest(digest_input(request), (major, minor))
        parts = (digest, *parts)
        body_length += len(digest)
    message_length = HEADER_BYTES + body_length + COUNT_BYTES
    if message_length > MAX_MESSAGE_BYTES:
        raise HandleProtocolError(
            f"answer of {message_length} bytes exceeds {MAX_MESSAGE_BYTES}", ResponseCode.ERROR
        )
    # Shape taken from the reference's answers: the negotiated version, suggesting ours, no envelope
    # flags, session and request ids and the op flags but AT copied, SiteInfoSerial unknown unless given.
    prefix = _ANSWER_PREFIX.pack(
        major, minor, _SERVER_MAJOR, _SERVER_MINOR,
        envelope.session_id, envelope.request_id, 0, message_length,
        op_code, response_code, op_flags, site_info_serial, recursion_count, expiration, body_length,
    )  # fmt: skip
    return b"".join((prefix, *parts, _NO_CREDENTIAL))


def encode_response(
    request: Message,
    response_code: int,
    body: bytes,
    expiration: int,
    *,
    site_info_serial: int = UNKNOWN_SITE_SERIAL,
    authoritative: bool = False,
) -> bytes:
    """The answer to ``request``: its op code, ids and op flags, at the negotiated version, suggesting
    2.10. If the request set RD, the request digest is put in front of ``body`` here, for every
    response code (clients read it before any answer body). AT is set when ``authoritative`` (the answer
    comes from the primary for the handle), else cleared."""
    h = request.header
    return _answer(
        request, request.envelope, h.op_code, h.op_flags, h.recursion_count,
        response_code, (body,), len(body), expiration, site_info_serial, authoritative,
    )  # fmt: skip


def encode_resolution_response(
    request: Message,
    handle: bytes,
    values_blob: bytes,
    expiration: int,
    response_code: int = ResponseCode.SUCCESS,
    *,
    site_info_serial: int = UNKNOWN_SITE_SERIAL,
    authoritative: bool = False,
) -> bytes:
    """A SUCCESS (or SERVICE_REFERRAL) answer around pre-encoded ``values_blob`` (u32 count + values),
    joined once without building the body separately."""
    h = request.header
    parts = (U32.pack(len(handle)), handle, values_blob)
    return _answer(
        request, request.envelope, h.op_code, h.op_flags, h.recursion_count, response_code, parts,
        COUNT_BYTES + len(handle) + len(values_blob), expiration, site_info_serial, authoritative,
    )  # fmt: skip


def encode_error_response(
    request: Message, response_code: int, message: str, expiration: int, *, authoritative: bool = False
) -> bytes:
    return encode_response(
        request, response_code, encode_error_body(message), expiration, authoritative=authoritative
    )


def encode_error_answer(data: Buffer, error: HandleProtocolError, expiration: int) -> bytes | None:
    """The answer to ``data`` that raised ``error``, or None when it must be dropped.

    The one place a codec error becomes an answer: dropped when the envelope is unreadable (or the
    message is itself a response); otherwise an error answer carrying ``error.response_code`` and the
    header fields that could be read. RD is cleared because the body may be unreadable, so no digest
    is promised.
    """
    if isinstance(error, EnvelopeError):
        return None
    try:
        envelope = decode_envelope(data)
    except EnvelopeError:
        return None
    op_code = op_flags = recursion_count = 0
    if len(data) >= _BODY_START:
        op_code, response_code, op_flags, _, recursion_count, _, _ = HEADER.unpack_from(data, ENVELOPE_BYTES)
        if response_code:
            return None
    body = encode_error_body(str(error))
    return _answer(
        None, envelope, op_code, op_flags & ~_RD, recursion_count,
        error.response_code, (body,), len(body), expiration, UNKNOWN_SITE_SERIAL,
    )  # fmt: skip
