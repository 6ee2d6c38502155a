"""The hot loop over UDP (Handle UDP, DNS): many connected non-blocking sockets, one source port each, so
SO_REUSEPORT spreads the load over the server's workers.

Closed loop: ``window`` requests outstanding on every socket, the next one sent the moment an answer arrives.
Open loop: requests sent round-robin over the sockets on the schedule (schedule.py), answers only counted.
Sending patches a wire id into a pre-encoded request in place; an answer is read at fixed offsets only (id, and
the code), so the generator stays faster than the server. A request unanswered after the timeout counts as
lost; in the closed loop a new one (new id) takes its place on the same socket, so the window never shrinks.
Imports nothing of the server.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable

from bench.load.meter import Meter
from bench.load.protocols import Protocol
from bench.load.schedule import POLL_INTERVAL_S, TIMEOUT_SCAN_NS, Schedule, ready_events
from bench.load.spec import LoadSpec

RECEIVE_BUFFER_BYTES = 1 << 20  #: per socket, so a burst of answers is not dropped by our own side
RECEIVE_BYTES = 2048  #: a Handle piece is at most 512 bytes, a DNS answer 1232 (EDNS); only the head is read
OPEN_LOOP_DRAIN = 64  #: answers read from a socket per wake-up in the open loop (no window bounds them)


def open_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            socks.append(sock)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
            except OSError:
                pass  # a smaller buffer only risks drops we would count as lost
            # Connected: the kernel picks a distinct source port, filters strangers, send() skips the address.
            sock.connect((host, port))
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


def run_datagram(
    spec: LoadSpec, rate: float | None, protocol: Protocol, pool: list[bytearray], meter: Meter,
    wait_for_go: Callable[[], None],
) -> dict:  # fmt: skip
    socks = open_sockets(spec.host, spec.port, spec.sockets)
    poller = select.epoll()
    try:
        return _loop(spec, rate, protocol, pool, meter, wait_for_go, socks, poller)
    finally:
        poller.close()
        for sock in socks:
            sock.close()


def _loop(spec, rate, protocol, pool, meter, wait_for_go, socks, poller) -> dict:  # noqa: C901 - one hot loop, one frame
    n = len(socks)
    pool_mask = len(pool) - 1
    id_mask = protocol.id_space - 1
    # Outstanding requests are keyed by wire id and socket together, so every socket has the whole id space to
    # itself: a wire id comes back to a socket only after id_space sends on it (65,536 for DNS's 16-bit ids). The
    # socket goes in the low bits: dict slots come from a key's low bits, and the sockets' ids advance in step.
    socket_bits = max(1, (n - 1).bit_length())
    socket_mask = (1 << socket_bits) - 1
    patch_id, id_at = protocol.id_struct.pack_into, protocol.id_at
    unpack_answer, min_bytes = protocol.answer.unpack_from, protocol.min_answer_bytes
    sends = [s.send for s in socks]
    by_fd = {}
    for i, sock in enumerate(socks):
        by_fd[sock.fileno()] = (sock.recv_into, i)
        poller.register(sock.fileno(), select.EPOLLIN)
    next_ids = [1] * n  # the pool holds id 0; a socket's first request gets 1
    buf = bytearray(RECEIVE_BYTES)
    window = spec.window
    drain = range(window if rate is None else OPEN_LOOP_DRAIN)
    most_per_wake = n * len(drain)  # answers one wake-up can read at the most
    latencies = meter.latencies
    record = latencies.append
    codes = meter.codes
    clock = time.perf_counter_ns
    poll = poller.poll
    timeout_ns = int(spec.timeout_s * 1e9)
    pending: dict[int, int] = {}  # key -> send time (ns); insertion order is send order
    pending_pop = pending.pop
    k = 0  # requests sent: the position in the pool

    def send_new(i: int, t0: int) -> None:
        # Closed loop: the first window, each answer's successor, a lost request's replacement; open loop: each
        # request the schedule makes due.
        nonlocal k
        request = pool[k & pool_mask]
        k += 1
        wid = next_ids[i]
        next_ids[i] = (wid + 1) & id_mask or 1
        patch_id(request, id_at, wid)
        try:
            sends[i](request)
        except OSError:
            meter.send_errors += 1  # left pending: counted lost at its timeout
        pending[(wid << socket_bits) | i] = t0

    wait_for_go()
    now = clock()
    next_event, stop_after = meter.start(now)
    next_scan = now + TIMEOUT_SCAN_NS
    schedule = Schedule(rate, now) if rate is not None else None
    if schedule is None:
        for i in range(n):
            for _ in range(window):
                send_new(i, now)
    rr = 0  # the open loop's next socket

    while True:
        # The count bound is kept exactly (no more answers than it needs), at a cost only near it: once a
        # wake-up could pass it, each socket is drained only as far as the bound still allows.
        near_bound = len(latencies) + most_per_wake > stop_after
        # The closed loop polls directly: a call per wake-up is worth saving at 100,000 answers/s.
        ready = (
            poll(POLL_INTERVAL_S)
            if schedule is None
            else ready_events(poller, schedule, next_event, next_scan)
        )
        for fd, _ in ready:
            recv_into, i = by_fd[fd]
            for _ in range(max(0, stop_after - len(latencies))) if near_bound else drain:
                try:
                    size = recv_into(buf)
                except BlockingIOError:
                    break
                except OSError:
                    meter.receive_errors += 1  # ICMP port unreachable: nobody listens (yet)
                    break
                now = clock()
                if size < min_bytes:
                    meter.malformed += 1
                    continue
                wid, continuation, code = unpack_answer(buf)
                if continuation:
                    continue  # a later piece of a chunked answer; piece 0 carried the response code
                t0 = pending_pop((wid << socket_bits) | i, None)
                if t0 is None:
                    meter.late += 1  # answered after its timeout, or not ours
                    continue
                record(now - t0)
                try:
                    codes[code] += 1
                except KeyError:
                    codes[code] = 1
                if schedule is None:
                    send_new(i, now)  # the call costs ~1% of what an answer costs us: not worth a copy
            if near_bound and len(latencies) >= stop_after:
                break
        now = clock()
        if schedule is not None:
            for t0 in meter.due_sends(schedule, now):
                send_new(rr, t0)
                rr = rr + 1 if rr + 1 < n else 0
        if now >= next_scan:
            next_scan = now + TIMEOUT_SCAN_NS
            deadline = now - timeout_ns
            expired = []
            for key, t0 in pending.items():
                if t0 > deadline:
                    break
                expired.append(key)
            for key in expired:
                del pending[key]
                if schedule is None:
                    send_new(key & socket_mask, now)
            meter.lost += len(expired)
        if now >= next_event or len(latencies) >= stop_after:
            next_event, stop_after = meter.advance(now, k)
            if not next_event:
                break
    return meter.result(clock(), k, len(pending))
