"""Checking (and, for idnode's own client, making) the answers to a Handle challenge (handle-admin.md §2a, §2b,
§7.3): secret-key MACs in every form the reference verifier accepts (PBKDF2-HMAC-SHA1 first), and public-key
signatures: RSA (SHA-256, also SHA-1), DSA (SHA-1, also SHA-256) through `cryptography`, and SM2 with SM3 as
id-pointer signs (user id = the identity handle, message = SM3(nonce ‖ digest)) through `gmssl`.

What is signed is always nonce ‖ request digest (the digest without its hash-type byte). Imports no asyncio,
socket or lmdb; only resolver/admin and the client use it.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import hmac
import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature
from cryptography.utils import CryptographyDeprecationWarning
from gmssl import sm2 as gm_sm2
from gmssl import sm3 as gm_sm3

from resolver.handle.admin import (
    CODE_HMAC_SHA1,
    CODE_HMAC_SHA256,
    CODE_MD5,
    CODE_SHA1,
    CODE_SHA256,
    PBKDF2_HMAC_SHA1,
    SecretResponse,
    SignatureResponse,
)
from resolver.handle.keys import DSA_KEY_TYPE, RSA_KEY_TYPE, SM2_KEY_TYPE, PublicKeyData

with warnings.catch_warnings():  # cryptography 51+ warns on every name of its dsa module (see dsa_allowed)
    warnings.filterwarnings("ignore", "DSA", CryptographyDeprecationWarning)
    from cryptography.hazmat.primitives.asymmetric.dsa import (
        DSAParameterNumbers,
        DSAPrivateKey,
        DSAPublicKey,
        DSAPublicNumbers,
    )

PBKDF2_ITERATIONS = 10_000  #: what the reference client uses (handle-admin.md §2a)
PBKDF2_KEY_BITS = 160  #: handle-admin.md §2a: one SHA-1 output
MAX_PBKDF2_ITERATIONS = (
    1_000_000  #: the client picks the count; above this an answer could pin a worker's CPU
)
MAX_PBKDF2_KEY_BITS = 1024  #: the derived key is an HMAC key; longer buys nothing and costs time
PRIVATE_KEYS_CACHED = 16  #: a client signs with a few identities; each loaded key is kept
SM2_DEFAULT_USER_ID = b"1234567812345678"  #: GM/T 0009 default, tried after the identity handle
# GM/T 0003 sm2p256v1: the curve's OID in DER, and a, b, G for Z_A.
SM2_CURVE_OID_DER = bytes.fromhex("06082a811ccf5501822d")
_SM2 = gm_sm2.default_ecc_table
_SHA = {"SHA-256": hashes.SHA256, "SHA256": hashes.SHA256, "SHA-1": hashes.SHA1, "SHA1": hashes.SHA1}


@contextlib.contextmanager
def dsa_allowed() -> Iterator[None]:
    """Build and use DSA keys without cryptography's deprecation warning (51+ warns on every DSA key): DSA is
    one of the Handle protocol's two public-key types (HS_PUBKEY, handle-admin.md), still in enterprises' older
    keys, and the node keeps verifying them. A cryptography that drops DSA fails the DSA tests, not quietly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "DSA", CryptographyDeprecationWarning)
        yield


class KeyError_(ValueError):  # noqa: N801 - "KeyError" is a builtin with another meaning
    """A key cannot be read or is not of a kind this node verifies."""


# --- secret keys -----------------------------------------------------------------------------------


