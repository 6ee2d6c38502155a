"""The bulk loader's line templates (storage/lineshapes.py) give exactly the general parser's records and errors:
on generated input, on odd shapes, and on lines that only look like a learned shape."""

from __future__ import annotations

import json
import struct

import msgpack
import orjson
import pytest

from bench.datagen import generate_lines
from resolver.handle.values import encode_value
from storage import chunks
from storage.chunks import parse_ndjson
from storage.jsonvalues import record_from_json
from storage.keys import handle_key
from storage.lineshapes import MAX_SHAPES, LineShapes
from storage.records import PUBLIC_READ, SHARED_TYPES, shared_id

NOW_S = 1_764_400_000


class NoShapes:
    """Stands in for LineShapes: every line takes the general parser."""

    def __init__(self, case_sensitive: bool):
        pass

    def record_of(self, line: bytes) -> None:
        return None

    def learn(self, *args: object) -> None:
        pass


def general_chunk(data: bytes, case_sensitive: bool = False, monkeypatch=None):
    monkeypatch.setattr(chunks, "LineShapes", NoShapes)
    try:
        return parse_ndjson(data, 0, NOW_S, case_sensitive)
    finally:
        monkeypatch.undo()


def documented_record(line: str, case_sensitive: bool = False) -> tuple[bytes, bytes, dict[bytes, bytes]]:
    """(key, record, shared values) built as storage/records.py describes, by the fully general value parser."""
    handle, values = record_from_json(json.loads(line), NOW_S)
    encoded = [encode_value(v) for v in values]
    all_public = all(v.permissions & PUBLIC_READ for v in values)
    body = struct.pack(">I", len(encoded))
    key = handle_key(handle.encode(), case_sensitive)
    if encoded and values[-1].type.encode() in SHARED_TYPES:
        sid = shared_id(encoded[-1])
        record = msgpack.packb([1, body + b"".join(encoded[:-1]), all_public, sid])
        return key, record, {sid: encoded[-1]}
    return key, msgpack.packb([1, body + b"".join(encoded), all_public]), {}


def ndjson(*objs) -> bytes:
    return b"".join(orjson.dumps(o) + b"\n" for o in objs)


def value(index, vtype, data, **extra):
    return {"index": index, "type": vtype, "data": data, **extra}


def admin(prefix):
    return value(100, "HS_ADMIN", {"format": "admin", "value": {"handle": f"0.NA/{prefix}", "index": 200,
                                                                 "permissions": "011111111111"}})  # fmt: skip


def same_as_general(data: bytes, monkeypatch, case_sensitive: bool = False):
    fast = parse_ndjson(data, 0, NOW_S, case_sensitive)
    general = general_chunk(data, case_sensitive, monkeypatch)
    assert fast.items == general.items
    assert fast.shared == general.shared
    assert (fast.line_count, fast.error, fast.end_offset) == (
        general.line_count,
        general.error,
        general.end_offset,
    )
    return fast


def filled_lines(data: bytes, case_sensitive: bool = False) -> int:
    """How many lines of `data` came out of a template (the rest took the general parser)."""
    from storage.chunks import _parse_line
    from storage.jsonvalues import ValueEncoder

    shapes, encoder, filled = LineShapes(case_sensitive), ValueEncoder(NOW_S), 0
    for line in data.splitlines():
        if shapes.record_of(line) is not None:
            filled += 1
        else:
            _parse_line(line, encoder, shapes, case_sensitive)
    return filled


def test_generated_records_are_the_documented_records():
    lines = list(generate_lines(3000, 7, "88.100", 8))
    chunk = parse_ndjson("".join(line + "\n" for line in lines).encode(), 0, NOW_S, False)
    assert chunk.error is None
    shared: dict[bytes, bytes] = {}
    expected = []
    for line in lines:
        key, record, one_shared = documented_record(line)
        expected.append((key, record))
        shared.update(one_shared)
    assert chunk.items == expected
    assert chunk.shared == shared


def test_generated_lines_take_templates_after_the_first_of_each_shape():
    data = "".join(line + "\n" for line in generate_lines(2000, 7, "88.100", 8)).encode()
    assert filled_lines(data) == 2000 - 8  # one line per prefix teaches its shape (its HS_ADMIN differs)


