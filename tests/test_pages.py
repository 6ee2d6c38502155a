"""The identifier and error pages without a browser (the HTTP application in-process over the browser tests'
store, tests/browser.py): language choice, template labels, formats by kind, the reference chain, error pages
with their statuses and search box, escaping of markup and script, private values kept out, the CSP matching
the style sheet, no external asset or script."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from resolver.handle.constants import Permission
from resolver.handle.values import HandleValue, Reference
from resolver.pages.i18n import humanize, negotiate, pick_label
from resolver.pages.layout import CONTENT_SECURITY_POLICY
from resolver.templates import TemplateError, parse_document
from storage.keys import handle_key
from storage.records import pack_record
from storage.store import Store
from tests.app_helpers import InProcessApp
from tests.browser import HOSTILE_DESC, HOSTILE_HANDLE, HOSTILE_URL_HANDLE, LONG_HANDLE, build_pages_store

PART = "88.100.101/PART-000001"
MACHINE = "88.100.201/EQP-CNC-0001"
PRIVATE_TARGET = "88.100.1/PRIVATE-TARGET"
PRIVATE_SOURCE = "88.100.1/PRIVATE-SOURCE"
SECRET = "secret-desc-only-its-admin-reads"
MAX_PAGE_BYTES = 40_000  #: "small pages": the largest demo page is well under this, over a phone's network
ZH = {"Accept-Language": "zh-CN,zh;q=0.9"}
EN = {"Accept-Language": "en-US,en;q=0.9"}


@pytest.fixture(scope="module")
def app(tmp_path_factory, demo_ndjson):
    path, _admins = build_pages_store(tmp_path_factory.mktemp("pages") / "store", demo_ndjson)
    with Store(path) as store:  # a record referring to one whose description is not PUBLIC_READ
        private = (HandleValue(2, "DESC", SECRET.encode(), permissions=Permission.ADMIN_READ),)
        source = (HandleValue(2, "DESC", b"source", references=(Reference(PRIVATE_TARGET, 2),)),)
        store.put_records([(handle_key(PRIVATE_TARGET.encode()), pack_record(list(private))),
                           (handle_key(PRIVATE_SOURCE.encode()), pack_record(list(source)))])  # fmt: skip
    running = InProcessApp(path)
    yield running
    running.close()


class Tags(HTMLParser):
    """The element and attribute names of a page, as a browser's parser reads them."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()
        self.attributes: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.names.add(tag)
        self.attributes.update(name for name, _value in attrs)


def page(app, path: str, headers=None, status: int = 200) -> str:
    reply = app.call("GET", path, headers=headers or ZH)
    assert reply.status == status, (path, reply.status, reply.body[:300])
    assert reply.headers["Content-Type"].startswith("text/html")
    assert reply.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    body = reply.body.decode()
    assert len(reply.body) < MAX_PAGE_BYTES
    # no script, no external asset of any kind: one request, drawn without JavaScript
    tags = Tags()
    tags.feed(body)
    assert not tags.names & {"script", "link", "img", "iframe", "object", "embed", "svg", "base"}, tags.names
    assert not {a for a in tags.attributes if a == "src" or a.startswith("on")}, tags.attributes
    assert "@import" not in body.split("</style>")[0] and "url(" not in body.split("</style>")[0]
    return body


def text_of(body: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


# -- choosing the language ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "chosen", "expected"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", None, "zh"),
        ("en-US,en;q=0.9", None, "en"),
        ("en;q=0.5, zh;q=0.8", None, "zh"),
        ("de-DE, en;q=0.3", None, "en"),
        ("fr, de", None, "zh"),
        ("", None, "zh"),
        (None, None, "zh"),
        ("en;q=abc, ;;;, zh-TW", None, "zh"),
        ("zh-CN", "en", "en"),
        ("en", "klingon", "en"),
        ("x" * 5000 + ",en", None, "zh"),  # read 512 characters far, no further
    ],
)
def test_language_follows_query_then_accept_language(header, chosen, expected):
    assert negotiate(header, chosen) == expected


