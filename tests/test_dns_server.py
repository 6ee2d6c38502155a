"""The DNS view served by `idnode serve --dns-port` over real sockets: dnspython (and kdig when installed) as
clients, the same values as the Handle view, and DNS resolutions counted like the others."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from bench.datagen import Dataset
from resolver.client import HandleClient
from resolver.dnsview.names import handle_to_name
from storage.loader import load_files
from storage.store import Store
from tests.servers import free_port, idnode, running_node

DATASET = Dataset(2000, 1, "88.100", 8)
ZONE = "id.test."
TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def dns_node(tmp_path_factory, demo_ndjson):
    path = tmp_path_factory.mktemp("dns") / "store"
    long_suffix = "LONG-" + "X" * 400  # too long for a readable name: served under a digest name
    extra = tmp_path_factory.mktemp("extra") / "extra.ndjson"
    extra.write_text(
        json.dumps(
            {
                "handle": f"88.100.1/{long_suffix}",
                "values": [{"index": 1, "type": "URL", "data": "https://x/l"}],
            }
        )
        + "\n"
    )
    with Store(path, create=True) as store:
        load_files(store, [demo_ndjson, extra])
    dns_port = free_port()
    with running_node(path, workers=2, extra=("--dns-port", str(dns_port))) as node:
        node.dns_port = dns_port
        node.data = path
        node.long_handle = f"88.100.1/{long_suffix}"
        yield node


def ask(node, name: str, rdtype: str = "TXT", tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype, use_edns=0)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, "127.0.0.1", port=node.dns_port, timeout=TIMEOUT_S)


def handle_values(node, handle: str):
    async def go():
        async with HandleClient(node.host, node.port) as client:
            return await client.resolve(handle)

    return asyncio.run(go()).values


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_txt_records_carry_the_same_values_as_the_handle_view(dns_node, tcp):
    handle = DATASET.handle_at(11)
    answer = ask(dns_node, handle_to_name(handle, ZONE), "TXT", tcp)
    assert answer.rcode() == dns.rcode.NOERROR and answer.flags & dns.flags.AA
    texts = sorted(b"".join(r.strings).decode() for r in answer.answer[0])
    expected = sorted(
        f"{v.index} {v.type} {v.data.decode()}"
        for v in handle_values(dns_node, handle)
        if v.type != "HS_ADMIN"
    )
    assert [t for t in texts if " HS_ADMIN " not in t] == expected


def test_uri_record_for_the_url_value(dns_node):
    handle = DATASET.handle_at(12)
    answer = ask(dns_node, handle_to_name(handle, ZONE), "URI")
    (url,) = [v.data.decode() for v in handle_values(dns_node, handle) if v.type == "URL"]
    assert [r.target.decode() for r in answer.answer[0]] == [url]


def test_unknown_identifier_is_nxdomain_with_soa(dns_node):
    answer = ask(dns_node, handle_to_name(DATASET.missing_handle(3), ZONE))
    assert answer.rcode() == dns.rcode.NXDOMAIN
    assert answer.authority[0].rdtype == dns.rdatatype.SOA


def test_outside_the_zone_is_refused_and_apex_has_soa(dns_node):
    assert ask(dns_node, "example.com.", "A").rcode() == dns.rcode.REFUSED
    apex = ask(dns_node, ZONE, "SOA")
    assert apex.rcode() == dns.rcode.NOERROR and apex.answer[0].rdtype == dns.rdatatype.SOA


def test_identifier_with_a_digest_name_resolves(dns_node):
    from resolver.dnsview.names import handle_to_name as name_of

    name = name_of(dns_node.long_handle, ZONE)
    assert name.startswith("_h-")
    answer = ask(dns_node, name)
    assert answer.rcode() == dns.rcode.NOERROR
    assert b"".join(answer.answer[0][0].strings).decode() == "1 URL https://x/l"


def test_garbage_gets_no_crash_and_the_server_keeps_answering(dns_node):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for n in range(200):
            sock.sendto(bytes([n % 256]) * (n % 40 + 1), ("127.0.0.1", dns_node.dns_port))
    assert ask(dns_node, handle_to_name(DATASET.handle_at(1), ZONE)).rcode() == dns.rcode.NOERROR


@pytest.mark.skipif(
    shutil.which("kdig") is None and shutil.which("dig") is None, reason="neither kdig nor dig installed: apt-get install knot-dnsutils (.ci/run installs it)"
)
def test_kdig_or_dig_resolves(dns_node):
    tool = shutil.which("kdig") or shutil.which("dig")
    name = handle_to_name(DATASET.handle_at(4), ZONE)
    out = subprocess.run(
        [tool, "@127.0.0.1", "-p", str(dns_node.dns_port), name, "TXT", "+short"],
        capture_output=True,
        text=True,
        timeout=10,
    ).stdout
    assert "1 URL https://" in out


def test_dns_resolutions_are_counted(demo_store_copy):
    path = demo_store_copy
    dns_port = free_port()
    with running_node(path, workers=1, extra=("--dns-port", str(dns_port))) as node:
        node.dns_port = dns_port
        for i in range(7):
            assert ask(node, handle_to_name(DATASET.handle_at(i), ZONE)).rcode() == dns.rcode.NOERROR
    stats = json.loads(idnode("stats", "--data", str(path), "--json").stdout)
    assert stats["resolutions"]["total"] == 7


def test_writes_and_deletions_show_in_the_next_dns_answer(demo_store_copy):
    """A repeated query is answered from the worker's memo of whole answers; a write committed by another
    process (here the test, through the store) must still show in the very next answer."""
    from resolver.handle.values import HandleValue
    from storage.writes import delete_identifier, put_identifier

    path = demo_store_copy
    handle = DATASET.handle_at(3)
    name = handle_to_name(handle, ZONE)
    dns_port = free_port()
    with running_node(path, workers=1, extra=("--dns-port", str(dns_port))) as node:
        node.dns_port = dns_port
        wire = dns.message.make_query(name, "URI", use_edns=0)
        for _ in range(3):  # the same bytes but the id: the later ones are replayed
            assert (
                dns.query.udp(wire, "127.0.0.1", port=dns_port, timeout=TIMEOUT_S).rcode()
                == dns.rcode.NOERROR
            )
        with Store(path) as store:
            put_identifier(store, handle, [HandleValue(1, "URL", b"https://changed.example/", 0)])
        answer = dns.query.udp(wire, "127.0.0.1", port=dns_port, timeout=TIMEOUT_S)
        assert [rr.target for rr in answer.answer[0]] == [b"https://changed.example/"]
        with Store(path) as store:
            delete_identifier(store, handle)
        assert (
            dns.query.udp(wire, "127.0.0.1", port=dns_port, timeout=TIMEOUT_S).rcode() == dns.rcode.NXDOMAIN
        )
