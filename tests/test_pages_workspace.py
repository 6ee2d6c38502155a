"""An enterprise's workspace (/ent) in-process: its identifiers paged and searched by handle and by template
field, one identifier created and edited through its template's form (checks shown, refusals next to the
field, other values kept, a stale form refused), and CSV/NDJSON uploads with counts and per-line errors.
Every write must land as the API's would: the values, the audit entry, the registration count."""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest

from storage import audit
from storage.counters import totals
from storage.store import REGISTRATIONS
from tests.app_helpers import InProcessApp
from tests.console_helpers import Visitor, build_console_store, multipart

BATCH_FIELDS = {"f.batchNumber": "WS-0001", "f.productionDate": "2025-03-04", "f.productionLine": "L7",
                "f.supplier": "88.100.102/SUP-0001", "f.material": "HT250"}  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory, demo_ndjson):
    path = tmp_path_factory.mktemp("console-ws") / "store"
    return path, build_console_store(path, demo_ndjson)


@pytest.fixture(scope="module")
def app(setup):
    running = InProcessApp(setup[0])
    yield running
    running.close()


@pytest.fixture(scope="module")
def ent(app, setup) -> Visitor:
    visitor = Visitor(app)
    assert visitor.login(*setup[1]["88.100.101"]).status == 303
    return visitor


@pytest.fixture(scope="module")
def ent2(app, setup) -> Visitor:
    visitor = Visitor(app)
    assert visitor.login(*setup[1]["88.100.2"]).status == 303
    return visitor


@pytest.fixture(scope="module")
def ent7(app, setup) -> Visitor:
    visitor = Visitor(app)
    assert visitor.login(*setup[1]["88.100.7"]).status == 303
    return visitor


def handles_on(page_text: str) -> list[str]:
    return [urllib.parse.unquote(h) for h in re.findall(r'<a href="/ent/edit/([^"]+)">', page_text)]


def api_values(app, handle: str) -> dict[int, str]:
    reply = app.call("GET", "/api/handles/" + urllib.parse.quote(handle, safe="/"))
    assert reply.status == 200, reply.body
    return {v["index"]: v["data"]["value"] for v in reply.json["values"]}


# -- the list ----------------------------------------------------------------------------------------------------


def test_the_list_pages_through_every_identifier_of_the_prefix_and_no_other(app, ent2):
    seen, path, pages = [], "/ent", 0
    while path:
        page = ent2.get(path)
        assert page.status == 200
        on_page = handles_on(page.text)
        assert 0 < len(on_page) <= 50
        seen += on_page
        pages += 1
        found = re.search(r'<a href="(/ent\?[^"]+)">下一页', page.text)
        path = found.group(1).replace("&amp;", "&") if found else ""
    assert pages > 1 and len(seen) == len(set(seen))
    assert all(h.startswith("88.100.2/") for h in seen)
    count = re.search(r"([\d,]+) identifiers under 88\.100\.2/", ent2.get("/ent").text).group(1)
    assert int(count.replace(",", "")) == len(seen)
    with app.store.env.begin(db=app.store.handles) as txn:
        stored = [k.decode() for k in txn.cursor().iternext(values=False) if k.startswith(b"88.100.2/")]
    assert seen == stored  # every identifier, once, in key order


def test_search_by_the_beginning_of_the_handle(ent):
    page = ent.get("/ent?q=batch-")  # case-insensitive store: found as BATCH-
    found = handles_on(page.text)
    assert found and all(h.startswith("88.100.101/BATCH-") for h in found)
    assert not handles_on(ent.get("/ent?q=NOTHING-LIKE-THIS").text)


def test_search_by_a_template_field(app, ent):
    page = ent.get("/ent?field=category&value=brake-pad")
    found = handles_on(page.text)
    assert found
    for handle in found:
        assert api_values(app, handle)[2003] == "brake-pad"
    others = handles_on(ent.get("/ent?field=category&value=brake-disc").text)
    assert others and not set(found) & set(others)


# -- create and edit ---------------------------------------------------------------------------------------------


def test_the_form_is_built_from_the_template_and_shows_its_checks(ent):
    page = ent.get("/ent/new?template=part")
    assert page.status == 200
    for name in ("partNumber", "partName", "category", "batch", "vehicle", "inspection"):
        assert f'name="f.{name}"' in page.text
    assert "matches [A-Z0-9-]{4,32}" in page.text
    assert "1–64 characters" in page.text and 'maxlength="64"' in page.text
    assert "one of brake-caliper, brake-disc, brake-pad" in page.text and "<select" in page.text
    assert "a batch identifier under 88.100.101 that exists" in page.text
    assert "must match PART-[A-Z0-9-]+" in page.text


