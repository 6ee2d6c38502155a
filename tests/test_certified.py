"""Certified answers (CT) and the node's server key: what is signed is checked against a captured CNRI answer
and its server key, then the node's own signatures are verified with `cryptography` against the key the node
publishes in its HS_SITE (GET_SITE_INFO), in process and over real sockets, before and after `idnode key
rotate`."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import stat
import time
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from resolver.client import HandleClient
from resolver.frontend import HandleFrontend
from resolver.handle.constants import OpCode, OpFlag, ResponseCode
from resolver.handle.message import (
    ResolutionRequest,
    decode_message,
    encode_request,
    encode_resolution_request,
    encode_site_info_request,
)
from resolver.handle.signature import (
    DSA_KEY_TYPE,
    RSA_KEY_TYPE,
    bytes_to_sign,
    decode_public_key,
    decode_signed_credential,
)
from resolver.handle.values import Interface, ServerInfo, SiteInfo, decode_site, encode_site
from resolver.serverkey import KEY_FILE, ServerKey, ServerKeyError, ensure_key, rotate_key
from resolver.service import ResolutionService
from storage.records import pack_encoded
from storage.store import PrefixInfo, Store
from tests.servers import idnode, running_node, wait_until

DATA = Path(__file__).parent / "data"
CT_FLAGS = int(
    OpFlag.CT | OpFlag.REC | OpFlag.CA | OpFlag.PO
)  # what CNRI's client sends (handle-admin.md § 5)


@pytest.fixture(scope="module")
def admin_vectors() -> dict[str, dict]:
    return {v["name"]: v for v in json.loads((DATA / "handle-admin-v2.10.json").read_text())}


def verify_with_site_key(answer: bytes, site_data: bytes) -> None:
    """Verify `answer`'s HS_SIGNED credential with server 1's key of `site_data`; raises InvalidSignature."""
    message = decode_message(answer)
    credential = decode_signed_credential(message.credential)
    assert credential.signer_handle == b"" and credential.hash_name == b"SHA-256"
    key = decode_public_key(decode_site(site_data).servers[0].public_key)
    assert key.kind == RSA_KEY_TYPE
    public = rsa.RSAPublicNumbers(*key.integers).public_key()
    public.verify(credential.signature, bytes_to_sign(answer), padding.PKCS1v15(), hashes.SHA256())


@pytest.mark.filterwarnings("ignore:DSA:cryptography.utils.CryptographyDeprecationWarning")  # the reference's key
def test_what_is_signed_matches_a_certified_answer_of_the_reference_server(admin_vectors):
    """The bytes_to_sign of CNRI's certified answers verify with its published DSA key (SHA1withDSA), and the
    key read from the HS_SITE encoding equals the PEM one; a flipped body byte fails."""
    pem = load_pem_public_key(admin_vectors["key_server_dsa_public"]["pem"].encode())
    hs = decode_public_key(bytes.fromhex(admin_vectors["key_server_dsa_public_hs"]["hex"]))
    assert hs.kind == DSA_KEY_TYPE
    numbers = pem.public_numbers()
    assert hs.integers == (
        numbers.parameter_numbers.q,
        numbers.parameter_numbers.p,
        numbers.parameter_numbers.g,
        numbers.y,
    )
    for name in (
        "cnri_sess_certified_resolution_88_100_9_ent_0000_02_s2c",
        "cnri_sess_certified_resolution_88_100_9_no_such_not_found_02_s2c",
    ):
        answer = bytes.fromhex(admin_vectors[name]["hex"])
        credential = decode_signed_credential(decode_message(answer).credential)
        assert credential.hash_name == b"SHA1"
        q, p, g, y = hs.integers
        key = dsa.DSAPublicNumbers(y, dsa.DSAParameterNumbers(p, q, g)).public_key()
        key.verify(credential.signature, bytes_to_sign(answer), hashes.SHA1())
        tampered = bytearray(answer)
        tampered[-len(decode_message(answer).credential) - 5] ^= 1  # last body byte
        with pytest.raises(InvalidSignature):
            key.verify(credential.signature, bytes_to_sign(bytes(tampered)), hashes.SHA1())


@pytest.fixture()
def node(tmp_path):
    """A store with one identifier, its service and frontend, signing with a fresh key."""
    with Store(tmp_path / "store", create=True) as store:
        from resolver.handle.values import HandleValue, encode_value

        store.put_prefix(PrefixInfo("88.100.1"))
        url = encode_value(HandleValue(1, "URL", b"https://example.com/a"))
        store.put_records([(b"88.100.1/A", pack_encoded([url], all_public=True))])
        server = ServerInfo(1, ipaddress.ip_address("127.0.0.1"), b"", (Interface(2, 0, 2641),))
        service = ResolutionService(store, "88.100", encode_site(SiteInfo(servers=(server,))))
        key = ServerKey.for_store(tmp_path / "store")
        service.publish_key(key.public_key_hs)
        frontend = HandleFrontend(service)
        frontend.signer = key
        yield frontend, key


def ask(frontend, op_code, body, flags, version=(2, 10)) -> bytes:
    request = encode_request(
        op_code, body, request_id=9, expiration=int(time.time()) + 60, op_flags=flags, version=version
    )
    return frontend.answer_message(request)


def resolution(handle: bytes) -> bytes:
    return encode_resolution_request(ResolutionRequest(handle))


def site_of(frontend) -> bytes:
    answer = decode_message(ask(frontend, OpCode.GET_SITE_INFO, encode_site_info_request(), 0))
    return answer.body


def test_certified_answers_verify_with_the_key_in_hs_site(node):
    frontend, _ = node
    site = site_of(frontend)
    for handle, code in (
        (b"88.100.1/A", ResponseCode.SUCCESS),
        (b"88.100.1/NONE", ResponseCode.HANDLE_NOT_FOUND),
    ):
        for version in ((2, 10), (2, 7), (2, 5)):  # the three layouts of what is signed
            answer = ask(frontend, OpCode.RESOLUTION, resolution(handle), CT_FLAGS, version)
            message = decode_message(answer)
            assert message.header.response_code == code and message.header.op_flags & OpFlag.CT
            verify_with_site_key(answer, site)
    signed_site = ask(frontend, OpCode.GET_SITE_INFO, encode_site_info_request(), CT_FLAGS)
    verify_with_site_key(signed_site, site)


def test_a_changed_answer_fails_verification_and_plain_requests_stay_unsigned(node):
    frontend, _ = node
    answer = bytearray(ask(frontend, OpCode.RESOLUTION, resolution(b"88.100.1/A"), CT_FLAGS))
    answer[60] ^= 0x20  # inside the handle in the body
    with pytest.raises(InvalidSignature):
        verify_with_site_key(bytes(answer), site_of(frontend))
    plain = decode_message(ask(frontend, OpCode.RESOLUTION, resolution(b"88.100.1/A"), int(OpFlag.REC)))
    assert plain.credential == b""


def test_prefix_handles_publish_the_server_key(node):
    frontend, key = node
    answer = decode_message(ask(frontend, OpCode.RESOLUTION, resolution(b"0.NA/88.100.1"), 0))
    from resolver.handle.message import decode_resolution_response_body

    values = decode_resolution_response_body(answer.body, False)[2]
    hs_site = next(v for v in values if v.type == "HS_SITE")
    assert decode_site(hs_site.data).servers[0].public_key == key.public_key_hs


def test_key_file_is_private_kept_on_rotation_and_refused_when_readable_by_others(tmp_path):
    path = ensure_key(tmp_path)
    assert path.name == KEY_FILE and stat.S_IMODE(path.stat().st_mode) == 0o600
    first = ServerKey(path)
    assert ensure_key(tmp_path) == path and ServerKey(path).public_key_hs == first.public_key_hs
    rotate_key(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = first.reloaded()
    assert second is not None and second.public_key_hs != first.public_key_hs
    assert ServerKey(path.with_name(KEY_FILE + ".previous")).public_key_hs == first.public_key_hs
    assert second.reloaded() is None
    path.chmod(0o644)
    with pytest.raises(ServerKeyError, match="readable by others"):
        ServerKey(path)


async def _certified(host: str, port: int, tcp: bool):
    async with HandleClient(host, port, tcp=tcp, timeout_s=5.0) as client:
        site = await client.request(OpCode.GET_SITE_INFO, encode_site_info_request(), 0)
        body = resolution(b"88.100.1/BATCH-2024-000001")
        raw = await client.request(OpCode.RESOLUTION, body, CT_FLAGS)
    return site.body, raw


def rebuild(message) -> bytes:
    """The whole answer's bytes from a decoded message, as the client received it."""
    from resolver.handle.message import encode_message

    return encode_message(message.envelope, message.header, message.body, message.credential)


