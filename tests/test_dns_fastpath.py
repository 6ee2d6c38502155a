"""The shortcuts of the DNS view's fast path give what the general code gives: `encode_common` (the memo's miss
path) against `render_records`, `_plain_key` against `NameMap.classify`."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver.dnsview import CorruptValues, render_records
from resolver.dnsview.names import NameKind, NameMap
from resolver.dnsview.records import TTL_ABSOLUTE, decode_values, txt_rdata, uri_rdata
from resolver.dnsview.view import _plain_key, encode_common

from .test_dns_helpers import FOUR_VALUE_TAIL, VECTOR_TAIL, Value, tail_of

_TXT_OWNER = b"\xc0\x0c" + struct.pack(">HH", 16, 1)
_URI_OWNER = b"\xc0\x0c" + struct.pack(">HH", 256, 1)


def reference(tail: bytes) -> tuple[tuple[bytes, int], tuple[bytes, int]]:
    """The answer records as the general rendering (records.render_records) defines them."""
    records = render_records(tail, 1_700_000_000.0)
    txt = [txt_rdata(strings) for strings in records.txt]
    uri = [uri_rdata(*item) for item in records.uri]
    return (
        (b"".join(_TXT_OWNER + struct.pack(">IH", records.txt_ttl_s, len(r)) + r for r in txt), len(txt)),
        (b"".join(_URI_OWNER + struct.pack(">IH", records.uri_ttl_s, len(r)) + r for r in uri), len(uri)),
    )


types = st.sampled_from(
    [b"URL", b"url", b"EMAIL", b"DESC", b"HS_ADMIN", b"MY TYPE", b"base64:t", b"\xff", b""]
)
data = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=300).map(lambda t: t.encode()),
    st.sampled_from(
        [b"", b"https://x.example/a", b"base64:abc", "刹车盘".encode() * 100, b"y" * 700, b"a\tb\nc"]
    ),
)
values = st.builds(
    Value,
    index=st.integers(0, 70_000),
    type=types,
    data=data,
    ttl=st.integers(-(2**31), 2**31 - 1),
    ttl_type=st.sampled_from([0, 0, 0, 2]),
    permissions=st.integers(0, 15),
    references=st.lists(st.tuples(st.binary(max_size=12), st.integers(0, 2**32 - 1)), max_size=2).map(tuple),
)


@settings(max_examples=300)
@given(st.lists(values, max_size=6))
def test_encode_common_equals_the_general_rendering(vals):
    tail = tail_of(vals)
    assert encode_common(tail) == reference(tail)


def test_absolute_expiry_is_left_to_the_general_rendering():
    tail = tail_of(
        [Value(1, b"URL", b"https://x/"), Value(2, b"EMAIL", b"a@b", ttl_type=1, ttl=1_800_000_000)]
    )
    assert encode_common(tail) is None


@given(st.binary(max_size=200))
def test_encode_common_on_any_bytes_answers_only_what_decodes(raw):
    try:
        expected = reference(raw)
    except CorruptValues:
        expected = None
    got = encode_common(raw)
    if got is None and expected is not None:  # only an absolute expiry is left to the general rendering
        assert any(ttl_type == TTL_ABSOLUTE for _, ttl_type, *_ in decode_values(raw))
    else:
        assert got == expected


@pytest.mark.parametrize("tail", [VECTOR_TAIL, FOUR_VALUE_TAIL])
def test_truncated_tails_fall_back(tail):
    for end in range(len(tail)):
        assert encode_common(tail[:end]) is None


label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=0, max_size=70).map(str.encode)


@settings(max_examples=500)
@given(label, st.lists(label, min_size=1, max_size=4), st.booleans())
def test_plain_key_agrees_with_classify(suffix, prefix_labels, case_sensitive):
    below = [suffix, b"_", *prefix_labels]
    key = _plain_key(below)
    if key is None:
        return
    kind, payload, interior = NameMap("id.test.", case_sensitive).classify(below)
    assert (kind, payload) == (NameKind.IDENTIFIER, key)
    assert interior == (len(suffix) >= 61)


def test_plain_key_takes_the_common_names_only():
    assert _plain_key([b"brake-2025-000123", b"_", b"7", b"100", b"88"]) == b"88.100.7/BRAKE-2025-000123"
    assert _plain_key([b"na", b"_", b"na", b"0"]) == b"0.NA/NA"
    for below in (
        [b"lot_2e7", b"_", b"7", b"100", b"88"],  # an escape
        [b"b", b"a", b"_", b"7"],  # two suffix labels
        [b"_", b"7", b"100"],  # the empty suffix
        [b"x", b"_"],  # no prefix
        [b"x", b"_", b"1.2"],  # a dot inside a wire label
        [b"x", b"_", b""],
        [b"7", b"100", b"88"],  # a prefix node
    ):
        assert _plain_key(below) is None, below
