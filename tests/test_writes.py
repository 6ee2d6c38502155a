"""Identifier writes on a real LMDB store: one transaction each, checks inside it, nothing stored when refused,
registrations counted with the write; batches all-or-nothing when atomic."""

from __future__ import annotations

import json

import pytest

from resolver.handle.constants import ResponseCode
from resolver.handle.values import HandleValue
from resolver.templates import TemplateChecker, set_templates
from storage.counters import totals
from storage.enterprises import add_prefix, set_prefix_enabled
from storage.jsonvalues import ValueEncoder
from storage.writes import (
    TemplateViolation,
    WriteError,
    decode_record_values,
    delete_identifier,
    parse_batch_item,
    put_batch,
    put_identifier,
)

URL = HandleValue(1, "URL", b"https://example.com/a", timestamp=1)
DESC = HandleValue(2, "DESC", "刹车盘".encode(), timestamp=1)


@pytest.fixture()
def hosted(store):
    add_prefix(store, "88.100.7", "Brakes Ltd")
    add_prefix(store, "88.100.8", "Other Co")
    add_prefix(store, "88.100.9", "Own Node Co", "127.0.0.1:2700")
    return store


def values_of(store, handle):
    return decode_record_values(store.get(handle))


def refused(code, call, *args, **kwargs):
    with pytest.raises(WriteError) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value.message
    return caught.value


def snapshot(store):
    with store.env.begin() as txn:
        return [list(txn.cursor(db)) for db in (store.handles, store.counters_db)]


def test_create_replace_and_count(hosted):
    assert put_identifier(hosted, "88.100.7/a", [URL]) == "created"
    assert put_identifier(hosted, "88.100.7/A", [URL, DESC]) == "replaced"  # the store is case-insensitive
    assert values_of(hosted, "88.100.7/A") == [URL, DESC]
    refused(ResponseCode.HANDLE_ALREADY_EXISTS, put_identifier, hosted, "88.100.7/A", [URL], overwrite=False)
    total, per_prefix, _, per_protocol = totals(hosted, "registrations")
    assert (total, per_prefix, per_protocol) == (1, {"88.100.7": 1}, {"http": 1})


def test_update_only_the_listed_indexes(hosted):
    put_identifier(hosted, "88.100.7/U", [URL, DESC])
    new_desc = HandleValue(2, "DESC", b"new", timestamp=2)
    email = HandleValue(3, "EMAIL", b"a@b", timestamp=2)
    assert put_identifier(hosted, "88.100.7/U", [new_desc, email], indexes=[2, 3]) == "updated"
    assert values_of(hosted, "88.100.7/U") == [URL, new_desc, email]
    refused(ResponseCode.INVALID_VALUE, put_identifier, hosted, "88.100.7/U", [email], indexes=[2])
    refused(ResponseCode.INVALID_VALUE, put_identifier, hosted, "88.100.7/U", [email], indexes=[3, 4])
    refused(ResponseCode.VALUE_ALREADY_EXISTS, put_identifier, hosted, "88.100.7/U", [email], indexes=[3],
            overwrite=False)  # fmt: skip
    refused(ResponseCode.HANDLE_NOT_FOUND, put_identifier, hosted, "88.100.7/NONE", [email], indexes=[3])
    refused(ResponseCode.INVALID_VALUE, put_identifier, hosted, "88.100.7/U", [URL, URL])


def test_delete_whole_or_values(hosted):
    put_identifier(hosted, "88.100.7/D", [URL, DESC])
    assert delete_identifier(hosted, "88.100.7/D", indexes=[1]) == "values removed"
    assert values_of(hosted, "88.100.7/D") == [DESC]
    refused(ResponseCode.VALUES_NOT_FOUND, delete_identifier, hosted, "88.100.7/D", indexes=[9])
    assert delete_identifier(hosted, "88.100.7/D") == "deleted"
    assert hosted.get("88.100.7/D") is None
    refused(ResponseCode.HANDLE_NOT_FOUND, delete_identifier, hosted, "88.100.7/D")


