"""The node's server key pair: made at first start, kept as a 0600 PEM file beside the store, published in the
node's HS_SITE server record, and used to sign answers to certified (CT) requests.

Why a file beside the store and not in it: the private key must never be served or copied into a backup
(`idnode backup` copies data.mdb only); the operator backs it up on purpose, or rotates it. `idnode key
rotate` writes a new key in place (the previous one kept as server_key.pem.previous); serving workers see
the change within a housekeeping pass (`ServerKey.reloaded`) and publish and sign with the new key. Clients
that cached the old HS_SITE (TTL of the prefix handle) fail to verify until they fetch it again: rotate in
a quiet hour.

RSA-2048 signing SHA256withRSA, named "SHA-256" in the credential (handle-admin.md § 5): every Handle client
verifies it. A signature costs about a millisecond of CPU, so only CT requests pay it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from resolver.handle.signature import (
    RSA_HASH_NAME,
    attach_credential,
    bytes_to_sign,
    encode_rsa_public_key,
    encode_signed_credential,
)

KEY_FILE = "server_key.pem"  #: beside data.mdb; never inside the store, so never in a backup
PREVIOUS_SUFFIX = ".previous"  #: `idnode key rotate` keeps the key it replaced under this suffix
KEY_BITS = 2048  #: RSA size: what CNRI's tools generate, and a signature in about a millisecond
PUBLIC_EXPONENT = 65537  #: the usual RSA exponent
KEY_MODE = 0o600  #: readable by the node's user only


class ServerKeyError(Exception):
    """The key file cannot be read, written, or is not an RSA private key."""


def key_path(data_dir: Path) -> Path:
    return Path(data_dir) / KEY_FILE


def _new_key_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=KEY_BITS)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write_temp(directory: Path, pem: bytes) -> str:
    fd, tmp = tempfile.mkstemp(prefix=".server_key.", dir=directory)
    try:
        os.fchmod(fd, KEY_MODE)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def ensure_key(data_dir: Path) -> Path:
    """The key file, created when missing. Safe when several processes start at once: the new key is
    linked into place only if no other process put one there first."""
    path = key_path(data_dir)
    if path.exists():
        return path
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    tmp = _write_temp(Path(data_dir), _new_key_pem())
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process made it first: use theirs
    except OSError as exc:
        raise ServerKeyError(f"cannot create {path}: {exc}") from None
    finally:
        os.unlink(tmp)
    return path


def rotate_key(data_dir: Path) -> Path:
    """Replace the key with a new one (atomically); the old one is kept as server_key.pem.previous."""
    path = key_path(data_dir)
    if path.exists():
        previous = path.with_name(KEY_FILE + PREVIOUS_SUFFIX)
        tmp_prev = _write_temp(Path(data_dir), path.read_bytes())
        os.replace(tmp_prev, previous)
    tmp = _write_temp(Path(data_dir), _new_key_pem())
    os.replace(tmp, path)
    return path


class ServerKey:
    """The loaded key: its HS_SITE encoding and answer signing."""

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            stat = self.path.stat()
            pem = self.path.read_bytes()
            key = serialization.load_pem_private_key(pem, password=None)
        except (OSError, ValueError) as exc:
            raise ServerKeyError(f"cannot read the server key {self.path}: {exc}") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ServerKeyError(f"{self.path}: not an RSA private key")
        if stat.st_mode & 0o077:
            raise ServerKeyError(
                f"{self.path}: readable by others (mode {stat.st_mode & 0o777:o}); chmod 600 it"
            )
        self._key = key
        self._stamp = (stat.st_ino, stat.st_mtime_ns)
        numbers = key.public_key().public_numbers()
        #: the public key as HS_SITE and HS_PUBKEY carry it (handle-admin.md § 2b)
        self.public_key_hs = encode_rsa_public_key(numbers.e, numbers.n)

    @classmethod
    def for_store(cls, data_dir: Path) -> ServerKey:
        """The node's key, created at first start."""
        return cls(ensure_key(data_dir))

    def public_pem(self) -> bytes:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def reloaded(self) -> ServerKey | None:
        """A new ServerKey when the file was replaced (rotation) since this one was read, else None."""
        try:
            stat = self.path.stat()
        except OSError:
            return None
        if (stat.st_ino, stat.st_mtime_ns) == self._stamp:
            return None
        return ServerKey(self.path)

    def sign_answer(self, answer: bytes) -> bytes:
        """``answer`` (with an empty credential section) certified: the HS_SIGNED credential attached."""
        signature = self._key.sign(bytes_to_sign(answer), padding.PKCS1v15(), hashes.SHA256())
        return attach_credential(answer, encode_signed_credential(RSA_HASH_NAME, signature))
