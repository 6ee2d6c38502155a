"""Adding prefixes safely (storage.enterprises.check_prefix_change, shared by `idnode prefix add` and the
operator's API): a site for a prefix that holds identifiers here needs --force and says how many would stop
resolving; a prefix outside the node's own prefix needs --outside-node-prefix. And prefixes listed in numeric
order (storage.keys.prefix_sort_key) by `idnode prefix list`, `idnode stats`, the report and /api/stats."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from resolver.reports import acceptance_report
from resolver.templates import set_templates
from storage.enterprises import EnterpriseError, add_prefix, enterprises, set_operator_secret
from storage.keys import prefix_sort_key
from storage.store import Store
from tests.app_helpers import InProcessApp
from tests.servers import idnode

OPERATOR = ("operator", "operator-secret-for-tests")
# prefixes the demo (88.100.1 .. 88.100.32) and the scenarios (88.100.101 ...) do not hold
HELD = "88.100.900"  # holds three identifiers
EMPTY = "88.100.901"
NUMERIC = ["88.100.2", "88.100.9", "88.100.10", "88.100.900"]  # as a person counts them, not as text sorts


def _ndjson(path: Path, handles: list[str]) -> Path:
    lines = [json.dumps({"handle": h, "values": [{"index": 1, "type": "URL", "data": f"https://e.example/{h}"}]})
             for h in handles]  # fmt: skip
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def data(tmp_path) -> Path:
    """A store holding 3 identifiers under HELD and one under each other NUMERIC prefix (loaded, so their
    prefixes are hosted here and counted)."""
    handles = [f"{HELD}/PART-{n}" for n in range(3)] + [f"{p}/ONE" for p in NUMERIC if p != HELD]
    source = _ndjson(tmp_path / "ids.ndjson", sorted(handles))
    path = tmp_path / "store"
    assert idnode("load", "--quiet", "--data", str(path), str(source)).returncode == 0
    return path


# -- the check -----------------------------------------------------------------------------------------------


def test_site_for_a_prefix_holding_identifiers_needs_force(data):
    with Store(data) as store:
        with pytest.raises(
            EnterpriseError, match=r"site: 3 identifiers held here under 88\.100\.900 would stop"
        ):
            add_prefix(store, HELD, "Brakes Ltd", "10.1.2.3:2641", node_prefix="88.100")
        assert store.prefixes()[HELD.encode()].state == "hosted"  # refused: nothing written
        assert (
            add_prefix(store, EMPTY, "Own Node Co", "10.1.2.3:2641", node_prefix="88.100").state == "referral"
        )
        info = add_prefix(store, HELD, "Brakes Ltd", "10.1.2.3:2641", node_prefix="88.100", force=True)
        assert info.state == "referral"
        # already referred: moving its node elsewhere stops nothing more, so no --force is asked for
        assert (
            add_prefix(store, HELD, "Brakes Ltd", "10.1.2.4:2641", node_prefix="88.100").state == "referral"
        )
        assert add_prefix(store, HELD, "Brakes Ltd", node_prefix="88.100").state == "hosted"  # back: harmless


def test_prefix_outside_the_node_prefix_needs_saying_so(data):
    with Store(data) as store:
        for outside in ("99.1", "88.1000", "88.100", "88"):  # 88.1000 starts like 88.100 but is not below it
            with pytest.raises(EnterpriseError, match="is not below this node's prefix 88.100"):
                add_prefix(store, outside, "Elsewhere Co", node_prefix="88.100")
        assert add_prefix(store, "99.1", "Elsewhere Co", node_prefix="88.100", outside_node_prefix=True)
        assert add_prefix(store, "99.2", "Elsewhere Co", node_prefix="99").state == "hosted"
        assert add_prefix(store, "88.100.a.7", "Lower Co", node_prefix="88.100").state == "hosted"
        # a prefix already known (here registered by `idnode load`) is updated without the question
        assert add_prefix(store, "99.1", "Renamed Co", node_prefix="88.100").org == "Renamed Co"


def test_cli_prefix_add(data, tmp_path):
    refused = idnode(
        "prefix", "add", HELD, "--org", "Brakes Ltd", "--site", "10.1.2.3:2641", "--data", str(data)
    )
    assert refused.returncode == 2
    assert "3 identifiers held here under 88.100.900 would stop resolving here" in refused.stderr
    assert "--force" in refused.stderr and refused.stderr.count("\n") == 1  # one line
    forced = idnode("prefix", "add", HELD, "--org", "Brakes Ltd", "--site", "10.1.2.3:2641", "--force",
                    "--data", str(data))  # fmt: skip
    assert forced.returncode == 0 and "served by its own node at 10.1.2.3:2641" in forced.stdout
    assert "3 identifiers held here under 88.100.900 no longer resolve here" in forced.stderr

    outside = idnode("prefix", "add", "99.7", "--org", "Elsewhere Co", "--data", str(data))
    assert outside.returncode == 2 and "--outside-node-prefix" in outside.stderr
    said = idnode(
        "prefix", "add", "99.7", "--org", "Elsewhere Co", "--outside-node-prefix", "--data", str(data)
    )
    assert said.returncode == 0, said.stderr
    # the node's prefix as `idnode serve` takes it: flag, environment, configuration file
    assert (
        idnode("prefix", "add", "99.8", "--org", "X", "--node-prefix", "99", "--data", str(data)).returncode
        == 0
    )
    env = {**os.environ, "IDNODE_NODE_PREFIX": "99"}
    assert idnode("prefix", "add", "99.9", "--org", "X", "--data", str(data), env=env).returncode == 0
    config = tmp_path / "idnode.toml"
    config.write_text(f'data_dir = "{data}"\nnode_prefix = "77"\n')
    assert idnode("prefix", "add", "77.1", "--org", "X", "--config", str(config)).returncode == 0
    assert idnode("prefix", "add", "99.10", "--org", "X", "--config", str(config)).returncode == 2


def test_operator_api_adds_prefixes_through_the_same_check(data):
    with Store(data) as store:
        set_operator_secret(store, OPERATOR[1])
    app = InProcessApp(data)  # its node prefix is 88.100
    try:

        def post(**body):
            return app.call("POST", "/api/admin/prefixes", json.dumps(body).encode(), auth=OPERATOR)

        refused = post(prefix=HELD, org="Brakes Ltd", site="10.1.2.3:2641")
        assert refused.status == 400 and refused.json["field"] == "site"
        assert "3 identifiers held here under 88.100.900 would stop" in refused.json["message"]
        assert '"force": true' in refused.json["message"]
        forced = post(prefix=HELD, org="Brakes Ltd", site="10.1.2.3:2641", force=True)
        assert forced.status == 200 and forced.json["state"] == "referral"
        outside = post(prefix="99.7", org="Elsewhere Co")
        assert outside.status == 400 and outside.json["field"] == "prefix"
        assert '"outsideNodePrefix": true' in outside.json["message"]
        assert post(prefix="99.7", org="Elsewhere Co", outsideNodePrefix=True).status == 200
        assert post(prefix="88.100.902", org="X", force="yes").status == 400  # a flag is true or false
    finally:
        app.close()


# -- numeric order -------------------------------------------------------------------------------------------


def test_prefix_sort_key():
    shuffled = ["88.100.10", "88.100.a", "88.100.2", "88.100", "88.100.B", "88.100.900", "88.100.9", "88.99"]
    assert sorted(shuffled, key=prefix_sort_key) == [
        "88.99", "88.100", "88.100.2", "88.100.9", "88.100.10", "88.100.900", "88.100.a", "88.100.B"
    ]  # fmt: skip
    assert prefix_sort_key(b"88.100.2") == prefix_sort_key("88.100.2")
    assert sorted(["88.100.2", "88.100.10"]) == ["88.100.10", "88.100.2"]  # what text order would do


def test_listings_in_numeric_order(data):
    listed = json.loads(idnode("prefix", "list", "--json", "--data", str(data)).stdout)
    assert [e["prefix"] for e in listed] == NUMERIC
    table = idnode("prefix", "list", "--data", str(data)).stdout.splitlines()
    assert [line.split()[0] for line in table[1 : 1 + len(NUMERIC)]] == NUMERIC
    stats = json.loads(idnode("stats", "--json", "--data", str(data)).stdout)
    assert list(stats["registrations"]["per_prefix"]) == NUMERIC
    text = idnode("stats", "--data", str(data)).stdout.splitlines()
    shown = [line.split()[0] for line in text if line.strip().split()[0] in NUMERIC]
    assert shown == NUMERIC
    with Store(data) as store:
        assert [e["prefix"] for e in enterprises(store)] == NUMERIC
        set_operator_secret(store, OPERATOR[1])
        for prefix in ("88.100.10", "88.100.9"):
            set_templates(store, {"prefix": prefix, "scenario": "numbers", "templates": [
                {"name": "one", "suffixPattern": "ONE", "fields": [
                    {"name": "link", "index": 2001, "type": "LINK"}]}]})  # fmt: skip
        note = next(f["note"] for f in acceptance_report(store)["figures"] if "scenarios" in f["name"])
        assert note == "numbers: 88.100.9, 88.100.10"
    app = InProcessApp(data)
    try:
        served = app.call("GET", "/api/stats", auth=OPERATOR).json
    finally:
        app.close()
    assert list(served["registrations"]["per_prefix"]) == NUMERIC
