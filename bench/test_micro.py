"""Micro-benchmarks of the hot paths: decode the request, get the record, encode the answer (Handle), and a
whole DNS answer of the DNS view (rendered afresh, replayed from its memo, NXDOMAIN).

Each group times one piece on a real LMDB store of generated identifiers, so the pieces add up to the cost of
one UDP answer minus the event loop and the socket calls (``bench/loadgen.py`` measures the whole). Run them
with ``make bench-micro``; under the normal ``--benchmark-disable`` every case runs once and only its answer
is checked, so they double as a quick smoke test. Timings are never asserted here.
"""

from __future__ import annotations

import contextlib
import itertools
import socket

import dns.message
import dns.rcode
import pytest

from bench.datagen import Dataset, generate_lines, missing_handle, write_ndjson
from resolver.config import ServeConfig
from resolver.dnsview import DnsView, handle_to_name
from resolver.frontend import HandleFrontend
from resolver.handle.constants import OpCode, OpFlag, ResponseCode
from resolver.handle.message import (
    ResolutionRequest,
    decode_request,
    decode_resolution_request,
    decode_response,
    encode_request,
    encode_resolution_request,
    encode_resolution_response,
)
from resolver.server import udp_batch
from resolver.server.sockets import UDP_RECEIVE_BUFFER_BYTES, udp_socket
from resolver.server.stats import QueryStats
from resolver.server.udp import HandleUdpProtocol
from resolver.server.worker import node_site
from resolver.service import ResolutionService
from storage.keys import handle_key
from storage.loader import load_files
from storage.store import Store

DATASET = Dataset(20_000, seed=1, prefix="88.100", enterprises=8)  #: small enough to build in about a second
KEYS_ROTATED = 1024  #: store gets cycle over this many handles, so one hot page does not flatter the figure
EXPIRATION = 1_900_000_000  #: a fixed ExpirationTime keeps the answers byte-identical between runs
CNRI_FLAGS = int(OpFlag.REC | OpFlag.CA | OpFlag.PO)  #: the reference client's flags (resolve_request_plain)


def resolution_request(handle: str, request_id: int = 0x01020304) -> bytes:
    """A request shaped like the vector ``resolve_request_plain``: version 2.3 suggesting 2.10, no filters."""
    body = encode_resolution_request(ResolutionRequest(handle.encode()))
    return encode_request(
        OpCode.RESOLUTION, body, request_id=request_id, expiration=EXPIRATION, op_flags=CNRI_FLAGS,
        version=(2, 3),
    )  # fmt: skip


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("micro")
    source = path / "ids.ndjson"
    with source.open("w", encoding="utf-8") as out:
        write_ndjson(generate_lines(DATASET.count, DATASET.seed, DATASET.prefix, DATASET.enterprises), out)
    with Store(path / "store", create=True) as store:
        load_files(store, [source])
    return path / "store"


@pytest.fixture(scope="module")
def store(store_dir):
    with Store(store_dir) as s:
        yield s


@pytest.fixture(scope="module")
def frontend(store, store_dir):
    service = ResolutionService(store, "88.100", node_site(ServeConfig(store_dir)))
    return HandleFrontend(service, clock=lambda: EXPIRATION - 43_200)


@pytest.fixture(scope="module")
def handles() -> list[str]:
    return DATASET.sample_handles(KEYS_ROTATED, rng_seed=7)


# --- the pieces ---------------------------------------------------------------------------------------


@pytest.mark.benchmark(group="decode-request")
def test_decode_request(benchmark, handles):
    data = resolution_request(handles[0])

    def decode():
        message = decode_request(data)
        return message, decode_resolution_request(message.body)

    message, query = benchmark(decode)
    assert message.envelope.request_id == 0x01020304
    assert query == ResolutionRequest(handles[0].encode())


