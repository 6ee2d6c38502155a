"""Identifier <-> DNS name: the examples of resolver/dnsview/README.md, properties, and names that are not
identifiers."""

from __future__ import annotations

import base64
import hashlib

import dns.name
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from resolver.dnsview import (
    DigestName,
    NotAnIdentifier,
    NotInZone,
    PrefixNodeName,
    digest_entry,
    handle_key,
    handle_to_name,
    name_to_handle,
)
from resolver.dnsview.names import MAX_HANDLE_BYTES, NameKind, NameMap, chunk_field
from storage.keys import handle_key as storage_handle_key

# (handle, case_sensitive, name): the README's table, kept true by this test.
EXAMPLES = [
    ("88.100.7/BRAKE-2025-000123", False, "brake-2025-000123._.7.100.88.id.test."),
    ("88.100.7/brake-2025-000123", False, "brake-2025-000123._.7.100.88.id.test."),
    ("88.100.7/Brake-2025", True, "b_72_61_6b_65-2025._.7.100.88.id.test."),
    ("88.100.7/BRAKE-2025", True, "brake-2025._.7.100.88.id.test."),
    ("88.100.7/LOT.7/A_B", False, "lot_2e7_2fa_5fb._.7.100.88.id.test."),
    ("88.100.7/批次", False, "_e6_89_b9_e6_ac_a1._.7.100.88.id.test."),
    ("88.100.7/", False, "_.7.100.88.id.test."),
    ("0.NA/88.100.7", False, "88_2e100_2e7._.na.0.id.test."),
    ("0.NA/88.100.7", True, "88_2e100_2e7._.na.0.id.test."),
    ("88.608.24061301/X", False, "x._.24061301.608.88.id.test."),
]


@pytest.mark.parametrize(("handle", "case_sensitive", "name"), EXAMPLES)
def test_documented_examples(handle, case_sensitive, name):
    assert handle_to_name(handle, "id.test.", case_sensitive) == name
    assert name_to_handle(name, "id.test.", case_sensitive) == handle_key(handle, case_sensitive).decode()


def test_long_suffix_spreads_over_labels_last_chunk_leftmost():
    suffix = "A" * 70
    name = handle_to_name("88.100.7/" + suffix)
    assert name == "a" * 7 + "." + "a" * 63 + "._.7.100.88.id.test."
    assert name_to_handle(name) == "88.100.7/" + suffix


def test_chunks_never_cut_an_escape():
    escaped = b"a" * 62 + b"_2e" + b"b" * 10
    assert chunk_field(escaped) == [b"a" * 62, b"_2e" + b"b" * 10]


def test_suffix_too_long_for_a_name_gets_a_digest_name_under_its_prefix():
    handle = "88.100.7/" + "X" * 2000
    key = handle_key(handle)
    digest = hashlib.sha256(key).digest()
    label = "_h-" + base64.b32encode(digest).decode().rstrip("=").lower()
    assert handle_to_name(handle) == label + "._.7.100.88.id.test."
    assert name_to_handle(label + "._.7.100.88.id.test.") == DigestName(digest, "88.100.7")
    assert digest_entry(handle) == digest
    assert digest_entry("88.100.7/X") is None


def test_prefix_that_cannot_be_labels_gets_a_digest_name_under_the_zone():
    for handle in ("88..7/X", "88." + "9" * 70 + "/X"):
        name = handle_to_name(handle)
        assert name.startswith("_h-") and name.endswith("._.id.test.") and name.count(".") == 4
        result = name_to_handle(name)
        assert isinstance(result, DigestName) and result.prefix is None
        assert result.digest == hashlib.sha256(handle_key(handle)).digest()