def secret_mac(secret: bytes, response: SecretResponse, nonce: bytes, digest: bytes) -> bytes:
    """The MAC `response`'s form calls for, computed with `secret` (what the verifier compares)."""
    data = nonce + digest
    code = response.code
    if code == PBKDF2_HMAC_SHA1:
        if not 0 < response.iterations <= MAX_PBKDF2_ITERATIONS:
            raise KeyError_(f"PBKDF2 iterations {response.iterations} outside 1..{MAX_PBKDF2_ITERATIONS}")
        if not 0 < response.key_bits <= MAX_PBKDF2_KEY_BITS or response.key_bits % 8:
            raise KeyError_(f"PBKDF2 key length {response.key_bits} bits is not one this node derives")
        key = hashlib.pbkdf2_hmac("sha1", secret, response.salt, response.iterations, response.key_bits // 8)
        return hmac.new(key, data, hashlib.sha1).digest()
    if code == CODE_HMAC_SHA1:
        return hmac.new(secret, data, hashlib.sha1).digest()
    if code == CODE_HMAC_SHA256:
        return hmac.new(secret, data, hashlib.sha256).digest()
    wrapped = secret + data + secret
    if code == CODE_SHA256:
        return hashlib.sha256(wrapped).digest()
    if code == CODE_SHA1:
        return hashlib.sha1(wrapped, usedforsecurity=False).digest()
    if code in (CODE_MD5, None):
        return hashlib.md5(wrapped, usedforsecurity=False).digest()
    raise KeyError_(f"unknown secret-key form {code}")


def verify_secret(secret: bytes, response: SecretResponse, nonce: bytes, digest: bytes) -> bool:
    return hmac.compare_digest(secret_mac(secret, response, nonce, digest), response.mac)


def pbkdf2_response(secret: bytes, nonce: bytes, digest: bytes, salt: bytes | None = None) -> SecretResponse:
    """A client's PBKDF2-HMAC-SHA1 answer (random salt unless given)."""
    template = SecretResponse(PBKDF2_HMAC_SHA1, b"", salt or secrets.token_bytes(16), PBKDF2_ITERATIONS,
                              PBKDF2_KEY_BITS)  # fmt: skip
    return template._replace(mac=secret_mac(secret, template, nonce, digest))


# --- public keys -----------------------------------------------------------------------------------


def sm2_point_of_spki(spki: bytes) -> bytes:
    """The 65-byte uncompressed point of an SM2 SubjectPublicKeyInfo (PEM text or DER), or of a bare point."""
    raw = spki.strip()
    if raw.startswith(b"-----BEGIN"):
        body = b"".join(line for line in raw.splitlines() if line and not line.startswith(b"-----"))
        raw = base64.b64decode(body)
    if len(raw) == 65 and raw[0] == 4:
        return raw
    if SM2_CURVE_OID_DER not in raw or len(raw) < 65 or raw[-65] != 4:
        raise KeyError_("not an SM2 (sm2p256v1) public key")
    return raw[-65:]


def public_key_from_pem(text: bytes) -> PublicKeyData:
    """A PEM or DER public key (RSA, DSA, or SM2 on sm2p256v1) as Handle key data."""
    try:
        return sm2_public_key(sm2_point_of_spki(text))
    except (KeyError_, ValueError):
        pass
    try:
        with dsa_allowed():
            key = (serialization.load_pem_public_key if text.strip().startswith(b"-----") else
                   serialization.load_der_public_key)(text)  # fmt: skip
    except (ValueError, TypeError) as exc:
        raise KeyError_(f"not a public key this node reads (RSA, DSA or SM2, PEM or DER): {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        return PublicKeyData(RSA_KEY_TYPE, (numbers.e, numbers.n))
    if isinstance(key, DSAPublicKey):
        with dsa_allowed():
            numbers = key.public_numbers()
        p = numbers.parameter_numbers
        return PublicKeyData(DSA_KEY_TYPE, (p.q, p.p, p.g, numbers.y))
    raise KeyError_(f"{type(key).__name__} keys are not verified here (RSA, DSA or SM2)")


#: Where a key of each type goes in `<prefix>/ADMIN` unless an index is named (as the captures, handle-admin.md)
DEFAULT_KEY_INDEX = {RSA_KEY_TYPE: 301, DSA_KEY_TYPE: 302, SM2_KEY_TYPE: 303}


def read_public_key(raw: bytes) -> PublicKeyData:
    """An enterprise's public key as given to `idnode prefix credential --public-key` or the operator API: PEM or
    DER (RSA, DSA, SM2) or the Handle HS_PUBKEY encoding, checked to be a key this node can verify with;
    KeyError_ saying why not otherwise."""
    from resolver.handle.errors import HandleProtocolError
    from resolver.handle.keys import decode_public_key

    try:
        key = public_key_from_pem(raw)
    except KeyError_ as first:
        try:
            key = decode_public_key(raw)
        except HandleProtocolError as exc:
            raise KeyError_(
                f"not an RSA, DSA or SM2 public key in PEM, DER or the Handle encoding ({first}; {exc})"
            ) from None
    try:
        if key.key_type == SM2_KEY_TYPE:
            sm2_point_of_spki(key.spki)
        elif key.key_type == RSA_KEY_TYPE:
            rsa.RSAPublicNumbers(*key.integers).public_key()
        else:
            q, p, g, y = key.integers
            with dsa_allowed():
                DSAPublicNumbers(y, DSAParameterNumbers(p, q, g)).public_key()
    except (ValueError, TypeError) as exc:
        raise KeyError_(f"the {key.key_type} cannot be used to verify: {exc}") from None
    return key


def sm2_public_key(point: bytes) -> PublicKeyData:
    """Handle key data for an SM2 point, in id-pointer's encoding (PEM text of the SPKI)."""
    spki_der = bytes.fromhex("3059301306072a8648ce3d0201") + SM2_CURVE_OID_DER + b"\x03\x42\x00" + point
    pem = base64.encodebytes(spki_der).replace(b"\n", b"\r\n")
    return PublicKeyData(
        SM2_KEY_TYPE, spki=b"-----BEGIN PUBLIC KEY-----\r\n" + pem + b"-----END PUBLIC KEY-----\r\n"
    )


def _sm3(data: bytes) -> bytes:
    return bytes.fromhex(gm_sm3.sm3_hash(list(data)))


def _sm2_e(point: bytes, user_id: bytes, message: bytes) -> bytes:
    """e = SM3(Z_A ‖ message), Z_A = SM3(ENTL ‖ ID ‖ a ‖ b ‖ xG ‖ yG ‖ xA ‖ yA) (GM/T 0003.2)."""
    z = b"".join((
        (len(user_id) * 8).to_bytes(2, "big"), user_id, bytes.fromhex(_SM2["a"]), bytes.fromhex(_SM2["b"]),
        bytes.fromhex(_SM2["g"]), point[1:],
    ))  # fmt: skip
    return _sm3(_sm3(z) + message)


def _sm2_crypt(point: bytes, private_hex: str = "") -> gm_sm2.CryptSM2:
    crypt = gm_sm2.CryptSM2(private_key=private_hex, public_key="00")
    crypt.public_key = point[1:].hex()  # set directly: gmssl's constructor lstrips every leading '0'/'4'
    return crypt


def _raw_sm2_signature(signature: bytes) -> str:
    """r‖s as gmssl's hex, from DER (what id-pointer sends) or 64 raw bytes."""
    if len(signature) == 64:
        return signature.hex()
    r, s = decode_dss_signature(signature)
    return f"{r:064x}{s:064x}"


def verify_signature(key: PublicKeyData, response: SignatureResponse, signed: bytes, identity: str) -> bool:
    """Whether `response` signs `signed` (nonce ‖ digest) with `key`; False for a wrong or unreadable signature,
    KeyError_ for an algorithm this key cannot be used with."""
    name = response.hash_name.upper()
    signature = response.signature
    if key.key_type == SM2_KEY_TYPE:
        if name != "SM3":
            raise KeyError_(f"an SM2 key signs with SM3, not {response.hash_name!r}")
        point = sm2_point_of_spki(key.spki)
        try:
            raw = _raw_sm2_signature(signature)
        except ValueError:
            return False
        crypt = _sm2_crypt(point)
        message = _sm3(signed)  # id-pointer hands the signer SM3(nonce ‖ digest), handle-admin.md §7.3
        for user_id in (identity.encode(), SM2_DEFAULT_USER_ID):
            if crypt.verify(raw, _sm2_e(point, user_id, message)):
                return True
        return False
    algorithm = _SHA.get(name)
    if algorithm is None:
        raise KeyError_(
            f"hash {response.hash_name[:32]!r} is not one this node verifies (SHA-256, SHA1, SM3)"
        )
    try:
        if key.key_type == RSA_KEY_TYPE:
            e, n = key.integers
            public = rsa.RSAPublicNumbers(e, n).public_key()
            public.verify(signature, signed, padding.PKCS1v15(), algorithm())
        elif key.key_type == DSA_KEY_TYPE:
            q, p, g, y = key.integers
            with dsa_allowed():
                public = DSAPublicNumbers(y, DSAParameterNumbers(p, q, g)).public_key()
                public.verify(signature, signed, algorithm())
        else:
            raise KeyError_(f"key type {key.key_type!r} is not verified here")
    except InvalidSignature:
        return False
    except ValueError as exc:  # a key the library refuses (too small, malformed numbers)
        raise KeyError_(f"the stored {key.key_type} cannot be used: {exc}") from None
    return True


# --- signing, for idnode's own client ---------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """An identity and how it answers a challenge: a secret (HS_SECKEY), a PEM private key (RSA or DSA), or an
    SM2 private scalar (hex). `sign(nonce, digest)` -> (auth type, signed response bytes)."""

    identity: str
    index: int
    secret: bytes = b""
    private_pem: bytes = b""
    sm2_private_hex: str = ""

    def sign(self, nonce: bytes, digest: bytes) -> tuple[str, bytes]:
        from resolver.handle.admin import encode_secret_response, encode_signature_response

        if self.secret:
            return "HS_SECKEY", encode_secret_response(pbkdf2_response(self.secret, nonce, digest))
        data = nonce + digest
        if self.sm2_private_hex:
            crypt = gm_sm2.CryptSM2(private_key=self.sm2_private_hex, public_key="00")
            point = bytes.fromhex("04" + crypt._kg(int(self.sm2_private_hex, 16), _SM2["g"]))
            crypt = _sm2_crypt(point, self.sm2_private_hex)
            e = _sm2_e(point, self.identity.encode(), _sm3(data))
            raw = None
            while raw is None:
                raw = crypt.sign(e, secrets.token_hex(32))
            der = encode_dss_signature(int(raw[:64], 16), int(raw[64:], 16))
            return "HS_PUBKEY", encode_signature_response(SignatureResponse("SM3", der))
        key = _private_key(self.private_pem)
        if isinstance(key, rsa.RSAPrivateKey):
            signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
            return "HS_PUBKEY", encode_signature_response(SignatureResponse("SHA-256", signature))
        if isinstance(key, DSAPrivateKey):
            with dsa_allowed():
                signature = key.sign(data, hashes.SHA1())
            return "HS_PUBKEY", encode_signature_response(SignatureResponse("SHA1", signature))
        raise KeyError_(f"{type(key).__name__} keys cannot sign here")


@functools.lru_cache(maxsize=PRIVATE_KEYS_CACHED)
def _private_key(pem: bytes):
    """A PEM private key, loaded once: loading checks the key (~35 ms for RSA-2048), signing takes ~1 ms."""
    with dsa_allowed():
        return serialization.load_pem_private_key(pem, None)
