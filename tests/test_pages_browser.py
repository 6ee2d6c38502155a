"""The identifier and error pages in a real browser (tests/browser.py: headless chromium on a served demo node
with both application scenarios): layout at both window sizes, navigation from a scanned identifier along its
chain, the search box as a real form submission, both languages, markup that must stay text."""

from __future__ import annotations

import pytest

from tests.browser import DESKTOP, HOSTILE_HANDLE, HOSTILE_URL_HANDLE, LONG_HANDLE, PHONE, VIEWPORTS

PART = "88.100.101/PART-000001"
MACHINE = "88.100.201/EQP-CNC-0001"
#: The data column keeps at least this share of the viewport: the old four-column table left it ~45 px at 390.
MIN_DATA_SHARE = {PHONE.name: 0.8, DESKTOP.name: 0.5}
PAGES = (
    f"/{PART}",
    f"/{MACHINE}",
    f"/{LONG_HANDLE}",
    "/0.NA/88.100.101?noredirect",
    "/88.100.101/PART-999999",
    "/86.200.1/X-1",
    "/88.100.50/ITEM-1",
    "/not-an-identifier",
    "/",
)


def click_link(browser, text: str) -> None:
    from selenium.webdriver.common.by import By

    browser.driver.find_element(By.LINK_TEXT, text).click()


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=lambda v: v.name)
def test_harness_sizes_the_viewport(browser, viewport):
    browser.use(viewport).open(f"/{PART}")
    assert browser.js("return [innerWidth, innerHeight]") == [viewport.width, viewport.height]
    assert PART in browser.text("body")


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("viewport", VIEWPORTS, ids=lambda v: v.name)
def test_pages_fit_the_window(browser, viewport, lang):
    """No page scrolls sideways, long unbroken identifiers and values included, and the data column keeps
    most of the width."""
    browser.use(viewport, lang)
    for path in PAGES:
        browser.open(path)
        assert browser.overflow_px() <= 0, (path, browser.overflow_px())
    browser.open(f"/{PART}")
    data = browser.widths("dl.fields dd")
    assert data and min(data) >= MIN_DATA_SHARE[viewport.name] * browser.widths("main")[0] - 64, data
    # the style sheet applied: the CSP's hash let it through (else the page would be unstyled)
    assert (
        browser.js("return getComputedStyle(document.querySelector('main')).backgroundColor")
        == "rgb(255, 255, 255)"
    )


def test_phone_stacks_labels_over_data_and_desktop_sets_them_side_by_side(browser):
    def boxes():
        return browser.js(
            "const d = document.querySelector('dl.fields dt'), v = document.querySelector('dl.fields dd');"
            "const a = d.getBoundingClientRect(), b = v.getBoundingClientRect(); return [a.top, a.right, b.top, b.left]"
        )

    browser.use(PHONE).open(f"/{PART}")
    dt_top, _dt_right, dd_top, _dd_left = boxes()
    assert dd_top > dt_top  # label above its data
    browser.use(DESKTOP).open(f"/{PART}")
    dt_top, dt_right, dd_top, dd_left = boxes()
    assert abs(dd_top - dt_top) < 4 and dd_left >= dt_right  # label beside its data


def test_scanned_part_leads_along_its_chain(browser):
    """A phone scans a part (no web address: its page), follows its batch, then the batch's supplier, and
    comes back; every page on the way is the identifier's page, in Chinese."""
    browser.open(f"/{PART}")
    assert browser.text("h1") == "通风制动盘 零件 1" and "零部件" in browser.text(".kind")
    click_link(browser, "88.100.101/BATCH-2025-0701")
    assert browser.path == "/88.100.101/BATCH-2025-0701?noredirect"
    assert "生产日期" in browser.text("dl.fields") and "2025年7月1日" in browser.text("dl.fields")
    click_link(browser, "88.100.102/SUP-0001")
    assert browser.text("h1") == "材料供应商 重庆钢研铸造材料有限公司"
    assert "统一社会信用代码" in browser.text("dl.fields")
    browser.driver.back()
    browser.driver.back()
    assert browser.path == f"/{PART}"


def test_machine_timeline_walks_back_through_maintenance(browser):
    browser.use(lang="en").open(f"/{MACHINE}")
    chain = browser.text("ol.chain")
    assert chain.index("MR-2025-0003") < chain.index("MR-2025-0002") < chain.index("MR-2025-0001")
    assert "10 Sep 2025" in chain and "Previous maintenance" in chain
    click_link(browser, "88.100.201/MR-2025-0003")
    assert "Maintenance record" in browser.text(".kind")
    assert "王强" in browser.text("dl.fields") and "Technician" in browser.text("dl.fields")
    # the record's own "previous" field leads on to the record before it
    click_link(browser, "88.100.201/MR-2025-0002")
    assert "10 Jun 2025" in browser.text("dl.fields")


def test_not_found_page_search_box_is_a_real_form(browser):
    from selenium.webdriver.common.by import By

    browser.use(lang="en").open("/88.100.101/PART-99999")
    assert browser.text("h1") == "Identifier not found"
    box = browser.driver.find_element(By.ID, "q")
    assert box.get_attribute("value") == "88.100.101/PART-99999"
    box.clear()
    box.send_keys("88.100.101/PART-000002")
    browser.driver.find_element(By.CSS_SELECTOR, "form.search button").click()
    browser.wait_for_path("/88.100.101/PART-000002?noredirect")
    assert browser.path == "/88.100.101/PART-000002?noredirect"
    assert browser.text("h1") == "浮动制动钳 零件 2"


def test_language_switch_and_accept_language(browser):
    browser.use(lang="en").open(f"/{PART}")
    assert browser.js("return document.documentElement.lang") == "en"
    assert "Part number" in browser.text("dl.fields")
    click_link(browser, "中文")
    assert browser.js("return document.documentElement.lang") == "zh-CN"
    assert "零件号" in browser.text("dl.fields")
    click_link(browser, "88.100.101/BATCH-2025-0701")  # the chosen language stays while following the chain
    assert browser.js("return document.documentElement.lang") == "zh-CN" and "批次号" in browser.text(
        "dl.fields"
    )


def test_markup_and_script_stay_text(browser):
    browser.open("/" + HOSTILE_HANDLE)
    assert browser.title != "pwned" and not browser.find("main script") and not browser.find("main img")
    assert "<script>" in browser.text("h1") or "<img" in browser.text("h1")
    browser.open(f"/{HOSTILE_URL_HANDLE}")  # a javascript: URL: shown, not followed, not linked
    assert browser.path == f"/{HOSTILE_URL_HANDLE}"
    assert not browser.find("#injected") and not browser.find("#injected2") and browser.title != "pwned"
    assert "javascript:" in browser.text("main")


def test_harness_skips_naming_what_is_missing(monkeypatch):
    from tests import browser as harness

    monkeypatch.setattr(
        harness.shutil, "which", lambda name: "/usr/bin/chromium" if name == "chromium" else None
    )
    with pytest.raises(pytest.skip.Exception, match="chromedriver not installed: apt-get install"):
        harness.find_browser()
