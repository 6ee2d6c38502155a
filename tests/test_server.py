"""`idnode serve` over real sockets on 127.0.0.1: UDP and TCP, the national SDKs' requests, chunking,
pipelining, keep-open connections, bad input, counting and clean shutdown."""

from __future__ import annotations

import asyncio
import json
import socket
import struct

import pytest

from bench.datagen import Dataset
from resolver.client import HandleClient
from resolver.handle.constants import OpCode, OpFlag, ResponseCode
from resolver.handle.message import (
    ResolutionRequest,
    decode_message,
    decode_resolution_response_body,
    encode_request,
    encode_resolution_request,
)
from resolver.handle.tcp import FrameBuffer
from resolver.handle.udp import Reassembler, split_datagrams
from storage.loader import load_files
from storage.store import Store
from tests.servers import idnode, running_node

DATASET = Dataset(2000, 1, "88.100", 8)
RECV_TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def node_store(tmp_path_factory, demo_ndjson):
    """The demo identifiers plus one identifier whose answer needs several UDP datagrams."""
    path = tmp_path_factory.mktemp("node") / "store"
    big = tmp_path_factory.mktemp("big") / "big.ndjson"
    values = [
        {"index": i, "type": "URL", "data": f"https://example.com/{'x' * 80}/{i}"} for i in range(1, 30)
    ]
    big.write_text(json.dumps({"handle": "88.100.1/ZZ-LARGE", "values": values}) + "\n")
    with Store(path, create=True) as store:
        load_files(store, [demo_ndjson, big])
    return path


@pytest.fixture(scope="module")
def node(node_store):
    with running_node(node_store, workers=2) as running:
        yield running


def udp_exchange(node, datagrams: list[bytes], expect: int = 1) -> list[bytes]:
    """Send datagrams from one socket and collect `expect` whole answers (reassembled)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(RECV_TIMEOUT_S)
        for d in datagrams:
            sock.sendto(d, (node.host, node.port))
        reassembler, answers = Reassembler(), []
        while len(answers) < expect:
            data, addr = sock.recvfrom(65535)
            whole = reassembler.feed(addr, data, 0)
            if whole is not None:
                answers.append(whole)
        return answers


def udp_silence(node, datagram: bytes, wait_s: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(wait_s)
        sock.sendto(datagram, (node.host, node.port))
        try:
            sock.recvfrom(65535)
        except TimeoutError:
            return True
        return False


def request(
    handle: bytes, request_id: int = 7, op_code: int = OpCode.RESOLUTION, body: bytes | None = None
) -> bytes:
    body = encode_resolution_request(ResolutionRequest(handle)) if body is None else body
    return encode_request(op_code, body, request_id=request_id, expiration=2_000_000_000, op_flags=0)


def code_of(answer: bytes) -> int:
    return decode_message(answer).header.response_code


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_resolution_outcomes(node, tcp):
    async def go():
        async with HandleClient(node.host, node.port, tcp=tcp) as client:
            existing = await client.resolve(DATASET.handle_at(5))
            lower = await client.resolve(DATASET.handle_at(5).lower())
            missing = await client.resolve(DATASET.missing_handle(1))
            filtered = await client.resolve(DATASET.handle_at(5), types=["EMAIL"], indexes=[100])
            nothing = await client.resolve(DATASET.handle_at(5), types=["NOPE"])
            foreign = await client.resolve("88.999/ANY")
            prefix = await client.resolve("0.NA/88.100.3")
            return existing, lower, missing, filtered, nothing, foreign, prefix

    existing, lower, missing, filtered, nothing, foreign, prefix = run(go())
    assert existing.ok and [v.type for v in existing.values] == ["URL", "EMAIL", "DESC", "HS_ADMIN"]
    assert lower.ok and lower.values == existing.values  # ASCII case-insensitive by default
    assert missing.response_code == ResponseCode.HANDLE_NOT_FOUND
    assert [v.index for v in filtered.values] == [2, 100]
    assert nothing.response_code == ResponseCode.VALUES_NOT_FOUND
    assert foreign.response_code == ResponseCode.SERVER_NOT_RESP
    assert [v.type for v in prefix.values] == ["HS_SITE", "HS_ADMIN"]


def tcp_exchange(node, data: bytes) -> bytes:
    """One request over a new TCP connection, its whole answer."""
    with socket.create_connection((node.host, node.port), timeout=RECV_TIMEOUT_S) as sock:
        sock.sendall(data)
        frames = FrameBuffer()
        while True:
            got = frames.feed(sock.recv(65535))
            if got:
                return got[0]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_bare_prefix_is_answered_like_its_prefix_handle_with_at(node, tcp):
    """A national SDK's global resolver asks for `88.100.3` (no slash) to learn where the prefix is served."""

    def ask(handle: bytes) -> bytes:
        return tcp_exchange(node, request(handle)) if tcp else udp_exchange(node, [request(handle)])[0]

    bare, prefix_handle, referral = ask(b"88.100.3"), ask(b"0.NA/88.100.3"), ask(b"88.999/X")
    answer = decode_message(bare)
    assert answer.header.response_code == ResponseCode.SUCCESS and answer.header.op_flags & OpFlag.AT
    _, named, values = decode_resolution_response_body(answer.body, False)
    assert named == b"88.100.3"
    assert values == decode_resolution_response_body(decode_message(prefix_handle).body, False)[2]
    assert [v.type for v in values] == ["HS_SITE", "HS_ADMIN"]
    assert not decode_message(referral).header.op_flags & OpFlag.AT  # a prefix not served here


