"""The identities of the captured Handle administration vectors (tests/data/handle-admin-v2.10.json), set up in a
store: prefix 88.100.9 with 88.100.9/ADMIN holding the secret key at 300 (encrypted with the node key, as
`idnode prefix credential` keeps it), the RSA key at 301, DSA at 302 and SM2 at 303, registered through
`register_public_key`; and an AdminService over it whose challenges can use the captured session ids and nonces."""

from __future__ import annotations

import json
from pathlib import Path

from resolver.admin.challenges import PendingChallenges
from resolver.admin.crypto import public_key_from_pem
from resolver.admin.handler import AdminService
from resolver.handle.keys import encode_public_key
from resolver.service import ResolutionService
from storage.enterprises import add_prefix, admin_identity_key, register_public_key
from storage.handlekeys import encrypt_secret, load_node_key, secret_key_name
from storage.store import Store

DATA = Path(__file__).parent / "data" / "handle-admin-v2.10.json"
PREFIX = "88.100.9"
IDENTITY = "88.100.9/ADMIN"


def admin_vectors() -> dict[str, dict]:
    return {v["name"]: v for v in json.loads(DATA.read_text())}


def vector_bytes(name: str) -> bytes:
    return bytes.fromhex(admin_vectors()[name]["hex"])


def set_secret(store: Store, prefix: str, index: int, secret: bytes) -> None:
    """Put an HS_SECKEY as `idnode prefix credential` keeps it, with a chosen secret (the vectors' own)."""
    node_key = load_node_key(store.path, create=True)
    identity_key = admin_identity_key(prefix)
    with store.env.begin(write=True, db=store.enterprises_db) as txn:
        txn.put(secret_key_name(identity_key, index), encrypt_secret(node_key, identity_key, index, secret))


def vector_store(directory: Path, rsa_pem: str = "key_admin_rsa_public") -> Store:
    """The CNRI captures used one RSA key (`key_admin_rsa_public`), the SDK runs another (`key_rsa_public_pem`)."""
    v = admin_vectors()
    store = Store(directory, create=True)
    add_prefix(store, PREFIX, "Vector Co")
    set_secret(store, PREFIX, 300, bytes.fromhex(v["key_admin_secret"]["hex"]))
    rsa = public_key_from_pem(v[rsa_pem]["pem"].encode())
    register_public_key(store, PREFIX, 301, encode_public_key(rsa))
    dsa = public_key_from_pem(v["key_admin_dsa_public"]["pem"].encode())
    register_public_key(store, PREFIX, 302, encode_public_key(dsa))
    register_public_key(store, PREFIX, 303, bytes.fromhex(v["key_sm2_public_hs_idpointer"]["hex"]))
    return store


def admin_service(store: Store, now_s: float, sessions=None, nonces=None, **kwargs) -> AdminService:
    challenges = PendingChallenges(
        store.path / "challenges", clock=lambda: now_s,
        new_session=(lambda: next(sessions)) if sessions is not None else None,
        new_nonce=(lambda: next(nonces)) if nonces is not None else None,
    )  # fmt: skip
    service = ResolutionService(store, "88.100", b"")
    return AdminService(store, service, challenges=challenges, clock=lambda: now_s, **kwargs)
