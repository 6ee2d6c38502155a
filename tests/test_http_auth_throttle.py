"""Slowing of failed HTTP logins (resolver/http/auth.py, throttle.py): per source and user, and per source over
all users, so that an abusive address is answered 429 while everyone else, the same user from elsewhere
included, logs in as usual; IPv6 sources count per /64; the tables stay bounded; guesses sent together are
held to the limit; the count is the node's, whatever worker a connection lands on; a disabled prefix gives
no oracle for its secret."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from resolver.http.auth import Authenticator, source_of
from resolver.http.common import HttpError
from resolver.http.throttle import (
    AUTH_FAILURE_WINDOW_S,
    MAX_AUTH_FAILURES,
    MAX_SOURCE_FAILURES,
    FailureTable,
)
from resolver.server.shared import SharedMemory
from storage.enterprises import add_prefix, issue_credential, set_prefix_enabled
from storage.store import Store
from tests.app_helpers import InProcessApp
from tests.http_helpers import basic, http_node


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def auth(tmp_path):
    with Store(tmp_path / "store", create=True) as store:
        for prefix in ("88.100.7", "88.100.8"):
            add_prefix(store, prefix, "Org")
        creds = {prefix: issue_credential(store, prefix) for prefix in ("88.100.7", "88.100.8")}
        authenticator = Authenticator(store, clock=Clock())
        authenticator.creds = creds
        yield authenticator


def request(source: str, user: str, secret: str):
    return request_with(source, basic(user, secret))


def request_with(source: str, authorization: str):
    """A request from `source` (port 40000) carrying this Authorization header."""
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (source, 40000) if name == "peername" else default
    return make_mocked_request("GET", "/api/whoami", headers={"Authorization": authorization}, transport=transport)


async def status(auth: Authenticator, source: str, user: str, secret: str) -> int:
    try:
        await auth.identify(request(source, user, secret))
    except HttpError as exc:
        return exc.status
    return 200


def test_an_abusive_source_is_slowed_and_nobody_else_is(auth):
    user, secret = auth.creds["88.100.7"]

    async def go():
        abusive = [await status(auth, "192.0.2.66", user, f"guess-{n}") for n in range(MAX_AUTH_FAILURES + 3)]
        assert abusive == [401] * MAX_AUTH_FAILURES + [429] * 3
        # The abusive source gets 429 even with the right secret: no oracle for guesses past the limit.
        assert await status(auth, "192.0.2.66", user, secret) == 429
        # The same user from another address: logs in, and a mistake there is a plain 401.
        assert await status(auth, "192.0.2.10", user, secret) == 200
        assert await status(auth, "192.0.2.10", user, "typo") == 401
        # Another user from the abusive address is still judged on its own (below the per-source limit).
        assert await status(auth, "192.0.2.66", *auth.creds["88.100.8"]) == 200
        auth.clock.now += AUTH_FAILURE_WINDOW_S + 1
        assert await status(auth, "192.0.2.66", user, secret) == 200

    asyncio.run(go())


def test_one_source_trying_many_users_is_slowed_as_a_whole(auth):
    async def go():
        users = [f"300:88.100.{n}/ADMIN" for n in range(100, 100 + MAX_SOURCE_FAILURES)]  # no credential issued
        assert {await status(auth, "198.51.100.7", u, "x") for u in users} == {401}
        assert await status(auth, "198.51.100.7", "nobody", "x") == 429  # any user now, even unknown ones
        assert await status(auth, "198.51.100.7", *auth.creds["88.100.7"]) == 429
        assert await status(auth, "198.51.100.8", *auth.creds["88.100.7"]) == 200

    asyncio.run(go())


def test_malformed_credentials_count_against_the_source(auth):
    async def go():
        for _ in range(MAX_SOURCE_FAILURES):
            with pytest.raises(HttpError) as caught:
                await auth.identify(request_with("203.0.113.5", "Basic !!!"))
            assert caught.value.status == 401
        assert await status(auth, "203.0.113.5", *auth.creds["88.100.7"]) == 429

    asyncio.run(go())


def test_ipv6_sources_count_per_64(auth):
    user, secret = auth.creds["88.100.7"]
    assert source_of(request("2001:db8:0:0:abcd::1", user, secret)) == "2001:db8::/64"
    assert source_of(request("::ffff:192.0.2.1", user, secret)) == "192.0.2.1"
    assert source_of(request("192.0.2.1", user, secret)) == "192.0.2.1"

    async def go():
        rotating = [await status(auth, f"2001:db8::{n:x}", user, "guess") for n in range(1, MAX_AUTH_FAILURES + 2)]
        assert rotating[-1] == 429  # a new address in the same /64 does not start afresh
        assert await status(auth, "2001:db8:0:1::1", user, secret) == 200

    asyncio.run(go())


def test_a_successful_login_clears_that_pair(auth):
    user, secret = auth.creds["88.100.7"]

    async def go():
        for _ in range(MAX_AUTH_FAILURES - 1):
            assert await status(auth, "192.0.2.20", user, "guess") == 401
        assert await status(auth, "192.0.2.20", user, secret) == 200
        assert await status(auth, "192.0.2.20", user, "typo") == 401  # counting starts again

    asyncio.run(go())


def test_failure_tables_are_bounded():
    memory = SharedMemory(1 << 20)
    table = FailureTable(memory, "bounded", limit=3, window_s=60.0, slots=100)
    for n in range(10_000):
        for _ in range(5):
            table.add(b"10.0.0.1/%d" % n, float(n))
    assert len(table) == 100
    assert table.count(b"10.0.0.1/9999", 9_999.0) == 3  # at most `limit` times kept per key
    assert table.exceeded(b"10.0.0.1/9999", 9_999.0)  # the most recent are kept
    assert not table.exceeded(b"10.0.0.1/0", 9_999.0)  # the oldest were forgotten first


def test_concurrent_guesses_cannot_pass_the_limit(auth):
    """Every guess is counted before its secret is checked, so guesses sent together (their scrypt checks
    running at once) are held to the limit too."""
    user, _ = auth.creds["88.100.7"]

    async def go():
        guesses = [status(auth, "192.0.2.77", user, f"guess-{n}") for n in range(MAX_AUTH_FAILURES + 5)]
        answers = await asyncio.gather(*guesses)
        assert sorted(answers) == [401] * MAX_AUTH_FAILURES + [429] * 5

    asyncio.run(go())


def test_a_disabled_prefix_answers_a_right_and_a_wrong_secret_alike(tmp_path):
    """No oracle: whether a secret is right for a disabled prefix cannot be learnt from the answer (status
    and body), over the real HTTP application."""
    path = tmp_path / "store"
    with Store(path, create=True) as store:
        add_prefix(store, "88.100.7", "Org")
        user, secret = issue_credential(store, "88.100.7")
        set_prefix_enabled(store, "88.100.7", False)
    app = InProcessApp(path)
    try:
        for method, route, body in (
            ("GET", "/api/whoami", None),
            ("PUT", "/api/handles/88.100.7/PART-1", b'{"values": [{"index": 1, "type": "URL", "data": "x"}]}'),
        ):
            right = app.call(method, route, body, auth=(user, secret))
            wrong = app.call(method, route, body, auth=(user, "not-the-secret"))
            assert right.status == wrong.status == 403, (right, wrong)
            assert right.body == wrong.body
            assert b"disabled" in right.body
    finally:
        app.close()


# -- the whole node: the count is shared by its workers ---------------------------------------------------------


def _worker_of(node_pid: int, http_port: int, client: socket.socket) -> int:
    """The pid of the worker holding the server side of `client` (which has had an answer, so it is accepted):
    its socket's inode from /proc/net/tcp, found among the fds of the node's children."""
    client_port = client.getsockname()[1]
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, remote_port = int(fields[1].split(":")[1], 16), int(fields[2].split(":")[1], 16)
        if local_port == http_port and remote_port == client_port:
            inode = fields[9]
    assert inode is not None, "the server side of the connection is not in /proc/net/tcp"
    children = Path(f"/proc/{node_pid}/task/{node_pid}/children").read_text().split()
    for pid in map(int, children):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
    raise AssertionError(f"no worker of {node_pid} holds socket {inode}")


def _whoami(sock: socket.socket, user: str, secret: str) -> int:
    sock.sendall(
        f"GET /api/whoami HTTP/1.1\r\nHost: x\r\nAuthorization: {basic(user, secret)}\r\n\r\n".encode()
    )
    return read_answer(sock)[0]


def read_answer(sock: socket.socket) -> tuple[int, bytes]:
    """(status, body) of one HTTP/1.1 answer with Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split(b" ")[1]), body


