"""Certified answers and server keys on the wire: the HS_SIGNED credential of an answer to a CT request, the
bytes it signs, and the public-key encoding of HS_SITE server records and HS_PUBKEY values.

Facts from handle-admin.md § 5 (certified answers, checked against a captured CNRI answer, see
tests/test_certified.py) and § 2b (key encoding). Bytes in, bytes out: no keys are used here, the caller
signs (resolver/serverkey.py). Imports no asyncio, socket, lmdb or cryptography.
"""

from __future__ import annotations

import dataclasses
import struct
from typing import NamedTuple

from .constants import ENVELOPE_BYTES, HEADER_BYTES, MAX_MESSAGE_BYTES
from .errors import HandleProtocolError
from .values import decode_site, encode_site
from .wire import COUNT_BYTES, U32, Buffer, Reader, pack_counted

SIGNED_TYPE = b"HS_SIGNED"  #: § 5: type of the signature credential
RSA_KEY_TYPE = b"RSA_PUB_KEY"  #: § 2b: key encoding name
DSA_KEY_TYPE = b"DSA_PUB_KEY"  #: § 2b: key encoding name
RSA_HASH_NAME = b"SHA-256"  #: § 5: RSA servers sign SHA256withRSA and name it so
DSA_HASH_NAME = b"SHA1"  #: § 5: DSA servers sign SHA1withDSA
SIGN_ENVELOPE_SINCE = (2, 8)  #: § 5: from 2.8 the envelope's four version bytes are signed too
SIGN_IDS_SINCE = (2, 6)  #: § 5: from 2.6 the session id, request id and sequence are signed
MAX_KEY_INTEGERS = 4  #: a DSA key has four (q, p, g, y), RSA two: more is not a key we know
MAX_KEY_INTEGER_BYTES = 2048  #: 16384-bit integers at most: larger is garbage, not a key

_CREDENTIAL_HEAD = struct.Struct(">BBH")  # § 5: version 0, reserved 0, options 0
_KEY_FLAGS = struct.Struct(">H")  # § 2b: u16 flags after the encoding name
_LENGTH_AT = 16  # envelope offset of MessageLength


class PublicKey(NamedTuple):
    """A public key read from its Handle encoding: ``kind`` RSA_PUB_KEY or DSA_PUB_KEY and its integers
    (RSA: exponent, modulus; DSA: q, p, g, y)."""

    kind: bytes
    integers: tuple[int, ...]


class SignedCredential(NamedTuple):
    """The credential section of a certified answer (§ 5)."""

    signer_handle: bytes  # empty: the server itself, with the key of its HS_SITE record
    signer_index: int
    hash_name: bytes
    signature: bytes


