"""Values in words (resolver/handle/describe.py): HS_ADMIN, HS_SITE and HS_VLIST read the same, and never as a
Python repr, in `idnode resolve` (against a real node), the browser page and `idnode trace --values`."""

from __future__ import annotations

import html
import ipaddress
import json

import pytest

from resolver.handle.describe import describe_data, permission_names, plain_text, value_lines
from resolver.handle.values import (
    AdminData,
    HandleValue,
    Interface,
    InterfaceProtocol,
    InterfaceType,
    Reference,
    ServerInfo,
    SiteInfo,
    decode_vlist,
    encode_admin,
    encode_site,
    encode_vlist,
)
from tests.app_helpers import InProcessApp
from tests.servers import idnode, running_node

ALL_PERMISSIONS = (
    "add handle, delete handle, add derived prefix, delete derived prefix, modify value, remove value, "
    "add value, modify admin, remove admin, add admin, read value, list handles"
)
GROUP = "88.100.900/ADMINS"  # a prefix the demo does not hold
ADMIN_LINE = "admin 200:0.NA/88.100.900 may: " + ALL_PERMISSIONS
VLIST_LINE = "admin group of 2: 300:88.100.900/ADMIN, 301:88.100.900/ALICE"
SITE_LINES = [
    "site version 1, serial 7, protocol 2.10, primary, servers picked by hash of the suffix, desc: two nodes",
    "server 1 10.1.2.3: TCP 2641 (query), UDP 2641 (query)",
    "server 2 2001:db8::5: HTTPS 8443 (query and admin); public key 3 bytes",
]
RECORD = {
    "handle": GROUP,
    "values": [
        {"index": 1, "type": "DESC", "data": "管理员组"},
        {"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": {
            "handle": "0.NA/88.100.900", "index": 200, "permissions": "111111111111"}}},
        {"index": 200, "type": "HS_VLIST", "data": {"format": "vlist", "value": [
            {"handle": "88.100.900/ADMIN", "index": 300}, {"handle": "88.100.900/ALICE", "index": 301}]}},
        {"index": 300, "type": "HS_SITE", "data": {"format": "site", "value": {
            "serialNumber": 7, "hashOption": 1, "attributes": [{"name": "desc", "value": "two nodes"}],
            "servers": [
                {"serverId": 1, "address": "10.1.2.3", "interfaces": [
                    {"protocol": "TCP", "port": 2641}, {"protocol": "UDP", "port": 2641}]},
                {"serverId": 2, "address": "2001:db8::5", "publicKey": {"format": "hex", "value": "010203"},
                 "interfaces": [{"type": 3, "protocol": "HTTPS", "port": 8443}]}]}}},
    ],
}  # fmt: skip
REPRS = ("{'", "b'", 'b"', "{&#x27;", "b&#x27;")  # a dict or bytes repr, also as html.escape writes it


def _no_repr(text: str) -> None:
    for marker in REPRS:
        assert marker not in text, f"a Python repr ({marker}) in:\n{text}"


# -- the rule ------------------------------------------------------------------------------------------------


def test_admin_permissions_by_name():
    assert ", ".join(permission_names(0x0FFF)) == ALL_PERMISSIONS
    assert permission_names(0x0043) == ["add handle", "delete handle", "add value"]
    assert permission_names(0x1001) == ["add handle", "unknown bits 0x1000"]
    data = encode_admin(AdminData("0.NA/88.100.900", 200, 0x0FFF))
    assert describe_data("HS_ADMIN", data) == [ADMIN_LINE]
    assert describe_data("hs_admin", encode_admin(AdminData("88.100.900/ADMIN", 300, 0))) == [
        "admin 300:88.100.900/ADMIN may: nothing"
    ]


def test_vlist_members_as_index_and_handle():
    members = (Reference("88.100.900/ADMIN", 300), Reference("88.100.900/ALICE", 301))
    assert decode_vlist(encode_vlist(members)) == members
    assert describe_data("HS_VLIST", encode_vlist(members)) == [VLIST_LINE]
    assert describe_data("HS_VLIST", encode_vlist(())) == ["empty admin group"]


def test_site_version_serial_and_each_server():
    site = SiteInfo(
        serial=7,
        hash_option=1,
        attributes=(("desc", "two nodes"),),
        servers=(
            ServerInfo(1, ipaddress.ip_address("10.1.2.3"), b"", (
                Interface(InterfaceType.QUERY, InterfaceProtocol.TCP, 2641),
                Interface(InterfaceType.QUERY, InterfaceProtocol.UDP, 2641))),
            ServerInfo(2, ipaddress.ip_address("2001:db8::5"), b"\x01\x02\x03", (
                Interface(InterfaceType.BOTH, InterfaceProtocol.HTTPS, 8443),)),
        ),
    )  # fmt: skip
    assert describe_data("HS_SITE", encode_site(site)) == SITE_LINES
    assert describe_data("HS_SITE.PREFIX", encode_site(site)) == SITE_LINES
    lone = SiteInfo(primary=False, servers=(ServerInfo(9, ipaddress.ip_address("10.0.0.1"), b"", (
        Interface(7, 9, 1),)),))  # fmt: skip
    assert describe_data("HS_SITE", encode_site(lone)) == [
        "site version 1, serial 1, protocol 2.10, secondary",
        "server 9 10.0.0.1: #9 1 (#7)",  # numbers this node has no name for are shown as numbers
    ]


