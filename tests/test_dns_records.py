"""Handle values as TXT and URI records, and the zone-file lines of `idnode export-zone`, checked with
dnspython against what the live view answers."""

from __future__ import annotations

import base64
import struct

import dns.flags
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest
from hypothesis import given
from hypothesis import strategies as st

from resolver.dnsview import CorruptValues, Soa, handle_to_name, render_records, zone_header, zone_lines
from resolver.dnsview.constants import MAX_TTL_S, MAX_TXT_TEXT_BYTES
from resolver.dnsview.records import decode_values, quote, split_strings, txt_field

from .test_dns_helpers import FOUR_VALUE_TAIL, VECTOR_TAIL, ZONE, Store, Value, parse, query, tail_of


def test_vector_values_as_records():
    records = render_records(VECTOR_TAIL)
    texts = [b"".join(strings) for strings in records.txt]
    assert texts == [
        b"1 URL https://example.com/a",
        b"2 EMAIL qa@example.com",
        "3 DESC 汽车零部件 批次 2025-07".encode(),
        b"100 HS_ADMIN base64:"
        + base64.b64encode(bytes.fromhex("0fff0000000d302e4e412f38382e3130302e31000000c8")),
    ]  # the value without PUBLIC_READ (index 200) is not shown
    assert records.txt_ttl_s == 3600  # one TTL per RRset: the lowest of its values (RFC 2181 §5.2)
    assert records.uri == ((1, 1, b"https://example.com/a"),)
    assert records.uri_ttl_s == 86400
    assert not records.clock_dependent


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"plain text", b"plain text"),
        ("多行\n文本\twith tabs".encode(), "多行\n文本\twith tabs".encode()),
        (b"", b""),
        (b"\x00\x01", b"base64:AAE="),
        (b"\xff\xfe", b"base64://4="),
        (b"bell\x07", b"base64:YmVsbAc="),
        (b"base64:looks-like-ours", b"base64:" + base64.b64encode(b"base64:looks-like-ours")),
    ],
)
def test_data_field(raw, shown):
    assert txt_field(raw) == shown


def test_type_with_blank_is_base64_so_fields_split_at_spaces():
    records = render_records(tail_of([Value(5, b"MY TYPE", b"a b c")]))
    assert records.txt == ((b"5 base64:TVkgVFlQRQ== a b c",),)


def test_long_text_is_cut_into_character_strings_at_utf8_boundaries():
    text = "汽" * 200  # 600 bytes, 3 per character
    records = render_records(tail_of([Value(1, b"DESC", text.encode())]))
    (strings,) = records.txt
    assert all(len(s) <= 255 for s in strings) and len(strings) == 3
    assert b"".join(strings) == b"1 DESC " + text.encode()
    for s in strings:
        s.decode("utf-8")  # every string is text on its own


@given(st.text(max_size=2000))
def test_split_strings_property(text):
    raw = text.encode()
    strings = split_strings(raw)
    assert b"".join(strings) == raw
    assert all(0 < len(s) <= 255 for s in strings) or raw == b""
    for s in strings:
        s.decode("utf-8")


def test_ttl_rules():
    now = 1_700_000_000
    tail = tail_of(
        [
            Value(1, b"URL", b"https://a.example/", ttl=-5),
            Value(2, b"URL", b"https://b.example/", ttl=10**9),
        ]
    )
    records = render_records(tail, now)
    assert records.txt_ttl_s == 0 and records.uri_ttl_s == 0
    assert render_records(tail_of([Value(1, b"X", b"y", ttl=10**9)])).txt_ttl_s == MAX_TTL_S
    absolute = render_records(tail_of([Value(1, b"X", b"y", ttl_type=1, ttl=now + 120)]), now)
    assert absolute.txt_ttl_s == 120 and absolute.clock_dependent
    expired = render_records(tail_of([Value(1, b"X", b"y", ttl_type=1, ttl=now - 1)]), now)
    assert expired.txt_ttl_s == 0


def test_uri_only_for_url_values_with_text_targets():
    tail = tail_of(
        [
            Value(3, b"url", b"https://lower.example/"),
            Value(70000, b"URL", b"https://big-index.example/"),
            Value(4, b"URL", b""),
            Value(5, b"URL", b"\xff\xfe"),
            Value(6, b"URL.MOBILE", b"https://m.example/"),
        ]
    )
    assert render_records(tail).uri == (
        (3, 1, b"https://lower.example/"),
        (65535, 1, b"https://big-index.example/"),
    )


def test_oversized_value_is_left_out_of_txt():
    tail = tail_of([Value(1, b"BLOB", b"x" * MAX_TXT_TEXT_BYTES), Value(2, b"EMAIL", b"a@b")])
    assert render_records(tail).txt == ((b"2 EMAIL a@b",),)