def test_prefix_and_authority_checks_write_nothing(hosted):
    before = snapshot(hosted)
    refused(ResponseCode.INSUFFICIENT_PERMISSIONS, put_identifier, hosted, "88.100.8/X", [URL],
            allowed_prefix=b"88.100.7")  # fmt: skip
    refused(ResponseCode.INSUFFICIENT_PERMISSIONS, put_identifier, hosted, "88.100.7/admin", [URL])
    refused(ResponseCode.SERVER_NOT_RESP, put_identifier, hosted, "99.1/X", [URL])
    refused(
        ResponseCode.SERVER_NOT_RESP, put_identifier, hosted, "88.100.9/X", [URL]
    )  # its own node serves it
    set_prefix_enabled(hosted, "88.100.8", False)
    refused(ResponseCode.SERVER_NOT_RESP, put_identifier, hosted, "88.100.8/X", [URL])
    for bad in ("no-slash", "/x", "88.100.7/", "88.100.7/" + "x" * 2048):
        refused(ResponseCode.INVALID_HANDLE, put_identifier, hosted, bad, [URL])
    assert snapshot(hosted) == before


def test_a_suffix_may_end_with_a_slash(hosted):
    """Only an empty suffix is refused: `88.100.7/A/` is prefix 88.100.7 and suffix `A/`."""
    assert put_identifier(hosted, "88.100.7/A/", [URL])
    assert hosted.get("88.100.7/A/") is not None


def _items(store, records):
    encoder = ValueEncoder(1_700_000_000)
    return [parse_batch_item(n, r, encoder, store) for n, r in enumerate(records, 1)]


def _record(handle, url="https://example.com/x"):
    return {"handle": handle, "values": [{"index": 1, "type": "URL", "data": url}]}


def test_batch_appends_sorted_new_identifiers_and_counts_them(hosted):
    result = put_batch(hosted, _items(hosted, [_record(f"88.100.7/B-{n:04}") for n in range(300)]))
    assert (result.created, result.replaced, result.failed, result.written) == (300, 0, 0, True)
    again = put_batch(
        hosted, _items(hosted, [_record("88.100.7/B-0005", "https://v2"), _record("88.100.7/NEW")])
    )
    assert (again.created, again.replaced) == (1, 1)
    assert values_of(hosted, "88.100.7/B-0005")[0].data == b"https://v2"
    assert totals(hosted, "registrations")[0] == 301


def test_batch_reports_each_failure_and_writes_the_rest(hosted):
    records = [_record("88.100.7/OK-1"), {"handle": "88.100.7/BAD", "values": [{"index": "x"}]},
               _record("88.100.7/OK-1"), _record("99.9/X"), ValueError("not JSON"), _record("88.100.7/OK-2")]  # fmt: skip
    result = put_batch(hosted, _items(hosted, records))
    codes = [r["responseCode"] for r in result.results]
    assert codes == [1, 202, 202, 301, 4, 1] and result.failed == 4
    assert "twice" in result.results[2]["message"] and result.results[1]["field"] == "values[0].index"
    assert hosted.get("88.100.7/OK-2") is not None


def test_a_batch_of_ndjson_lines_is_parsed_by_the_writer_with_the_same_results(hosted, store):
    lines = [json.dumps(_record("88.100.7/L-1")), json.dumps({"handle": "88.100.7/BAD", "values": [{"index": "x"}]}),
             "", "{not json", json.dumps(_record("88.100.8/OTHER")), json.dumps(_record("88.100.7/L-2"))]  # fmt: skip
    result = put_batch(hosted, [], lines="\n".join(lines).encode(), allowed_prefix=b"88.100.7")
    assert result.results_json is not None  # come as JSON, for the worker to pass into its answer as they are
    results = result.item_results()
    assert [(r["position"], r["responseCode"]) for r in results] == [(1, 1), (2, 202), (4, 4), (5, 401), (6, 1)]
    assert results[1]["field"] == "values[0].index" and "not JSON" in results[2]["message"]
    assert values_of(hosted, "88.100.7/L-2")[0].data == b"https://example.com/x"


