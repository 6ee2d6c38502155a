"""Enterprises on a real LMDB store: prefixes hosted or referred (HS_SITE built from HOST:PORT), disabling,
credentials stored only as salted scrypt hashes, the admin identity handle, last seen and connected; and the
HTTP Basic user forms."""

from __future__ import annotations

import base64

import msgpack
import pytest

from resolver.handle.values import decode_site
from resolver.http.auth import split_basic
from resolver.http.common import HttpError
from resolver.service import ResolutionService
from storage.enterprises import (
    CONNECTED_WINDOW_S,
    SCRYPT_N,
    EnterpriseError,
    add_prefix,
    enterprises,
    get_credential,
    issue_credential,
    mark_seen,
    prefix_of_user,
    set_operator_secret,
    set_prefix_enabled,
    site_from_address,
    user_key,
    validate_prefix,
)
from storage.store import PrefixInfo


def test_user_names():
    assert user_key("300:88.100.7/ADMIN") == b"300:88.100.7/ADMIN"
    assert user_key("300:88.100.a/admin") == b"300:88.100.A/ADMIN"
    assert user_key("operator") == b"operator"
    for bad in ("200:88.100.7/ADMIN", "300:88.100.7/OTHER", "88.100.7/ADMIN", "admin", "300:/ADMIN"):
        assert user_key(bad) is None, bad
    assert prefix_of_user(b"300:88.100.7/ADMIN") == b"88.100.7" and prefix_of_user(b"operator") is None


def test_basic_header_forms():
    def header(text: str) -> str:
        return "Basic " + base64.b64encode(text.encode()).decode()

    assert split_basic(header("300%3A88.100.7/ADMIN:s3cr:et")) == (
        "300:88.100.7/ADMIN",
        "s3cr:et",
    )  # pyhandle
    assert split_basic(header("300:88.100.7/ADMIN:s3cret")) == ("300:88.100.7/ADMIN", "s3cret")  # curl -u
    assert split_basic(header("operator:pw")) == ("operator", "pw")
    for bad in (
        "Bearer abc",
        "Basic !!!",
        header("no-colon"),
        "Basic " + base64.b64encode(b"\xff:x").decode(),
    ):
        with pytest.raises(HttpError) as refused:
            split_basic(bad)
        assert refused.value.status == 401


def test_prefix_validation():
    assert validate_prefix(" 88.100.7 ") == "88.100.7"
    for bad in ("", "88/1", "88 100", "0.NA", "0.na.1", "x" * 65, ".88"):
        with pytest.raises(EnterpriseError):
            validate_prefix(bad)


def test_site_from_host_and_port_lists_tcp_then_udp():
    site = decode_site(site_from_address("192.0.2.7:2641"))
    server = site.servers[0]
    assert str(server.address) == "192.0.2.7"
    assert [(i.protocol, i.port, i.type) for i in server.interfaces] == [(1, 2641, 2), (0, 2641, 2)]
    assert str(decode_site(site_from_address("[2001:db8::1]:2700")).servers[0].address) == "2001:db8::1"
    for bad in ("example.com:2641", "192.0.2.7", "192.0.2.7:0", "192.0.2.7:99999"):
        with pytest.raises(EnterpriseError):
            site_from_address(bad)


def test_referral_prefix_is_answered_with_its_site(store):
    add_prefix(store, "88.100.9", "Own Node Co", "127.0.0.1:2700")
    service = ResolutionService(store, "88.100", site_from_address("127.0.0.1:2641"))
    code, payload = service.resolve(b"88.100.9/ANY")
    assert code == 302 and payload.count(site_from_address("127.0.0.1:2700")) == 1
    info = add_prefix(store, "88.100.9", "Own Node Co", "127.0.0.1:2800")  # moved: the site's serial goes up
    assert decode_site(info.site).serial == 2 and info.extra["site_address"] == "127.0.0.1:2800"
    hosted = add_prefix(store, "88.100.9", "Own Node Co")
    assert hosted.state == "hosted" and hosted.site is None


