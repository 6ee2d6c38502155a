"""Handle administration over a real TCP socket on 127.0.0.1 (resolver/admin/transport.py) with idnode's own
client: every key type authenticates a write, op 2001 binds the identity to the connection (and only to it),
and answers keep request order when resolutions are pipelined behind a write."""

from __future__ import annotations

import asyncio

import pytest

from resolver.admin.crypto import Signer, dsa_allowed
from resolver.admin.transport import AdminTcpProtocol
from resolver.client import HandleClient
from resolver.frontend import HandleFrontend
from resolver.handle.admin import AdminRequest, decode_list_body
from resolver.handle.constants import OpCode, ResponseCode
from resolver.handle.values import HandleValue
from tests.handle_admin_helpers import admin_service, admin_vectors, vector_store

V = admin_vectors()
SIGNERS = {
    "seckey": Signer("88.100.9/ADMIN", 300, secret=bytes.fromhex(V["key_admin_secret"]["hex"])),
    "rsa": Signer("88.100.9/ADMIN", 301, private_pem=V["key_admin_rsa_private"]["pem"].encode()),
    "sm2": Signer("88.100.9/ADMIN", 303, sm2_private_hex=V["key_sm2_private_hex"]["hex"]),
}


def _dsa_signer() -> Signer:
    from cryptography.hazmat.primitives import serialization

    with dsa_allowed():
        key = serialization.load_der_private_key(bytes.fromhex(V["key_admin_dsa_private"]["hex"]), None)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return Signer("88.100.9/ADMIN", 302, private_pem=pem)


SIGNERS["dsa"] = _dsa_signer()


async def _serve(store):
    svc = admin_service(store, 1_900_000_000)
    svc.clock = __import__("time").time
    frontend = HandleFrontend(svc.service)
    server = await asyncio.get_running_loop().create_server(
        lambda: AdminTcpProtocol(frontend, svc.service.refresh, 30.0, admin=svc), "127.0.0.1", 0
    )
    return server, server.sockets[0].getsockname()[1]


def _create(handle: str) -> AdminRequest:
    return AdminRequest(OpCode.CREATE_HANDLE, handle, (HandleValue(1, "URL", b"https://example.com/x"),))


@pytest.mark.parametrize("kind", sorted(SIGNERS))
def test_every_key_type_writes_over_tcp_and_the_write_resolves(tmp_path, kind):
    async def go():
        server, port = await _serve(vector_store(tmp_path / "s"))
        try:
            async with HandleClient("127.0.0.1", port, tcp=True, timeout_s=10) as client:
                created = await client.admin(_create(f"88.100.9/T-{kind}"), SIGNERS[kind])
                resolved = await client.resolve(f"88.100.9/T-{kind}")
                listed = await client.admin(AdminRequest(OpCode.LIST_HANDLES, "0.NA/88.100.9"), SIGNERS[kind])
            return created, resolved, listed
        finally:
            server.close()

    created, resolved, listed = asyncio.run(go())
    assert created.header.response_code == ResponseCode.SUCCESS
    assert resolved.ok and resolved.values[0].data == b"https://example.com/x"
    assert f"88.100.9/T-{kind}".upper() in decode_list_body(
        listed.body
    )  # the store keys suffixes upper-cased


def test_login_binds_the_identity_to_its_connection_only(tmp_path):
    async def go():
        server, port = await _serve(vector_store(tmp_path / "s"))
        try:
            async with (
                HandleClient("127.0.0.1", port, tcp=True, timeout_s=10) as one,
                HandleClient("127.0.0.1", port, tcp=True, timeout_s=10) as other,
            ):
                login = await one.login(SIGNERS["sm2"])
                write = await one.admin(_create("88.100.9/LOGGED-IN"))  # no challenge on this connection
                elsewhere = await other.admin(_create("88.100.9/NOT-LOGGED-IN"))
                # pipelined: a write and a resolution of it, answered in order on one connection
                both = await asyncio.gather(one.admin(_create("88.100.9/PIPE")), one.resolve("88.100.9/PIPE"))
            return login, write, elsewhere, both
        finally:
            server.close()

    login, write, elsewhere, (piped_write, piped_read) = asyncio.run(go())
    assert (
        login.header.op_code == OpCode.LOGIN_ID_SYSTEM and login.header.response_code == ResponseCode.SUCCESS
    )
    assert write.header.response_code == ResponseCode.SUCCESS
    assert elsewhere.header.response_code == ResponseCode.AUTHENTICATION_NEEDED
    assert piped_write.header.response_code == ResponseCode.SUCCESS
    assert piped_read.ok