def test_site_info_lists_tcp_first_and_our_port(node):
    async def go():
        async with HandleClient(node.host, node.port) as client:
            return await client.get_site_info()

    site = run(go())
    interfaces = site.servers[0].interfaces
    assert [i.protocol for i in interfaces] == [1, 0]  # TCP, then UDP
    assert {i.port for i in interfaces} == {node.port}
    assert str(site.servers[0].address) == "127.0.0.1"


@pytest.mark.parametrize(
    "name", ["client_national_sdk_get_site_info", "client_national_sdk_resolve", "client_id_pointer_resolve"]
)
def test_national_sdk_requests_over_udp(node, vectors, name):
    (answer,) = udp_exchange(node, [vectors[name]])
    assert code_of(answer) in (ResponseCode.SUCCESS, ResponseCode.HANDLE_NOT_FOUND)
    assert decode_message(answer).envelope.request_id == decode_message(vectors[name]).envelope.request_id
    if "site_info" in name:
        assert code_of(answer) == ResponseCode.SUCCESS


def test_national_sdk_session_on_one_tcp_connection_stays_open(node, vectors):
    """ID-SDK: site info, then resolutions on the same connection without KC, reading each answer."""
    with socket.create_connection((node.host, node.port), timeout=RECV_TIMEOUT_S) as sock:
        frames = FrameBuffer()

        def ask(data: bytes) -> bytes:
            sock.sendall(data)
            while True:
                got = frames.feed(sock.recv(65535))
                if got:
                    return got[0]

        names = [
            "client_national_sdk_get_site_info",
            "client_national_sdk_resolve",
            "client_id_pointer_resolve",
            "client_national_sdk_resolve",
        ]
        answers = [ask(vectors[n]) for n in names]
    assert [code_of(a) for a in answers][0] == ResponseCode.SUCCESS
    assert all(code_of(a) == ResponseCode.HANDLE_NOT_FOUND for a in answers[1:])  # that id is not in the demo


def test_tcp_pipelined_requests_answered_in_order(node):
    handles = [DATASET.handle_at(i).encode() for i in range(10)]
    data = b"".join(request(h, request_id=100 + n) for n, h in enumerate(handles))
    with socket.create_connection((node.host, node.port), timeout=RECV_TIMEOUT_S) as sock:
        sock.sendall(data)
        frames, answers = FrameBuffer(), []
        while len(answers) < len(handles):
            answers += frames.feed(sock.recv(65535))
    assert [decode_message(a).envelope.request_id for a in answers] == list(range(100, 110))
    assert all(code_of(a) == ResponseCode.SUCCESS for a in answers)


def test_large_answer_arrives_in_datagrams_of_at_most_512_bytes(node):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(RECV_TIMEOUT_S)
        sock.sendto(request(b"88.100.1/ZZ-LARGE"), (node.host, node.port))
        reassembler, whole, sizes = Reassembler(), None, []
        while whole is None:
            data, addr = sock.recvfrom(65535)
            sizes.append(len(data))
            whole = reassembler.feed(addr, data, 0)
    assert len(sizes) > 1 and max(sizes) <= 512
    _, _, values = decode_resolution_response_body(decode_message(whole).body, False)
    assert len(values) == 29


def test_chunked_request_is_reassembled(node):
    types = tuple(f"TYPE{i:03}".encode() for i in range(80)) + (b"URL",)
    body = encode_resolution_request(ResolutionRequest(DATASET.handle_at(3).encode(), (), types))
    chunks = split_datagrams(request(b"", body=body, request_id=4242))
    assert len(chunks) > 1
    (answer,) = udp_exchange(node, list(reversed(chunks)))  # out of order, too
    assert code_of(answer) == ResponseCode.SUCCESS
    assert [v.type for v in decode_resolution_response_body(decode_message(answer).body, False)[2]] == ["URL"]


# -- bad input ---------------------------------------------------------------------------------------------


def test_garbage_and_truncated_envelopes_are_dropped(node):
    assert udp_silence(node, b"\xff" * 7)
    assert udp_silence(node, request(b"88.100.1/A")[:19])
    assert udp_silence(
        node, b"\x02\x0a\x02\x0a" + b"\x00" * 12 + struct.pack(">I", 262_145)
    )  # over the limit


