"""The hand-built fast path and the dnslib path answer every common query alike (compared as parsed
messages, TTLs and EDNS included), and the fast path really takes the common queries."""

from __future__ import annotations

import dns.flags
import dns.message
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.dnsview import handle_to_name

from .test_dns_helpers import FOUR_VALUE_TAIL, HANDLE, VECTOR_TAIL, Store, Value, tail_of

HANDLES = {
    HANDLE: VECTOR_TAIL,
    "88.100.7/FOUR": FOUR_VALUE_TAIL,
    "88.100.7/": tail_of([Value(1, b"DESC", b"empty suffix")]),
    "88.100.7/NO-URL": tail_of([Value(1, b"EMAIL", b"a@b")]),
    "88.100.7/PRIVATE": tail_of([Value(1, b"URL", b"https://p.example/", permissions=0x0C)]),
    "88.100.7/BIG": tail_of([Value(i, b"DESC", b"y" * 700) for i in range(1, 4)]),
    "88.100.7/批次-7": tail_of([Value(1, b"URL", "https://例子.example/批次".encode())]),
    "88.100.7/" + "L" * 500: tail_of([Value(1, b"URL", b"https://digest.example/")]),
    "0.NA/88.100.7": tail_of([Value(1, b"HS_SITE", b"\x00\x01")]),
}
OTHER_NAMES = [
    "nope._.7.100.88.id.test.",
    "7.100.88.id.test.",
    "_.9.88.id.test.",
    "id.test.",
    "a*b._.88.id.test.",
    "www.example.com.",
    "com.",
    ".",
    "_h-" + "a" * 52 + "._.7.100.88.id.test.",
]
NAMES = [handle_to_name(h) for h in HANDLES] + OTHER_NAMES


@pytest.fixture(scope="module")
def store() -> Store:
    s = Store()
    for handle, tail in HANDLES.items():
        s.add(handle, tail)
    return s


def _same(store: Store, wire: bytes, transport: str) -> dns.message.Message:
    view = store.view(clock=lambda: 1_700_000_000.0)
    fast = view.answer_fast(wire, transport)
    assert fast is not None, "a common query fell back to the careful path"
    general = view.answer_general(wire, transport)
    a, b = dns.message.from_wire(fast), dns.message.from_wire(general)
    assert a.to_text() == b.to_text()  # id, opcode, rcode, flags, EDNS, every section with TTLs
    assert (a.flags, a.ednsflags, a.payload) == (b.flags, b.ednsflags, b.payload)
    assert [r.ttl for r in a.authority] == [r.ttl for r in b.authority]
    assert view.answer(wire, transport) == fast
    return a


@pytest.mark.parametrize("transport", ["udp", "tcp"])
@pytest.mark.parametrize("edns", [None, 0])
@pytest.mark.parametrize("rdtype", ["TXT", "URI"])
@pytest.mark.parametrize("name", NAMES)
def test_fast_and_dnslib_paths_agree(store, name, rdtype, edns, transport):
    if edns is None:
        wire = dns.message.make_query(name, rdtype, use_edns=False).to_wire()
    else:
        wire = dns.message.make_query(name, rdtype, use_edns=edns, payload=1232).to_wire()
    _same(store, wire, transport)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(NAMES),
    rdtype=st.sampled_from(["TXT", "URI"]),
    edns=st.sampled_from([None, 0]),
    payload=st.integers(0, 65535),
    dnssec=st.booleans(),
    flag_bits=st.sets(st.sampled_from([dns.flags.RD, dns.flags.CD, dns.flags.AD, dns.flags.RA])),
    case_seed=st.randoms(use_true_random=False),
    qid=st.integers(0, 65535),
    transport=st.sampled_from(["udp", "tcp"]),
)
def test_fast_and_dnslib_paths_agree_on_any_common_query(
    store, name, rdtype, edns, payload, dnssec, flag_bits, case_seed, qid, transport
):
    mixed = "".join(c.upper() if case_seed.random() < 0.5 else c for c in name)
    msg = dns.message.make_query(
        mixed,
        rdtype,
        use_edns=False if edns is None else edns,
        payload=payload,
        want_dnssec=dnssec and edns is not None,
    )
    msg.id = qid
    msg.flags = dns.flags.Flag(0)
    for bit in flag_bits:
        msg.flags |= bit
    answer = _same(store, msg.to_wire(), transport)
    assert answer.question[0].name.to_text() == mixed


@settings(max_examples=100, deadline=None)
@given(
    handle=st.builds(
        lambda p, s: f"{p}/{s}",
        st.sampled_from(["88.100.7", "88.1", "0.NA", "88.608.24061301"]),
        st.text(max_size=120),
    ),
    values=st.lists(
        st.builds(
            Value,
            index=st.integers(0, 2**32 - 1),
            type=st.sampled_from([b"URL", b"EMAIL", b"DESC", b"HS_ADMIN", b"url", b"X Y"]),
            data=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)),
            ttl=st.integers(-(2**31), 2**31 - 1),
            permissions=st.sampled_from([0x0E, 0x0C, 0x02]),
        ),
        max_size=6,
        unique_by=lambda v: v.index,
    ),
    rdtype=st.sampled_from(["TXT", "URI"]),
    transport=st.sampled_from(["udp", "tcp"]),
)
def test_any_identifier_is_answered_alike(handle, values, rdtype, transport):
    store = Store()
    store.add(handle, tail_of(values))
    wire = dns.message.make_query(handle_to_name(handle), rdtype, use_edns=0, payload=1232).to_wire()
    answer = _same(store, wire, transport)
    if not answer.flags & dns.flags.TC and any(v.permissions & 0x02 for v in values) and rdtype == "TXT":
        assert answer.answer, "public values give TXT records"


@pytest.mark.parametrize(
    "wire",
    [
        dns.message.make_query(handle_to_name(HANDLE), "SOA").to_wire(),
        dns.message.make_query(handle_to_name(HANDLE), "ANY").to_wire(),
        dns.message.make_query(handle_to_name(HANDLE), "TXT", rdclass="CH").to_wire(),
        dns.message.make_query(handle_to_name(HANDLE), "TXT", use_edns=1).to_wire(),
    ],
)
def test_uncommon_queries_take_the_careful_path(store, wire):
    view = store.view()
    assert view.answer_fast(wire) is None
    assert view.answer(wire) == view.answer_general(wire)
