"""What a Handle TCP client can hold, over real sockets on 127.0.0.1 (the TCP protocol served in-process, so
the bounds can be small): a request must be whole within its deadline from its first byte, idle connections
between requests are left to the idle timeout, and one source's unfinished requests over all its connections
are capped. The node's own wiring of these bounds is tested in tests/test_limits.py."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from resolver.frontend import HandleFrontend
from resolver.handle.constants import ENVELOPE_BYTES, OpCode, ResponseCode
from resolver.handle.message import (
    ResolutionRequest,
    decode_message,
    encode_request,
    encode_resolution_request,
)
from resolver.handle.tcp import FrameBuffer
from resolver.handle.values import HandleValue, encode_values
from resolver.server.limits import PartialRequestBytes
from resolver.server.tcp import HandleTcpProtocol
from resolver.service import ResolutionService
from storage.records import pack_encoded, split_values
from storage.store import PrefixInfo, Store

HANDLE = b"88.100.1/PART-1"
IDLE_TIMEOUT_S = 60.0  #: far longer than any test: a close seen here comes from the bound under test
GUARD_S = 10.0  #: how long a test waits for something that must happen at once; only a failure waits it out


class Events:
    """The security events the protocol reports, recorded."""

    def __init__(self):
        self.seen: list[tuple[str, str, str]] = []

    def rate_limited(self, source: str, transport: str) -> None:
        self.seen.append(("rate-limited", source, transport))

    def malformed(self, source: str, transport: str) -> None:
        self.seen.append(("malformed", source, transport))


@pytest.fixture()
def frontend(tmp_path):
    with Store(tmp_path / "store", create=True) as store:
        values = encode_values([HandleValue(1, "URL", b"https://example.com/part/1")])
        store.put_records([(HANDLE, pack_encoded(split_values(values), all_public=True))])
        store.put_prefix(PrefixInfo("88.100.1"))
        yield HandleFrontend(ResolutionService(store, "88.100", b""))


def request(padding: int = 0, request_id: int = 1) -> bytes:
    """A resolution of HANDLE; `padding` bytes after the type list (inside BodyLength, ignored by the node, as
    one national SDK's auth blob is) make it as long as a test needs."""
    body = encode_resolution_request(ResolutionRequest(HANDLE)) + bytes(padding)
    return encode_request(OpCode.RESOLUTION, body, request_id=request_id, expiration=2_000_000_000)


@contextlib.asynccontextmanager
async def serving(frontend, **bounds):
    """The Handle TCP protocol on 127.0.0.1, port 0; yields (port, events)."""
    events = Events()
    server = await asyncio.get_running_loop().create_server(
        lambda: HandleTcpProtocol(frontend, lambda: None, IDLE_TIMEOUT_S, events=events, **bounds),
        "127.0.0.1", 0,
    )  # fmt: skip
    try:
        yield server.sockets[0].getsockname()[1], events
    finally:
        server.close()


async def answer_of(reader: asyncio.StreamReader) -> bytes:
    frames = FrameBuffer()
    while True:
        data = await asyncio.wait_for(reader.read(65536), GUARD_S)
        assert data, "the node closed the connection instead of answering"
        got = frames.feed(data)
        if got:
            return got[0]


async def ask(reader, writer, data: bytes) -> int:
    writer.write(data)
    return decode_message(await answer_of(reader)).header.response_code


def test_a_request_stalled_after_its_first_byte_is_closed_at_its_deadline(frontend):
    async def go():
        async with serving(frontend, request_deadline_s=0.3) as (port, events):
            idle = await asyncio.open_connection("127.0.0.1", port)
            assert await ask(*idle, request()) == ResponseCode.SUCCESS  # then silent between requests
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request()[:1])
            assert await asyncio.wait_for(reader.read(100), GUARD_S) == b""  # closed, no answer
            # The idle connection fell silent before the stalled one's first byte: a deadline wrongly applied
            # to it would have closed it first. It still answers.
            assert await ask(*idle, request(request_id=2)) == ResponseCode.SUCCESS
            idle[1].close()
            writer.close()
            return events.seen

    assert asyncio.run(go()) == [("malformed", "127.0.0.1", "tcp")]


def test_a_trickled_request_is_closed_at_its_deadline_although_bytes_keep_coming(frontend):
    """The deadline runs from the first byte: bytes arriving more often than the idle timeout do not extend it."""

    async def go():
        async with serving(frontend, request_deadline_s=0.5) as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            data = request(padding=60)  # ~120 bytes: 6 s at one byte every 50 ms
            closed = asyncio.create_task(reader.read(100))
            sent = 0
            while sent < len(data) and not closed.done():
                writer.write(data[sent : sent + 1])
                sent += 1
                await asyncio.sleep(0.05)  # the client's pace, not a wait for the node
            got = await asyncio.wait_for(closed, GUARD_S)
            writer.close()
            return got, sent, len(data)

    got, sent, total = asyncio.run(go())
    assert got == b"" and sent < total  # closed before the request was whole


def test_unfinished_requests_of_one_source_are_capped_over_its_connections(frontend):
    """Three connections each hold 15,000 bytes of a 20,000-byte request; the source may hold 40,000. The one
    whose bytes pass the bound is closed (whichever the node read last); the other two finish and are answered."""
    partial = PartialRequestBytes(max_per_source=40_000)

    async def go():
        async with serving(frontend, partial=partial) as (port, events):
            data = request(padding=20_000)
            connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
            reads = {asyncio.create_task(reader.read(100)): n for n, (reader, _) in enumerate(connections)}
            for _, writer in connections:
                writer.write(data[:15_000])
            done, _ = await asyncio.wait(reads, timeout=GUARD_S, return_when=asyncio.FIRST_COMPLETED)
            assert len(done) == 1, "no connection was closed"
            (first,) = done
            assert first.result() == b""
            closed = reads.pop(first)
            codes = []
            for task, n in reads.items():
                task.cancel()
                reader, writer = connections[n]
                writer.write(data[15_000:])
                codes.append(decode_message(await answer_of(reader)).header.response_code)
            held_after = partial.held("127.0.0.1")
            for _, writer in connections:
                writer.close()
            return closed, codes, held_after, events.seen

    closed, codes, held_after, seen = asyncio.run(go())
    assert codes == [ResponseCode.SUCCESS] * 2
    assert held_after == 0  # answered requests are no longer counted
    assert seen == [("rate-limited", "127.0.0.1", "tcp")]
    assert 0 <= closed < 3


def test_one_connection_buffers_at_most_one_message(frontend):
    """The per-connection bound is the message size cap: a MessageLength over 262,144 closes at its envelope,
    before any of that message is held."""

    async def go():
        async with serving(frontend) as (port, events):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            envelope = bytearray(request()[:ENVELOPE_BYTES])
            envelope[16:20] = (262_145).to_bytes(4, "big")
            writer.write(bytes(envelope))
            got = await asyncio.wait_for(reader.read(100), GUARD_S)
            writer.close()
            return got, events.seen

    assert asyncio.run(go()) == (b"", [("malformed", "127.0.0.1", "tcp")])
