"""Stored record form and OC_RESOLUTION value selection (handle-protocol.md: index OR type, trailing-dot
prefix rule, PO)."""

from __future__ import annotations

import msgpack
import pytest

from resolver.handle.values import HandleValue, Reference, encode_value, encode_values
from storage.records import (
    RecordError,
    bin_header,
    pack_body,
    pack_encoded,
    pack_record,
    record_frame,
    select_values,
    split_values,
    type_matches,
    unpack_record,
)

VALUES = [
    HandleValue(1, "URL", b"https://example.com/a"),
    HandleValue(2, "EMAIL", b"qa@example.com"),
    HandleValue(3, "HS_SITE", b"site"),
    HandleValue(4, "HS_SITE.PREFIX", b"prefix-site"),
    HandleValue(5, "hs_", b"odd type", references=(Reference("88.100.1/LOT-7", 1),)),
    HandleValue(200, "INTERNAL", b"secret", permissions=0x0C),
]


def indexes_of(tail: bytes) -> list[int]:
    return [int.from_bytes(v[:4], "big") for v in split_values(tail)]


def select(indexes=(), types=(), public_only=True):
    tail, all_public = unpack_record(pack_record(VALUES))
    count, chosen = select_values(tail, all_public, indexes, types, public_only)
    assert count == len(indexes_of(chosen))
    return indexes_of(chosen)


def test_tail_is_exactly_the_wire_values():
    tail, all_public = unpack_record(pack_record(VALUES))
    assert tail == encode_values(VALUES)
    assert all_public is False
    assert split_values(tail) == [encode_value(v) for v in VALUES]


def test_no_filter_public_only_drops_values_without_public_read():
    assert select() == [1, 2, 3, 4, 5]
    assert select(public_only=False) == [1, 2, 3, 4, 5, 200]


def test_index_or_type_union():
    assert select(indexes=[2], types=[b"URL"]) == [1, 2]


def test_types_are_case_insensitive():
    assert select(types=[b"url", b"Email"]) == [1, 2]


def test_trailing_dot_matches_type_without_dot_and_longer_types():
    assert select(types=[b"HS_SITE."]) == [3, 4]
    assert select(types=[b"HS_SITE"]) == [3]


def test_without_dot_is_exact():
    assert select(types=[b"HS_"]) == [5]
    assert not type_matches(b"HS_SITE", b"HS_")


def test_private_value_not_returned_even_when_asked_by_index():
    assert select(indexes=[200]) == []
    assert select(indexes=[200], public_only=False) == [200]


def test_nothing_selected_counts_zero():
    tail, all_public = unpack_record(pack_record(VALUES))
    assert select_values(tail, all_public, [999], [b"NOPE"]) == (0, b"\x00\x00\x00\x00")


@pytest.mark.parametrize("raw", [b"", b"\x93\x02\xc4\x00\xc3", b"\xff\xff", b"\x93\x01\xc4\x02ab\xc3"])
def test_corrupt_records_raise_record_error(raw):
    with pytest.raises(RecordError):
        tail, _ = unpack_record(raw)
        split_values(tail)


def test_a_shared_last_value_is_stored_once_and_resolved_back():
    from storage.records import SHARED_TYPES, pack_encoded_shared

    admin = encode_value(HandleValue(100, "HS_ADMIN", b"\x0f\xff" + b"\x00" * 21))
    encoded = [encode_value(v) for v in VALUES[:2]] + [admin]
    record, shared = pack_encoded_shared(encoded, all_public=True)
    assert shared is not None and shared[1] == admin and b"HS_ADMIN" in SHARED_TYPES
    assert len(record) < len(pack_encoded(encoded, True)) - 40
    table = dict([shared])
    assert unpack_record(record, table.get) == (encode_values_list(encoded), True)
    with pytest.raises(RecordError, match="missing"):
        unpack_record(record)
    plain, none = pack_encoded_shared(encoded[:2], all_public=True)  # no shared type last: stored whole
    assert none is None and unpack_record(plain)[0] == encode_values_list(encoded[:2])


def encode_values_list(encoded: list[bytes]) -> bytes:
    return len(encoded).to_bytes(4, "big") + b"".join(encoded)


@pytest.mark.parametrize("length", [0, 1, 255, 256, 65535, 65536])
@pytest.mark.parametrize("sid", [None, b"\x01" * 8])
@pytest.mark.parametrize("all_public", [True, False])
def test_a_record_assembled_from_its_frame_is_the_packed_record(length, sid, all_public):
    body = bytes(range(256)) * (length // 256) + bytes(length % 256)
    before, after = record_frame(all_public, sid)
    assert before + bin_header(len(body)) + body + after == pack_body(body, all_public, sid)
    fields = [1, body, all_public] if sid is None else [1, body, all_public, sid]
    assert pack_body(body, all_public, sid) == msgpack.packb(fields)
