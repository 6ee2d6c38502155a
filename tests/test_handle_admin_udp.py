"""Handle administration over real UDP sockets on 127.0.0.1 (resolver/admin/datagrams.py behind
resolver/server/udp.py): the challenge-response writes with every key type through both UDP listeners, op 2001
stays refused, a re-sent datagram gets its first answer (never a second write or an "expired" refusal of a
write that was made), the UDP rate limit stands in front, and answers that do not fit UDP are refused with TC.
One test runs it all through `idnode serve` (the worker's wiring)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from resolver.admin import handler
from resolver.admin.crypto import Signer
from resolver.admin.datagrams import AdminDatagrams
from resolver.client import HandleClient
from resolver.frontend import HandleFrontend
from resolver.handle.admin import (
    AdminRequest,
    ChallengeAnswer,
    decode_challenge_body,
    decode_list_body,
    encode_admin_request,
    encode_challenge_answer,
)
from resolver.handle.constants import EnvelopeFlag, OpCode, ResponseCode
from resolver.handle.message import decode_error_body, decode_message, encode_request
from resolver.handle.values import HandleValue
from resolver.server.limits import ExemptNetworks, ProvenSources, SourceRateLimiter, UdpGuard
from resolver.server.udp import HandleUdpProtocol
from resolver.server.udp_batch import batched_listener, unavailable_reason
from tests.handle_admin_helpers import admin_service, vector_store
from tests.servers import running_node
from tests.test_handle_admin_tcp import SIGNERS

TIMEOUT_S = 10.0  #: one exchange on a busy shared machine


class Recorded:
    """Security events as calls: (method name, args, kwargs)."""

    def __init__(self):
        self.calls: list[tuple[str, tuple, dict]] = []

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args, kwargs))

    def named(self, name: str) -> list[tuple]:
        return [c for c in self.calls if c[0] == name]


def _create(handle: str) -> AdminRequest:
    return AdminRequest(OpCode.CREATE_HANDLE, handle, (HandleValue(1, "URL", b"https://example.com/u"),))


class UdpNode:
    """An AdminService and the UDP listener a worker builds, on 127.0.0.1 port 0."""

    def __init__(self, store, listener: str = "transport", guard=None):
        self.svc = admin_service(store, 1_900_000_000)
        self.svc.clock = time.time
        self.events = Recorded()
        self.svc.events = self.events
        self.frontend = HandleFrontend(self.svc.service)
        self.frontend.admin_datagrams = AdminDatagrams(self.svc)
        self.listener = listener
        self.guard = guard
        self._closer = None

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        protocol = HandleUdpProtocol(
            self.frontend, self.svc.service.refresh, guard=self.guard, events=self.events
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        if self.listener == "batched":
            self._closer = batched_listener(loop, sock, protocol)
            assert self._closer is not None
        else:
            self._closer, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
        return port

    def close(self) -> None:
        if self._closer is not None:
            self._closer.close()


LISTENERS = ["transport", "batched"] if unavailable_reason() is None else ["transport"]


@pytest.mark.parametrize("listener", LISTENERS)
@pytest.mark.parametrize("kind", sorted(SIGNERS))
def test_every_key_type_writes_over_udp_and_the_write_resolves(tmp_path, kind, listener):
    node = UdpNode(vector_store(tmp_path / "s"), listener)

    async def go():
        port = await node.start()
        try:
            async with HandleClient("127.0.0.1", port, timeout_s=TIMEOUT_S) as client:
                created = await client.admin(_create(f"88.100.9/U-{kind}"), SIGNERS[kind])
                resolved = await client.resolve(f"88.100.9/U-{kind}")
                removed = await client.admin(
                    AdminRequest(OpCode.DELETE_HANDLE, f"88.100.9/U-{kind}"), SIGNERS[kind]
                )
                gone = await client.resolve(f"88.100.9/U-{kind}")
            return created, resolved, removed, gone
        finally:
            node.close()

    created, resolved, removed, gone = asyncio.run(go())
    assert (
        created.header.op_code == OpCode.CREATE_HANDLE
        and created.header.response_code == ResponseCode.SUCCESS
    )
    assert resolved.ok and resolved.values[0].data == b"https://example.com/u"
    assert removed.header.response_code == ResponseCode.SUCCESS
    assert gone.response_code == ResponseCode.HANDLE_NOT_FOUND
    writes = [c[1][2] for c in node.events.named("write")]
    assert writes == ["create", "delete"]  # each write reported once, as over TCP and HTTP


def test_a_write_over_udp_without_an_answer_is_only_challenged(tmp_path):
    node = UdpNode(vector_store(tmp_path / "s"))

    async def go():
        port = await node.start()
        try:
            async with HandleClient("127.0.0.1", port, timeout_s=TIMEOUT_S) as client:
                return await client.admin(_create("88.100.9/UNSIGNED"))  # no signer: the 402 comes back
        finally:
            node.close()

    challenge = asyncio.run(go())
    assert challenge.header.response_code == ResponseCode.AUTHENTICATION_NEEDED
    assert challenge.envelope.session_id != 0 and len(decode_challenge_body(challenge.body)[1]) == 16
    assert node.svc.store.get("88.100.9/UNSIGNED") is None
    assert len(node.svc.challenges) == 1


def test_login_over_udp_is_refused_and_binds_nothing(tmp_path):
    node = UdpNode(vector_store(tmp_path / "s"))

    async def go():
        port = await node.start()
        try:
            async with HandleClient("127.0.0.1", port, timeout_s=TIMEOUT_S) as client:
                login = await client.login(SIGNERS["rsa"])
                after = await client.admin(_create("88.100.9/AFTER-LOGIN"))  # still challenged
            return login, after
        finally:
            node.close()

    login, after = asyncio.run(go())
    assert login.header.response_code == ResponseCode.OPERATION_NOT_SUPPORTED
    assert "TCP" in decode_error_body(login.body)
    assert after.header.response_code == ResponseCode.AUTHENTICATION_NEEDED
    assert node.svc.store.get("88.100.9/AFTER-LOGIN") is None


def _exchange(sock: socket.socket, data: bytes, answers: int = 1) -> list[bytes]:
    sock.send(data)
    return [sock.recv(65536) for _ in range(answers)]


def test_a_datagram_sent_again_gets_its_first_answer(tmp_path):
    """A client that re-sends (its answer was lost or late) must not get a second challenge, nor have its
    written CREATE answered 'no challenge waiting'."""
    node = UdpNode(vector_store(tmp_path / "s"))
    signer: Signer = SIGNERS["seckey"]

    async def go():
        port = await node.start()
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(TIMEOUT_S)
        sock.connect(("127.0.0.1", port))
        try:
            request = encode_request(OpCode.CREATE_HANDLE, encode_admin_request(_create("88.100.9/TWICE")),
                                     request_id=7, expiration=int(time.time()) + 60)  # fmt: skip
            sock.send(request)  # the same datagram twice
            challenges = await loop.run_in_executor(None, _exchange, sock, request, 2)
            challenge = decode_message(challenges[0])
            digest, nonce = decode_challenge_body(challenge.body)
            auth_type, signed = signer.sign(nonce, digest[1:])
            answer = encode_request(
                OpCode.RESPONSE_TO_CHALLENGE,
                encode_challenge_answer(ChallengeAnswer(auth_type, signer.identity, signer.index, signed)),
                request_id=8, session_id=challenge.envelope.session_id, expiration=int(time.time()) + 60,
            )  # fmt: skip
            sock.send(answer)
            finals = await loop.run_in_executor(None, _exchange, sock, answer, 2)
            return challenges, finals
        finally:
            sock.close()
            node.close()

    challenges, finals = asyncio.run(go())
    assert challenges[0] == challenges[1]  # one challenge, sent twice
    assert len(node.svc.challenges) == 0  # ... and taken by the answer
    assert finals[0] == finals[1]
    final = decode_message(finals[0])
    assert final.header.op_code == OpCode.CREATE_HANDLE and final.header.response_code == ResponseCode.SUCCESS
    assert node.svc.store.get("88.100.9/TWICE") is not None
    assert len(node.events.named("write")) == 1  # written once


def test_the_udp_rate_limit_stands_in_front_of_administration(tmp_path):
    none = ExemptNetworks(())
    node = UdpNode(vector_store(tmp_path / "s"))
    node.guard = UdpGuard(SourceRateLimiter(0.001, 1, none), ProvenSources(none), 0.0, None,
                          node.frontend.too_large_answer)  # fmt: skip

    async def go():
        port = await node.start()
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(TIMEOUT_S)
        sock.connect(("127.0.0.1", port))
        try:
            first = await loop.run_in_executor(None, _exchange, sock, _raw_create("88.100.9/LIMITED-0", 1))
            for n in range(1, 6):  # dropped by the limit: nothing comes back, nothing is challenged
                sock.send(_raw_create(f"88.100.9/LIMITED-{n}", 1 + n))
            sock.settimeout(0.5)
            with pytest.raises(TimeoutError):
                await loop.run_in_executor(None, sock.recv, 65536)
            return first
        finally:
            sock.close()
            node.close()

    first = asyncio.run(go())
    assert decode_message(first[0]).header.response_code == ResponseCode.AUTHENTICATION_NEEDED
    assert len(node.svc.challenges) == 1
    assert len(node.events.named("rate_limited")) == 5


def _raw_create(handle: str, request_id: int) -> bytes:
    return encode_request(OpCode.CREATE_HANDLE, encode_admin_request(_create(handle)), request_id=request_id,
                          expiration=int(time.time()) + 60)  # fmt: skip


def test_a_malformed_admin_datagram_is_a_protocol_error_and_a_security_event(tmp_path):
    node = UdpNode(vector_store(tmp_path / "s"))

    async def go():
        port = await node.start()
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(TIMEOUT_S)
        sock.connect(("127.0.0.1", port))
        try:
            bad = encode_request(OpCode.CREATE_HANDLE, b"\x00\x00\x00\x05abc", request_id=3,
                                 expiration=int(time.time()) + 60)  # fmt: skip
            return await loop.run_in_executor(None, _exchange, sock, bad)
        finally:
            sock.close()
            node.close()

    answer = decode_message(asyncio.run(go())[0])
    assert answer.header.response_code == ResponseCode.PROTOCOL_ERROR
    assert len(node.svc.challenges) == 0
    assert [c[1] for c in node.events.named("malformed")] == [("127.0.0.1", "udp")]


def test_list_handles_over_udp_fits_or_is_sent_to_tcp(tmp_path, monkeypatch):
    node = UdpNode(vector_store(tmp_path / "s"))
    signer = SIGNERS["rsa"]
    listing = AdminRequest(OpCode.LIST_HANDLES, "0.NA/88.100.9")

    async def go():
        port = await node.start()
        try:
            async with HandleClient("127.0.0.1", port, timeout_s=TIMEOUT_S) as client:
                for n in range(30):  # more than one datagram of names
                    assert (
                        await client.admin(_create(f"88.100.9/LIST-{n:03d}"), signer)
                    ).header.response_code == 1
                whole = await client.admin(listing, signer)
                monkeypatch.setattr(handler, "LIST_PART_BYTES", 200)  # now the answer takes continuations
                parted = await client.admin(listing, signer)
            return whole, parted
        finally:
            node.close()

    whole, parted = asyncio.run(go())
    assert whole.header.response_code == ResponseCode.SUCCESS
    names = decode_list_body(whole.body)
    assert {f"88.100.9/LIST-{n:03d}" for n in range(30)} <= set(names)
    assert parted.header.response_code == ResponseCode.ERROR
    assert parted.envelope.flags & EnvelopeFlag.TC
    assert "ask over TCP" in decode_error_body(parted.body)


def test_idnode_serve_answers_administration_over_udp(tmp_path):
    vector_store(tmp_path / "node").close()

    async def go(port: int):
        async with HandleClient("127.0.0.1", port, timeout_s=TIMEOUT_S) as client:
            created = await client.admin(_create("88.100.9/SERVED-UDP"), SIGNERS["seckey"])
            for _ in range(50):  # the worker sees the applied write at its next batch
                resolved = await client.resolve("88.100.9/SERVED-UDP")
                if resolved.ok:
                    break
                await asyncio.sleep(0.05)
            login = await client.login(SIGNERS["rsa"])
        return created, resolved, login

    with running_node(tmp_path / "node", workers=1) as node:
        created, resolved, login = asyncio.run(go(node.port))
    assert created.header.response_code == ResponseCode.SUCCESS
    assert resolved.ok
    assert login.header.response_code == ResponseCode.OPERATION_NOT_SUPPORTED
