"""NDJSON lines of a shape seen before, turned into store records by filling in their strings.

Bulk files repeat a few shapes millions of times: the same keys, types, formats, TTLs and HS_ADMIN value in
the same order, where only the handle and the data strings differ from line to line. The first line of a shape
goes through the general parser, which validates it; its record is then cut into a template with a gap
wherever a data string went, and later lines that match the shape's text only fill the gaps: no JSON objects,
no per-value dictionaries, about half the work.

A shape is the line's text with each variable string (the handle, and every data string of `string` format)
replaced by "any JSON string contents" (RFC 8259 § 7: no raw quote, backslash or control character; escapes
allowed). Why a line that matches it gets byte for byte the general parser's record (tests/test_lineshapes.py
checks it):
- everything outside the variable strings is the learned line's text, so the line is the same JSON document
  but for those strings, which are valid once their bytes are UTF-8 (`record_of` checks);
- the general parser uses a variable string only as the handle, whose checks `record_of` repeats, or as the
  bytes of a `string`-format data (`s.encode()`): `record_of` copies them as they stand, or, for a string
  with escapes, has the general parser's JSON parser decode it.
Anything else (a shape not learned, a handle the general parser would refuse, an escape that is no character)
gives None and the caller takes the general path, which also writes every error message.

Pure: no I/O.
"""

from __future__ import annotations

import operator
import re
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from storage.keys import InvalidHandle, written_handle_key
from storage.records import bin_header, data_length_at, record_frame, split_shared

#: Lines a chunk learns from: real files have a few shapes per prefix; a file whose every line has its own (a
#: timestamp string per line), or whose shape cannot be learned, stops paying for learning after this many.
MAX_SHAPES = 256
# JSON string contents (RFC 8259 § 7): runs of characters that need no escape, between escapes. Possessive, so a
# line of another shape fails without backtracking.
_STRING_CONTENTS = rb'([^"\\\x00-\x1f]*+(?:\\(?:["\\/bfnrt]|u[0-9A-Fa-f]{4})[^"\\\x00-\x1f]*+)*+)'
_BACKSLASH = ord("\\")  # an int: `int in bytes` is a memchr, several times faster than `b"\\" in bytes`
_U32 = struct.Struct(">I")
_HANDLE = "handle"  # the role of the record's handle string; a data string's role is its value's position

Role = int | str | None

Filled = tuple[bytes, bytes, "tuple[bytes, bytes] | None"]  # (key, record, shared (id, value) or None)


def _tuple_getter(indexes: Sequence[int]) -> Callable[[Sequence[bytes]], tuple[bytes, ...]]:
    """operator.itemgetter that gives a tuple for one index and for none too."""
    if len(indexes) == 1:
        only = indexes[0]
        return lambda items: (items[only],)
    if not indexes:
        return lambda items: ()
    return operator.itemgetter(*indexes)


@dataclass(frozen=True, slots=True)
class _Template:
    """The lines of one shape, and their record with a gap for each data string."""

    pattern: re.Pattern[bytes]  # the whole line; a group for each variable string, in text order
    handle_group: int  # index of the handle among the groups
    data_groups: Callable[[Sequence[bytes]], tuple[bytes, ...]]  # the data strings among the groups, in order
    body_constants: tuple[bytes, ...]  # body = [0] + u32 len + data 1 + [1] + u32 len + data 2 + ... + [-1]
    before: bytes  # record = before + bin header + body + after (storage/records.py record_frame)
    after: bytes
    shared: tuple[bytes, bytes] | None  # the shared last value (id, bytes): the same for every line


@dataclass(frozen=True, slots=True)
class _Skeleton:
    """Lines with the same text outside their strings: which strings vary, and a template for each combination
    of the others (constants: keys, types, formats, the HS_ADMIN's handle...)."""

    variable_positions: tuple[int, ...]  # indexes, in the line split at its quotes, of the variable strings
    constant_strings: Callable[[Sequence[bytes]], tuple[bytes, ...]]
    templates: dict[tuple[bytes, ...], _Template]


