"""The identifier and error pages in a real browser (tests/browser.py: headless chromium on a served demo node
with both application scenarios): content, navigation along a chain, both languages, both window sizes."""

from __future__ import annotations

import pytest

from tests.browser import VIEWPORTS

PART = "88.100.101/PART-000001"


@pytest.mark.parametrize("viewport", VIEWPORTS, ids=lambda v: v.name)
def test_harness_sizes_the_viewport(browser, viewport):
    browser.use(viewport).open(f"/{PART}?noredirect")
    assert browser.js("return [innerWidth, innerHeight]") == [viewport.width, viewport.height]
    assert PART in browser.text("body")


def test_harness_skips_naming_what_is_missing(monkeypatch):
    from tests import browser as harness

    monkeypatch.setattr(
        harness.shutil, "which", lambda name: "/usr/bin/chromium" if name == "chromium" else None
    )
    with pytest.raises(pytest.skip.Exception, match="chromedriver not installed: apt-get install"):
        harness.find_browser()
