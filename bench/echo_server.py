"""The floor of a Python DNS server: uvloop, one UDP socket, and for every query a fixed pre-encoded answer.

Each query gets its own id and question back, then one TXT record (owned by a pointer to the question) whose
rdata never changes: no lookup, no parsing beyond finding the end of the question. Whatever idnode's DNS view
costs above this rate is the price of its work (name mapping, store, rendering), not of Python and the event
loop. Used by bench/compare.py as the "C-free baseline"; not a server for anything else.

    python -m bench.echo_server --port 8054 [--bind 127.0.0.1]

Stops on SIGTERM or SIGINT. Imports nothing of idnode.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import struct

import uvloop

HEADER_BYTES = 12  #: RFC 1035 §4.1.1
RECEIVE_BUFFER_BYTES = 4 << 20  #: as the idnode worker asks for, so both absorb the same bursts
#: The answer record: pointer to the question name (RFC 1035 §4.1.4), TXT, IN, TTL 86400, one string.
_TEXT = b"1 URL https://www.example.cn/trace/BATCH-2025-000001"
ANSWER_RECORD = (
    b"\xc0\x0c" + struct.pack(">HHIH", 16, 1, 86400, len(_TEXT) + 1) + bytes((len(_TEXT),)) + _TEXT
)
#: After the query's id: flags QR AA RD (0x8500), one question, one answer, no authority, no or one additional.
_HEAD = struct.pack(">HHHHH", 0x8500, 1, 1, 0, 0)
_HEAD_OPT = struct.pack(">HHHHH", 0x8500, 1, 1, 0, 1)
#: Our OPT record (RFC 6891 §6.1.2) for queries that carried one: root owner, 1232-byte UDP size.
_OPT = b"\x00" + struct.pack(">HHIH", 41, 1232, 0, 0)


def answer(query: bytes) -> bytes | None:
    """The fixed answer to ``query``, or None for a datagram too short or odd to have one question."""
    n = len(query)
    if n < HEADER_BYTES + 5 or query[2] & 0x80:
        return None
    pos = HEADER_BYTES
    length = query[pos]
    while length:  # the question name: plain labels only (a query never compresses its only name)
        if length > 63:
            return None
        pos += length + 1
        if pos >= n:
            return None
        length = query[pos]
    end = pos + 5  # root label, qtype, qclass
    if end > n:
        return None
    if end == n:
        return query[:2] + _HEAD + query[HEADER_BYTES:end] + ANSWER_RECORD
    return query[:2] + _HEAD_OPT + query[HEADER_BYTES:end] + ANSWER_RECORD + _OPT


class EchoProtocol(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sendto = transport.sendto  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        reply = answer(data)
        if reply is not None:
            self._sendto(reply, addr)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    except OSError:
        pass
    sock.bind((host, port))
    transport, _ = await loop.create_datagram_endpoint(EchoProtocol, sock=sock)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        transport.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="UDP port")
    args = parser.parse_args(argv)
    uvloop.run(serve(args.bind, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