def test_labels_and_names():
    assert pick_label((("zh", "批次"), ("en", "Batch")), "en") == ("Batch", "en")
    assert pick_label((("zh-CN", "批次"),), "en") == ("批次", "zh")
    assert pick_label((), "zh") is None
    assert humanize("partNumber") == "Part number" and humanize("VIN") == "VIN"


@pytest.mark.parametrize(
    "label",
    [{"zh": ""}, {"zh": "x" * 65}, {"not a tag": "x"}, {}, ["zh", "批次"], {"zh": "a\nb"}, {"en": 3}],
)
def test_template_labels_are_checked(label):
    field = {"name": "batch", "index": 2001, "type": "BATCH_NO", "label": label}
    with pytest.raises(TemplateError, match=r"label"):
        parse_document({"prefix": "88.100.7", "templates": [{"name": "t", "fields": [field]}]})


# -- the identifier page --------------------------------------------------------------------------------------


def test_part_page_labels_fields_in_the_readers_language(app):
    zh = page(app, f"/{PART}", ZH)
    assert '<html lang="zh-CN">' in zh
    for label in ("零部件", "零件号", "零件名称", "生产批次", "整车", "质检结果", "追溯链"):
        assert label in zh
    assert "PART_NO" not in text_of(zh).replace("PART_NO ·", "")  # type codes only in the technical details
    en = page(app, f"/{PART}", EN)
    assert '<html lang="en">' in en
    for label in (
        "Part number",
        "Part name",
        "Production batch",
        "Vehicle",
        "Inspection",
        "Traceability chain",
    ):
        assert label in en
    # the Chinese description on an English page says it is Chinese
    assert '<h1 lang="zh-CN">通风制动盘 零件 1</h1>' in en


def test_references_link_to_the_item_with_its_label(app):
    body = page(app, f"/{PART}")
    batch = '<a href="/88.100.101/BATCH-2025-0701?noredirect">88.100.101/BATCH-2025-0701</a>'
    assert batch + '<span class="more">制动件生产批次 2025-07-01</span>' in body


def test_chain_is_the_trace_as_a_timeline(app):
    chain = page(app, f"/{PART}").split('<ol class="chain">', 1)[1].split("</ol>", 1)[0]
    order = [m.group(1) for m in re.finditer(r'<a href="/([^"?]+)\?noredirect">', chain)]
    # what `idnode trace` prints under the part: batch → supplier, then vehicle
    assert order == ["88.100.101/BATCH-2025-0701", "88.100.102/SUP-0001", "88.100.103/VIN-LCYXK2DEGR0000001"]
    machine = page(app, f"/{MACHINE}", EN).split('<ol class="chain">', 1)[1].split("</ol>", 1)[0]
    records = re.findall(r'<a href="/(88\.100\.201/MR-2025-000\d)\?noredirect">', machine)
    assert records == ["88.100.201/MR-2025-0003", "88.100.201/MR-2025-0002", "88.100.201/MR-2025-0001"]
    for day in ("10 Sep 2025", "10 Jun 2025", "10 Mar 2025"):
        assert day in machine
    assert "Previous maintenance" in machine and "SP-FLT-HY10" in machine


def test_dates_in_each_language(app):
    assert '<time datetime="2025-08-10">2025年8月10日</time>' in page(
        app, "/88.100.103/VIN-LCYXK2DEGR0000001"
    )
    assert '<time datetime="2025-08-10">10 Aug 2025</time>' in page(
        app, "/88.100.103/VIN-LCYXK2DEGR0000001", EN
    )


def test_structured_values_in_plain_words(app):
    body = page(app, "/0.NA/88.100.101?noredirect", EN)
    assert "may: add handle" in body and "server 1 " in body
    assert "{'" not in body and "HandleValue(" not in body and "b'" not in body


