"""The operator's dashboard and an enterprise's workspace in a real browser (headless chromium through
Selenium, tests/browser.py; skipped with the reason where it is not installed): signing in through the form,
the dashboard's figures and charts on a phone and a desk screen, creating, editing and uploading identifiers
through the forms, a refusal shown at its field, the style sheet allowed by the CSP and markup in stored data
never run, signing out."""

from __future__ import annotations

import json

import pytest

from tests.browser import DESKTOP, PAGE_LOAD_TIMEOUT_S, PHONE

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # selenium's own, not ours


def sign_in(browser, user: str, secret: str, wanted: str) -> None:
    browser.open(wanted)
    assert browser.path == "/login?next=" + wanted  # sent to the form, and back after it
    browser.find("#user")[0].send_keys(user)
    browser.find("#secret")[0].send_keys(secret)
    browser.find("button.primary")[0].click()
    browser.wait_for_path(wanted)


def submit(browser) -> None:
    """Send the page's form and wait (bounded) until the browser has left the page it was on."""
    from selenium.webdriver.support.ui import WebDriverWait

    old = browser.find("html")[0]
    browser.find("button.primary")[0].click()
    WebDriverWait(browser.driver, PAGE_LOAD_TIMEOUT_S).until(lambda _driver: _gone(old))


def _gone(element) -> bool:
    """Whether `element` belongs to a page the browser has left. Like selenium's staleness_of, but chromium
    asked in the middle of the navigation answers "does not belong to the document" instead of "stale"."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc.msg):
            return True
        raise
    return False


def fill(browser, values: dict[str, str]) -> None:
    from selenium.webdriver.support.ui import Select

    for name, value in values.items():
        element = browser.find(f'[name="{name}"]')[0]
        if element.tag_name == "select":
            Select(element).select_by_value(value)
        else:
            element.clear()
            element.send_keys(value)


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=lambda v: v.name)
def test_the_operator_signs_in_and_reads_the_dashboard(browser, pages_node, viewport):
    browser.use(viewport)
    sign_in(browser, "operator", pages_node.operator_secret, "/admin")
    text = browser.text()
    for figure in ("registered identifiers", "cumulative resolutions", "connected enterprise nodes",
                   "application scenarios", "security log upload"):  # fmt: skip
        assert figure in text
    assert len(browser.find("svg")) == 4 and len(browser.find("figure figcaption")) == 4
    assert "88.100.50" in browser.text("body")  # the prefix its own node serves, with its probe
    assert browser.overflow_px() <= 0  # wide tables scroll inside their section, not the page
    # the one style sheet is applied: its hash is what the CSP allows
    assert (
        browser.js("return getComputedStyle(document.querySelector('header')).backgroundColor")
        == "rgb(23, 50, 77)"
    )
    browser.find("header form button")[0].click()
    browser.wait_for_path("/login")
    browser.open("/admin")
    assert browser.path == "/login?next=/admin"


def test_an_enterprise_creates_and_edits_an_identifier_through_its_template_form(browser, pages_node):
    user, secret = pages_node.admins["88.100.101"]
    sign_in(browser, user, secret, "/ent")
    assert "88.100.101/PART-" in browser.text() and browser.overflow_px() <= 0
    browser.open("/ent/new?template=batch")
    assert "matches \\d{4}-\\d{2}-\\d{2}" in browser.text()
    fill(browser, {"suffix": "BATCH-BROWSER-01", "desc": "浏览器批次", "f.batchNumber": "BR-0001",
                   "f.productionDate": "2025-06-01", "f.productionLine": "L2", "f.supplier": "88.100.102/SUP-0001",
                   "f.material": "HT250"})  # fmt: skip
    browser.find("button.primary")[0].click()
    browser.wait_for_path("/ent/edit/88.100.101/BATCH-BROWSER-01?saved=created")
    assert "已保存 saved (created)" in browser.text()
    fill(browser, {"f.productionDate": "June 2025"})  # the template's pattern refuses it
    submit(browser)
    alert = browser.find('[role="alert"]')
    assert len(alert) == 1 and "does not match" in alert[0].text
    assert (
        alert[0].location["y"] > browser.find('[name="f.productionDate"]')[0].location["y"]
    )  # under its field
    fill(browser, {"f.productionDate": "2025-06-02"})
    browser.find("button.primary")[0].click()
    browser.wait_for_path("/ent/edit/88.100.101/BATCH-BROWSER-01?saved=replaced")
    browser.open("/api/handles/88.100.101/BATCH-BROWSER-01")  # what everyone resolves now
    assert '"2025-06-02"' in browser.text() and "June 2025" not in browser.text()


def test_an_enterprise_uploads_a_file_and_reads_its_result(browser, pages_node, tmp_path):
    user, secret = pages_node.admins["88.100.201"]
    sign_in(browser, user, secret, "/ent/upload")
    good = {"handle": "88.100.201/UPLOAD-OK-1", "values": [{"index": 2, "type": "DESC", "data": "ok"}]}
    lines = [json.dumps(good), "{broken", json.dumps({**good, "handle": "88.100.101/NOT-MINE"})]
    path = tmp_path / "upload.ndjson"
    path.write_text("\n".join(lines) + "\n")
    browser.find('input[type="file"]')[0].send_keys(str(path))
    browser.find("button.primary")[0].click()
    browser.wait_for_text("上传结果 · Upload result")  # the upload page answers on its own path
    cards = [c.text.split("\n") for c in browser.find(".card")]
    assert ["新建 created", "1"] in cards and ["拒绝 refused", "2"] in cards
    rows = [r.text for r in browser.find("tr")][1:]
    assert rows[0].startswith("2 ") and "not JSON" in rows[0] and "may write only under" in rows[1]


def test_stored_markup_is_text_and_runs_nothing(browser, pages_node):
    sign_in(browser, "operator", pages_node.operator_secret, "/admin")
    browser.open("/88.100.1/JS-LINK?noredirect")
    browser.open("/admin")
    assert browser.title != "pwned" and not browser.find("#injected") and not browser.find("#injected2")