def test_the_throttle_holds_its_numbers_across_workers(tmp_path):
    """A real node of two workers, bad logins from one address spread over connections that land on both
    workers (checked through /proc, not left to SO_REUSEPORT's hash): the 11th is refused, as documented,
    although neither worker saw ten. Per-worker counting would let it through (5 or 6 on each)."""
    path = tmp_path / "store"
    with Store(path, create=True) as store:
        add_prefix(store, "88.100.7", "Org")
        user, secret = issue_credential(store, "88.100.7")
    with http_node(path, workers=2) as node:
        by_worker: dict[int, socket.socket] = {}
        opened = []
        for _ in range(64):  # SO_REUSEPORT hashes each connection's ports: a few tries reach both workers
            sock = socket.create_connection(("127.0.0.1", node.http_port), timeout=10)
            opened.append(sock)
            sock.sendall(b"GET /api/stats HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_answer(sock)[0] == 200
            by_worker.setdefault(_worker_of(node.process.pid, node.http_port, sock), sock)
            if len(by_worker) == 2:
                break
        assert len(by_worker) == 2, "64 connections all landed on one worker"
        first, second = by_worker.values()
        try:
            answers = [_whoami((first, second)[n % 2], user, f"guess-{n}") for n in range(MAX_AUTH_FAILURES)]
            assert answers == [401] * MAX_AUTH_FAILURES
            assert _whoami(first, user, "one-more") == 429
            assert _whoami(second, user, secret) == 429  # even the right secret, on the other worker
        finally:
            for sock in opened:
                sock.close()