def test_chosen_language_is_kept_on_links_and_can_be_switched(app):
    body = page(app, f"/{PART}?lang=en", ZH)
    assert '<html lang="en">' in body
    assert 'href="/88.100.101/BATCH-2025-0701?noredirect&amp;lang=en"' in body
    assert '<input type="hidden" name="lang" value="en">' in body
    assert f'href="/{PART}?lang=zh"' in body  # the switch back
    redirect = app.call("GET", "/?handle=88.100.101/PART-000002&noredirect=1&lang=en")
    assert (
        redirect.status == 302
        and redirect.headers["Location"] == "/88.100.101/PART-000002?noredirect&lang=en"
    )


def test_private_values_stay_off_the_chain(app):
    body = page(app, f"/{PRIVATE_SOURCE}")
    assert PRIVATE_TARGET in body and SECRET not in body
    assert SECRET not in page(app, f"/{PRIVATE_TARGET}")


def test_css_hash_in_the_policy_is_the_style_sheet_sent(app):
    body = page(app, f"/{PART}")
    style = re.search(r"<style>(.*?)</style>", body, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY and "form-action 'self'" in CONTENT_SECURITY_POLICY


# -- error pages -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "zh", "en"),
    [
        ("/88.100.101/PART-999999", 404, "未找到该标识", "Identifier not found"),
        ("/86.200.1/X-1", 404, "本节点不解析该前缀", "This node does not serve that prefix"),
        ("/88.100.50/ITEM-1", 404, "由企业节点解析", "Resolved by the enterprise's own node"),
        ("/not-an-identifier", 404, "不是有效的标识", "Not a valid identifier"),
    ],
    ids=["not-found", "unknown-prefix", "referral", "invalid"],
)
def test_error_pages_say_what_happened_with_a_search_box(app, path, status, zh, en):
    asked = path[1:]
    for headers, title, lang in ((ZH, zh, "zh-CN"), (EN, en, "en")):
        body = page(app, path, headers, status)
        assert f'<html lang="{lang}">' in body and html.escape(title) in body
        assert '<form class="search" action="/" method="get"' in body
        assert f'name="handle" value="{asked}"' in body  # filled with what was asked, to correct it


def test_referral_page_names_the_enterprise_node(app):
    body = page(app, "/88.100.50/ITEM-1", EN, 404)
    assert "127.0.0.1: TCP 2700 (query), UDP 2700 (query)" in body
    assert 'href="/0.NA/88.100.50?noredirect"' in body


def test_home_page(app):
    body = page(app, "/", EN)
    assert "Look up an identifier" in body


# -- escaping ----------------------------------------------------------------------------------------------------


def test_markup_in_handles_and_values_is_shown_as_text(app):
    body = page(app, "/" + HOSTILE_HANDLE.replace("/", "/", 1))
    assert html.escape(HOSTILE_DESC, quote=False) in body or html.escape(HOSTILE_DESC) in body
    assert html.escape(HOSTILE_HANDLE) in body
    links = page(app, f"/{HOSTILE_URL_HANDLE}")  # a javascript: URL is no redirect and no link
    assert 'href="javascript' not in links.lower() and "<b id=injected>" not in links
    assert "<i id=injected2>" not in links and "javascript:document.title=&#x27;pwned&#x27;" in links
    for path, status in (
        ('/88.100.1/"><script>alert(1)</script>', 404),
        ("/<img src=x onerror=alert(1)>", 404),
        ("/86.1/<svg onload=alert(1)>", 404),
    ):
        shown = page(app, path, EN, status)
        assert "&lt;" in shown


def test_long_values_are_shown_whole(app):
    body = page(app, f"/{LONG_HANDLE}")
    assert LONG_HANDLE in body and "B" * 300 in body


def test_pages_of_every_scenario_identifier_render(app):
    """Every identifier of both scenarios gets a page (200) in both languages: no template or value breaks one."""
    handles = []
    for name in ("automotive", "equipment"):
        path = Path(__file__).resolve().parents[1] / "deploy" / "scenarios" / name / "data.ndjson"
        handles += [json.loads(line)["handle"] for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(handles) == 68
    for handle in handles:
        for headers in (ZH, EN):
            page(app, f"/{handle}?noredirect", headers)
