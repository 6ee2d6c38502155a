"""Handle administration (resolver/admin): the captured exchanges of the reference client and of both national
SDKs replay byte for byte (with their session ids and nonces), writes land in the store through the write
policy, and every bad input of issue 13 item 6 is refused without a change."""

from __future__ import annotations

import asyncio

import pytest

from resolver.admin.crypto import Signer
from resolver.admin.handler import Caller
from resolver.handle.admin import (
    AdminRequest,
    ChallengeAnswer,
    Login,
    decode_challenge_body,
    encode_admin_request,
    encode_challenge_answer,
    encode_login,
)
from resolver.handle.constants import OpCode, ResponseCode
from resolver.handle.message import decode_message, encode_request
from resolver.handle.values import HandleValue
from tests.handle_admin_helpers import admin_service, admin_vectors, vector_bytes, vector_store

CNRI_OPS = ("create_handle_88_100_9_auth_{k}", "add_value_idx_2_email", "modify_value_idx_1_url",
            "remove_value_idx_2", "list_handles_0_na_88_100_9", "delete_handle_88_100_9_auth_{k}")  # fmt: skip


def run(coro):
    return asyncio.run(coro)


def challenge_of(name: str):
    message = decode_message(vector_bytes(name))
    return message, decode_challenge_body(message.body).nonce


@pytest.mark.parametrize("kind", ["sec", "rsa", "dsa"])
def test_reference_client_exchanges_replay_byte_for_byte(tmp_path, kind):
    """CNRI's client, sessionless: each request is challenged, answered on a new connection, then performed; our
    challenge and final answer are the reference server's bytes (LIST_HANDLES lists what this store holds)."""
    store = vector_store(tmp_path / "s")

    async def go():
        for op in CNRI_OPS:
            base = f"cnri_nosess_{kind}_{op.format(k=kind)}"
            challenge, nonce = challenge_of(base + "_02_s2c")
            svc = admin_service(store, challenge.header.expiration - 43_200, iter([challenge.envelope.session_id]),
                                iter([nonce]))  # fmt: skip
            assert await svc.answer(vector_bytes(base + "_01_c2s"), Caller("127.0.0.1", 40001)) == [
                vector_bytes(base + "_02_s2c")
            ]
            final = await svc.answer(vector_bytes(base + "_03_c2s"), Caller("127.0.0.1", 40002))
            if "list_handles" in op:
                got, want = decode_message(final[0]), decode_message(vector_bytes(base + "_04_s2c"))
                assert got.header._replace(body_length=0) == want.header._replace(body_length=0)
                assert f"88.100.9/AUTH-{kind.upper()}".encode() in got.body
            else:
                assert final == [vector_bytes(base + "_04_s2c")], base
        return store.get(f"88.100.9/AUTH-{kind.upper()}")

    assert run(go()) is None  # created, changed, then deleted again by the captured sequence


@pytest.mark.parametrize("run_name", ["idpointer_sm2", "idpointer_rsa", "idsdk_rsa"])
def test_national_sdk_login_and_writes_replay_byte_for_byte(tmp_path, run_name):
    """Op 2001 challenged, answered (RSA SHA-256 or SM2/SM3), the identity bound to the connection, then
    create/add/modify/remove/delete without credentials on it: every answer is the one both SDKs accepted."""
    store = vector_store(tmp_path / "s", rsa_pem="key_rsa_public_pem")
    challenge, nonce = challenge_of(f"mock_{run_name}_login_challenge")

    async def go():
        svc = admin_service(store, challenge.header.expiration - 43_200, iter([challenge.envelope.session_id]),
                            iter([nonce]))  # fmt: skip
        caller = Caller("127.0.0.1", 40003)
        assert await svc.answer(vector_bytes(f"{run_name}_login_request"), caller) == [
            vector_bytes(f"mock_{run_name}_login_challenge")
        ]
        assert await svc.answer(vector_bytes(f"{run_name}_challenge_answer_request"), caller) == [
            vector_bytes(f"mock_{run_name}_login_success")
        ]
        assert caller.identity is not None
        for step in ("create", "add", "modify", "remove"):
            answer = await svc.answer(vector_bytes(f"{run_name}_{step}_request"), caller)
            assert answer == [vector_bytes(f"mock_{run_name}_{step}_answer")], step
        created = decode_message(vector_bytes(f"{run_name}_create_request")).body[4:].split(b"\x00")[0]
        assert store.get(created) is not None
        assert await svc.answer(vector_bytes(f"{run_name}_delete_request"), caller) == [
            vector_bytes(f"mock_{run_name}_delete_answer")
        ]
        assert store.get(created) is None

    run(go())


# -- bad input (issue 13 item 6) ---------------------------------------------------------------------------------


def _request(op: int, body: bytes, request_id: int = 7, session_id: int = 0, op_flags: int = 0) -> bytes:
    return encode_request(op, body, request_id=request_id, expiration=2_000_000_000, session_id=session_id,
                          op_flags=op_flags)  # fmt: skip