@pytest.mark.benchmark(group="store-get")
def test_store_get_and_unpack(benchmark, store, handles):
    view = store.read_view()
    keys = itertools.cycle([handle_key(h.encode()) for h in handles])

    def get():
        return store.unpack(view.get(next(keys)))

    tail, all_public = benchmark(get)
    assert tail[:4] == b"\x00\x00\x00\x04" and all_public  # URL, EMAIL, DESC, HS_ADMIN, all public


@pytest.mark.benchmark(group="store-get")
def test_store_get_missing(benchmark, store):
    view = store.read_view()
    key = handle_key(missing_handle(0, DATASET.prefix, DATASET.enterprises).encode())
    assert benchmark(view.get, key) is None


@pytest.mark.benchmark(group="store-get")
def test_read_view_refresh(benchmark, frontend):
    """What the server pays per batch of datagrams to see new writes: abort + begin of a read transaction."""
    benchmark(frontend.service.refresh)
    assert frontend.service.resolve(b"88.100.1/NOPE")[0] == ResponseCode.HANDLE_NOT_FOUND


@pytest.mark.benchmark(group="encode-answer")
def test_encode_resolution_response(benchmark, store, handles):
    request = decode_request(resolution_request(handles[0]))
    tail, _ = store.unpack(store.get(handles[0]))
    handle = handles[0].encode()
    answer = benchmark(encode_resolution_response, request, handle, tail, EXPIRATION)
    message = decode_response(answer)
    assert message.header.response_code == ResponseCode.SUCCESS
    assert message.envelope.request_id == 0x01020304 and len(answer) <= 512


# --- the whole chain ----------------------------------------------------------------------------------


@pytest.mark.benchmark(group="hot-path")
def test_chain_by_hand(benchmark, store, handles):
    """decode-request → store-get → encode-response with nothing between: the floor under answer_message."""
    view = store.read_view()
    datagrams = itertools.cycle([resolution_request(h) for h in handles])

    def answer():
        request = decode_request(next(datagrams))
        query = decode_resolution_request(request.body)
        tail, _ = store.unpack(view.get(handle_key(query.handle)))
        return encode_resolution_response(request, query.handle, tail, EXPIRATION)

    assert decode_response(benchmark(answer)).header.response_code == ResponseCode.SUCCESS


@pytest.mark.benchmark(group="hot-path")
def test_answer_message_found(benchmark, frontend, handles):
    datagrams = itertools.cycle([resolution_request(h) for h in handles])
    answer = benchmark(lambda: frontend.answer_message(next(datagrams)))
    assert decode_response(answer).header.response_code == ResponseCode.SUCCESS


@pytest.mark.benchmark(group="hot-path")
def test_answer_message_missing(benchmark, frontend):
    data = resolution_request(missing_handle(3, DATASET.prefix, DATASET.enterprises))
    answer = benchmark(frontend.answer_message, data)
    assert decode_response(answer).header.response_code == ResponseCode.HANDLE_NOT_FOUND


@pytest.mark.benchmark(group="hot-path")
def test_answer_datagram_found(benchmark, frontend, handles):
    """What the UDP protocol calls per datagram (answer_message plus the chunking check)."""
    datagrams = itertools.cycle([resolution_request(h) for h in handles])
    source = ("127.0.0.1", 40000)
    answers = benchmark(lambda: frontend.answer_datagram(next(datagrams), source))
    assert len(answers) == 1 and decode_response(answers[0]).header.response_code == ResponseCode.SUCCESS


# --- a batch of Handle UDP datagrams -----------------------------------------------------------------

BATCH = 64  #: datagrams of one recvmmsg (resolver.server.udp_batch.DATAGRAMS_PER_BATCH)


@pytest.fixture()
def udp_pair():
    """A worker's UDP socket on 127.0.0.1 and a client socket, both closed afterwards."""
    server = udp_socket("127.0.0.1", 0)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER_BYTES)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    yield server, client
    server.close()
    client.close()