def test_disable_and_enable_keep_what_the_prefix_was(store):
    add_prefix(store, "88.100.9", "Own Node Co", "127.0.0.1:2700")
    assert set_prefix_enabled(store, "88.100.9", False).state == "disabled"
    assert add_prefix(store, "88.100.9", "Renamed Co").state == "disabled"  # an update does not enable it
    assert set_prefix_enabled(store, "88.100.9", True).state == "hosted"
    with pytest.raises(EnterpriseError, match="not known"):
        set_prefix_enabled(store, "88.100.77", False)


def test_credentials_are_salted_scrypt_hashes_only(store):
    add_prefix(store, "88.100.7", "Brakes Ltd")
    user, secret = issue_credential(store, "88.100.7")
    assert user == "300:88.100.7/ADMIN" and len(secret) >= 32
    credential = get_credential(store, user_key(user))
    assert credential.verify(secret) and not credential.verify(secret + "x")
    assert credential.n == SCRYPT_N and len(credential.salt) == 16
    with store.env.begin(db=store.enterprises_db) as txn:
        stored = b"".join(k + v for k, v in txn.cursor())
    assert secret.encode() not in stored  # nothing but the hash, its salt and parameters
    assert set(msgpack.unpackb(txn_value(store, user))) >= {"salt", "hash", "n", "r", "p", "kdf"}
    _, rotated = issue_credential(store, "88.100.7")
    again = get_credential(store, user_key(user))
    assert again.salt != credential.salt and again.verify(rotated) and not again.verify(secret)


def txn_value(store, user: str) -> bytes:
    with store.env.begin(db=store.enterprises_db) as txn:
        return txn.get(b"cred/" + user_key(user))


def test_issuing_registers_the_admin_identity_once(store):
    add_prefix(store, "88.100.7", "Brakes Ltd")
    issue_credential(store, "88.100.7")
    issue_credential(store, "88.100.7")
    assert store.get("88.100.7/ADMIN") is not None and store.count_identifiers() == 1
    registrations = {k: v for k, v in store.counters().items() if k.startswith(b"registrations")}
    assert list(registrations.values()) == [1]
    set_prefix_enabled(store, "88.100.7", False)
    with pytest.raises(EnterpriseError, match="disabled"):
        issue_credential(store, "88.100.7")
    with pytest.raises(EnterpriseError, match="not known"):
        issue_credential(store, "88.100.99")


def test_operator_secret(store):
    with pytest.raises(EnterpriseError):
        set_operator_secret(store, "short")
    set_operator_secret(store, "a-long-enough-secret")
    assert get_credential(store, b"operator").verify("a-long-enough-secret")


def test_connected_means_seen_recently_and_not_disabled(store):
    for n in (1, 2, 3):
        store.put_prefix(PrefixInfo(f"88.100.{n}", org=f"E{n}"))
    now = 1_800_000_000
    mark_seen(store, b"88.100.1", now - 60)
    mark_seen(store, b"88.100.2", now - CONNECTED_WINDOW_S - 1)
    mark_seen(store, b"88.100.3", now)
    set_prefix_enabled(store, "88.100.3", False)
    listed = {e["prefix"]: e for e in enterprises(store, now)}
    assert [listed[p]["connected"] for p in ("88.100.1", "88.100.2", "88.100.3")] == [True, False, False]
    assert listed["88.100.2"]["lastSeen"] == now - CONNECTED_WINDOW_S - 1


def test_last_seen_is_written_at_most_once_a_minute_per_enterprise(store, monkeypatch):
    from resolver.http import auth

    written: list[bytes] = []
    monkeypatch.setattr(auth, "mark_seen", lambda s, prefix: written.append(prefix))
    now = [1000.0]
    authenticator = auth.Authenticator(store, clock=lambda: now[0])
    for step in (0, 10, 59):
        now[0] = 1000.0 + step
        authenticator._mark_seen(b"88.100.7")
    authenticator._mark_seen(b"88.100.8")
    now[0] = 1000.0 + auth.SEEN_WRITE_INTERVAL_S
    authenticator._mark_seen(b"88.100.7")
    assert written == [b"88.100.7", b"88.100.8", b"88.100.7"]