class LineShapes:
    """Shapes learned from the lines of one chunk (one encoder, so one `now_s`; one case rule)."""

    def __init__(self, case_sensitive: bool):
        self.case_sensitive = case_sensitive
        self._skeletons: dict[tuple[bytes, ...], _Skeleton] = {}
        self._last: _Template | None = None  # the template of the line before
        self._in_runs = True  # sorted input repeats a shape for many lines in a row: try the last one first
        self._learning_left = MAX_SHAPES

    def record_of(self, line: bytes) -> Filled | None:
        """(key, record, shared value) of a line of a learned shape, or None: take the general path."""
        template = self._last
        if template is None or not self._in_runs or (match := template.pattern.fullmatch(line)) is None:
            if not self._skeletons:
                return None  # nothing learned (yet, or ever: a file of shapes that cannot be learned)
            found = self._template_for(line)
            if found is None or (match := found.pattern.fullmatch(line)) is None:
                return None
            # Unsorted input changes shape nearly every line: trying the last template first seldom pays there.
            self._in_runs = template is None or found is template
            self._last = template = found
        strings: Sequence[bytes] = match.groups()
        together = b'"'.join(strings)  # the quote keeps a broken UTF-8 sequence from pairing with the next
        try:
            together.decode()
            if _BACKSLASH in together:
                strings = [_unescape(s) if _BACKSLASH in s else s for s in strings]
        except ValueError:  # not UTF-8, or an escape that is not a character (a lone surrogate)
            return None
        try:  # a bad handle takes the general parser, which says what is wrong with it
            key = written_handle_key(strings[template.handle_group], self.case_sensitive)
        except InvalidHandle:
            return None
        constants = template.body_constants
        parts = [constants[0]]
        # Not zip(strict=True): the lengths match by construction, and the check costs a tenth of the fill.
        for data, after in zip(template.data_groups(strings), constants[1:]):  # noqa: B905
            parts += (_U32.pack(len(data)), data, after)
        body = b"".join(parts)
        return key, template.before + bin_header(len(body)) + body + template.after, template.shared

    def _template_for(self, line: bytes) -> _Template | None:
        """The template of the line's shape, found by its text outside strings and its constant strings (the
        line still has to match it)."""
        pieces = line.split(b'"')  # wrong where a string holds an escaped quote: then nothing is found
        skeleton = self._skeletons.get(tuple(pieces[0::2]))
        if skeleton is None:
            return None
        return skeleton.templates.get(skeleton.constant_strings(pieces))

    def learn(self, line: bytes, obj: Any, encoded: Sequence[bytes], all_public: bool, filled: Filled) -> None:
        """Learn the shape of `line`, which the general parser turned into `obj`, then into these encoded
        values and at last into `filled` (key, record, shared value). A shape that cannot be cut is simply not
        learned."""
        if self._learning_left <= 0:
            return
        self._learning_left -= 1
        pieces = line.split(b'"')
        roles = _string_roles(pieces, obj)
        if roles is None:
            return
        handle_at = [n for n, role in roles.items() if role == _HANDLE]
        data_at = {role: n for n, role in roles.items() if isinstance(role, int)}  # value position -> piece
        if len(handle_at) != 1:
            return
        data_of = {
            position: _unescape(pieces[n]) if b"\\" in pieces[n] else pieces[n]
            for position, n in data_at.items()
        }
        body_constants = _cut(encoded, data_of)
        if body_constants is None:
            return
        variable = sorted([*handle_at, *data_at.values()])
        structure = tuple(pieces[0::2])
        skeleton = self._skeletons.get(structure)
        if skeleton is None:
            constant = [n for n, role in roles.items() if role is None]
            skeleton = self._skeletons[structure] = _Skeleton(tuple(variable), _tuple_getter(constant), {})
        elif skeleton.variable_positions != tuple(variable):
            return  # the same layout with data strings elsewhere (another format): left to the general path
        pattern = b'"'.join(
            _STRING_CONTENTS if n in variable else re.escape(piece) for n, piece in enumerate(pieces)
        )
        shared = filled[2]
        learned = _Template(
            re.compile(pattern),
            variable.index(handle_at[0]),
            # the groups are in text order, and a value's data string comes after the data of the values before
            _tuple_getter([variable.index(data_at[position]) for position in sorted(data_at)]),
            body_constants,
            *record_frame(all_public, shared[0] if shared else None),
            shared,
        )
        constant_strings = skeleton.constant_strings(pieces)
        skeleton.templates[constant_strings] = learned
        if self.record_of(line) != filled:
            del skeleton.templates[constant_strings]  # never keep a template that does not give back its line
            self._last = None


def _unescape(contents: bytes) -> bytes:
    """The UTF-8 bytes of JSON string contents with escapes, decoded by the general parser's own JSON parser."""
    return orjson.loads(b'"' + contents + b'"').encode()


def _string_roles(pieces: list[bytes], obj: dict) -> dict[int, Role] | None:
    """The role of each string of the line (by its index among the pieces split at quotes): _HANDLE, the
    position of the value whose data it is, or None for a constant. None when the parsed object does not
    account for every string of the text (duplicate keys)."""
    roles: dict[tuple[int, str], Role] = {(id(obj), "handle"): _HANDLE}
    for n, value in enumerate(obj["values"]):
        data = value.get("data")
        if type(data) is str:
            roles[(id(value), "data")] = n
        elif (
            type(data) is dict and data.get("format", "string") == "string" and type(data.get("value")) is str
        ):
            roles[(id(data), "value")] = n
    strings: list[tuple[str, Role]] = []

    def walk(node: Any) -> None:  # strings in text order: orjson keeps the order of keys
        if type(node) is dict:
            for name, item in node.items():
                strings.append((name, None))
                if type(item) is str:
                    strings.append((item, roles.get((id(node), name))))
                else:
                    walk(item)
        elif type(node) is list:
            for item in node:
                if type(item) is str:
                    strings.append((item, None))
                else:
                    walk(item)

    try:
        walk(obj)
    except RecursionError:
        return None
    if len(pieces) % 2 == 0 or len(strings) != len(pieces) // 2:
        return None
    out: dict[int, Role] = {}
    for n, (text, role) in enumerate(strings):
        piece = pieces[2 * n + 1]
        try:
            if (orjson.loads(b'"' + piece + b'"') if b"\\" in piece else piece.decode()) != text:
                return None
        except ValueError:  # an escaped quote split the line in the wrong places
            return None
        out[2 * n + 1] = role
    return out


def _cut(encoded: Sequence[bytes], data_of: dict[int, bytes]) -> tuple[bytes, ...] | None:
    """The body constants of a record whose values `encoded` carry the variable data `data_of[value position]`:
    the body, its shared last value left out, with a gap where each of those data went."""
    values, shared = split_shared(encoded)
    if shared is not None and len(encoded) - 1 in data_of:
        return None  # a shared last value that differs per line: not worth a template
    constants = []
    current = _U32.pack(len(encoded))
    for n, value in enumerate(values):
        if n not in data_of:
            current += value
            continue
        data = data_of[n]
        data_at = data_length_at(value)
        if value[data_at : data_at + 4 + len(data)] != _U32.pack(len(data)) + data:
            return None
        constants.append(current + value[:data_at])
        current = value[data_at + 4 + len(data) :]
    constants.append(current)
    return tuple(constants)
