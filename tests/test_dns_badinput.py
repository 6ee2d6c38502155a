"""Bad input: every malformed query gets the right rcode or is dropped, and nothing raises."""

from __future__ import annotations

import struct

import dns.message
import dns.rcode
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.dnsview import DnsView

from .test_dns_helpers import HANDLE, VECTOR_TAIL, Store, parse, query

QID = 0x1234
NAME_WIRE = b"\x01x\x01_\x0288\x02id\x04test\x00"


@pytest.fixture
def view() -> DnsView:
    store = Store()
    store.add(HANDLE, VECTOR_TAIL)
    return store.view()


def header(flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, qid: int = QID) -> bytes:
    return struct.pack(">HHHHHH", qid, flags, qd, an, ns, ar)


def question(name: bytes = NAME_WIRE, qtype: int = 16, qclass: int = 1) -> bytes:
    return name + struct.pack(">HH", qtype, qclass)


def rcode_of(view: DnsView, packet: bytes, transport: str = "udp") -> int:
    reply = view.answer(packet, transport)
    assert reply is not None, "dropped"
    msg = parse(reply)
    assert msg.id == struct.unpack_from(">H", packet)[0]
    assert msg.flags & dns.flags.QR
    return msg.rcode()


@pytest.mark.parametrize("packet", [b"", b"\x12", header()[:11]])
def test_shorter_than_a_header_is_dropped(view, packet):
    assert view.answer(packet) is None


def test_qr_bit_set_is_dropped(view):
    """An answer sent to us is never answered: two servers could bounce errors forever."""
    assert view.answer(header(flags=0x8100) + question()) is None
    answer = view.answer(query("x._.88.id.test."))
    assert view.answer(answer) is None


@pytest.mark.parametrize("cut", [1, 5, 14, 17, 20])
def test_truncated_question_is_formerr(view, cut):
    packet = header() + question()
    assert rcode_of(view, packet[: len(packet) - cut]) == dns.rcode.FORMERR


def test_header_only_is_formerr(view):
    assert rcode_of(view, header()) == dns.rcode.FORMERR


def test_garbage_after_a_header_is_formerr(view):
    assert rcode_of(view, header() + b"\xff" * 40) == dns.rcode.FORMERR


def test_trailing_bytes_are_formerr(view):
    assert rcode_of(view, header() + question() + b"\x00") == dns.rcode.FORMERR
    assert rcode_of(view, query("x._.88.id.test.") + b"junk") == dns.rcode.FORMERR


@pytest.mark.parametrize(
    "name",
    [
        b"\xc0\x0c",  # points at itself
        b"\x01a\xc0\x0c",  # points back at its own start
        b"\x01a\xc0\x0e",  # points at itself after a label
        b"\xc0\x20",  # points forward, past the end
        b"\xc0\x0d",  # points forward into itself
    ],
)
def test_compression_loops_and_bad_pointers_are_formerr(view, name):
    assert rcode_of(view, header() + question(name)) == dns.rcode.FORMERR


def test_long_pointer_chain_is_formerr(view):
    """Each question's name points at the one before: deep enough to exhaust dnslib's recursion."""
    parts = [b"\x00" + struct.pack(">HH", 16, 1)]
    previous, pos = 12, 12 + 5
    for _ in range(2500):
        parts.append(struct.pack(">HHH", 0xC000 | previous, 16, 1))
        previous, pos = pos, pos + 6
    assert rcode_of(view, header(qd=len(parts)) + b"".join(parts)) == dns.rcode.FORMERR


def test_name_over_255_bytes_is_formerr(view):
    name = (b"\x3f" + b"a" * 63) * 4 + b"\x00"  # 257 bytes
    assert rcode_of(view, header() + question(name)) == dns.rcode.FORMERR
    name_255 = (b"\x3f" + b"a" * 63) * 3 + b"\x3d" + b"a" * 61 + b"\x00"
    assert len(name_255) == 255
    assert rcode_of(view, header() + question(name_255)) == dns.rcode.REFUSED


@pytest.mark.parametrize("first", [0x40, 0x7F, 0x80, 0xBF])
def test_unassigned_label_types_are_formerr(view, first):
    name = bytes([first]) + b"a" * (first & 0x3F) + b"\x00"
    packet = header() + question(name) + bytes(256)
    assert rcode_of(view, packet) == dns.rcode.FORMERR


@pytest.mark.parametrize("qclass", [3, 4, 254, 1234])  # CH, HS, NONE, unknown
def test_other_classes_are_refused(view, qclass):
    assert rcode_of(view, header() + question(qclass=qclass)) == dns.rcode.REFUSED


def test_class_any_is_answered_as_in(view):
    name = b"\x11brake-2025-000123\x01_\x017\x03100\x0288\x02id\x04test\x00"
    msg = parse(view.answer(header() + question(name, 16, 255)))
    assert msg.rcode() == dns.rcode.NOERROR and len(msg.answer[0]) == 4


@pytest.mark.parametrize("qtype", [1, 28, 99, 65280, 65535, 0])
def test_unknown_or_other_types_are_nodata(view, qtype):
    name = b"\x11brake-2025-000123\x01_\x017\x03100\x0288\x02id\x04test\x00"
    msg = parse(view.answer(header() + question(name, qtype)))
    assert msg.rcode() == dns.rcode.NOERROR and msg.answer == [] and len(msg.authority) == 1


