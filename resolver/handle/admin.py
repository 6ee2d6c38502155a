"""Bodies of the administrative messages and of challenge-response authentication (handle-admin.md §2, §3, §6, §7).

Bytes in, records out, and back: the bodies of CREATE_HANDLE, ADD_VALUE, MODIFY_VALUE (handle + values),
REMOVE_VALUE (handle + indexes), DELETE_HANDLE and LIST_HANDLES (handle), the 402 challenge (request digest +
nonce), the op-200 challenge answer, the national op-2001 login, the LIST_HANDLES answer, and the two forms of a
signed response (secret-key MAC, public-key signature). Every length-prefixed field goes through the bounded
Reader. No cryptography here (resolver/admin/crypto.py checks what these records carry); imports no asyncio,
socket or lmdb.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from .constants import MAX_HANDLE_BYTES, MAX_REQUEST_INDEXES, OpCode
from .errors import HandleProtocolError, InvalidHandleError, InvalidValueError
from .values import VALUE_MIN_BYTES, HandleValue, decode_value, encode_value
from .wire import COUNT_BYTES, U32, Buffer, Reader, pack_counted, pack_string

#: Operations that change or list the store: each needs an authenticated identity (handle-admin.md §2).
ADMIN_OPS = frozenset(
    {
        OpCode.CREATE_HANDLE,
        OpCode.DELETE_HANDLE,
        OpCode.ADD_VALUE,
        OpCode.REMOVE_VALUE,
        OpCode.MODIFY_VALUE,
        OpCode.LIST_HANDLES,
    }
)
#: Every op code the administrative path answers (the rest go to the resolution frontend).
AUTH_PATH_OPS = frozenset({*ADMIN_OPS, OpCode.RESPONSE_TO_CHALLENGE, OpCode.LOGIN_ID_SYSTEM})
_AUTH_PATH_CODES = frozenset(int(op) for op in AUTH_PATH_OPS)

AUTH_TYPE_SECKEY = "HS_SECKEY"  #: handle-admin.md §2 step 3
AUTH_TYPE_PUBKEY = "HS_PUBKEY"  #: handle-admin.md §2 step 3
NONCE_BYTES = 16  #: handle-admin.md §2 step 2: the reference sends 16 random bytes
MAX_NONCE_BYTES = 64  #: a challenge's nonce longer than this is not one a server sent
MAX_VALUES_PER_REQUEST = 1000  #: values in one CREATE/ADD/MODIFY, as over HTTP (a record with more is a mistake)
MAX_AUTH_TYPE_BYTES = 32  #: "HS_SECKEY"/"HS_PUBKEY"; anything longer is garbage
MAX_SIGNED_RESPONSE_BYTES = 8192  #: an RSA-16384 signature with its algorithm name still fits
MAX_HASH_NAME_BYTES = 32  #: "SHA-256", "SHA1", "SM3"
MAX_LIST_ENTRIES = 100_000  #: handles read from one LIST_HANDLES answer by the client

_OP_CODE_AT = 20  # envelope bytes before the header's OpCode


def is_auth_path(data: Buffer) -> bool:
    """Whether a whole message is for the administrative path (one u32 read; no decoding)."""
    return len(data) >= _OP_CODE_AT + 4 and U32.unpack_from(data, _OP_CODE_AT)[0] in _AUTH_PATH_CODES


class AdminRequest(NamedTuple):
    """What an administrative request asks: the handle, and the values (CREATE/ADD/MODIFY) or indexes (REMOVE)."""

    op_code: int
    handle: str
    values: tuple[HandleValue, ...] = ()
    indexes: tuple[int, ...] = ()


def _get_handle(reader: Reader) -> str:
    raw = reader.get_counted_bytes()
    if not raw or len(raw) > MAX_HANDLE_BYTES:
        raise InvalidHandleError(f"handle of {len(raw)} bytes (1 to {MAX_HANDLE_BYTES})")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidHandleError("handle is not valid UTF-8") from None


def decode_admin_request(op_code: int, body: Buffer) -> AdminRequest:
    """The body of an administrative request (handle-admin.md §3). Trailing bytes are refused, except after a
    handle-only body (DELETE, LIST), where a newer sender may add fields."""
    reader = Reader(body)
    handle = _get_handle(reader)
    if op_code in (OpCode.CREATE_HANDLE, OpCode.ADD_VALUE, OpCode.MODIFY_VALUE):
        count = reader.get_count(VALUE_MIN_BYTES, MAX_VALUES_PER_REQUEST)
        try:
            values = tuple(decode_value(reader) for _ in range(count))
        except HandleProtocolError as exc:
            raise InvalidValueError(f"malformed value: {exc}") from None
        if not reader.at_end():
            raise HandleProtocolError(f"{reader.remaining()} bytes after the values")
        return AdminRequest(op_code, handle, values)
    if op_code == OpCode.REMOVE_VALUE:
        count = reader.get_count(4, MAX_REQUEST_INDEXES)
        indexes = reader.get_u32s(count) if count else ()
        return AdminRequest(op_code, handle, indexes=tuple(indexes))
    if op_code in (OpCode.DELETE_HANDLE, OpCode.LIST_HANDLES):
        return AdminRequest(op_code, handle)
    raise HandleProtocolError(f"op code {op_code} is not an administrative request")


def encode_admin_request(request: AdminRequest) -> bytes:
    parts = [pack_string(request.handle)]
    if request.op_code in (OpCode.CREATE_HANDLE, OpCode.ADD_VALUE, OpCode.MODIFY_VALUE):
        parts.append(U32.pack(len(request.values)))
        parts.extend(encode_value(v) for v in request.values)
    elif request.op_code == OpCode.REMOVE_VALUE:
        parts.append(U32.pack(len(request.indexes)))
        parts.extend(U32.pack(i) for i in request.indexes)
    return b"".join(parts)


# --- challenge and answer ------------------------------------------------------------------------


def encode_challenge_body(nonce: bytes) -> bytes:
    """The part of a 402 body after the request digest (which the RD flag puts in front): the counted nonce."""
    return pack_counted(nonce)


class Challenge(NamedTuple):
    digest: bytes  # hash type byte + digest of the challenged request's header and body
    nonce: bytes


def decode_challenge_body(body: Buffer) -> Challenge:
    """digest (hash type + 16/20/32 bytes) · counted nonce (handle-admin.md §2 step 2)."""
    reader = Reader(body)
    hash_type = reader.get_u8()
    size = {1: 16, 2: 20, 3: 32}.get(hash_type)
    if size is None:
        raise HandleProtocolError(f"unknown digest hash type {hash_type} in a challenge")
    digest = bytes((hash_type,)) + reader.get_bytes(size)
    return Challenge(digest, reader.get_counted_bytes(MAX_NONCE_BYTES))


class ChallengeAnswer(NamedTuple):
    """The body of an op-200 OC_RESPONSE_TO_CHALLENGE (handle-admin.md §2 step 3)."""

    auth_type: str
    identity: str
    index: int
    signed: bytes


def decode_challenge_answer(body: Buffer) -> ChallengeAnswer:
    reader = Reader(body)
    auth_type = reader.get_string(MAX_AUTH_TYPE_BYTES)
    identity = _get_handle(reader)
    index = reader.get_u32()
    signed = reader.get_counted_bytes(MAX_SIGNED_RESPONSE_BYTES)
    return ChallengeAnswer(auth_type, identity, index, signed)


def encode_challenge_answer(answer: ChallengeAnswer) -> bytes:
    return b"".join(
        (
            pack_string(answer.auth_type),
            pack_string(answer.identity),
            U32.pack(answer.index),
            pack_counted(answer.signed),
        )
    )


class Login(NamedTuple):
    """The body of the national op 2001: who logs in (handle-admin.md §7.1)."""

    identity: str
    index: int


def decode_login(body: Buffer) -> Login:
    reader = Reader(body)
    identity = _get_handle(reader)
    return Login(identity, reader.get_u32())


def encode_login(login: Login) -> bytes:
    return pack_string(login.identity) + U32.pack(login.index)


# --- signed responses ----------------------------------------------------------------------------


class SignatureResponse(NamedTuple):
    """HS_PUBKEY: the hash algorithm's name and the signature (handle-admin.md §2b)."""

    hash_name: str
    signature: bytes