def _one_udp_batch(benchmark, frontend, handles, udp_pair, in_c: bool) -> None:
    """One recvmmsg of 64 plain resolutions, their answers, one sendmmsg: per batch, socket calls included (the
    client's sends and reads are set-up, not timed). Divide by 64 for a datagram."""
    server, client = udp_pair
    protocol = HandleUdpProtocol(frontend, frontend.service.refresh, QueryStats())
    protocol.start_batch_at(0.0)
    batch = udp_batch._mmsg.Batch(server.fileno(), BATCH)
    if in_c:
        protocol.configure_batch(batch)
    address = server.getsockname()
    requests = [resolution_request(h, i) for i, h in enumerate(handles[:BATCH])]

    def send_requests():
        with contextlib.suppress(BlockingIOError):
            while True:
                client.recv(2048)  # the last round's answers
        for request in requests:
            client.sendto(request, address)

    def answer_batch():
        answers = protocol.serve_batch(batch) if in_c else protocol.answer_batch(batch.recv())
        batch.send(answers)
        return batch.received

    assert benchmark.pedantic(answer_batch, setup=send_requests, rounds=ROUNDS_OF_BATCHES) == BATCH
    assert (batch.answered > 0) == in_c
    assert decode_response(client.recv(2048)).header.response_code == ResponseCode.SUCCESS


needs_mmsg = pytest.mark.skipif(udp_batch._mmsg is None, reason="resolver.server._mmsg not built here")
ROUNDS_OF_BATCHES = 2000


@needs_mmsg
@pytest.mark.benchmark(group="udp-batch-of-64")
def test_udp_batch_answered_in_c(benchmark, frontend, handles, udp_pair):
    _one_udp_batch(benchmark, frontend, handles, udp_pair, in_c=True)


@needs_mmsg
@pytest.mark.benchmark(group="udp-batch-of-64")
def test_udp_batch_answered_in_python(benchmark, frontend, handles, udp_pair):
    _one_udp_batch(benchmark, frontend, handles, udp_pair, in_c=False)


# --- the DNS view -------------------------------------------------------------------------------------


def dns_query(handle: str, rdtype: str) -> bytes:
    return dns.message.make_query(handle_to_name(handle, "id.test."), rdtype, use_edns=0).to_wire()


def dns_view(frontend, memo_bytes: int) -> DnsView:
    return DnsView("id.test.", frontend.service.values_tail, memo_bytes=memo_bytes)


@pytest.mark.benchmark(group="dns-answer")
def test_dns_answer_rendered(benchmark, frontend, handles):
    """Read the query, look the identifier up, render its TXT records: a query nobody asked lately (memo off)."""
    view = dns_view(frontend, memo_bytes=0)
    queries = itertools.cycle([dns_query(h, "TXT") for h in handles])
    answer = dns.message.from_wire(benchmark(lambda: view.answer(next(queries))))
    assert answer.rcode() == dns.rcode.NOERROR and answer.answer


@pytest.mark.benchmark(group="dns-answer")
def test_dns_answer_replayed(benchmark, frontend, handles):
    """A query asked before: the memo's answer, after one store lookup checks the values are unchanged."""
    view = dns_view(frontend, memo_bytes=64 << 20)
    wires = [dns_query(h, "URI") for h in handles]
    for wire in wires:
        view.answer(wire)
    queries = itertools.cycle(wires)
    answer = dns.message.from_wire(benchmark(lambda: view.answer(next(queries))))
    assert answer.rcode() == dns.rcode.NOERROR and answer.answer
    assert all(view._answers.get(wire[2:]) is not None for wire in wires)  # every one is answered from the memo


@pytest.mark.benchmark(group="dns-answer")
def test_dns_answer_nxdomain(benchmark, frontend):
    view = dns_view(frontend, memo_bytes=0)
    wire = dns_query(missing_handle(3, DATASET.prefix, DATASET.enterprises), "TXT")
    assert dns.message.from_wire(benchmark(view.answer, wire)).rcode() == dns.rcode.NXDOMAIN