@pytest.mark.parametrize(
    ("qtype", "rcode"),
    [
        (41, dns.rcode.FORMERR),
        (252, dns.rcode.REFUSED),
        (251, dns.rcode.REFUSED),
        (253, dns.rcode.NOTIMP),
        (254, dns.rcode.NOTIMP),
    ],
)
def test_meta_types(view, qtype, rcode):
    assert rcode_of(view, header() + question(qtype=qtype), "tcp") == rcode


@pytest.mark.parametrize("opcode", [1, 2, 4, 5, 15])  # IQUERY, STATUS, NOTIFY, UPDATE, unassigned
def test_opcodes_other_than_query_are_notimp(view, opcode):
    packet = header(flags=opcode << 11) + question()
    msg = parse(view.answer(packet))
    assert msg.rcode() == dns.rcode.NOTIMP and msg.opcode() == opcode


@pytest.mark.parametrize("qd", [0, 2])
def test_question_count_other_than_one_is_formerr(view, qd):
    assert rcode_of(view, header(qd=qd) + question() * qd) == dns.rcode.FORMERR


def opt(
    owner: bytes = b"\x00",
    payload: int = 1232,
    version: int = 0,
    rdata: bytes = b"",
    rdlen: int | None = None,
) -> bytes:
    rdlen = len(rdata) if rdlen is None else rdlen
    return owner + struct.pack(">HHBBHH", 41, payload, 0, version, 0, rdlen) + rdata


def test_bad_opt_records(view):
    base = header(ar=2) + question()
    assert rcode_of(view, base + opt() + opt()) == dns.rcode.FORMERR  # two OPT records
    assert rcode_of(view, header(ar=1) + question() + opt(owner=b"\x01x\x00")) == dns.rcode.FORMERR
    assert rcode_of(view, header(ar=1) + question() + opt(rdata=b"\x00\x0a\x00\x08abc")) == dns.rcode.FORMERR
    assert rcode_of(view, header(ar=1) + question() + opt(rdlen=10)) == dns.rcode.FORMERR
    assert rcode_of(view, header(ar=1) + question() + opt(version=3)) == dns.rcode.BADVERS


def test_well_formed_opt_with_options_is_answered(view):
    packet = header(ar=1) + question() + opt(rdata=b"\x00\x0a\x00\x08" + b"c" * 8 + b"\xff\x00\x00\x00")
    assert view.answer_fast(packet) is not None
    assert rcode_of(view, packet) == dns.rcode.NXDOMAIN


def test_records_in_answer_or_authority_are_read_and_ignored(view):
    rr = NAME_WIRE + struct.pack(">HHIH", 16, 1, 60, 2) + b"\x01a"
    assert rcode_of(view, header(an=1) + question() + rr) == dns.rcode.NXDOMAIN
    assert rcode_of(view, header(ns=1) + question() + rr[:-1]) == dns.rcode.FORMERR


def test_odd_flags_in_a_query_take_the_careful_path_and_are_answered(view):
    for flags in (0x0400, 0x0200, 0x0040, 0x0005):  # AA, TC, Z, an rcode
        packet = header(flags=flags) + question()
        assert view.answer_fast(packet) is None
        assert rcode_of(view, packet) == dns.rcode.NXDOMAIN


def test_non_ascii_labels(view):
    utf8 = "ж".encode()
    name = bytes([len(utf8)]) + utf8 + b"\x01_\x0288\x02id\x04test\x00"
    assert rcode_of(view, header() + question(name)) == dns.rcode.NXDOMAIN
    # dnslib refuses labels that are not UTF-8; they can never name an identifier anyway.
    assert rcode_of(view, header() + question(b"\x01\xff\x01_\x0288\x02id\x04test\x00")) == dns.rcode.FORMERR


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_fuzz_garbage_never_raises(raw):
    _answer_or_drop(raw)


@settings(max_examples=500)
@given(st.data())
def test_fuzz_mutated_queries_never_raise(data):
    wire = bytearray(
        query(data.draw(st.sampled_from(["brake-2025-000123._.7.100.88.id.test.", "id.test.", "x."])))
    )
    for _ in range(data.draw(st.integers(1, 6))):
        at = data.draw(st.integers(0, len(wire) - 1))
        wire[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(wire)))
    _answer_or_drop(bytes(wire[:cut]))


def _answer_or_drop(raw: bytes) -> None:
    store = Store()
    store.add(HANDLE, VECTOR_TAIL)
    view = store.view()
    for transport in ("udp", "tcp"):
        reply = view.answer(raw, transport)
        if reply is None:
            assert len(raw) < 12 or raw[2] & 0x80
            continue
        assert reply[:2] == raw[:2] and reply[2] & 0x80
        assert len(reply) <= (65_535 if transport == "tcp" else 1232)
        msg = dns.message.from_wire(reply)  # our answers always parse
        assert msg.id == int.from_bytes(raw[:2], "big")


def test_a_failure_while_building_is_servfail_not_a_traceback(view, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(view, "_general_question", explode)
    monkeypatch.setattr(view, "_fast", explode)
    assert rcode_of(view, query("x._.88.id.test.", "TXT")) == dns.rcode.SERVFAIL


def test_a_store_returning_nonsense_is_servfail():
    view = DnsView("id.test.", lambda key: 12345)  # not bytes
    for rdtype in ("TXT", "ANY"):
        assert rcode_of(view, query("x._.88.id.test.", rdtype)) == dns.rcode.SERVFAIL
