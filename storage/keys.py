"""Store keys for handles: the node's case rule in one place.

The reference server upper-cases ASCII a-z in handles before lookup unless it is configured case-sensitive, and
prefixes are always case-insensitive. Keys are bytes so the hot path never decodes; the byte order of keys is
the order the bulk loader appends in. Imports nothing but the standard library and the protocol's constants.
"""

from __future__ import annotations

import operator
from bisect import bisect_left
from collections.abc import Sequence
from itertools import islice

from resolver.handle.constants import MAX_HANDLE_BYTES

NA_PREFIX = b"0.NA"  #: the prefix under which every prefix is itself a handle (handle-protocol.md, names)

_ASCII_UPPER = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class InvalidHandle(ValueError):
    """The handle is not of the form prefix/suffix with valid UTF-8."""


def split_handle(handle: bytes) -> tuple[bytes, bytes]:
    """(prefix, suffix) of `handle`; the prefix must be non-empty."""
    slash = handle.find(b"/")
    if slash <= 0:
        raise InvalidHandle("a handle is prefix/suffix with a non-empty prefix")
    return handle[:slash], handle[slash + 1 :]


def normalize_prefix(prefix: bytes) -> bytes:
    return prefix.translate(_ASCII_UPPER)


def handle_key(handle: bytes, case_sensitive: bool = False) -> bytes:
    """The store key of `handle` (UTF-8 bytes): prefix upper-cased, suffix too unless case-sensitive.

    The suffix of a prefix handle (`0.NA/88.100.7`) is itself a prefix, so it is always case-insensitive.
    """
    slash = handle.find(b"/")
    if slash <= 0:
        raise InvalidHandle("a handle is prefix/suffix with a non-empty prefix")
    if not case_sensitive:
        return handle.translate(_ASCII_UPPER)
    prefix = handle[:slash].translate(_ASCII_UPPER)
    if prefix == NA_PREFIX:
        return handle.translate(_ASCII_UPPER)
    return prefix + handle[slash:]


def written_handle_key(handle: bytes, case_sensitive: bool = False) -> bytes:
    """The store key of a handle someone writes (a load line, an API call), checked as every writer checks it:
    at most MAX_HANDLE_BYTES, prefix/suffix with neither part empty. InvalidHandle says what is wrong."""
    if len(handle) > MAX_HANDLE_BYTES:
        raise InvalidHandle(f"longer than {MAX_HANDLE_BYTES} bytes")
    key = handle_key(handle, case_sensitive)
    if key.find(b"/") == len(key) - 1:
        raise InvalidHandle("the suffix is empty")
    return key


def prefix_of_key(key: bytes) -> bytes:
    """The (already normalized) prefix part of a store key."""
    return key[: key.find(b"/")]


def prefix_sort_key(prefix: str | bytes) -> tuple[tuple[int, int, str], ...]:
    """Prefixes in the order people count them, for every listing (`idnode prefix list`, stats, the report,
    /api/stats): segment by segment, a number by its value (88.100.2 before 88.100.10), a segment that is not a
    number after every number, by its text (case-insensitive, as prefixes are). Not the store's byte order."""
    text = prefix.decode("utf-8", "replace") if isinstance(prefix, bytes) else prefix
    return tuple(
        (0, int(segment), segment) if segment.isascii() and segment.isdigit() else (1, 0, segment.upper())
        for segment in text.split(".")
    )


def strictly_ascending(keys: Sequence[bytes]) -> bool:
    """Whether every key is greater than the one before it (one C-level pass, no Python loop per key)."""
    return all(map(operator.lt, keys, islice(keys, 1, None)))


_AFTER_SLASH = b"0"  # the byte after b"/": prefix + b"0" sorts after every key of that prefix


def count_by_prefix(keys: Sequence[bytes], ascending: bool | None = None) -> dict[bytes, int]:
    """How many of `keys` (store keys) each prefix holds. In sorted keys a prefix's keys are one run (all start
    with prefix + "/" and sort before prefix + "0"), so a bulk load's chunk costs a binary search a prefix
    instead of a look at every key. `ascending`: whether the caller already knows the keys strictly ascending
    (None: look)."""
    counts: dict[bytes, int] = {}
    if ascending is None:
        ascending = strictly_ascending(keys)
    if not ascending:
        for key in keys:
            prefix = key[: key.find(b"/")]  # prefix_of_key inlined: no call per key on the loader's path
            counts[prefix] = counts.get(prefix, 0) + 1
        return counts
    start = 0
    while start < len(keys):
        prefix = prefix_of_key(keys[start])
        end = bisect_left(keys, prefix + _AFTER_SLASH, start)
        counts[prefix] = end - start
        start = end
    return counts
