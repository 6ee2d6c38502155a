"""The node's own share of Handle UDP latency, read off the wire: each request's and each answer's kernel
transmit timestamps on the loopback interface, paired by client port and request id.

Why: a load generator measures from when a request was due to when it read the answer, so any delay of its
own (waiting for its CPU, or for a neighbour's long system call on a kernel that does not preempt them) counts
against the node. On a 2-CPU machine the generator must share a CPU with the worker or with the write plane,
and bench/writeplane_load.py has to tell the two apart. A packet socket (AF_PACKET on `lo`, root only) sees
every datagram as it is sent: the request when the generator sends it, the answer when the worker sends it.
The difference is what the node added: the request waiting in the socket, the answer being made, the send.
The timestamps are the kernel's, taken at the transmit: the capture process may read them late (it runs beside
the generator) without changing them; its receive buffer is made large so that nothing is dropped meanwhile.

A socket bound to IPv4 sees what `lo` delivers, and `lo` delivers a datagram within the sender's own system call,
so its receive timestamp is the moment it was sent. A classic BPF filter keeps only UDP datagrams to or from the
node's port, cut to the 48 bytes that hold the IP and UDP headers and the Handle envelope's request id.
"""

from __future__ import annotations

import array
import multiprocessing
import os
import socket
import struct
from pathlib import Path

from bench.load.report import percentiles

ETH_P_IP = 0x0800
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35
PACKET_HOST = 0
SKF_AD_PKTTYPE = -0x1000 + 4  #: BPF ancillary load: the packet's type (outgoing, host, ...)
SNAP_BYTES = 48  #: IPv4 header (20) + UDP header (8) + the Handle envelope (20) holding the request id
RECEIVE_BUFFER_BYTES = 64 << 20
POLL_S = 0.2
ENVELOPE_AT = 8  #: the Handle envelope follows the UDP header
REQUEST_ID_AT = 8  #: ... and carries the request id at this offset (handle-protocol: envelope)
#: One request in four (by request id) is captured: a p99 needs no more at thousands a second, and the capture,
#: which shares a CPU with the generator and the write plane, then takes a quarter of the CPU.
SAMPLE_MASK = 3
_TIMESPEC = struct.Struct("@ll")


def _bpf(port: int, sample_mask: int) -> bytes:
    """A classic BPF program: accept SNAP_BYTES of an IPv4 UDP datagram from or to `port` as `lo` delivers it,
    when its request id & `sample_mask` is 0 (a request and its answer carry the same id)."""
    # (code, jt, jf, k); jumps count from the next instruction; a SOCK_DGRAM packet socket sees the packet from
    # its network header on
    program = [
        (0x20, 0, 0, SKF_AD_PKTTYPE & 0xFFFFFFFF),  # 0: ld pkttype
        (0x15, 0, 11, PACKET_HOST),  # 1: jeq host (as looped back), else drop
        (0x30, 0, 0, 9),  # 2: ldb [9]: IP protocol
        (0x15, 0, 9, 17),  # 3: jeq UDP, else drop
        (0xB1, 0, 0, 0),  # 4: ldxb 4*([0]&0xf): the IP header's length
        (0x48, 0, 0, 0),  # 5: ldh [x+0]: source port
        (0x15, 2, 0, port),  # 6: jeq port: to the sample check
        (0x48, 0, 0, 2),  # 7: ldh [x+2]: destination port
        (0x15, 0, 4, port),  # 8: jeq port, else drop
        (0x40, 0, 0, ENVELOPE_AT + REQUEST_ID_AT),  # 9: ld [x+16]: the request id
        (0x54, 0, 0, sample_mask),  # 10: and mask
        (0x15, 0, 1, 0),  # 11: jeq 0, else drop
        (0x06, 0, 0, SNAP_BYTES),  # 12: ret SNAP_BYTES
        (0x06, 0, 0, 0),  # 13: ret 0: drop
    ]
    return b"".join(struct.pack("HBBI", *op) for op in program)


