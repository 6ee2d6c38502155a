"""Answers of the DNS view, read by dnspython as a real client would."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from resolver.dnsview import DnsView, Soa, handle_key, handle_to_name
from resolver.dnsview.constants import EDNS_UDP_BYTES

from .test_dns_helpers import (
    FOUR_VALUE_TAIL,
    HANDLE,
    VECTOR_TAIL,
    ZONE,
    Store,
    Value,
    parse,
    query,
    tail_of,
    txt_strings,
)

NAME = handle_to_name(HANDLE)


@pytest.fixture
def store() -> Store:
    s = Store()
    s.add(HANDLE, VECTOR_TAIL)
    s.add("88.100.7/NO-URL", tail_of([Value(1, b"EMAIL", b"a@b.example")]))
    s.add("88.100.7/PRIVATE", tail_of([Value(1, b"URL", b"https://secret.example/", permissions=0x0C)]))
    s.add("88.100.7/", tail_of([Value(1, b"DESC", b"the empty suffix")]))
    return s


@pytest.fixture
def view(store: Store) -> DnsView:
    return store.view()


def test_txt_answer(view):
    q = dns.message.make_query(NAME, "TXT", use_edns=0)
    q.flags |= dns.flags.CD
    msg = parse(view.answer(q.to_wire()))
    assert msg.id == q.id and msg.rcode() == dns.rcode.NOERROR
    assert msg.flags & dns.flags.QR and msg.flags & dns.flags.AA and msg.flags & dns.flags.RD
    assert msg.flags & dns.flags.CD and not msg.flags & (dns.flags.RA | dns.flags.AD | dns.flags.TC)
    assert msg.question == q.question
    assert txt_strings(msg) == [
        b"1 URL https://example.com/a",
        b"2 EMAIL qa@example.com",
        "3 DESC 汽车零部件 批次 2025-07".encode(),
        b"100 HS_ADMIN base64:D/8AAAANMC5OQS84OC4xMDAuMQAAAMg=",
    ]
    assert msg.answer[0].ttl == 3600 and msg.authority == []


def test_uri_answer(view):
    msg = parse(view.answer(query(NAME, "URI")))
    (rrset,) = msg.answer
    assert rrset.rdtype == dns.rdatatype.URI and rrset.ttl == 86400
    assert [(rd.priority, rd.weight, rd.target) for rd in rrset] == [(1, 1, b"https://example.com/a")]


def test_any_at_an_identifier_gives_txt_and_uri(view):
    msg = parse(view.answer(query(NAME, "ANY")))
    assert [rrset.rdtype for rrset in msg.answer] == [dns.rdatatype.TXT, dns.rdatatype.URI]


def test_question_case_is_echoed(view):
    mixed = "BrAkE-2025-000123._.7.100.88.Id.TeSt."
    msg = parse(view.answer(query(mixed, "TXT")))
    assert msg.question[0].name.to_text() == mixed  # 0x20 randomization survives
    assert len(msg.answer[0]) == 4


def _negative(msg: dns.message.Message, rcode: int) -> None:
    assert msg.rcode() == rcode and msg.flags & dns.flags.AA
    assert msg.answer == []
    (soa,) = msg.authority
    assert soa.rdtype == dns.rdatatype.SOA and soa.name.to_text() == ZONE
    assert soa.ttl == 300  # min(SOA TTL, SOA minimum): RFC 2308 §3


def test_unknown_identifier_is_nxdomain_with_soa(view):
    _negative(parse(view.answer(query("nope._.7.100.88.id.test.", "TXT"))), dns.rcode.NXDOMAIN)
    _negative(parse(view.answer(query("nope._.7.100.88.id.test.", "A"))), dns.rcode.NXDOMAIN)


@pytest.mark.parametrize("rdtype", ["A", "AAAA", "MX", "NS", "SOA", "CAA", 65280])
def test_known_identifier_without_the_type_is_nodata(view, rdtype):
    _negative(parse(view.answer(query(NAME, rdtype))), dns.rcode.NOERROR)


def test_identifier_without_url_or_public_values_is_nodata(view):
    _negative(parse(view.answer(query(handle_to_name("88.100.7/NO-URL"), "URI"))), dns.rcode.NOERROR)
    _negative(parse(view.answer(query(handle_to_name("88.100.7/PRIVATE"), "TXT"))), dns.rcode.NOERROR)


@pytest.mark.parametrize(
    "name",
    [
        "7.100.88.id.test.",  # a prefix node
        "999.88.id.test.",  # an unknown prefix node: names may still lie below
        "_.9.88.id.test.",  # the unknown empty-suffix identifier: the parent of all of 88.9's identifiers
        "a" * 62 + "._.9.88.id.test.",  # a full first label: longer names may lie below
        "_.id.test.",  # the parent of digest names under the zone
    ],
)
def test_names_that_may_have_identifiers_below_are_nodata_not_nxdomain(view, name):
    _negative(parse(view.answer(query(name, "TXT"))), dns.rcode.NOERROR)


def test_empty_suffix_identifier(view):
    msg = parse(view.answer(query("_.7.100.88.id.test.", "TXT")))
    assert txt_strings(msg) == [b"1 DESC the empty suffix"]


@pytest.mark.parametrize("name", ["x._.id.test.", "a*b._.7.100.88.id.test.", "x.y._.7.100.88.id.test."])
def test_names_that_cannot_be_identifiers_are_nxdomain(view, name):
    _negative(parse(view.answer(query(name, "TXT"))), dns.rcode.NXDOMAIN)


def test_apex(view):
    soa = parse(view.answer(query(ZONE, "SOA")))
    assert soa.rcode() == dns.rcode.NOERROR and soa.flags & dns.flags.AA
    (rd,) = soa.answer[0]
    assert (rd.mname.to_text(), rd.rname.to_text(), rd.serial, rd.minimum) == (
        "ns1.id.test.",
        "hostmaster.id.test.",
        1,
        300,
    )
    ns = parse(view.answer(query(ZONE, "NS")))
    assert [rd.target.to_text() for rd in ns.answer[0]] == ["ns1.id.test."]
    any_ = parse(view.answer(query(ZONE, "ANY")))
    assert [r.rdtype for r in any_.answer] == [dns.rdatatype.SOA, dns.rdatatype.NS]
    _negative(parse(view.answer(query(ZONE, "TXT"))), dns.rcode.NOERROR)


def test_configured_soa_and_ns():
    view = DnsView(
        "Id.Example.", {}.get, soa=Soa("a.ns.example.", "ops.example.", serial=42), ns=["a.ns.example."]
    )
    msg = parse(view.answer(query("id.example.", "SOA")))
    (rd,) = msg.answer[0]
    assert (rd.mname.to_text(), rd.rname.to_text(), rd.serial) == ("a.ns.example.", "ops.example.", 42)
    assert view.zone == "id.example."


@pytest.mark.parametrize("rdtype", ["TXT", "URI", "A"])
def test_outside_the_zone_is_refused(view, rdtype):
    msg = parse(view.answer(query("www.example.com.", rdtype)))
    assert msg.rcode() == dns.rcode.REFUSED and not msg.flags & dns.flags.AA
    assert msg.answer == [] and msg.authority == [] and len(msg.question) == 1


def test_edns_is_echoed_with_our_size_and_do_bit(view):
    msg = parse(view.answer(query(NAME, "TXT", payload=4096, want_dnssec=True)))
    assert msg.edns == 0 and msg.payload == EDNS_UDP_BYTES and msg.ednsflags & dns.flags.DO
    msg = parse(view.answer(query(NAME, "TXT", payload=4096)))
    assert msg.edns == 0 and not msg.ednsflags & dns.flags.DO
    msg = parse(view.answer(query(NAME, "TXT", edns=None)))
    assert msg.edns == -1
    for rdtype in ("SOA", "A"):  # the careful path too
        msg = parse(view.answer(query(NAME, rdtype, payload=4096, want_dnssec=True)))
        assert msg.edns == 0 and msg.payload == EDNS_UDP_BYTES and msg.ednsflags & dns.flags.DO


def test_edns_options_are_ignored(view):
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    wire = dns.message.make_query(NAME, "TXT", use_edns=0, options=[cookie]).to_wire()
    assert view.answer_fast(wire) is not None
    msg = parse(view.answer(wire))
    assert len(msg.answer[0]) == 4 and msg.options == ()


def test_edns_version_above_zero_is_badvers(view):
    msg = parse(view.answer(query(NAME, "TXT", edns=1)))
    assert msg.rcode() == dns.rcode.BADVERS and msg.edns == 0 and msg.answer == []


# --- sizes -----------------------------------------------------------------------------------------
def _big_store(text_bytes: int, count: int = 1) -> Store:
    store = Store()
    store.add("88.1/BIG", tail_of([Value(i, b"DESC", b"x" * text_bytes) for i in range(1, count + 1)]))
    return store


BIG = "big._.1.88.id.test."


def test_udp_without_edns_is_truncated_past_512_bytes():
    view = _big_store(480).view()
    msg = parse(view.answer(query(BIG, "TXT", edns=None)))
    assert msg.flags & dns.flags.TC and msg.answer == [] and msg.question
    assert len(view.answer(query(BIG, "TXT", edns=None))) <= 512
    small = _big_store(400).view()
    assert not parse(small.answer(query(BIG, "TXT", edns=None))).flags & dns.flags.TC


def test_udp_honours_the_advertised_size_up_to_our_cap():
    view = _big_store(900).view()
    assert not parse(view.answer(query(BIG, "TXT", payload=1232))).flags & dns.flags.TC
    msg = parse(view.answer(query(BIG, "TXT", payload=900)))
    assert msg.flags & dns.flags.TC and msg.answer == [] and msg.edns == 0
    assert parse(view.answer(query(BIG, "TXT", payload=100))).flags & dns.flags.TC  # below 512 counts as 512
    big = _big_store(2000).view()
    assert parse(big.answer(query(BIG, "TXT", payload=4096))).flags & dns.flags.TC  # our cap: 1232
    assert not parse(big.answer(query(BIG, "TXT", payload=4096), "tcp")).flags & dns.flags.TC
    roomy = _big_store(2000).view(max_udp_bytes=4096)
    assert not parse(roomy.answer(query(BIG, "TXT", payload=4096))).flags & dns.flags.TC


def test_tcp_gives_the_full_answer():
    view = _big_store(3000, count=5).view()
    msg = parse(view.answer(query(BIG, "TXT", edns=None), "tcp"))
    assert not msg.flags & dns.flags.TC and len(msg.answer[0]) == 5
    assert all(len(t) == len(b"1 DESC ") + 3000 for t in txt_strings(msg))


def test_tcp_answer_over_64k_is_trimmed_and_marked_truncated():
    view = _big_store(20_000, count=5).view()
    wire = view.answer(query(BIG, "TXT"), "tcp")
    assert len(wire) <= 65_535
    msg = parse(wire)
    assert msg.flags & dns.flags.TC and 0 < len(msg.answer[0]) < 5


def test_transport_is_udp_or_tcp(view):
    with pytest.raises(ValueError):
        view.answer(query(NAME), "quic")


# --- counting, digest names, case, cache, store failures --------------------------------------------
def test_resolutions_are_counted_by_prefix():
    store = _big_store(900)
    store.add("88.100.7/A", FOUR_VALUE_TAIL)
    seen: list[bytes] = []
    view = store.view(on_resolution=seen.append)
    view.answer(query("a._.7.100.88.id.test.", "TXT"))
    view.answer(query("a._.7.100.88.id.test.", "URI"))
    view.answer(query("a._.7.100.88.id.test.", "SOA"))  # NODATA: no data carried
    view.answer(query("b._.7.100.88.id.test.", "TXT"))  # NXDOMAIN
    view.answer(query(BIG, "TXT", edns=None))  # truncated: the client will ask over TCP
    view.answer(query(BIG, "TXT", edns=None), "tcp")
    view.answer(query(BIG, "ANY"), "tcp")  # the careful path counts too
    assert seen == [b"88.100.7", b"88.100.7", b"88.1", b"88.1"]


def test_digest_names_resolve_through_the_index():
    store = Store()
    long_handle = "88.100.7/" + "LONG-" * 100
    store.add(long_handle, FOUR_VALUE_TAIL)
    name = handle_to_name(long_handle)
    assert name.startswith("_h-")
    assert len(parse(store.view().answer(query(name, "TXT"))).answer[0]) == 4
    # Without the index, or under another prefix, the same digest names nothing.
    no_index = DnsView(ZONE, store.lookup)
    _negative(parse(no_index.answer(query(name, "TXT"))), dns.rcode.NXDOMAIN)
    elsewhere = name.replace("._.7.100.88.", "._.8.100.88.")
    _negative(parse(store.view().answer(query(elsewhere, "TXT"))), dns.rcode.NXDOMAIN)
    unknown = "_h-" + "a" * 52 + "._.7.100.88.id.test."
    _negative(parse(store.view().answer(query(unknown, "TXT"))), dns.rcode.NXDOMAIN)


def test_case_sensitive_node():
    store = Store(case_sensitive=True)
    store.add("88.100.7/Brake", tail_of([Value(1, b"EMAIL", b"mixed@x")]))
    store.add("88.100.7/BRAKE", tail_of([Value(1, b"EMAIL", b"upper@x")]))
    view = store.view()
    mixed = handle_to_name("88.100.7/Brake", case_sensitive=True)
    assert txt_strings(parse(view.answer(query(mixed, "TXT")))) == [b"1 EMAIL mixed@x"]
    assert txt_strings(parse(view.answer(query("BRAKE._.7.100.88.id.test.", "TXT")))) == [b"1 EMAIL upper@x"]
    assert txt_strings(parse(view.answer(query("brake._.7.100.88.id.test.", "TXT")))) == [b"1 EMAIL upper@x"]


def test_case_insensitive_node_finds_any_spelling():
    store = Store()
    store.add("88.100.7/brake", tail_of([Value(1, b"EMAIL", b"x@y")]))
    assert handle_key("88.100.7/brake") in store
    for name in ("brake._.7.100.88.id.test.", "BRAKE._.7.100.88.ID.TEST."):
        assert txt_strings(parse(store.view().answer(query(name, "TXT")))) == [b"1 EMAIL x@y"]


def test_memo_gives_the_same_answers_and_skips_clock_dependent_values():
    now = [1_700_000_000.0]
    store = Store()
    store.add("88.1/ABS", tail_of([Value(1, b"EMAIL", b"x@y", ttl_type=1, ttl=1_700_000_600)]))
    store.add(HANDLE, VECTOR_TAIL)
    cached = store.view(clock=lambda: now[0])
    uncached = store.view(clock=lambda: now[0], memo_bytes=0)
    for _ in range(2):
        for name in (NAME, "abs._.1.88.id.test."):
            for rdtype in ("TXT", "URI"):
                wire = query(name, rdtype)
                assert parse(cached.answer(wire)).to_text() == parse(uncached.answer(wire)).to_text()
    assert parse(cached.answer(query("abs._.1.88.id.test."))).answer[0].ttl == 600
    now[0] += 100
    assert parse(cached.answer(query("abs._.1.88.id.test."))).answer[0].ttl == 500


def test_store_failure_is_servfail():
    def broken(key: bytes) -> bytes:
        raise OSError("disk on fire")

    view = DnsView(ZONE, broken)
    for rdtype in ("TXT", "URI", "ANY"):
        msg = parse(view.answer(query(NAME, rdtype)))
        assert msg.rcode() == dns.rcode.SERVFAIL and msg.answer == []


def test_corrupt_record_is_servfail():
    view = DnsView(ZONE, {handle_key(HANDLE): b"\x00\x00\x00\x05junk"}.get)
    msg = parse(view.answer(query(NAME, "TXT")))
    assert msg.rcode() == dns.rcode.SERVFAIL


def test_answers_need_no_store_for_names_that_are_not_identifiers(store):
    view = store.view()
    before = store.lookups
    for name in ("7.100.88.id.test.", "a*b._.7.100.88.id.test.", "www.example.com.", ZONE):
        view.answer(query(name, "TXT"))
    assert store.lookups == before