def decode_signature_response(signed: Buffer) -> SignatureResponse:
    reader = Reader(signed)
    name = reader.get_string(MAX_HASH_NAME_BYTES)
    signature = reader.get_counted_bytes()
    return SignatureResponse(name, signature)


def encode_signature_response(response: SignatureResponse) -> bytes:
    return pack_string(response.hash_name) + pack_counted(response.signature)


class SecretResponse(NamedTuple):
    """HS_SECKEY (handle-admin.md §2a): the form's code byte (None before 2.1: a bare MD5), the MAC, and for
    PBKDF2 the salt, iterations and key length in bits the client chose."""

    code: int | None
    mac: bytes
    salt: bytes = b""
    iterations: int = 0
    key_bits: int = 0


PBKDF2_HMAC_SHA1 = 0x22  #: handle-admin.md §2a: versions 2.7 and later
CODE_MD5 = 0x01  #: handle-admin.md §2a: MD5(secret ‖ nonce ‖ digest ‖ secret)
CODE_SHA1 = 0x02  #: handle-admin.md §2a: 2.1 to 2.6
CODE_SHA256 = 0x03  #: handle-admin.md §2a: same form with SHA-256
CODE_HMAC_SHA1 = 0x12  #: handle-admin.md §2a: HMAC keyed with the secret
CODE_HMAC_SHA256 = 0x13  #: handle-admin.md §2a
MAX_SALT_BYTES = 256  #: a PBKDF2 salt longer than this is not a client's
_FIXED_MAC_BYTES = {CODE_MD5: 16, CODE_SHA1: 20, CODE_SHA256: 32, CODE_HMAC_SHA1: 20, CODE_HMAC_SHA256: 32}


