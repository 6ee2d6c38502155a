"""The Handle encoding of public keys, as HS_PUBKEY values and HS_SITE server records carry them
(handle-admin.md §2b, §7.3): a counted key-type name, u16 flags, then counted big-endian integers
(RSA_PUB_KEY: exponent, modulus; DSA_PUB_KEY: q, p, g, y) or, for SM2_PUB_KEY as id-pointer writes it, the
counted text of a PEM SubjectPublicKeyInfo (DER accepted too). CNRI appends a u32 0 after an RSA key; id-pointer
does not; both read. Pure data: no cryptography, asyncio, socket or lmdb.
"""

from __future__ import annotations

from typing import NamedTuple

from .errors import InvalidValueError
from .wire import U16, U32, Buffer, Reader, pack_counted, pack_string

RSA_KEY_TYPE = "RSA_PUB_KEY"  #: handle-admin.md §2b
DSA_KEY_TYPE = "DSA_PUB_KEY"  #: handle-admin.md §2b
SM2_KEY_TYPE = "SM2_PUB_KEY"  #: handle-admin.md §7.3 (id-pointer's encoding)
MAX_KEY_INTEGER_BYTES = 2049  #: RSA-16384 modulus with its sign byte; longer is not a key
MAX_KEY_TEXT_BYTES = 4096  #: a PEM SubjectPublicKeyInfo of any curve fits


class PublicKeyData(NamedTuple):
    """A decoded HS_PUBKEY: its type and integers (RSA: e, n; DSA: q, p, g, y) or, for SM2, the SPKI bytes."""

    key_type: str
    integers: tuple[int, ...] = ()
    spki: bytes = b""


def _int_bytes(n: int) -> bytes:
    """Big-endian two's complement, as Java's BigInteger.toByteArray (a leading 00 when the top bit is set)."""
    return n.to_bytes(n.bit_length() // 8 + 1, "big")


def decode_public_key(data: Buffer) -> PublicKeyData:
    """InvalidValueError for anything that is not one of the three encodings."""
    try:
        reader = Reader(data)
        key_type = reader.get_string(64)
        reader.get_u16()  # flags: 0 in every encoder seen
        if key_type == RSA_KEY_TYPE:
            e, n = (int.from_bytes(reader.get_counted_bytes(MAX_KEY_INTEGER_BYTES), "big") for _ in range(2))
            if reader.remaining() == 4:
                reader.get_u32()  # CNRI's trailing field
            integers: tuple[int, ...] = (e, n)
        elif key_type == DSA_KEY_TYPE:
            integers = tuple(int.from_bytes(reader.get_counted_bytes(MAX_KEY_INTEGER_BYTES), "big") for _ in range(4))
        elif key_type == SM2_KEY_TYPE:
            return PublicKeyData(key_type, spki=reader.get_counted_bytes(MAX_KEY_TEXT_BYTES))
        else:
            raise InvalidValueError(f"HS_PUBKEY of unknown key type {key_type[:32]!r}")
    except InvalidValueError:
        raise
    except Exception as exc:  # the bounded reader's error, or a bad string
        raise InvalidValueError(f"malformed HS_PUBKEY: {exc}") from None
    if not reader.at_end():
        raise InvalidValueError(f"{reader.remaining()} bytes after the HS_PUBKEY key")
    return PublicKeyData(key_type, integers)


def encode_public_key(key: PublicKeyData, trailing_zero: bool = True) -> bytes:
    """The HS_PUBKEY data of `key` (RSA with CNRI's trailing u32 0 unless `trailing_zero` is False)."""
    head = pack_string(key.key_type) + U16.pack(0)
    if key.key_type == SM2_KEY_TYPE:
        return head + pack_counted(key.spki)
    body = b"".join(pack_counted(_int_bytes(n)) for n in key.integers)
    if key.key_type == RSA_KEY_TYPE and trailing_zero:
        body += U32.pack(0)
    return head + body
