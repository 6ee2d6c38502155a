"""The node's pages in a real browser: Debian's chromium, headless, driven through chromedriver by Selenium,
against a served demo node. Shared by every browser test (the identifier and error pages, the operator's and
the enterprises' pages) and by `make screenshots` (bench/screenshots.py).

- `chromium` (session): one headless chromium for the whole run; the tests that ask for it are skipped, with
  the reason printed (pytest -rs), when selenium, chromium or chromedriver is missing.
- `pages_node` (session): `idnode serve` (one worker, HTTP on a free 127.0.0.1 port) over a store holding the
  2,000 generated demo identifiers, both application scenarios of deploy/scenarios (templates, references),
  a few records whose handles and values carry markup and script (`HOSTILE_*`), a prefix its enterprise's own
  node serves (REFERRAL_PREFIX), the operator's secret and an administrator credential for each scenario
  prefix.
- `browser` (per test): the session's chromium reset to a phone viewport (390x844) in Chinese, with `open()`,
  `use()` (a viewport and a language) and the layout measurements the tests assert on.

Every wait is bounded: chromedriver gives up a page load after PAGE_LOAD_TIMEOUT_S and a script after
SCRIPT_TIMEOUT_S, the node starts within tests.servers.START_TIMEOUT_S, and both are stopped at teardown.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

from resolver.cli_admin import load_scenario
from resolver.handle.values import HandleValue
from storage.enterprises import add_prefix, issue_credential, set_operator_secret
from storage.keys import handle_key
from storage.loader import load_files
from storage.records import pack_record
from storage.store import Store
from tests.http_helpers import http_node

REPO = Path(__file__).resolve().parents[1]
SCENARIOS = REPO / "deploy" / "scenarios"
SCENARIO_DIRS = (SCENARIOS / "automotive", SCENARIOS / "equipment")
CHROMIUM_NAMES = ("chromium", "chromium-browser")  #: Debian's package `chromium`, other distributions' name
CHROMEDRIVER_NAMES = ("chromedriver",)  #: Debian's package `chromium-driver`
INSTALL_HINT = "apt-get install chromium chromium-driver (and the test extra: pip install -e '.[test]')"
PAGE_LOAD_TIMEOUT_S = 20  #: a page of the node loads in milliseconds; far above that, something hangs
SCRIPT_TIMEOUT_S = 10  #: the measurements are tiny synchronous scripts
COMMAND_TIMEOUT_S = 60  #: one WebDriver command's HTTP round trip to chromedriver, whatever it is
OPERATOR_SECRET = "operator-secret-for-the-browser-tests"
REFERRAL_PREFIX = "88.100.50"  #: a prefix served by its enterprise's own node (HS_SITE 127.0.0.1:2700)

#: Records whose handles and values carry markup and script: every page must show them as text.
HOSTILE_HANDLE = '88.100.1/<script>alert("h")</script>'
HOSTILE_DESC = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script>'
HOSTILE_URL_HANDLE = "88.100.1/JS-LINK"
#: A record whose handle, description and address are long and unbroken: pages must wrap, never widen.
LONG_HANDLE = "88.100.1/LONG-" + "X" * 120
LONG_VALUES = (
    HandleValue(2, "DESC", ("零件" * 40 + "-" + "A" * 200).encode()),
    HandleValue(3, "NOTE", ("B" * 300).encode()),
    HandleValue(4, "REF", ("https://example.com/" + "c" * 280).encode()),
)
HOSTILE_RECORDS = (
    (LONG_HANDLE, LONG_VALUES),
    (HOSTILE_HANDLE, (HandleValue(2, "DESC", HOSTILE_DESC.encode()),)),
    (
        HOSTILE_URL_HANDLE,
        (
            HandleValue(1, "URL", b"javascript:document.title='pwned'"),
            HandleValue(2, "DESC", b'"><b id=injected>bold</b>'),
            HandleValue(3, "EMAIL", b'a@example.com"><i id=injected2>x</i>'),
        ),
    ),
)


@dataclass(frozen=True)
class Viewport:
    """A window size as the page sees it (CSS pixels); `mobile` makes chromium honour the page's viewport
    meta tag and report touch, as a phone does."""

    name: str
    width: int
    height: int
    mobile: bool


PHONE = Viewport("phone", 390, 844, mobile=True)  #: a common phone (iPhone 12-15 class) held upright
DESKTOP = Viewport("desktop", 1280, 900, mobile=False)  #: an office screen's browser window
VIEWPORTS = (PHONE, DESKTOP)


def find_browser() -> tuple[str, str]:
    """(chromium, chromedriver) paths; pytest.skip naming what is missing."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        pytest.skip(f"selenium not installed: {INSTALL_HINT}")
    chromium = next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    driver = next((p for p in map(shutil.which, CHROMEDRIVER_NAMES) if p), None)
    missing = [name for name, path in (("chromium", chromium), ("chromedriver", driver)) if path is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: {INSTALL_HINT}")
    return chromium, driver  # type: ignore[return-value]


def start_chromium(chromium: str, chromedriver: str):
    """A headless chromium under chromedriver, with the bounded timeouts of this module."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where chromium's sandbox refuses to start
        "--disable-dev-shm-usage",  # containers have a small /dev/shm
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",  # nothing but the node under test is contacted
        f"--window-size={DESKTOP.width},{DESKTOP.height}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    try:
        with contextlib.suppress(AttributeError):  # private in selenium 4; the default is 120 s
            driver.command_executor._client_config.timeout = COMMAND_TIMEOUT_S
        driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT_S)
        driver.set_script_timeout(SCRIPT_TIMEOUT_S)
    except BaseException:
        driver.quit()
        raise
    return driver


@dataclass
class DemoNode:
    """The served demo node: `url(path)` for a page; the credentials of its operator and of each scenario
    prefix's administrator (`admins[prefix] = (user, secret)`)."""

    http_port: int
    store_path: Path
    operator_secret: str
    admins: dict[str, tuple[str, str]] = field(default_factory=dict)
    node: object = None  # tests.servers.RunningNode

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def url(self, path: str) -> str:
        """`path` (e.g. `/88.100.101/PART-000001?noredirect`) as a URL, its handle part percent-encoded."""
        path, _, query = path.partition("?")
        return self.base_url + quote(path, safe="/%:") + (f"?{query}" if query else "")


def build_pages_store(path: Path, demo_ndjson: Path) -> tuple[Path, dict[str, tuple[str, str]]]:
    """The browser tests' store at `path`: demo identifiers, both scenarios, the hostile records, the operator's
    secret and a credential per scenario prefix. Returns (path, admins)."""
    admins: dict[str, tuple[str, str]] = {}
    with Store(path, create=True) as store:
        load_files(store, [demo_ndjson])
        for directory in SCENARIO_DIRS:
            _name, _count, failures = load_scenario(store, directory)
            assert not failures, failures
        store.put_records([(handle_key(h.encode()), pack_record(list(v))) for h, v in HOSTILE_RECORDS])
        add_prefix(store, REFERRAL_PREFIX, "Own Node Co", "127.0.0.1:2700")
        set_operator_secret(store, OPERATOR_SECRET)
        for prefix in ("88.100.101", "88.100.201"):
            admins[prefix] = issue_credential(store, prefix)
    return path, admins


@contextlib.contextmanager
def served_demo(directory: Path, demo_ndjson: Path) -> Iterator[DemoNode]:
    """Build the demo store under `directory` and serve it (one worker); stopped on exit."""
    path, admins = build_pages_store(directory / "store", demo_ndjson)
    with http_node(path, workers=1) as running:
        yield DemoNode(running.http_port, path, OPERATOR_SECRET, admins, running)


class Browser:
    """The session's chromium pointed at the demo node, in one viewport and one language at a time."""

    def __init__(self, driver, node: DemoNode):
        self.driver = driver
        self.node = node
        self.viewport = PHONE
        self.lang = "zh"

    def use(self, viewport: Viewport | None = None, lang: str | None = None) -> Browser:
        """Switch the viewport (exact CSS size, as chromium's device emulation sets it) and the language the
        browser asks for (its Accept-Language header and navigator.languages)."""
        self.viewport = viewport or self.viewport
        self.lang = lang or self.lang
        vp = self.viewport
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": vp.width, "height": vp.height, "deviceScaleFactor": 1, "mobile": vp.mobile},
        )
        user_agent = self.driver.execute_script("return navigator.userAgent") or "Mozilla/5.0"
        accept = "zh-CN,zh;q=0.9,en;q=0.5" if self.lang == "zh" else "en-US,en;q=0.9"
        self.driver.execute_cdp_cmd(
            "Emulation.setUserAgentOverride", {"userAgent": user_agent, "acceptLanguage": accept}
        )
        return self

    def open(self, path: str) -> Browser:
        self.driver.get(self.node.url(path))
        return self

    # -- what the page looks like ---------------------------------------------------------------------------

    def js(self, script: str, *args):
        return self.driver.execute_script(script, *args)

    @property
    def title(self) -> str:
        return self.driver.title

    @property
    def path(self) -> str:
        return self.js("return location.pathname + location.search")

    def wait_for_path(self, path: str, timeout_s: float = PAGE_LOAD_TIMEOUT_S) -> None:
        """Wait (bounded) until the browser shows `path` (with its query): after a click or a form submission."""
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, timeout_s).until(lambda d: self.path == path)

    def wait_for_text(self, text: str, timeout_s: float = PAGE_LOAD_TIMEOUT_S) -> None:
        """Wait (bounded) until the page shows `text`: after a form that answers on its own path, where the
        path alone cannot tell the old page from the new."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        def shown(driver) -> bool:
            try:
                return text in self.text()
            except WebDriverException:  # between two pages there may be no body to read
                return False

        WebDriverWait(self.driver, timeout_s).until(shown)

    def text(self, css: str = "body") -> str:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css).text

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def overflow_px(self) -> int:
        """How far the page is wider than the viewport (0 when nothing scrolls sideways)."""
        return self.js("return document.documentElement.scrollWidth - window.innerWidth")

    def widths(self, css: str) -> list[float]:
        """The rendered widths (CSS px) of the elements matching `css`."""
        return self.js(
            "return Array.from(document.querySelectorAll(arguments[0]), e => e.getBoundingClientRect().width)",
            css,
        )

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        """A PNG of the page: the whole page's height when `full_page` (through device emulation, so the
        capture is the layout the viewport's width gives), else the viewport only."""
        import base64

        params: dict = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            height = self.js("return document.documentElement.scrollHeight")
            vp = self.viewport
            self.driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": vp.width, "height": max(height, vp.height), "deviceScaleFactor": 1,
                 "mobile": vp.mobile},
            )  # fmt: skip
        try:
            data = self.driver.execute_cdp_cmd("Page.captureScreenshot", params)["data"]
        finally:
            if full_page:
                self.use()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


# -- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chromium():
    """One headless chromium for the session (skipped, with the reason, where it cannot run)."""
    paths = find_browser()
    driver = start_chromium(*paths)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def pages_node(tmp_path_factory, demo_ndjson) -> Iterator[DemoNode]:
    """The served demo node of the browser tests (see the module docstring)."""
    with served_demo(tmp_path_factory.mktemp("pages"), demo_ndjson) as node:
        yield node


@pytest.fixture()
def browser(chromium, pages_node) -> Browser:
    """The session's chromium on the demo node, reset to the phone viewport in Chinese."""
    chromium.delete_all_cookies()
    return Browser(chromium, pages_node).use(PHONE, "zh")
