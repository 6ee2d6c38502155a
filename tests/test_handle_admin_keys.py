"""Keys of enterprises for the Handle protocol, through every way an operator issues them, proven by using them:
- the operator API: `POST /api/admin/prefixes/P/credential` also keeps the Handle secret key (encrypted with the
  node key) and `POST /api/admin/prefixes/P/public-key` registers RSA, DSA and SM2 keys (PEM, DER, the Handle
  encoding), refusing bad input with a 4xx naming the field and changing nothing;
- the CLI: `idnode prefix credential P` and `--public-key FILE [--index N]`;
- the node key file: mode 0600, no secret in clear in the store, none in `idnode backup`'s copy, and no node key
  there either;
- the security events of Handle writes: a write, a refused write, a wrong answer, an identity beyond its rights
  and a challenge flood each reach the security log queue.
Each key is shown to work by an authenticated CREATE_HANDLE through the AdminService (resolver/admin/handler.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from resolver.admin.challenges import PendingChallenges
from resolver.admin.crypto import Signer, dsa_allowed
from resolver.admin.handler import AdminService, Caller
from resolver.handle.admin import (
    AdminRequest,
    ChallengeAnswer,
    decode_challenge_body,
    encode_admin_request,
    encode_challenge_answer,
)
from resolver.handle.constants import OpCode, ResponseCode
from resolver.handle.message import decode_message, encode_request
from resolver.handle.values import HandleValue
from resolver.security.events import EventKind, SecurityEvents
from resolver.server.limits import ExemptNetworks, SourceRateLimiter
from resolver.service import ResolutionService
from storage.enterprises import add_prefix, set_operator_secret
from storage.eventqueue import SecurityQueue
from storage.handlekeys import NODE_KEY_FILE
from storage.store import Store
from tests.app_helpers import InProcessApp
from tests.handle_admin_helpers import admin_vectors, vector_store
from tests.security_helpers import queued

ROOT = Path(__file__).resolve().parents[1]
V = admin_vectors()
OPERATOR_SECRET = "operator-secret-for-key-tests"
OP = ("operator", OPERATOR_SECRET)
PREFIX = "88.100.9"
IDENTITY = f"{PREFIX}/ADMIN"


def _rsa_pair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def _dsa_pair() -> tuple[bytes, bytes]:
    """The captures' DSA key: (private PEM, public DER)."""
    with dsa_allowed():
        key = serialization.load_der_private_key(bytes.fromhex(V["key_admin_dsa_private"]["hex"]), None)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def _create(handle: str) -> AdminRequest:
    return AdminRequest(OpCode.CREATE_HANDLE, handle, (HandleValue(1, "URL", b"https://example.com/k"),))


async def signed(svc: AdminService, signer: Signer, request: AdminRequest, caller: Caller) -> int:
    """The response code of `request` challenged and answered by `signer` (402 if never challenged)."""
    data = encode_request(request.op_code, encode_admin_request(request), request_id=1,
                          expiration=int(time.time()) + 60)  # fmt: skip
    first = decode_message((await svc.answer(data, caller))[0])
    if first.header.response_code != ResponseCode.AUTHENTICATION_NEEDED:
        return first.header.response_code
    digest, nonce = decode_challenge_body(first.body)
    auth_type, signed_response = signer.sign(nonce, digest[1:])
    answer = encode_request(
        OpCode.RESPONSE_TO_CHALLENGE,
        encode_challenge_answer(ChallengeAnswer(auth_type, signer.identity, signer.index, signed_response)),
        request_id=2, session_id=first.envelope.session_id, expiration=int(time.time()) + 60,
    )  # fmt: skip
    return decode_message((await svc.answer(answer, caller))[0]).header.response_code


def _service(store: Store, tmp: Path, events=None) -> AdminService:
    kwargs = {"events": events} if events is not None else {}
    return AdminService(store, ResolutionService(store, "88.100", b""),
                        challenges=PendingChallenges(tmp / "challenges"), **kwargs)  # fmt: skip