def _create(handle: str = "88.100.9/NEW-1") -> bytes:
    value = HandleValue(1, "URL", b"https://example.com/1")
    return _request(
        OpCode.CREATE_HANDLE, encode_admin_request(AdminRequest(OpCode.CREATE_HANDLE, handle, (value,)))
    )


def _answer_challenge(challenge: bytes, signer: Signer, request_id: int = 8) -> bytes:
    message = decode_message(challenge)
    digest, nonce = decode_challenge_body(message.body)
    auth_type, signed = signer.sign(nonce, digest[1:])
    body = encode_challenge_answer(ChallengeAnswer(auth_type, signer.identity, signer.index, signed))
    return _request(OpCode.RESPONSE_TO_CHALLENGE, body, request_id, message.envelope.session_id)


SECRET = Signer("88.100.9/ADMIN", 300, secret=b"admin-secret-88.100.9")
WRONG = Signer("88.100.9/ADMIN", 300, secret=b"wrong-secret")
RSA = Signer("88.100.9/ADMIN", 301, private_pem=admin_vectors()["key_admin_rsa_private"]["pem"].encode())
SM2 = Signer("88.100.9/ADMIN", 303, sm2_private_hex=admin_vectors()["key_sm2_private_hex"]["hex"])


def _code(answer: list[bytes]) -> int:
    return decode_message(answer[0]).header.response_code


@pytest.fixture
def svc(tmp_path):
    return admin_service(vector_store(tmp_path / "s"), 1_900_000_000)


def test_a_write_without_authentication_gets_402_and_changes_nothing(svc):
    answer = run(svc.answer(_create(), Caller("127.0.0.1")))
    assert _code(answer) == ResponseCode.AUTHENTICATION_NEEDED
    assert svc.store.get("88.100.9/NEW-1") is None


@pytest.mark.parametrize("signer", [SECRET, RSA, SM2], ids=["seckey", "rsa", "sm2"])
def test_a_right_answer_writes(svc, signer):
    caller = Caller("127.0.0.1")

    async def go():
        challenge = await svc.answer(_create(), caller)
        return await svc.answer(_answer_challenge(challenge[0], signer), caller)

    assert _code(run(go())) == ResponseCode.SUCCESS
    assert svc.store.get("88.100.9/NEW-1") is not None


def test_wrong_secret_is_403_after_the_challenge_and_writes_nothing(svc):
    async def go():
        challenge = await svc.answer(_create(), Caller("127.0.0.1"))
        return await svc.answer(_answer_challenge(challenge[0], WRONG), Caller("127.0.0.1"))

    assert _code(run(go())) == ResponseCode.AUTHENTICATION_FAILED
    assert svc.store.get("88.100.9/NEW-1") is None


def test_wrong_signature_is_403(svc):
    other = Signer("88.100.9/ADMIN", 301, private_pem=admin_vectors()["key_rsa_private_pem"]["pem"].encode())

    async def go():
        challenge = await svc.answer(_create(), Caller("127.0.0.1"))
        return await svc.answer(_answer_challenge(challenge[0], other), Caller("127.0.0.1"))

    assert _code(run(go())) == ResponseCode.AUTHENTICATION_FAILED


def test_a_secret_offered_for_a_public_key_index_is_403(svc):
    async def go():
        challenge = await svc.answer(_create(), Caller("127.0.0.1"))
        wrong_index = Signer("88.100.9/ADMIN", 302, secret=b"admin-secret-88.100.9")
        return await svc.answer(_answer_challenge(challenge[0], wrong_index), Caller("127.0.0.1"))

    assert _code(run(go())) == ResponseCode.AUTHENTICATION_FAILED


def test_identity_not_in_hs_admin_is_400(tmp_path):
    from storage.enterprises import add_prefix
    from tests.handle_admin_helpers import set_secret

    svc = admin_service(vector_store(tmp_path / "s"), 1_900_000_000)
    add_prefix(svc.store, "88.100.10", "Other Co")
    set_secret(svc.store, "88.100.10", 300, b"other-secret-xyz")
    svc.service.reload_prefixes()
    outsider = Signer("88.100.10/ADMIN", 300, secret=b"other-secret-xyz")

    async def go():
        challenge = await svc.answer(_create(), Caller("127.0.0.1"))
        return await svc.answer(_answer_challenge(challenge[0], outsider), Caller("127.0.0.1"))

    assert _code(run(go())) == ResponseCode.INVALID_ADMIN
    assert svc.store.get("88.100.9/NEW-1") is None


def test_unknown_expired_and_replayed_answers_are_refused(tmp_path):
    now = [1_900_000_000.0]
    svc = admin_service(vector_store(tmp_path / "s"), 0)
    svc.clock = svc.challenges.clock = lambda: now[0]

    async def go():
        caller = Caller("127.0.0.1")
        challenge = await svc.answer(_create("88.100.9/A"), caller)
        answer = _answer_challenge(challenge[0], SECRET)
        first = await svc.answer(answer, caller)
        replay = await svc.answer(answer, caller)
        never_sent = answer[:4] + (0x7F00_0001).to_bytes(4, "big") + answer[8:]  # a session id never issued
        unknown = await svc.answer(never_sent, caller)
        late = await svc.answer(_create("88.100.9/B"), caller)
        now[0] += 61
        expired = await svc.answer(_answer_challenge(late[0], SECRET), caller)
        return first, replay, unknown, expired

    first, replay, unknown, expired = run(go())
    assert _code(first) == ResponseCode.SUCCESS
    assert _code(replay) == _code(unknown) == _code(expired) == ResponseCode.AUTHEN_TIMEOUT
    assert svc.store.get("88.100.9/B") is None