def test_every_identifier_up_to_2048_bytes_has_a_name():
    handle = "88.100.7/" + "Ж" * ((MAX_HANDLE_BYTES - 9) // 2)
    assert len(handle.encode()) <= MAX_HANDLE_BYTES
    assert dns.name.from_text(handle_to_name(handle))  # a valid DNS name
    with pytest.raises(NotAnIdentifier):
        handle_to_name(handle + "ЖЖ")


@pytest.mark.parametrize("text", ["no-slash", "/suffix-without-prefix", ""])
def test_text_that_is_not_a_handle_has_no_name(text):
    with pytest.raises(NotAnIdentifier):
        handle_to_name(text)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("example.com.", NotInZone),
        ("test.", NotInZone),
        ("x.id.test.example.", NotInZone),
        ("id.test.", PrefixNodeName),
        ("88.id.test.", PrefixNodeName),
        ("7.100.88.id.test.", PrefixNodeName),
        ("_.id.test.", PrefixNodeName),
        ("x._.id.test.", NotAnIdentifier),  # an empty prefix
        ("_41bc._.7.100.88.id.test.", NotAnIdentifier),  # "A" escaped: not canonical
        ("_61bc._.7.100.88.id.test.", NotAnIdentifier),  # "a" on a case-insensitive node
        ("_4._.7.100.88.id.test.", NotAnIdentifier),  # a cut escape
        ("_zz._.7.100.88.id.test.", NotAnIdentifier),  # not hex
        ("_ff._.7.100.88.id.test.", NotAnIdentifier),  # not UTF-8
        ("a*b._.7.100.88.id.test.", NotAnIdentifier),  # outside the label alphabet
        ("x._.7_2e1.100.88.id.test.", NotAnIdentifier),  # "." inside a prefix segment
        ("x._._.88.id.test.", NotAnIdentifier),  # "_" as a prefix segment
        ("x.y._.88.id.test.", NotAnIdentifier),  # two suffix labels, the first not full
        ("_h-abc._.88.id.test.", NotAnIdentifier),  # a digest label of the wrong length
        ("_h-" + "9" * 52 + "._.88.id.test.", NotAnIdentifier),  # not base32
        ("x._h-" + "a" * 52 + "._.88.id.test.", NotAnIdentifier),  # a digest label is alone
        ("a..b.id.test.", NotAnIdentifier),
        ("ж._.88.id.test.", NotAnIdentifier),
    ],
)
def test_names_that_are_not_identifiers(name, error):
    with pytest.raises(error):
        name_to_handle(name)


def test_digest_label_with_spare_bits_set_is_not_canonical():
    good = "_h-" + base64.b32encode(bytes(32)).decode().rstrip("=").lower()
    assert good.endswith("a")
    assert isinstance(name_to_handle(good + "._.id.test."), DigestName)
    with pytest.raises(NotAnIdentifier):
        name_to_handle(good[:-1] + "b._.id.test.")  # decodes to the same bytes


def test_interior_names_are_those_with_possible_identifiers_below():
    nmap = NameMap("id.test.")
    assert nmap.classify([b"_", b"7", b"100", b"88"]) == (NameKind.IDENTIFIER, b"88.100.7/", True)
    assert nmap.classify([b"a" * 60, b"_", b"88"])[2] is False
    assert nmap.classify([b"a" * 61, b"_", b"88"])[2] is True
    assert nmap.classify([b"7", b"100"])[0] is NameKind.NODE
    assert nmap.classify([b"a*", b"100"])[0] is NameKind.NONE


def test_zone_without_room_for_digest_names_is_refused():
    with pytest.raises(ValueError):
        NameMap(".".join(["z" * 63] * 3 + ["z" * 10]) + ".")
    assert NameMap(".").zone == "."
    assert handle_to_name("88.1/X", ".") == "x._.1.88."


# --- properties ----------------------------------------------------------------------------------
segment = st.text(
    st.characters(blacklist_characters="./", blacklist_categories=("Cs",)), min_size=1, max_size=12
)
ascii_segment = st.text(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_", min_size=1, max_size=8
)
prefixes = st.lists(st.one_of(ascii_segment, segment), min_size=1, max_size=5).map(".".join)
suffixes = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=300),
    st.text("aAzZ09-._/ ", max_size=250),
)
handles = st.builds(lambda p, s: f"{p}/{s}", prefixes, suffixes).filter(
    lambda h: len(h.encode()) <= MAX_HANDLE_BYTES
)
zones = st.sampled_from(["id.test.", "ID.Example.CN", ".", "88.id.industry.example.org."])


