"""Abuse limits: per-source UDP rate limit, the amplification bound, TCP connection caps. Unit tests of the
tables, then a real node where one abusive source must not slow the answers to another (loopback has many
addresses: 127.0.0.2 floods while 127.0.0.3 resolves)."""

from __future__ import annotations

import select
import socket
import struct

import dns.message
import dns.query
import dns.rcode
import pytest

from bench.datagen import Dataset
from resolver.dnsview.names import handle_to_name
from resolver.handle.constants import EnvelopeFlag, OpCode, ResponseCode
from resolver.handle.message import (
    ResolutionRequest,
    decode_message,
    encode_request,
    encode_resolution_request,
)
from resolver.handle.tcp import FrameBuffer
from resolver.handle.udp import Reassembler
from resolver.server.limits import (
    MAX_PARTIAL_BYTES_PER_SOURCE,
    ConnectionLimiter,
    ExemptNetworks,
    PartialRequestBytes,
    ProvenSources,
    SourceRateLimiter,
)
from tests.servers import free_port, running_node
from tests.test_server import node_store  # noqa: F401  (the module's store: demo identifiers + a large one)

DATASET = Dataset(2000, 1, "88.100", 8)
NO_EXEMPT = ExemptNetworks([])


def test_token_bucket_allows_the_burst_then_the_rate():
    limiter = SourceRateLimiter(rate_per_s=10, burst=5, exempt=NO_EXEMPT)
    assert [limiter.allow("192.0.2.1", 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.allow("192.0.2.1", 0.1)  # one token back after 0.1 s at 10/s
    assert not limiter.allow("192.0.2.1", 0.1)
    assert limiter.allow("192.0.2.2", 0.1)  # another source has its own bucket


def test_exempt_networks_are_never_limited():
    limiter = SourceRateLimiter(rate_per_s=1, burst=1, exempt=ExemptNetworks(["127.0.0.0/8", "::1/128"]))
    assert all(limiter.allow("127.0.0.1", 0.0) for _ in range(100))
    assert all(limiter.allow("::1", 0.0) for _ in range(100))


def test_buckets_are_bounded_and_keep_the_limited_sources():
    limiter = SourceRateLimiter(rate_per_s=1, burst=2, exempt=NO_EXEMPT, max_sources=100)
    for _ in range(3):
        limiter.allow("198.51.100.1", 0.0)  # now limited
    for n in range(500):  # a flood of new (spoofed) sources in the same instant
        limiter.allow(f"10.0.{n // 250}.{n % 250}", 0.0)
    assert len(limiter) <= 100
    assert not limiter.allow("198.51.100.1", 0.0)  # forgetting idle sources kept the limited one


def test_proof_expires_and_connection_caps():
    proven = ProvenSources(NO_EXEMPT, ttl_s=10)
    proven.prove("192.0.2.9", 100.0)
    assert proven.is_proven("192.0.2.9", 105.0) and not proven.is_proven("192.0.2.9", 111.0)
    caps = ConnectionLimiter(max_total=3, max_per_source=2)
    assert [caps.open("a"), caps.open("a"), caps.open("a"), caps.open("b"), caps.open("c")] == [
        True, True, False, True, False,
    ]
    caps.close("a")
    assert caps.open("c")


def test_partial_request_bytes_are_summed_per_source():
    partial = PartialRequestBytes(max_per_source=100)
    assert partial.update("a", 0, 60) and partial.update("a", 0, 40)  # two connections: 100, at the bound
    assert not partial.update("a", 40, 41)  # one byte more over the source's connections
    assert partial.update("b", 0, 100)  # another source counts alone
    partial.update("a", 41, 0)
    partial.update("a", 60, 0)
    assert partial.held("a") == 0 and partial.held("b") == 100


def request(handle: str, request_id: int) -> bytes:
    body = encode_resolution_request(ResolutionRequest(handle.encode()))
    return encode_request(OpCode.RESOLUTION, body, request_id=request_id, expiration=2_000_000_000)


def udp_socket(source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((source, 0))
    sock.settimeout(2.0)
    return sock


def node_config(tmp_path, **settings) -> tuple[str, str]:
    lines = ["rate_limit_exempt = []"] + [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in settings.items()]
    path = tmp_path / "idnode.toml"
    path.write_text("\n".join(lines) + "\n")
    return "--config", str(path)


def test_an_abusive_source_does_not_slow_the_others(tmp_path, node_store):  # noqa: F811
    extra = node_config(tmp_path, udp_rate_limit_per_s=100.0, udp_rate_burst=50.0, udp_rate_limit_action="busy")
    with running_node(node_store, workers=1, extra=extra) as node:
        with udp_socket("127.0.0.2") as flood, udp_socket("127.0.0.3") as good:
            flood.settimeout(0.01)
            codes: dict[int, int] = {}
            good_codes = []
            for n in range(40):
                for k in range(50):  # 2,000 requests from the abusive source, as fast as it can send
                    flood.sendto(request(DATASET.handle_at(k), n * 50 + k), (node.host, node.port))
                good.sendto(request(DATASET.handle_at(n), 100_000 + n), (node.host, node.port))
                good_codes.append(decode_message(good.recv(65535)).header.response_code)
                while True:
                    try:
                        code = decode_message(flood.recv(65535)).header.response_code
                    except (TimeoutError, BlockingIOError):
                        break
                    codes[code] = codes.get(code, 0) + 1
    assert good_codes == [ResponseCode.SUCCESS] * 40  # every answer to the polite source, none refused
    assert codes.get(ResponseCode.SERVER_TOO_BUSY, 0) > 1000  # the flood was refused
    assert codes.get(ResponseCode.SUCCESS, 0) < 400  # burst + rate over the test's second or so


def test_large_udp_answers_go_only_to_proven_sources(tmp_path, node_store):  # noqa: F811
    with running_node(node_store, workers=1, extra=node_config(tmp_path, udp_amplification_factor=10.0)) as node:
        with udp_socket("127.0.0.4") as sock:
            sock.sendto(request("88.100.1/ZZ-LARGE", 1), (node.host, node.port))
            short = sock.recv(65535)
            message = decode_message(short)
            assert message.header.response_code == ResponseCode.ERROR
            assert short[2] & EnvelopeFlag.TC and len(short) < 200
            # A TCP handshake from the same address proves it: an answer on that connection shows the worker
            # has taken the connection (and recorded the proof) by now.
            with socket.create_connection((node.host, node.port), source_address=("127.0.0.4", 0), timeout=2) as tcp:
                tcp.sendall(request(DATASET.handle_at(1), 3))
                assert tcp.recv(65535)
            sock.sendto(request("88.100.1/ZZ-LARGE", 2), (node.host, node.port))
            reassembler, whole = Reassembler(), None
            while whole is None:
                data, addr = sock.recvfrom(65535)
                whole = reassembler.feed(addr, data, 0)
            assert decode_message(whole).header.response_code == ResponseCode.SUCCESS


def test_tcp_connections_per_source_are_capped(tmp_path, node_store):  # noqa: F811
    with running_node(node_store, workers=1, extra=node_config(tmp_path, tcp_max_connections_per_source=3)) as node:
        held = [socket.create_connection((node.host, node.port), source_address=("127.0.0.5", 0)) for _ in range(3)]
        try:
            extra = socket.create_connection((node.host, node.port), source_address=("127.0.0.5", 0), timeout=2)
            extra.sendall(request(DATASET.handle_at(1), 9))
            with pytest.raises((ConnectionResetError, AssertionError)):
                assert extra.recv(100) != b""  # closed by the node
            extra.close()
            other = socket.create_connection((node.host, node.port), source_address=("127.0.0.6", 0), timeout=2)
            other.sendall(request(DATASET.handle_at(1), 10))
            (length,) = struct.unpack(">I", other.recv(20)[16:20])
            assert length > 0
            other.close()
        finally:
            for sock in held:
                sock.close()


def message_of_length(padding: int, request_id: int) -> bytes:
    """A resolution request made long by `padding` bytes after its type list (inside BodyLength, ignored)."""
    body = encode_resolution_request(ResolutionRequest(DATASET.handle_at(1).encode())) + bytes(padding)
    return encode_request(OpCode.RESOLUTION, body, request_id=request_id, expiration=2_000_000_000)


def closed_by_node(sock: socket.socket) -> bool:
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_unfinished_tcp_requests_of_one_source_are_capped(tmp_path, node_store):  # noqa: F811
    """Five connections of one address each hold 250,000 bytes of a request: four fit in the worker's
    MAX_PARTIAL_BYTES_PER_SOURCE, so exactly one is closed; the other four finish and are answered."""
    assert 4 * 250_000 <= MAX_PARTIAL_BYTES_PER_SOURCE < 5 * 250_000
    with running_node(node_store, workers=1, extra=node_config(tmp_path)) as node:
        data = [message_of_length(255_000, n) for n in range(5)]
        conns = [socket.create_connection((node.host, node.port), source_address=("127.0.0.9", 0), timeout=10)
                 for _ in range(5)]  # fmt: skip
        try:
            for sock, message in zip(conns, data, strict=True):
                sock.sendall(message[:250_000])
            readable, _, _ = select.select(conns, [], [], 10)
            assert len(readable) == 1 and closed_by_node(readable[0])
            for sock, message in zip(conns, data, strict=True):
                if sock is readable[0]:
                    continue
                sock.sendall(message[250_000:])
                frames, answers = FrameBuffer(), []
                while not answers:
                    chunk = sock.recv(65536)
                    assert chunk, "closed instead of answered"
                    answers = frames.feed(chunk)
                assert decode_message(answers[0]).header.response_code == ResponseCode.SUCCESS
        finally:
            for sock in conns:
                sock.close()


def test_dns_tcp_connections_per_source_are_capped(tmp_path, node_store):  # noqa: F811
    dns_port = free_port()
    extra = (*node_config(tmp_path, tcp_max_connections_per_source=2), "--dns-port", str(dns_port))
    query = dns.message.make_query(handle_to_name(DATASET.handle_at(1), "id.test."), "TXT").to_wire()
    framed = struct.pack(">H", len(query)) + query
    with running_node(node_store, workers=1, extra=extra) as node:
        held = [socket.create_connection((node.host, dns_port), source_address=("127.0.0.10", 0)) for _ in range(2)]
        try:
            refused = socket.create_connection((node.host, dns_port), source_address=("127.0.0.10", 0), timeout=5)
            refused.sendall(framed)
            assert closed_by_node(refused)  # beyond the cap
            refused.close()
            held[0].sendall(framed)  # the connections within the cap are served
            assert struct.unpack(">H", held[0].recv(2))[0] > 0
            other = dns.query.tcp(dns.message.from_wire(query), node.host, port=dns_port, timeout=5,
                                  source="127.0.0.11")  # fmt: skip
            assert other.rcode() == dns.rcode.NOERROR
        finally:
            for sock in held:
                sock.close()