def test_an_answer_from_another_address_is_refused(svc):
    async def go():
        challenge = await svc.answer(_create(), Caller("127.0.0.1"))
        return await svc.answer(_answer_challenge(challenge[0], SECRET), Caller("127.0.0.2"))

    assert _code(run(go())) == ResponseCode.AUTHEN_TIMEOUT
    assert svc.store.get("88.100.9/NEW-1") is None


def test_pending_challenges_are_bounded_per_source_and_in_all(tmp_path):
    svc = admin_service(vector_store(tmp_path / "s"), 1_900_000_000)
    svc.challenges.max_per_source, svc.challenges.max_pending = 3, 5

    async def go():
        a = [_code(await svc.answer(_create(), Caller("10.0.0.1"))) for _ in range(4)]
        b = [_code(await svc.answer(_create(), Caller("10.0.0.2"))) for _ in range(3)]
        return a, b

    a, b = run(go())
    assert a == [402, 402, 402, ResponseCode.SERVER_TOO_BUSY]
    assert b == [402, 402, ResponseCode.SERVER_TOO_BUSY]  # the node's bound: 5 pending in all
    assert len(svc.challenges) == 5


def test_login_floods_are_rate_limited(svc):
    login = _request(OpCode.LOGIN_ID_SYSTEM, encode_login(Login("88.100.9/ADMIN", 301)))

    async def go():
        return [_code(await svc.answer(login, Caller("10.0.0.9"))) for _ in range(80)]

    codes = run(go())
    assert codes[0] == ResponseCode.AUTHENTICATION_NEEDED
    assert codes[-1] == ResponseCode.SERVER_TOO_BUSY
    assert codes.count(ResponseCode.SERVER_TOO_BUSY) >= 10


def test_logged_in_connections_are_bounded_per_source(tmp_path):
    svc = admin_service(vector_store(tmp_path / "s"), 1_900_000_000, max_logged_in_per_source=2)
    login = _request(OpCode.LOGIN_ID_SYSTEM, encode_login(Login("88.100.9/ADMIN", 300)))

    async def log_in(caller):
        challenge = await svc.answer(login, caller)
        return _code(await svc.answer(_answer_challenge(challenge[0], SECRET), caller))

    async def go():
        callers = [Caller("10.0.0.3", port) for port in range(3)]
        codes = [await log_in(c) for c in callers]
        svc.release(callers[0])
        return codes, await log_in(Caller("10.0.0.3", 9))

    codes, after_release = run(go())
    assert codes == [1, 1, ResponseCode.SERVER_TOO_BUSY]
    assert after_release == 1


def test_login_over_udp_is_refused(svc):
    login = _request(OpCode.LOGIN_ID_SYSTEM, encode_login(Login("88.100.9/ADMIN", 301)))
    assert (
        _code(run(svc.answer(login, Caller("127.0.0.1", transport="udp"))))
        == ResponseCode.OPERATION_NOT_SUPPORTED
    )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00\x00\x00\x05abc",
        b"\x00\x00\x00\x0e88.100.9/NEW-1\xff\xff\xff\xff",
        b"\x00\x00\x00\x0e88.100.9/NEW-1",
    ],
    ids=["empty", "short-handle", "huge-count", "no-count"],
)
def test_malformed_admin_bodies_are_protocol_errors_without_a_challenge(svc, body):
    answer = run(svc.answer(_request(OpCode.CREATE_HANDLE, body), Caller("127.0.0.1")))
    assert _code(answer) in (
        ResponseCode.PROTOCOL_ERROR,
        ResponseCode.INVALID_HANDLE,
        ResponseCode.INVALID_VALUE,
    )
    assert len(svc.challenges) == 0


def test_a_malformed_challenge_answer_is_a_protocol_error(svc):
    answer = run(
        svc.answer(
            _request(OpCode.RESPONSE_TO_CHALLENGE, b"\x00\x00\x00\x09HS_SE", 9, 5), Caller("127.0.0.1")
        )
    )
    assert _code(answer) == ResponseCode.PROTOCOL_ERROR


def test_writes_keep_the_write_policy_reserved_admin_identity(svc):
    caller = Caller("127.0.0.1")

    async def go():
        challenge = await svc.answer(_create("88.100.9/ADMIN"), caller)
        return await svc.answer(_answer_challenge(challenge[0], SECRET), caller)

    assert _code(run(go())) == ResponseCode.INSUFFICIENT_PERMISSIONS  # the same refusal as over HTTP
