"""Slowing of failed HTTP logins (resolver/http/auth.py): per source and user, and per source over all users,
so that an abusive address is answered 429 while everyone else, the same user from elsewhere included, logs
in as usual; IPv6 sources count per /64; the tables stay bounded."""

from __future__ import annotations

import asyncio
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from resolver.http.auth import (
    AUTH_FAILURE_WINDOW_S,
    MAX_AUTH_FAILURES,
    MAX_SOURCE_FAILURES,
    Authenticator,
    FailureLog,
    source_of,
)
from resolver.http.common import HttpError
from storage.enterprises import add_prefix, issue_credential
from storage.store import Store
from tests.http_helpers import basic


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
    log = FailureLog(limit=3, window_s=60.0, max_keys=100)
    for n in range(10_000):
        for _ in range(5):
            log.add(("10.0.0.1", n), float(n))
    assert len(log) == 100
    assert all(len(times) <= 3 for times in log._times.values())
    assert log.exceeded(("10.0.0.1", 9_999), 9_999.0)  # the most recent are kept
    assert not log.exceeded(("10.0.0.1", 0), 9_999.0)  # the oldest were forgotten first