def test_create_writes_through_the_api_rules_audit_and_counts(app, ent):
    before = totals(app.store, REGISTRATIONS)[0]
    token = ent.get("/ent/new?template=batch").csrf
    reply = ent.post("/ent/new", {"csrf": token, "template": "batch", "suffix": "BATCH-WS-0001",
                                  "desc": "批次 WS", **BATCH_FIELDS})  # fmt: skip
    assert (
        reply.status == 303 and reply.header("Location") == "/ent/edit/88.100.101/BATCH-WS-0001?saved=created"
    )
    values = api_values(app, "88.100.101/BATCH-WS-0001")
    assert values[2001] == "WS-0001" and values[2004] == "88.100.102/SUP-0001" and values[2] == "批次 WS"
    entry = audit.query(app.store, prefix="88.100.101", newest=True, limit=1)[0]
    assert (entry.operation, entry.handle, entry.identity) == ("create", "88.100.101/BATCH-WS-0001",
                                                              "300:88.100.101/ADMIN")  # fmt: skip
    assert totals(app.store, REGISTRATIONS)[0] == before + 1
    again = ent.post(
        "/ent/new", {"csrf": token, "template": "batch", "suffix": "BATCH-WS-0001", **BATCH_FIELDS}
    )
    assert again.status == 409 and "exists already" in again.text


def test_a_template_refusal_is_shown_next_to_its_field_and_writes_nothing(app, ent):
    before = app.state()
    token = ent.get("/ent/new?template=batch").csrf
    bad = {**BATCH_FIELDS, "f.productionDate": "March 2025"}
    reply = ent.post("/ent/new", {"csrf": token, "template": "batch", "suffix": "BATCH-WS-BAD", **bad})
    assert reply.status == 422
    field_block = reply.text.split('name="f.productionDate"', 1)[1].split("<label", 1)[0]
    assert "does not match" in field_block and 'role="alert"' in field_block
    assert 'value="March 2025"' in reply.text  # what was typed is kept
    missing_ref = {**BATCH_FIELDS, "f.supplier": "88.100.102/SUP-NOPE"}
    reply = ent.post(
        "/ent/new", {"csrf": token, "template": "batch", "suffix": "BATCH-WS-BAD", **missing_ref}
    )
    assert (
        reply.status == 422
        and "does not exist" in reply.text.split('name="f.supplier"', 1)[1].split("<label")[0]
    )
    assert app.state() == before


def test_edit_changes_the_fields_and_keeps_every_other_value(app, ent):
    handle = "88.100.101/PART-000001"
    old = api_values(app, handle)
    page = ent.get("/ent/edit/" + handle)
    assert 'value="' + old[2001] + '"' in page.text and "HS_ADMIN" in page.text
    version = re.search(r'name="version" value="([0-9a-f]+)"', page.text).group(1)
    fields = {"csrf": page.csrf, "version": version, "template": "part", "desc": old[2], "url": "",
              "f.partNumber": old[2001], "f.partName": "新名称 renamed", "f.category": old[2003],
              "f.batch": old[2004], "f.vehicle": old.get(2005, ""), "f.inspection": "pass"}  # fmt: skip
    reply = ent.post("/ent/edit/" + handle, fields)
    assert reply.status == 303 and reply.header("Location").endswith("?saved=replaced")
    new = api_values(app, handle)
    assert new[2002] == "新名称 renamed" and new[2006] == "pass"
    assert new[100] == old[100] and set(new) == set(old)  # HS_ADMIN and the rest kept
    stale = ent.post("/ent/edit/" + handle, {**fields, "f.partName": "second"})  # the version read before
    assert stale.status == 409 and "changed since" in stale.text
    assert api_values(app, handle)[2002] == "新名称 renamed"


def test_another_enterprises_identifier_cannot_be_edited(app, ent):
    before = app.state()
    assert ent.get("/ent/edit/88.100.102/SUP-0001").status == 403
    token = ent.get("/ent").csrf
    assert ent.post("/ent/edit/88.100.102/SUP-0001", {"csrf": token, "desc": "x"}).status == 403
    assert ent.get("/ent/edit/88.100.101/NOT-THERE").status == 404
    assert app.state() == before


