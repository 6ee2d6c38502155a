"""The hot loop over TCP (Handle TCP, HTTP/1.1): many keep-alive connections per process, each with its own
source port, so SO_REUSEPORT spreads them over the server's workers.

Both protocols answer a connection's requests in order, so a connection keeps the send times of its requests
in a queue and an answer takes the oldest; no ids are needed. Closed loop: ``window`` requests on the wire per
connection (Handle TCP pipelines them; HTTP has a window of 1), each answer followed at once by the next
request. Open loop: requests become due on the schedule (schedule.py) and go out on the next connection with
room (any Handle TCP connection, an idle HTTP one); a due request waiting for room is charged the wait.

A connection whose oldest request is older than the timeout, that the server closes, or that carries something
unreadable is closed, its outstanding requests counted as lost, and opened again. Imports nothing of the server.
"""

from __future__ import annotations

import select
import socket
import time
from collections import deque
from collections.abc import Callable

from bench.load.meter import Meter
from bench.load.protocols import AnswerError, Protocol
from bench.load.schedule import TIMEOUT_SCAN_NS, Schedule, ready_events
from bench.load.spec import LoadGenError, LoadSpec

CONNECT_TIMEOUT_S = 5.0  #: loopback connects in microseconds; a listener this slow is not one to measure
RECEIVE_BYTES = 256 * 1024  #: one read takes many pipelined answers at once
OPEN_LOOP_DEPTH = 4096  #: requests a pipelined connection may carry in the open loop before it counts as full
_IN = select.EPOLLIN
_IN_OUT = select.EPOLLIN | select.EPOLLOUT


class _Connection:
    __slots__ = ("due", "inbox", "outbox", "sock")

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.due: deque[int] = deque()  #: send (or due) times of the requests on the wire, oldest first
        self.inbox = bytearray()  #: received bytes not yet a whole answer
        self.outbox = bytearray()  #: request bytes the socket did not take yet


def _connect(host: str, port: int) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    # Small pipelined requests must leave at once, not wait for Nagle to gather them.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


def run_stream(
    spec: LoadSpec, rate: float | None, protocol: Protocol, pool: list[bytearray], meter: Meter,
    wait_for_go: Callable[[], None],
) -> dict:  # fmt: skip
    conns = [_Connection() for _ in range(spec.sockets)]
    poller = select.epoll()
    try:
        for conn in conns:
            try:
                conn.sock = _connect(spec.host, spec.port)
            except OSError as exc:
                raise LoadGenError(f"cannot connect to {spec.host}:{spec.port} over TCP: {exc}") from None
            poller.register(conn.sock.fileno(), _IN)
        return _loop(spec, rate, protocol, pool, meter, wait_for_go, conns, poller)
    finally:
        poller.close()
        for conn in conns:
            if conn.sock is not None:
                conn.sock.close()


