"""Batched Handle UDP (recvmmsg/sendmmsg, resolver/server/udp_batch.py) answers exactly as the event loop's datagram
transport does: the same bytes to the same addresses, the same counts, samples, limits and security events; and
it falls back to the transport, with one log line, where it cannot run."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import sys
import threading

import pytest
import uvloop

from resolver.frontend import ANSWER_LIFETIME_S, HandleFrontend
from resolver.handle.constants import EnvelopeFlag, OpCode, OpFlag, ResponseCode
from resolver.handle.message import (
    ResolutionRequest,
    decode_message,
    encode_request,
    encode_resolution_request,
    encode_site_info_request,
)
from resolver.handle.udp import Reassembler, split_datagrams
from resolver.server import udp_batch
from resolver.server.limits import ExemptNetworks, ProvenSources, SourceRateLimiter, UdpGuard
from resolver.server.sockets import UDP_RECEIVE_BUFFER_BYTES, udp_socket
from resolver.server.stats import QueryStats
from resolver.server.udp import HandleUdpProtocol
from resolver.service import ResolutionService
from storage.records import pack_encoded, pack_encoded_shared, split_values
from storage.store import PrefixInfo, Store
from tests.servers import RunningNode, wait_until

#: The tests that run the compiled extension; the fallback is tested everywhere.
needs_mmsg = pytest.mark.skipif(
    udp_batch._mmsg is None or not sys.platform.startswith("linux"),
    reason="resolver.server._mmsg not built here (no C compiler at install, or not Linux): the node falls back",
)

CLOCK_S = 0x65000000 - ANSWER_LIFETIME_S  #: a fixed clock: both servers stamp the same expirations
TRUSTED = "127.0.0.1"  #: exempt from the rate limit and proven (loopback default of a node)
STRANGER = "127.0.0.3"  #: neither: rate limited after BURST requests, and never sent large answers
BURST = 4  #: requests the stranger gets answered before SERVER_TOO_BUSY (the rate refills in hours)
SAMPLE_EVERY = 3  #: so that sampled and unsampled requests alternate within one batch
SENTINEL_ID = 0xBEEF  #: request id of the last datagram of each source: its answer ends the collection
ANSWER_TIMEOUT_S = 10.0  #: a loopback answer takes microseconds; far above that, the server lost it
LOOP_START_TIMEOUT_S = 10.0


class RecordedEvents:
    """The security events a listener raises, in order."""

    def __init__(self):
        self.seen: list[tuple[str, str, str]] = []

    def rate_limited(self, source: str, transport: str) -> None:
        self.seen.append(("rate_limited", source, transport))

    def malformed(self, source: str, transport: str) -> None:
        self.seen.append(("malformed", source, transport))


def request(
    handle: bytes, request_id: int = 7, op_code: int = OpCode.RESOLUTION, body: bytes | None = None, **fields
) -> bytes:
    body = encode_resolution_request(ResolutionRequest(handle)) if body is None else body
    return encode_request(op_code, body, request_id=request_id, expiration=2_000_000_000, **fields)


def with_empty_credential(datagram: bytes) -> bytes:
    """The request as id-pointer sends it: an empty credential section after the body."""
    grown = bytearray(datagram + bytes(4))
    struct.pack_into(">I", grown, 16, len(grown) - 20)
    return bytes(grown)


def sentinel() -> bytes:
    return encode_request(
        OpCode.GET_SITE_INFO, encode_site_info_request(), request_id=SENTINEL_ID, expiration=2_000_000_000
    )


def request_id_of(datagram: bytes) -> int:
    return struct.unpack_from(">I", datagram, 8)[0]


@pytest.fixture(params=[False, True], ids=["case-insensitive", "case-sensitive"])
def store(tmp_path, vectors, request):
    """Records of every shape the batch's extension meets: public ones it answers (one with its HS_ADMIN kept
    once as a shared value), and those it hands to Python: a private value, too large for a datagram, no
    values, a disabled prefix."""
    with Store(tmp_path / "store", create=True, case_sensitive=request.param) as s:
        public = [vectors[f"value_{i}_{name}"] for i, name in enumerate(["URL", "EMAIL", "DESC", "HS_ADMIN"])]
        large = decode_message(vectors["large_response_whole"]).body[4 + len(b"88.100.1/ABC123") :]
        shared_record, (sid, shared_value) = pack_encoded_shared(public, all_public=True)
        s.put_records(
            sorted(
                [
                    (
                        b"88.100.1/ABC123",
                        pack_encoded(public + [vectors["value_4_INTERNAL"]], all_public=False),
                    ),
                    (b"88.100.1/LARGE", pack_encoded(split_values(large), all_public=True)),
                    (b"88.100.1/PUBLIC", pack_encoded(public[:3], all_public=True)),
                    (b"88.100.1/SHARED", shared_record),
                    (b"88.100.1/EMPTY", pack_encoded([], all_public=True)),
                    (b"88.300.1/OFF", pack_encoded(public[:1], all_public=True)),
                ]
            )
        )
        with s.env.begin(write=True) as txn:
            s.put_shared(txn, {sid: shared_value})
        s.put_prefix(PrefixInfo("88.100.1", created_s=0x65000000))
        s.put_prefix(PrefixInfo("88.300.1", state="disabled", created_s=0x65000000))
        yield s


def corpus(vectors) -> dict[str, list[bytes]]:
    """What each source sends: every request vector, outcomes of every kind, bad input, a chunked request, a
    chunked answer; the stranger is rate limited and bounded. Twice over, so one readiness event reads more
    than one batch."""
    types = tuple(f"TYPE{i:03}".encode() for i in range(80)) + (b"URL",)
    chunked = split_datagrams(request(b"", 4242, body=encode_resolution_request(
        ResolutionRequest(b"88.100.1/ABC123", (), types))))  # fmt: skip
    assert len(chunked) > 1
    too_long = bytearray(request(b"88.100.1/ABC123"))
    struct.pack_into(">I", too_long, 16, len(too_long) - 20 + 10)  # says 10 more bytes than sent
    names = [name for name in vectors if "request" in name or name.startswith("client_")]
    suggested = bytearray(request(b"88.100.1/PUBLIC", 36))
    suggested[2:4] = b"\x02\x05"  # answer at the suggested version 2.5
    beyond = bytearray(request(b"88.100.1/SHARED", 37))
    beyond[2:4] = b"\x03\x00"  # suggests 3.0: answered at the server's own version
    plain = [  # what the extension answers itself (or hands back, and why)
        request(b"88.100.1/PUBLIC", 30),
        request(b"88.100.1/public", 31),  # the same identifier unless the store is case-sensitive
        request(b"88.100.1/SHARED", 32),  # first from Python (it reads the shared value), then from C
        request(b"88.100.1/EMPTY", 33),  # no values: VALUES_NOT_FOUND
        request(b"88.300.1/OFF", 34),  # a disabled prefix
        request(b"0.NA/88.100.1", 35),  # a prefix handle
        bytes(suggested),
        bytes(beyond),
        with_empty_credential(request(b"88.100.1/PUBLIC", 38)),
        request(b"88.100.1/PUBLIC", 39, op_flags=OpFlag.REC | OpFlag.PO, session_id=77, recursion_count=2),
        request(b"88.100.1/PUBLIC", 40, op_flags=OpFlag.CT),  # certified: the general path
    ]
    trusted = (
        [vectors[name] for name in names]
        + plain
        + [
            request(b"88.100.1/ABC123"),
            request(b"88.100.1/NOT-HERE", 8),
            request(b"88.100.1/LARGE", 9),  # many datagrams, to a proven source
            request(b"99.1/ELSEWHERE", 10),
            request(b"no-slash", 11),
            request(b"88.100.1/ABC123", 12, op_code=999),
            b"\xff" * 7,  # no envelope: dropped
            request(b"88.100.1/ABC123")[:19],
            bytes(too_long),
            *reversed(chunked),
        ]
    )
    stranger = [request(b"88.100.1/PUBLIC", 19), request(b"88.100.1/LARGE", 20)] + [
        request(b"88.100.1/ABC123", 21 + i) for i in range(BURST + 2)
    ]
    return {TRUSTED: trusted * 2 + [sentinel()], STRANGER: stranger * 2 + [sentinel()]}


class Listener:
    """One listener of the given kind on 127.0.0.1 with its own frontend, guard, stats and events: "transport"
    (the loop's), "batch" (recvmmsg, plain resolutions answered in C) or "batch-python" (recvmmsg, all in
    Python)."""

    def __init__(self, store: Store, kind: str):
        self.store = store
        self.kind = kind
        self.events = RecordedEvents()
        self.stats = QueryStats(sample_every=SAMPLE_EVERY)

    def resolutions(self) -> tuple[dict[bytes, int], int]:
        """The Handle resolutions counted per prefix, and how many are waiting to be flushed."""
        counter = self.service.counter
        return dict(counter.live_counts), counter.pending

    async def start(self, loop) -> None:
        # Opened in the loop's thread: LMDB read transactions belong to their thread.
        service = ResolutionService(self.store, "88.100", b"")
        frontend = HandleFrontend(service, clock=lambda: CLOCK_S)
        exempt = ExemptNetworks([f"{TRUSTED}/32"])
        self.guard = UdpGuard(SourceRateLimiter(1e-6, BURST, exempt), ProvenSources(exempt), 3.0,
                              frontend.busy_answer, frontend.too_large_answer)  # fmt: skip
        protocol = HandleUdpProtocol(frontend, service.refresh, self.stats, self.guard, self.events)
        self.service = service
        sock = udp_socket("127.0.0.1", 0)  # as a worker binds: non-blocking, a 4 MiB receive buffer
        self.address = sock.getsockname()
        if self.kind.startswith("batch"):
            self.closer = udp_batch.BatchedUdpListener(loop, sock, protocol, answer_in_c=self.kind == "batch")
        else:
            self.closer, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)


@contextlib.contextmanager
def serving(store: Store, kinds: tuple[str, ...]):
    """The listeners in a uvloop loop of their own thread; yields (listeners, gate): the loop waits on `gate`
    (a threading.Event) when told to, so that datagrams pile up and are read together."""
    loop = uvloop.new_event_loop()
    listeners = [Listener(store, kind) for kind in kinds]
    started = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        for listener in listeners:
            loop.run_until_complete(listener.start(loop))
        started.set()
        loop.run_forever()
        for listener in listeners:
            listener.closer.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert started.wait(LOOP_START_TIMEOUT_S), "the listeners did not start"
        yield listeners, loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(LOOP_START_TIMEOUT_S)


def exchange(loop, server: tuple, datagrams: dict[str, list[bytes]]) -> dict[str, list[bytes]]:
    """Send every source's datagrams while the server's loop is held (so they are read together), then collect
    each source's answers up to its sentinel's."""
    clients = {}
    gate = threading.Event()
    try:
        for source in datagrams:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER_BYTES)
            sock.bind((source, 0))
            sock.settimeout(ANSWER_TIMEOUT_S)
            clients[source] = sock
        loop.call_soon_threadsafe(gate.wait, ANSWER_TIMEOUT_S)
        for source, sent in datagrams.items():
            for datagram in sent:
                clients[source].sendto(datagram, server)
        gate.set()
        answers = {}
        for source, sock in clients.items():
            got = answers[source] = []
            while True:
                data, addr = sock.recvfrom(65535)
                assert addr == server
                got.append(data)
                if request_id_of(data) == SENTINEL_ID:
                    break
        return answers
    finally:
        for sock in clients.values():
            sock.close()


@needs_mmsg
def test_batched_answers_equal_the_transports_byte_for_byte(store, vectors):
    """Batched with plain resolutions answered by the extension, batched with all in Python, and the loop's
    transport: the same answers, counts, samples, limits and events."""
    sent = corpus(vectors)
    with serving(store, ("transport", "batch", "batch-python")) as (listeners, loop):
        transport, batch, batch_python = listeners
        old = exchange(loop, transport.address, sent)
        new = exchange(loop, batch.address, sent)
        python = exchange(loop, batch_python.address, sent)
    assert new == old and python == old
    assert batch.closer.answered_in_c > 5 and batch_python.closer.answered_in_c == 0
    # The corpus reached every link of the chain (else equality would prove little):
    codes: set[int] = set()
    whole = Reassembler()
    for source, answers in old.items():
        for datagram in answers:
            message = whole.feed(source, datagram, 0)
            if message is not None:
                codes.add(decode_message(message).header.response_code)
    for code in (ResponseCode.SUCCESS, ResponseCode.HANDLE_NOT_FOUND, ResponseCode.PROTOCOL_ERROR,
                 ResponseCode.SERVER_TOO_BUSY, ResponseCode.OPERATION_NOT_SUPPORTED):  # fmt: skip
        assert code in codes, code.name
    assert sum(len(a) > 400 for a in old[TRUSTED]) >= 4, "the large answer went out in pieces"
    assert any(a[2] & EnvelopeFlag.TC for a in old[STRANGER]), "the stranger got 'ask over TCP'"
    # ... and both paths counted, sampled, limited and reported alike.
    old_counts, old_samples = transport.stats.take()
    assert sum(old_counts["handle-udp"].values()) > 40
    for listener in (batch, batch_python):
        new_counts, new_samples = listener.stats.take()
        assert new_counts == old_counts
        assert len(new_samples["handle-udp"]) == len(old_samples["handle-udp"]) > 10
        assert (listener.guard.limited, listener.guard.sent_to_tcp) == (
            transport.guard.limited,
            transport.guard.sent_to_tcp,
        )
        assert listener.events.seen == transport.events.seen
        assert listener.resolutions() == transport.resolutions()
    assert transport.guard.limited == len(sent[STRANGER]) - BURST and transport.guard.sent_to_tcp == 1
    assert ("rate_limited", STRANGER, "udp") in batch.events.seen
    assert ("malformed", TRUSTED, "udp") in batch.events.seen


@needs_mmsg
def test_the_extension_and_the_protocol_read_handed_flags_alike():
    """What `Batch.serve` says of a datagram it hands back is defined in C and read in Python: one meaning."""
    from resolver.server import _mmsg, udp

    assert (_mmsg.HANDED_SAMPLED, _mmsg.HANDED_REFUSED, _mmsg.HANDED_UNDECIDED) == (
        udp.HANDED_SAMPLED,
        udp.HANDED_REFUSED,
        udp.HANDED_UNDECIDED,
    )


@needs_mmsg
def test_more_datagrams_than_one_wakeup_reads_are_all_answered(store, monkeypatch):
    """A burst of more than one wake-up's worth (MAX_BATCHES_PER_WAKEUP × DATAGRAMS_PER_BATCH, plus some; two
    batches a wake-up here, so that the burst fits the socket buffers) is answered in full and in order: the
    listener hands the loop back and reads the rest on the next readiness event."""
    monkeypatch.setattr(udp_batch, "MAX_BATCHES_PER_WAKEUP", 2)
    count = udp_batch.DATAGRAMS_PER_BATCH * udp_batch.MAX_BATCHES_PER_WAKEUP + 100
    sent = {TRUSTED: [request(b"88.100.1/ABC123", i) for i in range(1, count)] + [sentinel()]}
    with serving(store, ("batch",)) as (listeners, loop):
        answers = exchange(loop, listeners[0].address, sent)
    assert [request_id_of(a) for a in answers[TRUSTED]] == [*range(1, count), SENTINEL_ID]
    assert listeners[0].closer.unsent == 0


@needs_mmsg
def test_batch_answers_each_datagram_at_its_own_source():
    """The extension alone: answers go to the address each request came from, any number of datagrams each."""
    from resolver.server import _mmsg

    with contextlib.ExitStack() as stack:
        server = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        server.bind(("127.0.0.1", 0))
        server.setblocking(False)
        batch = _mmsg.Batch(server.fileno(), 8)
        assert batch.recv() == []
        clients = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) for _ in range(3)]
        for n in range(6):
            clients[n % 3].sendto(b"q%d" % n, server.getsockname())
        received = wait_until(batch.recv, "six datagrams")  # loopback queues them at once; this only retries
        assert [d for d, _ in received] == [b"q%d" % n for n in range(6)]
        assert [a for _, a in received] == [("127.0.0.1", c.getsockname()[1]) for c in clients] * 2
        assert batch.send([[b"a0"], [], None, [b"a3", b"a3+"], [b"a4"], [b"a5"]]) == 0
        for client, expected in zip(clients, [[b"a0", b"a3", b"a3+"], [b"a4"], [b"a5"]], strict=True):
            client.settimeout(ANSWER_TIMEOUT_S)
            assert [client.recv(100) for _ in expected] == expected
        with pytest.raises(ValueError, match="7 answers for 6"):
            batch.send([[]] * 7)
        with pytest.raises(TypeError, match="bytes"):
            batch.send([["text"]])


def test_switched_off_or_missing_falls_back_with_one_log_line(monkeypatch, caplog):
    monkeypatch.setattr(udp_batch, "_told", False)
    loop = asyncio.new_event_loop()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, caplog.at_level(logging.INFO):
            assert udp_batch.batched_listener(loop, sock, None, enabled=False) is None
            assert udp_batch.batched_listener(loop, sock, None, enabled=False) is None
    finally:
        loop.close()
    lines = [r.getMessage() for r in caplog.records if r.name == udp_batch.__name__]
    assert lines == ["Handle UDP: batched datagram I/O off (udp_batch = false); using the event loop's "
                     "datagram transport"]  # fmt: skip
    monkeypatch.setattr(udp_batch, "_mmsg", None)
    assert "not compiled" in udp_batch.unavailable_reason()
    monkeypatch.setattr(udp_batch.sys, "platform", "freebsd14")
    assert "Linux" in udp_batch.unavailable_reason()


@pytest.mark.parametrize("switch", ["", "0"])
def test_a_node_serves_handle_udp_either_way(demo_store_copy, monkeypatch, switch):
    """`idnode serve` answers over UDP batched by default, and through the transport when switched off (here by
    the environment, IDNODE_UDP_BATCH=0), which it says once."""
    if switch:
        monkeypatch.setenv("IDNODE_UDP_BATCH", switch)
    else:
        monkeypatch.delenv("IDNODE_UDP_BATCH", raising=False)
    node = RunningNode(demo_store_copy, workers=1)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(ANSWER_TIMEOUT_S)
            for i in range(1, 4):
                sock.sendto(request(b"88.100.1/NOT-HERE", i), (node.host, node.port))
            answers = [sock.recv(65535) for _ in range(3)]
        assert [request_id_of(a) for a in answers] == [1, 2, 3]
        assert {decode_message(a).header.response_code for a in answers} == {ResponseCode.HANDLE_NOT_FOUND}
        told = "batched datagram I/O off (udp_batch = false)"
        assert (told in node.output) == bool(switch), node.output
        assert "names no setting" not in node.output
    finally:
        node.stop()