@pytest.mark.parametrize(
    "tail",
    [
        b"",
        b"\x00\x00",
        b"\x00\x00\x00\x01",  # one value, no bytes
        b"\xff\xff\xff\xff" + bytes(100),  # a count that cannot fit
        FOUR_VALUE_TAIL[:-1],  # truncated
        FOUR_VALUE_TAIL + b"\x00",  # trailing byte
        struct.pack(">I", 1) + Value(1, b"URL", b"x").encode()[:-4] + b"\xff\xff\xff\xff",  # references
        struct.pack(">I", 1) + bytes(14) + b"\x7f\xff\xff\xff",  # type length past the end
    ],
)
def test_corrupt_tails_raise_corrupt_values(tail):
    with pytest.raises(CorruptValues):
        decode_values(tail)


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_corrupt_values(raw):
    try:
        decode_values(raw)
    except CorruptValues:
        pass


def test_quote_escapes_for_master_files():
    assert quote(b'say "hi" \\ ok;') == '"say \\"hi\\" \\\\ ok;"'
    assert quote("汽".encode()) == '"\\230\\177\\189"'
    assert quote(b"tab\there") == '"tab\\009here"'


def test_zone_header_lines():
    assert zone_header("id.test.", Soa(serial=7), ["ns1.id.test.", "ns2.example.net"]) == [
        "$ORIGIN id.test.",
        "$TTL 3600",
        "id.test. 3600 IN SOA ns1.id.test. hostmaster.id.test. 7 3600 600 1209600 300",
        "id.test. 3600 IN NS ns1.id.test.",
        "id.test. 3600 IN NS ns2.example.net.",
    ]


TRICKY = {
    "88.100.7/BRAKE-2025-000123": VECTOR_TAIL,
    "88.100.7/QUOTES": tail_of(
        [
            Value(1, b"DESC", b'a "quoted" \\ back; slash (paren) $dollar @at'),
            Value(2, b"URL", b'https://example.com/?q="x"&y=\\z'),
        ]
    ),
    "88.100.7/LONG.TEXT": tail_of([Value(1, b"DESC", ("长文本 " * 200).encode(), ttl=60)]),
    "88.100.7/BIN": tail_of([Value(1, b"HS_PUBKEY", bytes(range(256)))]),
    "88.100.7/" + "D" * 400: tail_of([Value(1, b"URL", b"https://digest.example/")]),
    "0.NA/88.100.7": tail_of([Value(1, b"HS_SITE", b"\x00\x01\x02")]),
    "88.100.7/PRIVATE": tail_of([Value(1, b"SECRET", b"x", permissions=0x0C)]),
}


def test_zone_file_parses_with_dnspython_and_matches_live_answers():
    store = Store()
    lines = zone_header(ZONE)
    for handle, tail in TRICKY.items():
        store.add(handle, tail)
        lines += zone_lines(handle, tail, ZONE)
    zone = dns.zone.from_text("\n".join(lines) + "\n", relativize=False)
    view = store.view()
    assert zone.origin.to_text() == ZONE
    checked = 0
    for handle in TRICKY:
        name = handle_to_name(handle, ZONE)
        for rdtype in (dns.rdatatype.TXT, dns.rdatatype.URI):
            for transport in ("udp", "tcp"):
                reply = view.answer_fast(query(name, rdtype, payload=1232), transport)
                assert reply is not None  # the common query never needs the careful path
                answer = parse(reply)
                if answer.flags & dns.flags.TC:
                    continue
                from_zone = zone.get_rdataset(name, rdtype)
                if not answer.answer:
                    assert from_zone is None
                    continue
                (rrset,) = answer.answer
                assert from_zone is not None
                assert set(rrset) == set(from_zone) and rrset.ttl == from_zone.ttl
                checked += 1
    assert checked >= 10
    # The apex the header wrote is the apex the view serves.
    soa = parse(view.answer(query(ZONE, "SOA"))).answer[0]
    assert set(soa) == set(zone.get_rdataset(ZONE, "SOA"))


def test_identifier_without_public_values_has_no_lines():
    assert zone_lines("88.100.7/PRIVATE", TRICKY["88.100.7/PRIVATE"]) == []


def test_zone_lines_for_a_case_sensitive_node():
    lines = zone_lines("88.100.7/Mixed", tail_of([Value(1, b"EMAIL", b"a@b")]), ZONE, case_sensitive=True)
    assert lines == ['m_69_78_65_64._.7.100.88.id.test. 86400 IN TXT "1 EMAIL a@b"']


def test_dnspython_reads_uri_records_we_write():
    line = zone_lines("88.100.7/X", tail_of([Value(9, b"URL", b"https://x.example/a b")]))[-1]
    assert line == 'x._.7.100.88.id.test. 86400 IN URI 9 1 "https://x.example/a b"'
    rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.URI, line.split(" IN URI ")[1])
    assert (rd.priority, rd.weight, rd.target) == (9, 1, b"https://x.example/a b")