def open_capture(port: int, sample_mask: int = SAMPLE_MASK) -> socket.socket:
    """A packet socket on `lo` filtered to the UDP datagrams of `port`; PermissionError unless root."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    program = _bpf(port, sample_mask)
    buffer = array.array("B", program)
    address, _ = buffer.buffer_info()
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HL", len(program) // 8, address))
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER_BYTES)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.bind(("lo", ETH_P_IP))
    sock.settimeout(POLL_S)
    return sock


def _capture(port: int, out: str, cpu: int | None, sample_mask: int, ready, stop) -> None:
    """The capture process: pairs until `stop`, written to `out` as int64 (request sent ns, node's ns)."""
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    sock = open_capture(port, sample_mask)
    ready.set()
    pending: dict[tuple[int, bytes], int] = {}
    pairs = array.array("q")
    ancillary = socket.CMSG_SPACE(_TIMESPEC.size)
    parent = os.getppid()
    seen = 0
    while not stop.is_set():
        seen += 1
        if not seen % 4096 and os.getppid() != parent:
            return  # the bench was killed: do not capture for ever
        try:
            data, anc, _flags, _addr = sock.recvmsg(SNAP_BYTES, ancillary)
        except TimeoutError:
            if os.getppid() != parent:
                return
            continue
        if len(data) < SNAP_BYTES or not anc:
            continue
        seconds, nanos = _TIMESPEC.unpack_from(anc[0][2])
        sent_ns = seconds * 1_000_000_000 + nanos
        header = (data[0] & 0xF) * 4
        source, destination = struct.unpack_from("!HH", data, header)
        request_id = data[header + ENVELOPE_AT + REQUEST_ID_AT : header + ENVELOPE_AT + REQUEST_ID_AT + 4]
        if destination == port:
            pending[(source, request_id)] = sent_ns
        else:
            asked_ns = pending.pop((destination, request_id), None)
            if asked_ns is not None:  # an answer's later chunks (or one to a request sent before) pair nothing
                pairs.extend((asked_ns, sent_ns - asked_ns))
    sock.close()
    Path(out).write_bytes(pairs.tobytes())


class WireLatency:
    """Captures the node's share of every Handle UDP answer on `port` between `start()` and `stop()`."""

    def __init__(self, port: int, out: Path, cpu: int | None = None, sample_mask: int = SAMPLE_MASK):
        """`sample_mask`: requests whose id & mask is 0 are captured (0: every one)."""
        self.port, self.out, self.cpu = port, out, cpu
        context = multiprocessing.get_context("spawn")
        self._ready, self._stop = context.Event(), context.Event()
        self._process = context.Process(
            target=_capture, args=(port, str(out), cpu, sample_mask, self._ready, self._stop), daemon=True
        )

    def start(self, timeout_s: float = 10.0) -> None:
        self._process.start()
        if not self._ready.wait(timeout_s):
            self._process.terminate()
            raise RuntimeError("the wire capture did not start (a packet socket needs root)")

    @property
    def pids(self) -> frozenset[int]:
        """The capture's process, once started."""
        return frozenset({self._process.pid} if self._process.pid else ())

    def stop(self, timeout_s: float = 10.0) -> list[tuple[int, int]]:
        """(request sent, ns, wall clock; the node's ns) of every answered request captured ([] if never started)."""
        if self._process.pid is None:
            return []
        self._stop.set()
        self._process.join(timeout_s)
        values = array.array("q")
        values.frombytes(self.out.read_bytes())
        return list(zip(values[0::2], values[1::2], strict=True))


def usable() -> str | None:
    """Why a capture cannot run here, or None."""
    if not hasattr(socket, "AF_PACKET"):
        return "packet sockets are Linux's"
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP)).close()
    except PermissionError:
        return "a packet socket needs root (CAP_NET_RAW)"
    return None


def period_stats(pairs: list[tuple[int, int]], first_ns: int, last_ns: int) -> dict:
    """p50 / p99 / max in ms of the node's share for requests sent in [first_ns, last_ns), by the same
    nearest-rank rule as the client-side figures (bench.load.report.percentiles)."""
    values = sorted(latency for sent, latency in pairs if first_ns <= sent < last_ns)
    if not values:
        return {"answers": 0}
    points = percentiles(values, (50, 99))
    return {
        "answers": len(values),
        "p50_ms": round(points[50] / 1e6, 3),
        "p99_ms": round(points[99] / 1e6, 3),
        "max_ms": round(values[-1] / 1e6, 3),
    }