def _clear_secret_in(directory: Path, secret: bytes) -> list[str]:
    """Files under `directory` whose bytes hold `secret` as it is."""
    return [str(p) for p in directory.rglob("*") if p.is_file() and secret in p.read_bytes()]


# -- the operator API ---------------------------------------------------------------------------------------


@pytest.fixture
def app(tmp_path):
    path = tmp_path / "store"
    with Store(path, create=True) as store:
        add_prefix(store, PREFIX, "Key Co")
        set_operator_secret(store, OPERATOR_SECRET)
    running = InProcessApp(path)
    yield running
    running.close()


def _post(app: InProcessApp, path: str, obj=None, auth=OP, raw: bytes | None = None):
    body = raw if raw is not None else (json.dumps(obj).encode() if obj is not None else None)
    return app.call("POST", path, body, auth=auth, headers={"Content-Type": "application/json"})


def test_the_operator_credential_also_issues_the_handle_secret_key(app, tmp_path):
    reply = _post(app, f"/api/admin/prefixes/{PREFIX}/credential")
    assert reply.status == 200, reply.body
    user, secret = reply.json["user"], reply.json["secret"]
    assert user == f"300:{IDENTITY}"
    node_key = tmp_path / "store" / NODE_KEY_FILE
    assert stat.S_IMODE(node_key.stat().st_mode) == 0o600
    assert _clear_secret_in(tmp_path / "store", secret.encode()) == []  # kept encrypted only
    svc = _service(app.store, tmp_path)
    code = app.loop.run_until_complete(
        signed(
            svc,
            Signer(IDENTITY, 300, secret=secret.encode()),
            _create(f"{PREFIX}/BY-SECRET"),
            Caller("10.0.0.5"),
        )
    )
    assert code == ResponseCode.SUCCESS
    assert app.store.get(f"{PREFIX}/BY-SECRET") is not None
    assert app.call("GET", "/api/whoami", auth=(user, secret)).status == 200  # the same identity over HTTP


def _sm2_signer(index: int) -> Signer:
    return Signer(IDENTITY, index, sm2_private_hex=V["key_sm2_private_hex"]["hex"])


@pytest.mark.parametrize("kind", ["rsa-pem", "dsa-der", "sm2-handle", "sm2-pem"])
def test_the_operator_registers_public_keys_that_then_sign_writes(app, tmp_path, kind):
    if kind == "rsa-pem":
        private, public = _rsa_pair()
        key, index, signer = public.decode(), 301, Signer(IDENTITY, 301, private_pem=private)
    elif kind == "dsa-der":
        private, public = _dsa_pair()
        key, index, signer = (
            base64.b64encode(public).decode(),
            302,
            Signer(IDENTITY, 302, private_pem=private),
        )
    elif kind == "sm2-handle":  # id-pointer's HS_PUBKEY encoding, base64
        key = base64.b64encode(bytes.fromhex(V["key_sm2_public_hs_idpointer"]["hex"])).decode()
        index, signer = 303, _sm2_signer(303)
    else:
        key, index, signer = V["key_sm2_public_pem"]["pem"], 310, _sm2_signer(310)
    body = {"key": key} if index != 310 else {"key": key, "index": 310}
    reply = _post(app, f"/api/admin/prefixes/{PREFIX}/public-key", body)
    assert reply.status == 200, reply.body
    assert reply.json["identity"] == f"{index}:{IDENTITY}" and reply.json["index"] == index
    svc = _service(app.store, tmp_path)
    handle = f"{PREFIX}/BY-{kind.upper()}"
    code = app.loop.run_until_complete(signed(svc, signer, _create(handle), Caller("10.0.0.6")))
    assert code == ResponseCode.SUCCESS
    assert app.store.get(handle) is not None
    wrong = Signer(IDENTITY, index, private_pem=_rsa_pair()[0])  # another private key at that index
    assert (
        app.loop.run_until_complete(signed(svc, wrong, _create(f"{handle}-2"), Caller("10.0.0.6")))
        == ResponseCode.AUTHENTICATION_FAILED
    )


