"""Keys the Handle protocol authenticates enterprises with, for their identity `<prefix>/ADMIN`.

- A secret key (HS_SECKEY) must be usable by the node: the client picks the PBKDF2 salt of every answer
  (handle-admin.md §2a), so a stored hash cannot check it. It is kept encrypted (AES-256-GCM, the identity and
  index as associated data, so a blob cannot be moved to another identity) with the node key, a random 32-byte
  file beside the store (`handle-secrets.key`, mode 0600). The file is never in the store, so neither a backup
  nor the write log holds a secret in clear; a cluster member needs a copy of the file to check secrets.
  The encrypted blob lives in the `enterprises` database (`hskey/<IDENTITY>:<index>`), which no protocol serves.
- A public key (HS_PUBKEY: RSA, DSA or SM2) is public by nature: it is a value of the `<prefix>/ADMIN` record at
  its index, resolvable by anyone, as the reference server keeps it.

Both are written by ISSUE_CREDENTIAL entries (storage/enterprises.py), audited there. Imports no servers.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NODE_KEY_FILE = "handle-secrets.key"  #: beside data.mdb; never copied by `idnode backup`
NODE_KEY_BYTES = 32  #: AES-256
GCM_NONCE_BYTES = 12  #: the GCM standard nonce
HS_SECKEY_PREFIX = b"hskey/"  #: enterprises-database key prefix of encrypted secret keys
_AAD = b"idnode HS_SECKEY v1 "


class NodeKeyError(Exception):
    """The node key file cannot be read or made, or a secret cannot be decrypted with it."""


def node_key_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / NODE_KEY_FILE


def load_node_key(data_dir: str | Path, create: bool = False) -> bytes | None:
    """The node key of the store in `data_dir` (made, mode 0600, when absent and `create`); None when absent."""
    path = node_key_path(data_dir)
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        if not create:
            return None
        key = secrets.token_bytes(NODE_KEY_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made by another process meanwhile: use that one
            return load_node_key(data_dir)
        with os.fdopen(fd, "wb") as out:
            out.write(key)
            out.flush()
            os.fsync(out.fileno())
        return key
    except OSError as exc:
        raise NodeKeyError(f"cannot read the node key {path}: {exc.strerror or exc}") from None
    if len(key) != NODE_KEY_BYTES:
        raise NodeKeyError(f"{path} is {len(key)} bytes, not a {NODE_KEY_BYTES}-byte node key")
    return key


def secret_key_name(identity_key: bytes, index: int) -> bytes:
    """Where the encrypted HS_SECKEY of `identity_key` (the stored handle key) at `index` is kept."""
    return HS_SECKEY_PREFIX + identity_key + b":" + str(index).encode()


def encrypt_secret(node_key: bytes, identity_key: bytes, index: int, secret: bytes) -> bytes:
    nonce = secrets.token_bytes(GCM_NONCE_BYTES)
    aad = _AAD + secret_key_name(identity_key, index)
    return nonce + AESGCM(node_key).encrypt(nonce, secret, aad)


def decrypt_secret(node_key: bytes, identity_key: bytes, index: int, blob: bytes) -> bytes:
    aad = _AAD + secret_key_name(identity_key, index)
    try:
        return AESGCM(node_key).decrypt(blob[:GCM_NONCE_BYTES], blob[GCM_NONCE_BYTES:], aad)
    except (InvalidTag, ValueError) as exc:
        raise NodeKeyError(
            "an HS_SECKEY cannot be decrypted with this node's key (the store came from a node with another "
            f"{NODE_KEY_FILE}?)"
        ) from exc