def test_atomic_batch_is_refused_whole(hosted):
    put_identifier(hosted, "88.100.7/EXISTS", [URL])
    before = snapshot(hosted)
    records = [_record("88.100.7/A-1"), _record("88.100.7/EXISTS"), _record("88.100.7/A-2")]
    result = put_batch(hosted, _items(hosted, records), atomic=True, overwrite=False)
    assert (
        not result.written
        and result.created == 0
        and result.first_error.code == ResponseCode.HANDLE_ALREADY_EXISTS
    )
    assert [r["responseCode"] for r in result.results] == [1, 101, 1]
    assert "not written" in result.results[0]["status"]
    assert snapshot(hosted) == before


TEMPLATES = {
    "prefix": "88.100.7",
    "scenario": "test",
    "templates": [
        {"name": "part", "suffixPattern": "PART-.+", "fields": [
            {"name": "code", "index": 2001, "type": "CODE", "required": True, "pattern": "[A-Z]{3}"},
            {"name": "lot", "index": 2002, "type": "LOT_REF", "required": True,
             "reference": {"prefixes": ["88.100.7"], "template": "lot"}}]},
        {"name": "lot", "suffixPattern": "LOT-.+", "fields": [
            {"name": "line", "index": 2001, "type": "LINE", "required": True, "enum": ["L1", "L2"]}]},
    ],
}  # fmt: skip


def _part(handle, code="ABC", lot="88.100.7/LOT-1"):
    return {"handle": handle, "values": [{"index": 2001, "type": "CODE", "data": code},
                                         {"index": 2002, "type": "LOT_REF", "data": lot}]}  # fmt: skip


def _lot(handle, line="L1"):
    return {"handle": handle, "values": [{"index": 2001, "type": "LINE", "data": line}]}


def test_templates_checked_on_single_writes(hosted):
    set_templates(hosted, TEMPLATES)
    checker = TemplateChecker(hosted)
    lot = [HandleValue(2001, "LINE", b"L1")]
    with pytest.raises(TemplateViolation) as violation:
        put_identifier(hosted, "88.100.7/LOT-1", [HandleValue(2001, "LINE", b"L9")], checker=checker)
    assert violation.value.field == "line"
    put_identifier(hosted, "88.100.7/LOT-1", lot, checker=checker)
    part = [HandleValue(2001, "CODE", b"ABC"), HandleValue(2002, "LOT_REF", b"88.100.7/LOT-1")]
    put_identifier(hosted, "88.100.7/PART-1", part, checker=checker)
    with pytest.raises(TemplateViolation) as violation:
        delete_identifier(hosted, "88.100.7/PART-1", indexes=[2002], checker=checker)
    assert violation.value.field == "lot"
    put_identifier(hosted, "88.100.7/OTHER", [URL], checker=checker)  # no template applies: not checked


def test_batch_references_within_the_batch_and_their_failures(hosted):
    set_templates(hosted, TEMPLATES)
    checker = TemplateChecker(hosted)
    ok = put_batch(
        hosted, _items(hosted, [_part("88.100.7/PART-1"), _lot("88.100.7/LOT-1")]), checker=checker
    )
    assert ok.created == 2  # the part names a lot of the same batch
    # The lot fails its own template, so the part that names it fails too, though it was checked first.
    mixed = put_batch(hosted, _items(hosted, [_part("88.100.7/PART-2", lot="88.100.7/LOT-2"),
                                              _lot("88.100.7/LOT-2", line="L9")]), checker=checker)  # fmt: skip
    assert [(r["responseCode"], r.get("field")) for r in mixed.results] == [(202, "lot"), (202, "line")]
    assert hosted.get("88.100.7/PART-2") is None
    wrong_kind = put_batch(
        hosted, _items(hosted, [_part("88.100.7/PART-3", lot="88.100.7/PART-1")]), checker=checker
    )
    assert "not a lot" in wrong_kind.results[0]["message"]


def test_template_documents_round_trip(hosted):
    set_templates(hosted, TEMPLATES)
    with hosted.env.begin(db=hosted.templates_db) as txn:
        assert json.loads(txn.get(b"88.100.7")) == TEMPLATES