def decode_secret_response(signed: Buffer, version: tuple[int, int]) -> SecretResponse:
    """The secret-key response as the challenge's version has it: below 2.1 a bare 16-byte MD5."""
    if version < (2, 1):
        if len(signed) != 16:
            raise HandleProtocolError(f"secret-key response of {len(signed)} bytes, 16 expected before 2.1")
        return SecretResponse(None, bytes(signed))
    reader = Reader(signed)
    code = reader.get_u8()
    if code == PBKDF2_HMAC_SHA1:
        salt = reader.get_counted_bytes(MAX_SALT_BYTES)
        iterations = reader.get_u32()
        key_bits = reader.get_u32()
        mac = reader.get_counted_bytes()
        if not reader.at_end():
            raise HandleProtocolError("bytes after the PBKDF2 response")
        return SecretResponse(code, mac, salt, iterations, key_bits)
    size = _FIXED_MAC_BYTES.get(code)
    if size is None:
        raise HandleProtocolError(f"unknown secret-key response form 0x{code:02x}")
    mac = reader.get_bytes(size)
    if not reader.at_end():
        raise HandleProtocolError("bytes after the secret-key response")
    return SecretResponse(code, mac)


def encode_secret_response(response: SecretResponse) -> bytes:
    if response.code is None:
        return response.mac
    if response.code == PBKDF2_HMAC_SHA1:
        return b"".join(
            (
                bytes((response.code,)),
                pack_counted(response.salt),
                U32.pack(response.iterations),
                U32.pack(response.key_bits),
                pack_counted(response.mac),
            )
        )
    return bytes((response.code,)) + response.mac


# --- answers -------------------------------------------------------------------------------------


def encode_list_body(handles: Sequence[bytes]) -> bytes:
    """A LIST_HANDLES answer (or one continuation part of it): u32 count · counted handles."""
    return U32.pack(len(handles)) + b"".join(pack_counted(h) for h in handles)


def decode_list_body(body: Buffer) -> list[str]:
    reader = Reader(body)
    count = reader.get_count(COUNT_BYTES, MAX_LIST_ENTRIES)
    return [reader.get_counted_bytes().decode("utf-8", errors="replace") for _ in range(count)]


def encode_created_body(handle: str) -> bytes:
    """A CREATE_HANDLE success: the created handle (handle-admin.md §2 step 4)."""
    return pack_string(handle)


def list_parts(handles: Iterable[bytes], max_part_bytes: int) -> list[list[bytes]]:
    """Handles cut into parts whose list body stays within `max_part_bytes` (CN continuation answers)."""
    parts: list[list[bytes]] = [[]]
    size = COUNT_BYTES
    for handle in handles:
        need = COUNT_BYTES + len(handle)
        if parts[-1] and size + need > max_part_bytes:
            parts.append([])
            size = COUNT_BYTES
        parts[-1].append(handle)
        size += need
    return parts