def test_text_binary_and_unreadable_data():
    assert describe_data("URL", b"https://example.com/a") == ["https://example.com/a"]
    assert describe_data("DESC", "刹车盘".encode()) == ["刹车盘"]
    assert describe_data("HS_PUBKEY", bytes([0, 1, 0xFF])) == ["3 bytes: 00 01 ff"]
    assert describe_data("DESC", b"\x1b[2Jgone") == [
        "8 bytes: 1b 5b 32 4a 67 6f 6e 65"
    ]  # no terminal control
    assert describe_data("X", bytes(40))[0].endswith("00 …")
    assert describe_data("X", b"") == [""] and describe_data("X", b"\x00") == ["1 bytes: 00"]
    assert describe_data("HS_ADMIN", b"\x0f") == [
        "unreadable HS_ADMIN (malformed HS_ADMIN data: field of 2 bytes at offset 0, 1 remain): 1 bytes: 0f"
    ]
    assert plain_text("HS_SITE", b"text") is None and plain_text("EMAIL", b"a@b.c") == "a@b.c"
    lines = value_lines(HandleValue(300, "HS_SITE", describe_site_bytes()), indent="")
    assert lines[0] == "   300  HS_SITE      " + SITE_LINES[0]
    assert lines[1] == " " * len("   300  HS_SITE      ") + SITE_LINES[1]


def describe_site_bytes() -> bytes:
    from storage.jsonvalues import data_from_json

    return data_from_json(RECORD["values"][3]["data"])


# -- the three places that show values -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def group_store(tmp_path_factory):
    """A store holding RECORD, loaded by `idnode load` from its JSON form."""
    directory = tmp_path_factory.mktemp("describe")
    source = directory / "group.ndjson"
    source.write_text(json.dumps(RECORD, ensure_ascii=False) + "\n", encoding="utf-8")
    store = directory / "store"
    loaded = idnode("load", "--data", str(store), str(source))
    assert loaded.returncode == 0, loaded.stderr
    return store


def _expect_described(text: str) -> None:
    _no_repr(text)
    assert ADMIN_LINE in text and VLIST_LINE in text
    for line in SITE_LINES:
        assert line in text


def test_resolve_prints_values_in_words(group_store):
    with running_node(group_store, workers=1) as node:
        shown = idnode("resolve", GROUP, "--server", f"127.0.0.1:{node.port}")
        prefix = idnode("resolve", "0.NA/88.100.900", "--server", f"127.0.0.1:{node.port}", "--tcp")
    assert shown.returncode == 0, shown.stderr
    _expect_described(shown.stdout)
    lines = shown.stdout.splitlines()
    assert lines[0] == f"{GROUP}: SUCCESS (1)" and lines[1] == "       1  DESC         管理员组"
    assert "     100  HS_ADMIN     " + ADMIN_LINE in lines
    head = "     300  HS_SITE      "
    at = lines.index(head + SITE_LINES[0])
    assert lines[at + 1 : at + 3] == [" " * len(head) + line for line in SITE_LINES[1:]]
    # the prefix handle the node makes up itself: its own HS_SITE and an HS_ADMIN, in words too
    assert prefix.returncode == 0, prefix.stderr
    _no_repr(prefix.stdout)
    assert "HS_SITE" in prefix.stdout and f"TCP {node.port} (query)" in prefix.stdout
    assert " may: " in prefix.stdout


def test_browser_page_shows_values_in_words(group_store):
    app = InProcessApp(group_store)
    try:
        page = app.call("GET", f"/{GROUP}?noredirect").body.decode()
    finally:
        app.close()
    _no_repr(page)
    assert html.escape(ADMIN_LINE) in page and html.escape(VLIST_LINE) in page
    assert "<br>".join(html.escape(line) for line in SITE_LINES) in page


def test_trace_values_in_words(group_store):
    traced = idnode("trace", GROUP, "--values", "--data", str(group_store))
    assert traced.returncode == 0, traced.stderr
    _expect_described(traced.stdout)
    assert traced.stdout.splitlines()[0] == f"{GROUP}  管理员组"
    assert "     100  HS_ADMIN     " + ADMIN_LINE in traced.stdout.splitlines()  # under its identifier