ODD_SHAPES = {
    "not public": [value(1, "URL", "https://a/{n}", permissions="1100"), value(2, "EMAIL", "x{n}@a")],
    "bare data, no ttl, empty": [value(1, "URL", "{n}"), value(2, "DESC", "")],
    "string format without format": [value(1, "URL", {"value": "https://b/{n}"})],
    "unicode and emoji": [value(1, "DESC", "刹车盘 批次 {n} 🚗"), value(2, "URL", "https://例子.cn/{n}")],
    "constant base64 and hex": [
        value(1, "URL", "u{n}"),
        value(2, "KEY", {"format": "base64", "value": "AAEC"}),
        value(3, "HEX", {"format": "hex", "value": "0a0b"}),
    ],  # fmt: skip
    "timestamp, absolute ttl, references": [
        value(
            1,
            "URL",
            "u{n}",
            timestamp="2025-07-01T08:00:00Z",
            ttl="2030-01-01T00:00:00Z",
            references=[{"handle": "88.1/LOT-7", "index": 1}],
        ),  # fmt: skip
        value(7, "DESC", "d{n}", timestamp=1700000000, ttl=60),
    ],
    "HS_ADMIN shared": [value(1, "URL", "u{n}"), admin("88.1")],
    "HS_ADMIN not last": [admin("88.1"), value(1, "URL", "u{n}")],
    "HS_ADMIN as string data (shared, varies)": [value(1, "URL", "u{n}"), value(100, "HS_ADMIN", "adm{n}")],
    "only HS_ADMIN": [admin("88.1")],
    "no values": [],
    "vlist and site": [
        value(1, "HS_VLIST", {"format": "vlist", "value": [{"handle": "88.1/x", "index": 1}]}),
        value(2, "URL", "u{n}"),
    ],  # fmt: skip
}


def odd_lines(values_shape, handle="88.1/ID-{n}", count=5, **record_extra):
    text = orjson.dumps({"handle": handle, "values": values_shape, **record_extra}).decode()
    return [text.replace("{n}", str(n)) for n in range(count)]


@pytest.mark.parametrize("case_sensitive", [False, True])
@pytest.mark.parametrize("shape", sorted(ODD_SHAPES))
def test_odd_shapes_give_the_general_records(shape, case_sensitive, monkeypatch):
    lines = odd_lines(ODD_SHAPES[shape], handle="88.1/Id-{n}")
    data = "".join(line + "\n" for line in lines).encode()
    chunk = same_as_general(data, monkeypatch, case_sensitive)
    assert chunk.error is None and len(chunk.items) == 5
    assert chunk.items == [documented_record(line, case_sensitive)[:2] for line in lines]


def test_odd_shapes_are_filled_from_templates():
    for shape in ("not public", "unicode and emoji", "timestamp, absolute ttl, references", "HS_ADMIN shared",
                  "HS_ADMIN not last", "no values", "string format without format"):  # fmt: skip
        data = "".join(line + "\n" for line in odd_lines(ODD_SHAPES[shape])).encode()
        assert filled_lines(data) == 4, shape


def test_long_and_unicode_handles(monkeypatch):
    for handle in ("88.1/" + "L" * 60 + "{n}", "88.1/零件-{n}", "88.1/ä{n}", "88.1/" + "x" * 2040 + "{n}"):
        data = "".join(line + "\n" for line in odd_lines([value(1, "URL", "u{n}")], handle=handle)).encode()
        same_as_general(data, monkeypatch)
        same_as_general(data, monkeypatch, case_sensitive=True)


def test_layout_variations(monkeypatch):
    plain = odd_lines([value(1, "URL", "u{n}"), value(2, "EMAIL", "e{n}")])
    spaced = [
        json.dumps(json.loads(line), ensure_ascii=False, indent=None) for line in plain
    ]  # ", " and ": "
    reordered = [orjson.dumps({"values": json.loads(line)["values"], "handle": json.loads(line)["handle"]}).decode()
                 for line in plain]  # fmt: skip
    extra_keys = odd_lines([value(1, "URL", "u{n}")], note="kept out of the record", tags=["a", "b"])
    for lines, ending in ((plain, "\r\n"), (spaced, "\n"), (reordered, "\n"), (extra_keys, "\n")):
        data = "".join(line + ending for line in lines).encode()
        chunk = same_as_general(data, monkeypatch)
        assert chunk.error is None and len(chunk.items) == len(lines)
    assert filled_lines("".join(line + "\n" for line in reordered).encode()) == 4


