"""The operator's dashboard (/admin) in-process: the acceptance figures are `idnode report`'s, the charts draw
the counters per day by protocol and by prefix, enterprise nodes show state, last seen and whether their own
node answers, templates and the newest audit entries are listed, the security log upload's state is said.
And the SVG charts on their own."""

from __future__ import annotations

import re
import socket

import pytest

from resolver.console import admin
from resolver.console.charts import stacked_bars
from resolver.reports import acceptance_report
from storage.enterprises import add_prefix, mark_seen
from storage.store import counter_key, today
from tests.app_helpers import InProcessApp
from tests.console_helpers import OPERATOR_SECRET, Visitor, build_console_store


@pytest.fixture(scope="module")
def setup(tmp_path_factory, demo_ndjson):
    path = tmp_path_factory.mktemp("console-admin") / "store"
    creds = build_console_store(path, demo_ndjson)
    return path, creds


@pytest.fixture()
def app(setup):
    running = InProcessApp(setup[0])
    yield running
    running.close()


@pytest.fixture()
def operator(app) -> Visitor:
    visitor = Visitor(app)
    assert visitor.login("operator", OPERATOR_SECRET).status == 303
    return visitor


def test_the_figures_are_those_of_idnode_report(app, operator):
    app.store.add_counts({counter_key("resolutions.handle", today(), b"88.100.101"): 1234})
    page = operator.get("/admin").text
    report = acceptance_report(app.store)
    cards = re.findall(r'<div class="card"><div>([^<]+)</div><div class="value">([^<]+)</div>', page)
    shown = {name: value for name, value in cards}
    for figure in report["figures"]:
        assert shown[figure["name"]] == f"{figure['value']:,}"
    assert shown["cumulative resolutions (累计标识解析量)"] != "0"
    assert page.count("未达标 short") == sum(1 for f in report["figures"] if not f["holds"])
    assert "scenarios" in page and "automotive-parts-traceability" in page
    assert "security log upload" in page and "✘ off" in page  # no collector in this node


def test_the_charts_draw_todays_counts_by_protocol_and_by_prefix(app, operator):
    day = today()
    app.store.add_counts({
        counter_key("resolutions.dns", day, b"88.100.102"): 56,
        counter_key("resolutions.http", day, b"88.100.101"): 7,
    })  # fmt: skip
    counters = app.store.counters()
    per_protocol: dict[str, int] = {}
    for key, n in counters.items():
        kind, key_day, _ = key.decode().split("/", 2)
        if key_day == day and kind.startswith("resolutions."):
            per_protocol[kind.split(".")[1]] = per_protocol.get(kind.split(".")[1], 0) + n
    page = operator.get("/admin").text
    label = f"{day[:4]}-{day[4:6]}-{day[6:]}"
    tips = re.findall(r"<title>(" + label + r"[^<]*)</title>", page)
    assert len(tips) == 4  # today's bar in each of the four charts
    by_protocol = tips[0].replace("&#x27;", "'")
    for protocol, n in per_protocol.items():
        assert f"{protocol} {n:,}" in by_protocol
    assert "88.100.102 56" in tips[1] or "other" in tips[1]
    assert page.count("<svg") == 4 and "<script" not in page


def test_enterprise_nodes_show_state_last_seen_and_whether_their_node_answers(app, operator):
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: a connection is refused
    try:
        up, down = listening.getsockname()[1], closed.getsockname()[1]
        add_prefix(app.store, "88.100.80", "Up Node Co", f"127.0.0.1:{up}")
        add_prefix(app.store, "88.100.81", "Down Node Co", f"127.0.0.1:{down}")
        mark_seen(app.store, b"88.100.101")
        admin._health.clear()
        page = operator.get("/admin").text
    finally:
        listening.close()
        closed.close()
    nodes = page.split("企业节点 · enterprise nodes", 1)[1].split("<h2>", 1)[0]
    row = {m[0]: m[1] for m in re.findall(r"<tr><td>(88\.100\.\d+)</td>(.*?)</tr>", nodes, re.S)}
    assert "referral" in row["88.100.80"] and ">answers<" in row["88.100.80"]
    assert ">not answering<" in row["88.100.81"]
    assert "min ago" in row["88.100.101"] and 'class="ok">yes' in row["88.100.101"]
    assert "hosted here" in row["88.100.1"] and "never" in row["88.100.1"]


def test_templates_and_the_newest_audit_entries_are_listed(app, operator):
    page = operator.get("/admin").text
    assert "<code>PART-[A-Z0-9-]+</code>" in page and "partNumber, partName" in page
    reply = app.call("PUT", "/api/handles/88.100.5/AUDIT-ME", body=b'[{"index":1,"type":"DESC","data":"x"}]',
                     auth=("operator", OPERATOR_SECRET))  # fmt: skip
    assert reply.status == 201
    page = operator.get("/admin").text
    audit_table = page.split("newest audit entries", 1)[1]
    first_row = re.search(
        r"<tr><td>[^<]+</td><td>([^<]+)</td><td[^>]*>([^<]+)</td><td>([^<]+)</td>", audit_table
    )
    assert first_row.groups() == ("create", "88.100.5/AUDIT-ME", "operator")


def test_a_chart_escapes_its_names_and_says_when_nothing_was_counted():
    empty = stacked_bars("<t>", ["20250101", "20250102"], {})
    assert "nothing counted" in empty and "&lt;t&gt;" in empty and "<t>" not in empty
    drawn = stacked_bars("t", ["20250101", "20250102"], {"<x>": {"20250102": 3}, "y": {"20250102": 5}})
    assert "&lt;x&gt; 3" in drawn and "2025-01-02: 8" in drawn and "<x>" not in drawn
    heights = [
        float(h)
        for h in re.findall(r'<rect x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)" fill="#', drawn)
    ]
    assert len(heights) == 4  # two bar pieces, then the legend's two swatches
    assert abs(heights[1] / heights[0] - 5 / 3) < 0.01


def test_a_clusters_per_member_counts_are_summed_in_the_charts():
    day = "20261205"
    counters = {b"resolutions.handle@a/20261205/88.100.7": 3, b"resolutions.handle@b/20261205/88.100.7": 4,
                b"resolutions.http/20261205/88.100.7": 5}  # fmt: skip
    by_protocol, by_prefix = admin.daily(counters, "resolutions", [day])
    assert by_protocol == {"handle": {day: 7}, "http": {day: 5}}
    assert by_prefix == {"88.100.7": {day: 12}}