def test_message_length_beyond_datagram_is_a_protocol_error(node):
    data = bytearray(request(b"88.100.1/A"))
    struct.pack_into(">I", data, 16, len(data) - 20 + 10)  # says 10 more bytes than sent
    (answer,) = udp_exchange(node, [bytes(data)])
    assert code_of(answer) == ResponseCode.PROTOCOL_ERROR


def test_counts_larger_than_the_body_are_a_protocol_error(node):
    body = struct.pack(">I", 50) + b"88.100.1/A"  # handle length says 50, 10 bytes follow
    (answer,) = udp_exchange(node, [request(b"", body=body)])
    assert code_of(answer) == ResponseCode.PROTOCOL_ERROR
    body = encode_resolution_request(ResolutionRequest(b"88.100.1/A"))[:-4] + struct.pack(">I", 1_000_000)
    (answer,) = udp_exchange(node, [request(b"", body=body)])
    assert code_of(answer) == ResponseCode.PROTOCOL_ERROR


def test_unknown_op_code_is_not_supported(node):
    (answer,) = udp_exchange(node, [request(b"88.100.1/A", op_code=999)])
    assert code_of(answer) == ResponseCode.OPERATION_NOT_SUPPORTED


@pytest.mark.parametrize(
    "handle", [b"88.100.1/\xff\xfe", b"88.100.1/" + b"A" * 2050], ids=["bad-utf8", "too-long"]
)
def test_invalid_handles(node, handle):
    (answer,) = udp_exchange(node, [request(handle)])
    assert code_of(answer) == ResponseCode.INVALID_HANDLE


def test_tcp_garbage_closes_only_that_connection(node):
    with socket.create_connection((node.host, node.port), timeout=RECV_TIMEOUT_S) as sock:
        sock.sendall(b"\x02\x0a\x00\x00" + b"\x00" * 12 + struct.pack(">I", 10_000_000))
        assert sock.recv(100) == b""  # closed
    (answer,) = udp_exchange(node, [request(DATASET.handle_at(1).encode())])
    assert code_of(answer) == ResponseCode.SUCCESS


def test_server_keeps_answering_after_a_burst_of_garbage(node):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for n in range(300):
            sock.sendto(bytes([n % 256]) * (n % 60 + 1), (node.host, node.port))
    (answer,) = udp_exchange(node, [request(DATASET.handle_at(2).encode())])
    assert code_of(answer) == ResponseCode.SUCCESS


# -- lifecycle ---------------------------------------------------------------------------------------------


def test_counts_survive_restart_and_sigterm_is_clean(tmp_path, demo_ndjson):
    data = tmp_path / "store"
    with Store(data, create=True) as store:
        load_files(store, [demo_ndjson])
    with running_node(data, workers=2) as running:

        async def go():
            async with HandleClient(running.host, running.port) as client:
                for i in range(40):
                    assert (await client.resolve(DATASET.handle_at(i))).ok

        run(go())
        assert running.stop() == 0
    stats = json.loads(idnode("stats", "--data", str(data), "--json").stdout)
    assert stats["identifiers"] == 2000
    assert stats["resolutions"]["total"] == 40
    assert sum(stats["resolutions"]["per_prefix"].values()) == 40


def test_ipv4_and_ipv6_binds(node_store):
    with running_node(node_store, workers=1, binds=("127.0.0.1", "::1")) as running:

        async def go(host):
            async with HandleClient(host, running.port, tcp=host == "::1") as client:
                return await client.resolve(DATASET.handle_at(9))

        assert run(go("127.0.0.1")).ok
        assert run(go("::1")).ok


def test_idle_tcp_connection_is_closed_after_the_timeout(node_store):
    with running_node(node_store, workers=1, extra=("--tcp-idle-timeout", "0.5")) as running:
        with socket.create_connection((running.host, running.port), timeout=RECV_TIMEOUT_S) as sock:
            sock.sendall(request(DATASET.handle_at(1).encode()))
            frames = FrameBuffer()
            assert code_of(frames.feed(sock.recv(65535))[0]) == ResponseCode.SUCCESS
            sock.settimeout(5)
            assert sock.recv(100) == b""  # closed by the server once idle


def test_serve_refuses_a_missing_store_clearly(tmp_path):
    result = idnode("serve", "--data", str(tmp_path / "none"), "--handle-port", "0")
    assert result.returncode == 2
    assert "no store at" in result.stderr


def test_a_second_node_on_a_taken_port_refuses_to_start(node, node_store):
    result = idnode("serve", "--data", str(node_store), "--handle-port", str(node.port), "--workers", "1")
    assert result.returncode == 2
    assert f"127.0.0.1:{node.port}/udp" in result.stderr and "already in use" in result.stderr