def test_a_running_node_signs_over_udp_and_tcp_and_rotates_its_key(tmp_path, demo_store_copy):
    with running_node(demo_store_copy, workers=1) as served:
        keys = []
        for tcp in (False, True):
            site, answer = asyncio.run(_certified(served.host, served.port, tcp))
            assert answer.header.response_code == ResponseCode.SUCCESS
            verify_with_site_key(rebuild(answer), site)
            keys.append(decode_site(site).servers[0].public_key)
        assert keys[0] == keys[1] and keys[0] == ServerKey(demo_store_copy / KEY_FILE).public_key_hs
        shown = idnode("key", "show", "--data", str(demo_store_copy))
        assert shown.returncode == 0 and "BEGIN PUBLIC KEY" in shown.stdout
        rotated = idnode("key", "rotate", "--data", str(demo_store_copy))
        assert rotated.returncode == 0, rotated.stderr

        def new_key_served():
            site, answer = asyncio.run(_certified(served.host, served.port, False))
            return (site, answer) if decode_site(site).servers[0].public_key != keys[0] else None

        site, answer = wait_until(new_key_served, "the rotated key in HS_SITE", timeout_s=15)
        verify_with_site_key(rebuild(answer), site)
        with pytest.raises(InvalidSignature):  # the old key no longer verifies what the node signs
            old_site = site.replace(decode_site(site).servers[0].public_key, keys[0])
            verify_with_site_key(rebuild(answer), old_site)


def test_key_show_makes_the_key_before_first_start_and_refuses_a_missing_directory(tmp_path):
    shown = idnode("key", "show", "--data", str(tmp_path))
    assert shown.returncode == 0 and "made now" in shown.stdout and "BEGIN PUBLIC KEY" in shown.stdout
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600
    again = idnode("key", "show", "--data", str(tmp_path))
    assert "made now" not in again.stdout and again.stdout.splitlines()[1] == shown.stdout.splitlines()[1]
    missing = idnode("key", "show", "--data", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "not a directory" in missing.stderr
    assert not (tmp_path / "nowhere").exists()