def test_escaped_strings_are_decoded_as_the_general_parser_does(monkeypatch):
    def dumped(n, text):  # json.dumps as Python writes files by default: every non-ASCII character escaped
        return json.dumps(
            {"handle": f"88.1/ID-{n}", "values": [value(1, "DESC", text), value(2, "URL", "u")]}
        )

    texts = ["刹车盘 批次", 'say "hi"', "back\\slash / \t tab", "🚗 \u0000", "plain", ""]
    lines = [dumped(n, text) for n, text in enumerate(texts)]
    data = "".join(line + "\n" for line in lines).encode()
    chunk = same_as_general(data, monkeypatch)
    assert chunk.error is None and chunk.items == [documented_record(line)[:2] for line in lines]
    assert filled_lines(data) == len(lines) - 1  # the first teaches the shape


@pytest.mark.parametrize(
    ("escape", "good"),
    [("\\ud83d\\ude97", True), ("\\ud800", False), ("\\x41", False), ("\\u00", False), ("\\/", True)],
)
def test_escapes_in_a_learned_shape_are_judged_as_the_general_parser_does(escape, good, monkeypatch):
    lines = [json.dumps({"handle": f"88.1/ID-{n}", "values": [value(1, "DESC", f"é{n}")]}) for n in range(3)]
    odd = lines[0].replace("\\u00e90", escape)
    data = "".join(line + "\n" for line in [*lines, odd]).encode()
    chunk = same_as_general(data, monkeypatch)
    assert (chunk.error is None) == good


def test_duplicate_keys_are_not_learned(monkeypatch):
    lines = [f'{{"handle":"88.1/A{n}","handle":"88.1/B{n}","values":[{{"index":1,"type":"URL","data":"u{n}"}}]}}'
             for n in range(4)]  # fmt: skip
    data = "".join(line + "\n" for line in lines).encode()
    chunk = same_as_general(data, monkeypatch)
    assert [key for key, _ in chunk.items] == [f"88.1/B{n}".encode() for n in range(4)]
    assert filled_lines(data) == 0


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("88.1/\tTAB", "control"),  # a raw control character inside a string is not JSON
        ("88.1/\x7fDEL", None),  # DEL needs no escape: a good line
        ("no-slash", "handle:"),
        ("88.1/" + "C" * 2100, "handle: longer than 2048"),
        ("88.1/", "handle: the suffix is empty"),  # refused by the loader as by the HTTP API
    ],
)
def test_lines_that_only_look_like_a_learned_shape(bad, message, monkeypatch):
    lines = odd_lines([value(1, "URL", "u{n}")])
    bad_line = lines[0].replace("88.1/ID-0", bad)
    data = "".join(line + "\n" for line in [*lines, bad_line, lines[1]]).encode()
    chunk = same_as_general(data, monkeypatch)
    if message is None:
        assert chunk.error is None and len(chunk.items) == 7
    else:
        assert chunk.line_count == 5 and message in chunk.error.lower()


@pytest.mark.parametrize("where", ["handle", "data"])
def test_invalid_utf8_in_a_learned_shape_is_an_error(where, monkeypatch):
    lines = [line.encode() for line in odd_lines([value(1, "URL", "u{n}")])]
    broken = lines[0].replace(b"ID-0" if where == "handle" else b'"u0"', b"ID-\xe7\x94" if where == "handle"
                              else b'"u\xff"')  # fmt: skip
    data = b"".join(line + b"\n" for line in [*lines, broken])
    chunk = same_as_general(data, monkeypatch)
    assert chunk.line_count == 5 and chunk.error


def test_a_file_of_ever_new_shapes_stops_learning(monkeypatch):
    lines = [orjson.dumps({"handle": f"88.1/{n}", "values": [value(1, f"T{n}", "x")]}).decode()
             for n in range(MAX_SHAPES + 50)]  # fmt: skip
    data = "".join(line + "\n" for line in lines).encode()
    shapes = LineShapes(False)
    monkeypatch.setattr(chunks, "LineShapes", lambda case_sensitive: shapes)
    chunk = parse_ndjson(data, 0, NOW_S, False)
    monkeypatch.undo()
    assert len(chunk.items) == len(lines)
    assert sum(len(s.templates) for s in shapes._skeletons.values()) == MAX_SHAPES


def test_lines_that_cannot_be_learned_stop_costing_a_try_after_a_bound():
    unlearnable = '{"handle":"88.1/A%d","handle":"88.1/B%d","values":[]}'  # duplicate keys
    learnable = odd_lines([value(1, "URL", "u{n}")])
    for tries, filled in ((MAX_SHAPES - 1, 4), (MAX_SHAPES, 0)):
        lines = [unlearnable % (n, n) for n in range(tries)] + learnable
        assert filled_lines("".join(line + "\n" for line in lines).encode()) == filled