@pytest.mark.parametrize(
    "body, status, field",
    [
        (b"[1]", 400, "key"),
        (json.dumps({"key": 7}).encode(), 400, "key"),
        (json.dumps({"key": "bm90IGEga2V5"}).encode(), 400, "key"),  # base64 of "not a key"
        (json.dumps({"key": "%%% not base64"}).encode(), 400, "key"),
        (json.dumps({"key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}).encode(), 400, "key"),
        (json.dumps({"key": V["key_sm2_public_pem"]["pem"], "index": 300}).encode(), 400, "index"),
        (json.dumps({"key": V["key_sm2_public_pem"]["pem"], "index": "301"}).encode(), 400, "index"),
        (json.dumps({"key": V["key_sm2_public_pem"]["pem"], "index": 400}).encode(), 400, "index"),
    ],
    ids=["not-object", "key-not-text", "garbage-key", "bad-base64", "bad-pem", "secret-index", "index-text",
         "index-range"],
)  # fmt: skip
def test_bad_public_keys_are_refused_by_name_and_change_nothing(app, body, status, field):
    before = app.state()
    reply = _post(app, f"/api/admin/prefixes/{PREFIX}/public-key", raw=body)
    assert reply.status == status, reply.body
    assert reply.json["responseCode"] != 1 and reply.json.get("field", field) == field
    assert field in reply.json["message"] or reply.json.get("field") == field
    assert app.state() == before


def test_public_key_registration_needs_the_operator_and_a_known_prefix(app):
    pem = V["key_sm2_public_pem"]["pem"]
    assert _post(app, f"/api/admin/prefixes/{PREFIX}/public-key", {"key": pem}, auth=None).status == 401
    issued = _post(app, f"/api/admin/prefixes/{PREFIX}/credential").json
    enterprise = (issued["user"], issued["secret"])
    assert _post(app, f"/api/admin/prefixes/{PREFIX}/public-key", {"key": pem}, auth=enterprise).status == 403
    unknown = _post(app, "/api/admin/prefixes/88.100.77/public-key", {"key": pem})
    assert unknown.status == 404 and "not known" in unknown.json["message"]


# -- the CLI ------------------------------------------------------------------------------------------------


def idnode(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resolver.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)  # fmt: skip


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data"
    with Store(path, create=True) as store:
        add_prefix(store, PREFIX, "Key Co")
    return path


def test_cli_credential_issues_a_secret_that_works_over_http_and_handle(data, tmp_path):
    issued = idnode("prefix", "credential", PREFIX, "--data", str(data), "--json")
    assert issued.returncode == 0, issued.stderr
    user, secret = json.loads(issued.stdout).values()
    assert user == f"300:{IDENTITY}"
    assert stat.S_IMODE((data / NODE_KEY_FILE).stat().st_mode) == 0o600
    assert _clear_secret_in(data, secret.encode()) == []
    with Store(data) as store:
        svc = _service(store, tmp_path)
        code = asyncio.run(signed(svc, Signer(IDENTITY, 300, secret=secret.encode()), _create(f"{PREFIX}/CLI-1"),
                                  Caller("10.0.0.7")))  # fmt: skip
        svc.close()
    assert code == ResponseCode.SUCCESS
    rotated = idnode("prefix", "credential", PREFIX, "--data", str(data), "--json")
    new_secret = json.loads(rotated.stdout)["secret"]
    assert new_secret != secret
    with Store(data) as store:  # the old secret no longer proves the identity
        svc = _service(store, tmp_path)
        old = asyncio.run(signed(svc, Signer(IDENTITY, 300, secret=secret.encode()), _create(f"{PREFIX}/CLI-2"),
                                 Caller("10.0.0.7")))  # fmt: skip
        new = asyncio.run(signed(svc, Signer(IDENTITY, 300, secret=new_secret.encode()), _create(f"{PREFIX}/CLI-3"),
                                 Caller("10.0.0.7")))  # fmt: skip
        svc.close()
    assert (old, new) == (ResponseCode.AUTHENTICATION_FAILED, ResponseCode.SUCCESS)


@pytest.mark.parametrize("form", ["pem", "der", "handle"])
def test_cli_registers_a_public_key_file(data, tmp_path, form):
    private, public_pem = _rsa_pair()
    path = tmp_path / f"key.{form}"
    if form == "pem":
        path.write_bytes(public_pem)
    elif form == "der":
        path.write_bytes(serialization.load_pem_public_key(public_pem).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    else:
        from resolver.admin.crypto import public_key_from_pem
        from resolver.handle.keys import encode_public_key

        path.write_bytes(encode_public_key(public_key_from_pem(public_pem)))
    done = idnode("prefix", "credential", PREFIX, "--data", str(data), "--public-key", str(path), "--index", "320",
                  "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"identity": f"320:{IDENTITY}", "keyType": "RSA_PUB_KEY"}
    with Store(data) as store:
        svc = _service(store, tmp_path)
        code = asyncio.run(signed(svc, Signer(IDENTITY, 320, private_pem=private), _create(f"{PREFIX}/PK-{form}"),
                                  Caller("10.0.0.8")))  # fmt: skip
        svc.close()
    assert code == ResponseCode.SUCCESS


def test_cli_refuses_a_file_that_is_no_key_and_changes_nothing(data, tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"hello, not a key")
    with Store(data) as store:
        before = store.get(IDENTITY)
    done = idnode("prefix", "credential", PREFIX, "--data", str(data), "--public-key", str(junk))
    assert done.returncode != 0 and "not an RSA, DSA or SM2 public key" in done.stderr
    missing = idnode(
        "prefix", "credential", PREFIX, "--data", str(data), "--public-key", str(tmp_path / "none")
    )
    assert missing.returncode != 0 and "cannot read" in missing.stderr
    with Store(data) as store:
        assert store.get(IDENTITY) == before


def test_a_backup_holds_neither_the_node_key_nor_a_clear_secret(data, tmp_path):
    secret = json.loads(idnode("prefix", "credential", PREFIX, "--data", str(data), "--json").stdout)[
        "secret"
    ]
    assert (data / NODE_KEY_FILE).exists()
    copy = tmp_path / "backup"
    done = idnode("backup", "--data", str(data), str(copy))
    assert done.returncode == 0, done.stderr
    names = [p.name for p in copy.rglob("*")]
    assert "data.mdb" in names and NODE_KEY_FILE not in names
    assert _clear_secret_in(copy, secret.encode()) == []
    assert _clear_secret_in(data, secret.encode()) == []
    # Restored without the key file, the secret cannot be checked: refused, and nothing written.
    with Store(copy) as store:
        svc = _service(store, tmp_path)
        code = asyncio.run(signed(svc, Signer(IDENTITY, 300, secret=secret.encode()), _create(f"{PREFIX}/RESTORED"),
                                  Caller("10.0.0.9")))  # fmt: skip
        svc.close()
        assert code == ResponseCode.AUTHENTICATION_FAILED and store.get(f"{PREFIX}/RESTORED") is None


# -- security events of Handle writes ---------------------------------------------------------------------


@pytest.fixture
def events(tmp_path):
    e = SecurityEvents(SecurityQueue(tmp_path / "queue", max_bytes=1 << 30, max_events=10**6))
    yield e
    e.close()


def test_handle_writes_and_refusals_reach_the_security_log(tmp_path, events):
    store = vector_store(tmp_path / "s")
    svc = _service(store, tmp_path, events)
    rsa_signer = Signer(IDENTITY, 301, private_pem=V["key_admin_rsa_private"]["pem"].encode())
    wrong = Signer(IDENTITY, 300, secret=bytes.fromhex(V["key_wrong_secret"]["hex"]))
    nobody = Signer(f"{PREFIX}/NOBODY", 301, private_pem=V["key_admin_rsa_private"]["pem"].encode())
    caller = Caller("10.1.2.3", 4567)

    async def go():
        return [
            await signed(svc, rsa_signer, _create(f"{PREFIX}/EV-1"), caller),
            await signed(svc, rsa_signer, _create(f"{PREFIX}/EV-1"), caller),  # exists: refused by the policy
            await signed(svc, wrong, _create(f"{PREFIX}/EV-2"), caller),
            await signed(svc, nobody, _create(f"{PREFIX}/EV-3"), caller),
        ]

    codes = asyncio.run(go())
    svc.close()
    assert codes == [ResponseCode.SUCCESS, ResponseCode.HANDLE_ALREADY_EXISTS, ResponseCode.AUTHENTICATION_FAILED,
                     ResponseCode.AUTHENTICATION_FAILED]  # fmt: skip
    got = [(e.kind, e.data) for e in queued(events)]
    writes = [d for k, d in got if k == EventKind.WRITE]
    assert [(w["identity"], w["source"], w["operation"], w["handle"], w["outcome"]) for w in writes] == [
        (f"301:{IDENTITY}", "10.1.2.3:4567", "create", f"{PREFIX}/EV-1", "ok"),
        (f"301:{IDENTITY}", "10.1.2.3:4567", "create", f"{PREFIX}/EV-1", "refused"),
    ]
    failures = [d for k, d in got if k == EventKind.AUTH_FAILURE]
    assert [(f["identity"], f["source"], f["transport"]) for f in failures] == [
        (f"300:{IDENTITY}", "10.1.2.3:4567", "handle"),
        (f"301:{PREFIX}/NOBODY", "10.1.2.3:4567", "handle"),
    ]


def test_an_identity_beyond_its_rights_is_an_auth_failure_event(tmp_path, events):
    """88.100.9/NOBODY proves itself (its key is registered) but no HS_ADMIN names it: 400, and the security log
    hears of it as over HTTP (a request beyond its rights)."""
    store = vector_store(tmp_path / "s")
    from storage.enterprises import register_public_key

    private, public = _rsa_pair()
    from resolver.admin.crypto import public_key_from_pem
    from resolver.handle.keys import encode_public_key

    add_prefix(store, "88.100.10", "Other Co")
    register_public_key(store, "88.100.10", 301, encode_public_key(public_key_from_pem(public)))
    svc = _service(store, tmp_path, events)
    other = Signer("88.100.10/ADMIN", 301, private_pem=private)  # an administrator of another prefix
    code = asyncio.run(signed(svc, other, _create(f"{PREFIX}/NOT-YOURS"), Caller("10.1.2.4", 1)))
    svc.close()
    assert code == ResponseCode.INVALID_ADMIN and store.get(f"{PREFIX}/NOT-YOURS") is None
    failures = [e.data for e in queued(events) if e.kind == EventKind.AUTH_FAILURE]
    assert len(failures) == 1 and failures[0]["identity"] == "301:88.100.10/ADMIN"
    assert "not an administrator" in failures[0]["reason"] and failures[0]["transport"] == "handle"


def test_a_challenge_flood_is_a_rate_limited_event(tmp_path, events):
    store = vector_store(tmp_path / "s")
    svc = _service(store, tmp_path, events)
    svc.limiter = SourceRateLimiter(0.001, 2, ExemptNetworks(()))
    caller = Caller("10.9.9.9", 1)

    async def go():
        codes = []
        for n in range(5):
            data = encode_request(OpCode.CREATE_HANDLE, encode_admin_request(_create(f"{PREFIX}/F-{n}")),
                                  request_id=n + 1, expiration=int(time.time()) + 60)  # fmt: skip
            codes.append(decode_message((await svc.answer(data, caller))[0]).header.response_code)
        return codes

    codes = asyncio.run(go())
    svc.close()
    assert codes == [
        402,
        402,
        ResponseCode.SERVER_TOO_BUSY,
        ResponseCode.SERVER_TOO_BUSY,
        ResponseCode.SERVER_TOO_BUSY,
    ]
    limited = [e.data for e in queued(events) if e.kind == EventKind.RATE_LIMITED]
    assert limited and limited[0]["source"] == "10.9.9.9" and limited[0].get("transport") == "handle-auth"