def _loop(spec, rate, protocol, pool, meter, wait_for_go, conns, poller) -> dict:  # noqa: C901 - one hot loop
    pool_mask = len(pool) - 1
    read_answers = protocol.read_answers
    by_fd = {conn.sock.fileno(): conn for conn in conns}
    latencies = meter.latencies
    record = latencies.append
    codes = meter.codes
    clock = time.perf_counter_ns
    timeout_ns = int(spec.timeout_s * 1e9)
    window = spec.window
    # How many requests a connection may have on the wire: the window, or in the open loop as many as the
    # protocol lets it (one for HTTP).
    limit = window if rate is None else OPEN_LOOP_DEPTH if protocol.pipelined else 1
    has_room: deque[_Connection] = deque(conns)  # open loop: connections that can take a request, in turn
    backlog: deque[int] = deque()  # open loop: due times of requests waiting for a connection with room
    k = 0  # requests sent: the position in the pool

    def write(conn: _Connection, data: bytes | bytearray) -> None:
        if conn.outbox:
            conn.outbox += data
            return
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            return  # the connection broke: its requests time out and it is opened again
        if sent < len(data):
            conn.outbox += data[sent:]
            poller.modify(conn.sock.fileno(), _IN_OUT)

    def send_requests(conn: _Connection, count: int, t0: int) -> None:
        nonlocal k
        if count == 1:
            data = pool[k & pool_mask]
        else:
            data = b"".join([pool[(k + j) & pool_mask] for j in range(count)])
        k += count
        conn.due.extend([t0] * count)
        write(conn, data)

    def reopen(conn: _Connection, now: int) -> None:
        # The connection is useless (timed out, closed by the server, out of step): its requests are lost.
        meter.lost += len(conn.due)
        meter.reconnects += 1
        if conn.sock is not None:
            del by_fd[conn.sock.fileno()]
            poller.unregister(conn.sock.fileno())
            conn.sock.close()
            conn.sock = None
        conn.due.clear()
        conn.inbox.clear()
        conn.outbox.clear()
        try:
            conn.sock = _connect(spec.host, spec.port)
        except OSError:
            meter.send_errors += 1  # tried again at the next scan
            return
        by_fd[conn.sock.fileno()] = conn
        poller.register(conn.sock.fileno(), _IN)
        if rate is None:
            send_requests(conn, window, now)
        elif conn not in has_room:
            has_room.append(conn)

    def dispatch() -> None:
        # Open loop: due requests go to connections with room, in turn.
        nonlocal k
        while backlog and has_room:
            conn = has_room.popleft()
            conn.due.append(backlog.popleft())
            write(conn, pool[k & pool_mask])
            k += 1
            if len(conn.due) < limit:
                has_room.append(conn)

    wait_for_go()
    now = clock()
    next_event, stop_after = meter.start(now)
    next_scan = now + TIMEOUT_SCAN_NS
    schedule = Schedule(rate, now) if rate is not None else None
    if schedule is None:
        for conn in conns:
            send_requests(conn, window, now)

    while True:
        for fd, events in ready_events(poller, schedule, next_event, next_scan):
            conn = by_fd.get(fd)
            if conn is None:
                continue  # reopened earlier in this batch
            if events & select.EPOLLOUT and conn.outbox:
                try:
                    sent = conn.sock.send(conn.outbox)
                except OSError:
                    sent = 0
                del conn.outbox[:sent]
                if not conn.outbox:
                    poller.modify(fd, _IN)
            if not events & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                continue
            try:
                data = conn.sock.recv(RECEIVE_BYTES)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            now = clock()
            if not data:
                reopen(conn, now)  # closed by the server
                continue
            conn.inbox += data
            try:
                answered = read_answers(conn.inbox)
            except AnswerError:
                meter.malformed += 1
                reopen(conn, now)
                continue
            if not answered:
                continue
            if len(answered) > len(conn.due):
                meter.malformed += 1  # more answers than requests: not ours
                reopen(conn, now)
                continue
            was_full = len(conn.due) >= limit
            budget = stop_after - len(latencies)  # the count bound, exactly: no more answers than it needs
            due_pop = conn.due.popleft
            for code in answered if len(answered) <= budget else answered[:budget]:
                record(now - due_pop())
                try:
                    codes[code] += 1
                except KeyError:
                    codes[code] = 1
            if len(latencies) >= stop_after:
                break
            if schedule is None:
                send_requests(conn, len(answered), now)
            elif was_full:
                has_room.append(conn)
        now = clock()
        if schedule is not None:
            backlog.extend(meter.due_sends(schedule, now))
            dispatch()
        if now >= next_scan:
            next_scan = now + TIMEOUT_SCAN_NS
            deadline = now - timeout_ns
            for conn in conns:
                if conn.sock is None or (conn.due and conn.due[0] <= deadline):
                    reopen(conn, now)
        if now >= next_event or len(latencies) >= stop_after:
            next_event, stop_after = meter.advance(now, k)
            if not next_event:
                break
    return meter.result(clock(), k, sum(len(c.due) for c in conns), unsent=len(backlog))