def _integer_bytes(value: int) -> bytes:
    """Big-endian two's complement, a leading 0 byte when the top bit is set (§ 2b)."""
    return value.to_bytes(value.bit_length() // 8 + 1, "big")


def encode_rsa_public_key(exponent: int, modulus: int) -> bytes:
    """RSA_PUB_KEY | u16 0 | exponent | modulus | u32 0, as the reference stores it (§ 2b)."""
    return b"".join(
        (
            pack_counted(RSA_KEY_TYPE),
            _KEY_FLAGS.pack(0),
            pack_counted(_integer_bytes(exponent)),
            pack_counted(_integer_bytes(modulus)),
            U32.pack(0),
        )
    )


def encode_dsa_public_key(q: int, p: int, g: int, y: int) -> bytes:
    """DSA_PUB_KEY | u16 0 | q | p | g | y (§ 2b)."""
    parts = [pack_counted(DSA_KEY_TYPE), _KEY_FLAGS.pack(0)]
    parts += [pack_counted(_integer_bytes(n)) for n in (q, p, g, y)]
    return b"".join(parts)


def decode_public_key(data: Buffer) -> PublicKey:
    """An RSA or DSA key in the Handle encoding. The RSA key's trailing u32 0 may be absent (id-pointer
    leaves it out, § 7.3); HandleProtocolError for anything else."""
    reader = Reader(data)
    kind = reader.get_counted_bytes()
    wanted = {RSA_KEY_TYPE: 2, DSA_KEY_TYPE: 4}.get(kind)
    if wanted is None:
        raise HandleProtocolError(f"public key type {kind[:32]!r} is not RSA_PUB_KEY or DSA_PUB_KEY")
    reader.get_bytes(_KEY_FLAGS.size)
    integers = []
    for _ in range(wanted):
        raw = reader.get_counted_bytes()
        if not raw or len(raw) > MAX_KEY_INTEGER_BYTES:
            raise HandleProtocolError(f"{kind.decode()} integer of {len(raw)} bytes")
        integers.append(int.from_bytes(raw, "big", signed=True))
    rest = reader.get_bytes(reader.remaining())
    if rest not in (b"", bytes(COUNT_BYTES)):
        raise HandleProtocolError(f"{len(rest)} unexpected bytes after the {kind.decode()} integers")
    return PublicKey(kind, tuple(integers))


def bytes_to_sign(message: Buffer) -> bytes:
    """What the signature of a certified answer covers (§ 5), from the whole message without its credential
    section (or with an empty one): envelope version bytes (from 2.8), session id, request id and sequence
    (from 2.6), then the header and body."""
    if len(message) < ENVELOPE_BYTES + HEADER_BYTES:
        raise HandleProtocolError(f"{len(message)} bytes cannot hold an envelope and a header")
    (body_length,) = U32.unpack_from(message, ENVELOPE_BYTES + HEADER_BYTES - COUNT_BYTES)
    end = ENVELOPE_BYTES + HEADER_BYTES + body_length
    if end > len(message):
        raise HandleProtocolError(f"BodyLength {body_length} runs past the message")
    version = (message[0], message[1])
    header_and_body = bytes(message[ENVELOPE_BYTES:end])
    if version >= SIGN_ENVELOPE_SINCE:
        return bytes(message[0:4]) + bytes(message[4:16]) + header_and_body
    if version >= SIGN_IDS_SINCE:
        return bytes(message[0:2]) + bytes(message[4:16]) + header_and_body
    return header_and_body


def encode_signed_credential(hash_name: bytes, signature: bytes) -> bytes:
    """The HS_SIGNED credential (without its u32 length): the server itself signs (empty handle, index 0)."""
    signed_data = pack_counted(hash_name) + pack_counted(signature)
    return b"".join(
        (
            _CREDENTIAL_HEAD.pack(0, 0, 0),
            pack_counted(b""),
            U32.pack(0),
            pack_counted(SIGNED_TYPE),
            pack_counted(signed_data),
        )
    )


def decode_signed_credential(credential: Buffer) -> SignedCredential:
    """The parts of an HS_SIGNED credential; HandleProtocolError when it is not one."""
    reader = Reader(credential)
    reader.get_struct(_CREDENTIAL_HEAD)
    signer = reader.get_counted_bytes()
    index = reader.get_u32()
    kind = reader.get_counted_bytes()
    if kind != SIGNED_TYPE:
        raise HandleProtocolError(f"credential type {kind[:32]!r} is not HS_SIGNED")
    inner = Reader(reader.get_counted_bytes())
    hash_name = inner.get_counted_bytes()
    signature = inner.get_counted_bytes()
    return SignedCredential(signer, index, hash_name, signature)


def attach_credential(message: bytes, credential: bytes) -> bytes:
    """``message`` (an answer with an empty credential section) with ``credential`` in that section and
    MessageLength grown to match."""
    if message[-COUNT_BYTES:] != bytes(COUNT_BYTES):
        raise HandleProtocolError("the message already carries a credential")
    length = len(message) - ENVELOPE_BYTES + len(credential)
    if length > MAX_MESSAGE_BYTES:
        raise HandleProtocolError(f"signed answer of {length} bytes exceeds {MAX_MESSAGE_BYTES}")
    return b"".join(
        (
            message[:_LENGTH_AT],
            U32.pack(length),
            message[ENVELOPE_BYTES:-COUNT_BYTES],
            U32.pack(len(credential)),
            credential,
        )
    )


def with_server_key(site_data: bytes, public_key_hs: bytes) -> bytes:
    """HS_SITE data with `public_key_hs` as every server's key (a cluster's members share one key file: copy
    server_key.pem to each). Unchanged when it cannot be read."""
    try:
        site = decode_site(site_data)
    except HandleProtocolError:
        return site_data
    servers = tuple(dataclasses.replace(server, public_key=public_key_hs) for server in site.servers)
    return encode_site(dataclasses.replace(site, servers=servers))