def _check_round_trip(handle: str, zone: str, case_sensitive: bool) -> str:
    name = handle_to_name(handle, zone, case_sensitive)
    assert name == handle_to_name(handle, zone, case_sensitive)  # deterministic
    parsed = dns.name.from_text(name)  # a valid DNS name: labels <= 63, name <= 255 bytes
    assert len(parsed.to_wire()) <= 255
    key = handle_key(handle, case_sensitive)
    result = name_to_handle(name, zone, case_sensitive)
    if isinstance(result, DigestName):
        assert result.digest == hashlib.sha256(key).digest()
        assert digest_entry(handle, zone, case_sensitive) == result.digest
    else:
        assert result.encode() == key
        assert digest_entry(handle, zone, case_sensitive) is None
    return name


@settings(max_examples=400)
@given(handles, zones, st.booleans())
def test_every_handle_round_trips(handle, zone, case_sensitive):
    _check_round_trip(handle, zone, case_sensitive)


@settings(max_examples=200)
@given(handles, st.booleans(), st.randoms(use_true_random=False))
def test_dns_case_does_not_matter(handle, case_sensitive, rnd):
    name = handle_to_name(handle, "id.test.", case_sensitive)
    mixed = "".join(c.upper() if rnd.random() < 0.5 else c for c in name)
    assert name_to_handle(mixed, "id.test.", case_sensitive) == name_to_handle(
        name, "id.test.", case_sensitive
    )


@given(
    st.lists(ascii_segment, min_size=1, max_size=4).map(".".join),
    st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=60),
)
def test_case_rule(prefix, suffix):
    """ASCII case only: the node's rule upper-cases ASCII a-z and nothing else."""
    lower, upper = f"{prefix}/{suffix.lower()}", f"{prefix}/{suffix.upper()}"
    assert handle_to_name(lower) == handle_to_name(upper)
    if suffix.lower() != suffix.upper() and prefix.upper() != "0.NA":
        assert handle_to_name(lower, case_sensitive=True) != handle_to_name(upper, case_sensitive=True)
    # Prefixes are case-insensitive even on a case-sensitive node.
    assert handle_to_name(f"{prefix.lower()}/{suffix}", case_sensitive=True) == handle_to_name(
        f"{prefix.upper()}/{suffix}", case_sensitive=True
    )


@given(handles, st.booleans())
def test_key_rule_is_the_stores(handle, case_sensitive):
    assert handle_key(handle, case_sensitive) == storage_handle_key(handle.encode(), case_sensitive)


@given(st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-", max_size=150))
def test_plain_suffixes_that_fit_are_readable(suffix):
    name = _check_round_trip("88.100.7/" + suffix, "id.test.", False)
    assert not name.startswith("_h-")


label_text = st.one_of(
    st.sampled_from(["_", "_h-" + "a" * 52, "a" * 63, "a" * 61 + "_2e", "7", "100", "88", "_2e", "_61"]),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=63),
)


@settings(max_examples=500)
@given(st.lists(label_text, max_size=8), st.booleans())
def test_any_name_is_an_identifier_only_in_its_canonical_spelling(labels, case_sensitive):
    """name_to_handle either refuses a name or gives the one handle whose name it is (a bijection)."""
    name = ".".join([*labels, "id", "test", ""])
    assume(len(name) <= 254)
    try:
        result = name_to_handle(name, "id.test.", case_sensitive)
    except PrefixNodeName:
        assert "_" not in labels or labels == ["_"]
        return
    except NotAnIdentifier:
        return
    if isinstance(result, DigestName):
        assert labels[0].startswith("_h-") and labels[1] == "_"
    else:
        assert handle_to_name(result, "id.test.", case_sensitive) == name.lower()


def test_documented_digest_example():
    name = "_h-vaoc7ku6rxza4zqalmmz75jbdugxkuet4424gicoppqnzxiiibbq._.7.100.88.id.test."
    assert handle_to_name("88.100.7/" + "X" * 300) == name
    assert name_to_handle(name).digest == hashlib.sha256(b"88.100.7/" + b"X" * 300).digest()


def test_non_ascii_letters_keep_their_case():
    """The node's rule folds ASCII a-z only: À and à are different identifiers."""
    assert handle_to_name("88.1/À") != handle_to_name("88.1/à")