# -- uploads -------------------------------------------------------------------------------------------------------


def _record(suffix: str, **fields) -> dict:
    merged = {"batchNumber": "UP-" + suffix[-4:], **fields}
    index = {
        "batchNumber": 2001,
        "productionDate": 2002,
        "productionLine": 2003,
        "supplier": 2004,
        "material": 2005,
    }
    kinds = {"batchNumber": "BATCH_NO", "productionDate": "PROD_DATE", "productionLine": "LINE",
             "supplier": "SUPPLIER_REF", "material": "MATERIAL"}  # fmt: skip
    base = {"productionDate": "2025-05-05", "productionLine": "L1", "supplier": "88.100.102/SUP-0002",
            "material": "steel"}  # fmt: skip
    merged = {**base, **merged}
    values = [{"index": index[k], "type": kinds[k], "data": v} for k, v in merged.items()]
    return {"handle": f"88.100.101/{suffix}", "values": values}


def test_an_ndjson_upload_counts_what_was_written_and_lists_each_refused_line(app, ent):
    lines = [
        json.dumps(_record("BATCH-UP-0001")),
        json.dumps(_record("BATCH-UP-0002")),
        "{not json",
        json.dumps(_record("BATCH-UP-0003", productionDate="yesterday")),
        json.dumps({**_record("BATCH-UP-0004"), "handle": "88.100.102/SUP-9999"}),
        json.dumps(_record("BATCH-UP-0005")),
    ]
    token = ent.get("/ent/upload").csrf
    reply = ent.post("/ent/upload", multipart("batches.ndjson", "\n".join(lines).encode(), csrf=token))
    assert reply.status == 200, reply.text
    cards = dict(re.findall(r'card">([^<]+)<div class="value[^"]*">([^<]+)<', reply.text))
    assert cards["新建 created"] == "3" and cards["拒绝 refused"] == "3"
    rows = re.findall(r'<tr><td class="num">(\d+)</td><td class="wrap">([^<]*)</td><td class="wrap err">([^<]*)<',
                      reply.text)  # fmt: skip
    assert [int(r[0]) for r in rows] == [3, 4, 5]
    assert (
        "not JSON" in rows[0][2] and "productionDate" in rows[1][2] and "may write only under" in rows[2][2]
    )
    for n in (1, 2, 5):
        assert api_values(app, f"88.100.101/BATCH-UP-000{n}")[2005] == "steel"


def test_a_csv_upload_groups_rows_by_handle_and_names_the_bad_row(app, ent7):
    csv = ("handle,index,type,data\n"
           "88.100.7/CSV-1,1,URL,https://example.com/1\n88.100.7/CSV-1,2,DESC,一\n"
           "88.100.7/CSV-2,x,DESC,bad index\n"
           "88.100.7/CSV-3,2,DESC,三\n")  # fmt: skip
    token = ent7.get("/ent/upload").csrf
    reply = ent7.post("/ent/upload", multipart("values.csv", csv.encode(), csrf=token))
    assert reply.status == 200
    cards = dict(re.findall(r'card">([^<]+)<div class="value[^"]*">([^<]+)<', reply.text))
    assert cards["标识 identifiers"] == "3" and cards["新建 created"] == "2" and cards["拒绝 refused"] == "1"
    assert "line 4: index" in reply.text
    assert api_values(app, "88.100.7/CSV-1") == {1: "https://example.com/1", 2: "一"}
    assert api_values(app, "88.100.7/CSV-3") == {2: "三"}


def test_an_all_or_nothing_upload_with_one_bad_line_writes_nothing(app, ent):
    token = ent.get("/ent/upload").csrf
    before = app.state()
    body = "\n".join(
        json.dumps(r) for r in (_record("BATCH-AT-0001"), _record("BATCH-AT-0002", material="x" * 65))
    )
    reply = ent.post("/ent/upload", multipart("a.ndjson", body.encode(), csrf=token, atomic="1"))
    assert reply.status == 422 and "nothing was written" in reply.text
    assert app.state() == before


def test_an_upload_that_is_not_utf8_or_empty_is_refused_with_a_reason(ent):
    token = ent.get("/ent/upload").csrf
    assert "not UTF-8" in ent.post("/ent/upload", multipart("x.ndjson", b"\xff\xfe\x00", csrf=token)).text
    assert "no identifiers" in ent.post("/ent/upload", multipart("x.ndjson", b"\n\n", csrf=token)).text
