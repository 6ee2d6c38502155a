"""The operator's `idnode` subcommands on a real store: prefix, operator, template, register, scenario,
trace, report and stats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from storage.enterprises import get_credential, user_key
from storage.store import Store
from tests.servers import idnode

SCENARIOS = Path(__file__).resolve().parents[1] / "deploy" / "scenarios"


@pytest.fixture()
def data(tmp_path, demo_ndjson) -> str:
    path = str(tmp_path / "store")
    assert idnode("load", "--quiet", "--data", path, str(demo_ndjson)).returncode == 0
    return path


def test_prefix_commands(data):
    added = idnode("prefix", "add", "88.100.40", "--org", "Brakes Ltd", "--data", data)
    assert added.returncode == 0 and "hosted here" in added.stdout
    referred = idnode(
        "prefix", "add", "88.100.41", "--org", "Own Node", "--site", "127.0.0.1:2700", "--data", data
    )
    assert "served by its own node at 127.0.0.1:2700" in referred.stdout
    bad = idnode("prefix", "add", "88.100.42", "--org", "X", "--site", "host.example:1", "--data", data)
    assert bad.returncode == 2 and "not an IP address" in bad.stderr
    issued = idnode("prefix", "credential", "88.100.40", "--json", "--data", data)
    cred = json.loads(issued.stdout)
    assert cred["user"] == "300:88.100.40/ADMIN"
    with Store(data) as store:
        assert get_credential(store, user_key(cred["user"])).verify(cred["secret"])
    assert (
        idnode("prefix", "disable", "88.100.41", "--data", data).stdout.strip()
        == "prefix 88.100.41: disabled"
    )
    listed = json.loads(idnode("prefix", "list", "--json", "--data", data).stdout)
    by_prefix = {e["prefix"]: e for e in listed}
    assert by_prefix["88.100.40"]["credential"] and by_prefix["88.100.41"]["state"] == "disabled"
    assert by_prefix["88.100.41"]["site"] == "127.0.0.1:2700" and not by_prefix["88.100.1"]["credential"]
    table = idnode("prefix", "list", "--data", data).stdout
    assert "Brakes Ltd" in table and "0 enterprise nodes connected" in table
    assert (
        idnode("prefix", "enable", "88.100.41", "--data", data).stdout.strip() == "prefix 88.100.41: referral"
    )
    assert idnode("prefix", "credential", "99.9", "--data", data).returncode == 2


def test_operator_secret(data, tmp_path):
    generated = idnode("operator", "set-secret", "--data", data)
    secret = generated.stdout.split("secret", 1)[1].strip()
    with Store(data) as store:
        assert get_credential(store, b"operator").verify(secret)
    (tmp_path / "secret").write_text("chosen-operator-secret\n")
    assert (
        idnode("operator", "set-secret", "--secret-file", str(tmp_path / "secret"), "--data", data).returncode
        == 0
    )
    with Store(data) as store:
        assert get_credential(store, b"operator").verify("chosen-operator-secret")
    (tmp_path / "short").write_text("short\n")
    assert (
        idnode("operator", "set-secret", "--secret-file", str(tmp_path / "short"), "--data", data).returncode
        == 2
    )


def test_templates_register_trace(data, tmp_path):
    manifest = json.loads((SCENARIOS / "equipment" / "scenario.json").read_text())
    for entry in manifest["prefixes"]:
        assert idnode("prefix", "add", entry["prefix"], "--org", entry["org"], "--data", data).returncode == 0
    templates = tmp_path / "templates.json"
    templates.write_text(json.dumps(manifest["templates"], ensure_ascii=False))
    shown = idnode("template", "set", str(templates), "--data", data)
    assert (
        shown.returncode == 0
        and "88.100.201: templates machine, maintenance (equipment-lifecycle)" in shown.stdout
    )
    assert (
        json.loads(idnode("template", "show", "88.100.202", "--data", data).stdout)
        == manifest["templates"][1]
    )
    records = (SCENARIOS / "equipment" / "data.ndjson").read_text().splitlines()
    bad = json.loads(records[0])
    bad["values"] = [v for v in bad["values"] if v["index"] != 2002]  # a spare part without its required name
    source = tmp_path / "data.ndjson"
    source.write_text("\n".join([json.dumps(bad, ensure_ascii=False), *records[1:]]) + "\n")
    refused = idnode("register", "--atomic", str(source), "--data", data)
    assert (
        refused.returncode == 1
        and "partName: is required" in refused.stderr
        and "registered 0 new" in refused.stdout
    )
    registered = idnode("register", str(tmp_path / "data.ndjson"), "--data", data)
    # Without the spare part, the maintenance records that fitted it fail, and so do the machines that
    # name those records: 9 refused, the other 15 registered.
    assert (
        registered.returncode == 1
        and "registered 15 new and 0 replaced identifiers; 9 refused" in registered.stdout
    )
    assert "88.100.202/SP-BRG-6205 does not exist" in registered.stderr
    chain = idnode("trace", "88.100.201/EQP-PRS-0004", "--data", data)
    assert (
        chain.returncode == 0 and "lastMaintenance → 88.100.201/MR-2025-0012  [maintenance]" in chain.stdout
    )
    assert "sparePart → 88.100.202/" in chain.stdout
    assert idnode("trace", "88.100.201/NOPE", "--data", data).returncode == 1
    assert idnode("template", "delete", "88.100.202", "--data", data).returncode == 0
    assert idnode("template", "show", "88.100.202", "--data", data).returncode == 2


def test_scenarios_report_and_stats(data):
    loaded = idnode(
        "scenario", "load", str(SCENARIOS / "automotive"), str(SCENARIOS / "equipment"), "--data", data
    )
    assert loaded.returncode == 0, loaded.stderr
    assert "scenario automotive-parts-traceability: 44 identifiers registered" in loaded.stdout
    report = json.loads(idnode("report", "--json", "--data", data).stdout)
    figures = {f["name"].split(" (")[0]: f for f in report["figures"]}
    assert figures["application scenarios"]["value"] == 2 and figures["application scenarios"]["holds"]
    assert (
        figures["registered identifiers"]["value"] == 2068
        and "identifiers held" in figures["registered identifiers"]["note"]
    )
    assert not report["all_hold"]
    table = idnode("report", "--data", data).stdout
    assert "connected enterprise nodes (接入企业节点)" in table and "not every threshold holds" in table
    stats = json.loads(idnode("stats", "--json", "--data", data).stdout)
    assert stats["identifiers"] == 2068 and stats["registrations"]["per_protocol"] == {
        "cli": 68,
        "load": 2000,
    }
    assert stats["resolutions"]["total"] == 0 and "per_prefix" in stats["resolutions"]
    text = idnode("stats", "--data", data).stdout
    assert "registrations" in text and "via cli" in text
