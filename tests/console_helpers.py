"""The console pages (/login, /admin, /ent) in-process, driven like a browser without one: a cookie jar of
its own (every Set-Cookie kept, with its attributes, for the tests to assert on), forms posted as a browser
posts them, the CSRF token read from the page. Over tests.app_helpers.InProcessApp (aiohttp's TestServer on
127.0.0.1, port 0, a real LMDB store)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path

import aiohttp

from resolver.cli_admin import load_scenario
from storage.enterprises import issue_credential, set_operator_secret
from storage.loader import load_files
from storage.store import Store
from tests.app_helpers import InProcessApp

SCENARIOS = Path(__file__).resolve().parents[1] / "deploy" / "scenarios"
OPERATOR_SECRET = "operator-secret-for-console-tests"
REQUEST_TIMEOUT_S = 30  #: a page answers in milliseconds; a hung one fails the test instead of CI
CSRF_RE = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def build_console_store(path: Path, demo_ndjson: Path) -> dict[str, tuple[str, str]]:
    """Demo identifiers, both scenarios, the operator's secret and credentials of 88.100.101, 88.100.2 (329 identifiers: several pages) and 88.100.7."""
    with Store(path, create=True) as store:
        load_files(store, [demo_ndjson])
        for name in ("automotive", "equipment"):
            _, _, failures = load_scenario(store, SCENARIOS / name)
            assert not failures, failures
        set_operator_secret(store, OPERATOR_SECRET)
        return {p: issue_credential(store, p) for p in ("88.100.101", "88.100.2", "88.100.7")}


@dataclass
class Page:
    status: int
    headers: list[tuple[str, str]]
    text: str

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def set_cookies(self) -> list[str]:
        return [v for k, v in self.headers if k.lower() == "set-cookie"]

    @property
    def csrf(self) -> str:
        found = CSRF_RE.search(self.text)
        assert found, "no CSRF token on the page"
        return found.group(1)


@dataclass
class Visitor:
    """One browser: its cookies, sent back on every request as a browser sends them."""

    app: InProcessApp
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, data=None, headers: dict | None = None) -> Page:
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return self.app.loop.run_until_complete(self._request(method, path, data, sent))

    async def _request(self, method, path, data, headers) -> Page:
        # A session of its own that keeps no cookies: this class is the browser's cookie jar.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            async with http.request(
                method, self.app.client.make_url(path), data=data, headers=headers, allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            ) as r:  # fmt: skip
                raw = [(k.decode(), v.decode()) for k, v in r.raw_headers]
                page = Page(r.status, raw, await r.text())
        for raw in page.set_cookies():
            jar = SimpleCookie()
            jar.load(raw)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or (morsel["expires"] and "1970" in morsel["expires"]):
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return page

    def get(self, path: str, **kw) -> Page:
        return self.request("GET", path, **kw)

    def post(self, path: str, fields: dict, **kw) -> Page:
        return self.request("POST", path, data=fields, **kw)

    def login(self, user: str, secret: str, next_path: str = "") -> Page:
        form = self.get("/login" + (f"?next={next_path}" if next_path else ""))
        return self.post("/login", {"csrf": form.csrf, "user": user, "secret": secret, "next": next_path})


def multipart(filename: str, content: bytes, **fields: str) -> aiohttp.FormData:
    data = aiohttp.FormData()
    for name, value in fields.items():
        data.add_field(name, value)
    data.add_field("file", content, filename=filename, content_type="application/octet-stream")
    return data


def http_page(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> Page:
    """One request to a running node on 127.0.0.1:`port`, every header kept (Set-Cookie may come twice)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT_S)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return Page(response.status, response.getheaders(), response.read().decode())
    finally:
        conn.close()
