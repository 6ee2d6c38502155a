"""Metadata templates: documents checked whole, records checked field by field, the two shipped scenarios
load and trace, and the acceptance report counts them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resolver.cli_admin import load_scenario
from resolver.handle.values import HandleValue
from resolver.reports import acceptance_report, format_report
from resolver.templates import (
    TemplateError,
    check_record,
    format_trace,
    parse_document,
    trace,
    trace_to_json,
)
from storage.writes import TemplateViolation

SCENARIOS = Path(__file__).resolve().parents[1] / "deploy" / "scenarios"
FIELDS = [
    {"name": "code", "index": 2001, "type": "CODE", "required": True, "minLength": 3, "maxLength": 5,
     "pattern": "[A-Z]+"},
    {"name": "color", "index": 2002, "type": "COLOR", "enum": ["red", "blue"]},
    {"name": "maker", "index": 2003, "type": "MAKER", "reference": {"prefixes": ["88.100.8"], "mustExist": True}},
]  # fmt: skip
DOC = {
    "prefix": "88.100.7",
    "scenario": "s",
    "templates": [{"name": "item", "suffixPattern": "IT-.+", "fields": FIELDS}],
}


def with_field(**changes):
    return {**DOC, "templates": [{**DOC["templates"][0], "fields": [{**FIELDS[0], **changes}]}]}


@pytest.mark.parametrize(
    ("document", "where"),
    [
        ([], "document"),
        ({**DOC, "templates": []}, "templates"),
        (with_field(index=1999), "templates[0].fields[0].index"),
        (with_field(pattern="(unclosed"), "templates[0].fields[0].pattern"),
        (with_field(name="1bad"), "templates[0].fields[0].name"),
        (with_field(enum=[]), "templates[0].fields[0].enum"),
        (with_field(minLength=9, maxLength=2), "templates[0].fields[0]"),
        (with_field(reference={"prefixes": "88.1"}), "templates[0].fields[0].reference.prefixes"),
        (with_field(colour="red"), "templates[0].fields[0]"),
        ({**DOC, "templates": [{**DOC["templates"][0], "fields": [FIELDS[0], {**FIELDS[1], "index": 2001}]}]},
         "templates[0].fields[1].index"),
    ],
)  # fmt: skip
def test_malformed_documents_name_the_part(document, where):
    with pytest.raises(TemplateError) as refused:
        parse_document(document)
    assert str(refused.value).startswith(where + ":")


def check(values, existing=()):
    return check_record(parse_document(DOC), "88.100.7/IT-1", values, lambda key: key in existing, False,
                        lambda prefix: None)  # fmt: skip


@pytest.mark.parametrize(
    ("values", "field", "why"),
    [
        ([], "code", "required"),
        ([HandleValue(2001, "OTHER", b"ABC")], "code", "must have type CODE"),
        ([HandleValue(2001, "CODE", b"AB")], "code", "shorter"),
        ([HandleValue(2001, "CODE", b"ABCDEF")], "code", "longer"),
        ([HandleValue(2001, "CODE", b"abc")], "code", "does not match"),
        ([HandleValue(2001, "CODE", b"\xff\xfe\xfd")], "code", "UTF-8"),
        ([HandleValue(2001, "CODE", b"ABC"), HandleValue(2002, "COLOR", b"green")], "color", "not one of"),
        (
            [HandleValue(2001, "CODE", b"ABC"), HandleValue(2003, "MAKER", b"nohandle")],
            "maker",
            "not an identifier",
        ),
        (
            [HandleValue(2001, "CODE", b"ABC"), HandleValue(2003, "MAKER", b"88.100.9/M")],
            "maker",
            "not under",
        ),
        (
            [HandleValue(2001, "CODE", b"ABC"), HandleValue(2003, "MAKER", b"88.100.8/M")],
            "maker",
            "does not exist",
        ),
    ],
)
def test_violations_name_the_field(values, field, why):
    with pytest.raises(TemplateViolation) as violation:
        check(values)
    assert violation.value.field == field and why in violation.value.message


def test_a_good_record_passes_and_other_suffixes_are_not_checked():
    good = [
        HandleValue(2001, "code", b"ABC"),
        HandleValue(2002, "COLOR", b"red"),
        HandleValue(2003, "MAKER", b"88.100.8/m"),
    ]
    assert check(good, existing={b"88.100.8/M"}) == "item"
    assert (
        check_record(parse_document(DOC), "88.100.7/OTHER", [], lambda k: False, False, lambda p: None)
        is None
    )


@pytest.fixture()
def scenario_store(store):
    for name in ("automotive", "equipment"):
        scenario, count, failures = load_scenario(store, SCENARIOS / name)
        assert not failures and count > 20, (scenario, failures[:3])
    return store


def test_shipped_scenarios_load_and_trace(scenario_store):
    lines = format_trace(trace(scenario_store, "88.100.101/PART-000001"))
    assert lines[0].startswith("88.100.101/PART-000001  [part]")
    assert any("batch → 88.100.101/BATCH-2025-0701  [batch]" in line for line in lines)
    assert any("supplier → 88.100.102/SUP-0001  [supplier]" in line for line in lines)
    assert any("vehicle → 88.100.103/VIN-" in line for line in lines)
    machine = trace_to_json(trace(scenario_store, "88.100.201/EQP-CNC-0001"))
    maintenance = machine["links"][0]
    assert maintenance["field"] == "lastMaintenance" and maintenance["template"] == "maintenance"
    fields = {link["field"]: link for link in maintenance["links"]}
    assert fields["machine"]["seenBefore"] and fields["sparePart"]["template"] == "sparePart"
    assert fields["previous"]["links"][0]["field"] == "machine"
    assert trace(scenario_store, "88.100.101/NOT-THERE").missing


def test_scenario_data_reloads_and_stays_valid(scenario_store):
    before = scenario_store.count_identifiers()
    name, count, failures = load_scenario(scenario_store, SCENARIOS / "automotive")
    assert (name, failures) == (
        "automotive-parts-traceability",
        [],
    ) and scenario_store.count_identifiers() == before


def test_report_counts_scenarios_in_use(scenario_store):
    report = acceptance_report(scenario_store, now_s=1_800_000_000)
    by_name = {f["name"].split(" (")[0]: f for f in report["figures"]}
    assert by_name["application scenarios"]["value"] == 2 and by_name["application scenarios"]["holds"]
    assert by_name["registered identifiers"]["value"] == scenario_store.count_identifiers()
    assert not by_name["registered identifiers"]["holds"] and not report["all_hold"]
    assert by_name["connected enterprise nodes"]["comparison"] == ">"
    text = format_report(report)
    assert "application scenarios (标识应用场景)" in text and "yes" in text and "NO" in text
    json.dumps(report)  # --json prints it as it is


def test_scenario_manifests_are_consistent():
    for name in ("automotive", "equipment"):
        manifest = json.loads((SCENARIOS / name / "scenario.json").read_text())
        prefixes = {p["prefix"] for p in manifest["prefixes"]}
        assert {d["prefix"] for d in manifest["templates"]} == prefixes
        assert {parse_document(d).scenario for d in manifest["templates"]} == {manifest["name"]}
