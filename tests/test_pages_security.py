"""The security of the signed-in pages (/login, /admin, /ent): sessions and their cookies, CSRF on every form
and on the login itself, cross-site posts, the Content-Security-Policy and the other headers, escaping of
handles, values and names that carry markup, no secret in a page or a URL, the API's login throttle, and
sessions shared by the workers of a node. In-process (aiohttp on 127.0.0.1) except the multi-worker test,
which runs `idnode serve --workers 2`."""

from __future__ import annotations

import base64
import hashlib
import re
import ssl
import urllib.parse

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from resolver.console import layout, session
from resolver.console.markup import Html, esc, join, render
from resolver.console.session import SessionTable
from resolver.handle.values import HandleValue
from resolver.http.throttle import MAX_AUTH_FAILURES
from resolver.server.shared import SharedMemory
from storage.enterprises import add_prefix, issue_credential
from storage.keys import handle_key
from storage.records import pack_record
from tests.app_helpers import InProcessApp
from tests.console_helpers import OPERATOR_SECRET, Visitor, build_console_store, http_page
from tests.http_helpers import http_node

HOSTILE_SUFFIX = '<script>alert("x")</script>'
HOSTILE_DESC = "<img src=x onerror=alert(1)>\"'&"
HOSTILE_ORG = "<b>Evil & Co</b>"
SIGNED_IN_PAGES = ("/admin", "/ent", "/ent/new", "/ent/upload", "/ent/edit/88.100.101/PART-000001")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, demo_ndjson):
    path = tmp_path_factory.mktemp("console-sec") / "store"
    creds = build_console_store(path, demo_ndjson)
    from storage.store import Store

    with Store(path) as store:
        add_prefix(store, "88.100.66", HOSTILE_ORG)
        hostile = [HandleValue(2, "DESC", HOSTILE_DESC.encode())]
        store.put_records([(handle_key(f"88.100.101/{HOSTILE_SUFFIX}".encode()), pack_record(hostile))])
    return path, creds


@pytest.fixture()
def app(setup):
    running = InProcessApp(setup[0])
    yield running
    running.close()


def _signed_in(app, user, secret) -> Visitor:
    visitor = Visitor(app)
    reply = visitor.login(user, secret)
    assert reply.status == 303, reply.text
    return visitor


@pytest.fixture()
def ent(app, setup) -> Visitor:
    return _signed_in(app, *setup[1]["88.100.101"])


@pytest.fixture()
def operator(app) -> Visitor:
    return _signed_in(app, "operator", OPERATOR_SECRET)


# -- sessions and cookies ------------------------------------------------------------------------------------


def test_signed_in_pages_send_a_visitor_without_a_session_to_the_login_form(app):
    for path in SIGNED_IN_PAGES:
        reply = Visitor(app).get(path)
        assert reply.status == 303
        assert reply.header("Location") == "/login?next=" + urllib.parse.quote(path, safe="/")


def test_login_opens_a_session_with_an_httponly_samesite_strict_cookie_and_no_secret_in_it(app, setup):
    user, secret = setup[1]["88.100.101"]
    visitor = Visitor(app)
    reply = visitor.login(user, secret, "/ent/upload")
    assert reply.status == 303 and reply.header("Location") == "/ent/upload"
    cookie = next(c for c in reply.set_cookies() if c.startswith("idnode_session="))
    attributes = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "path"} <= attributes and "samesite=strict" in cookie.lower()
    assert "secure" not in attributes  # plain HTTP: a Secure cookie would never come back
    token = cookie.split(";")[0].split("=", 1)[1]
    assert len(token) >= 40 and secret not in cookie
    assert visitor.get("/ent").status == 200


def test_the_cookie_is_secure_with_the_host_prefix_over_https():
    request = make_mocked_request("GET", "/login", sslcontext=ssl.create_default_context())
    response = web.Response()
    session.set_cookie(response, request, session.COOKIE, "token")
    morsel = response.cookies["__Host-idnode_session"]
    assert (
        morsel["secure"] and morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"
    )
    assert session.cookie_name(make_mocked_request("GET", "/")) == "idnode_session"


def test_a_wrong_secret_opens_no_session_and_never_echoes_the_secret(app, setup):
    user, secret = setup[1]["88.100.101"]
    visitor = Visitor(app)
    reply = visitor.login(user, "not-the-secret-at-all")
    assert reply.status == 401 and "wrong user or secret" in reply.text
    assert "not-the-secret-at-all" not in reply.text
    assert "idnode_session" not in visitor.cookies
    assert visitor.get("/ent").status == 303


def test_the_login_form_has_its_own_csrf_token(app, setup):
    user, secret = setup[1]["88.100.101"]
    forged = Visitor(app).post("/login", {"csrf": "0" * 32, "user": user, "secret": secret})
    assert forged.status == 403 and not any("idnode_session=" in c for c in forged.set_cookies())
    visitor = Visitor(app)
    form = visitor.get("/login")
    other = visitor.post("/login", {"csrf": "f" * 32, "user": user, "secret": secret})
    assert other.status == 403 and "idnode_session" not in visitor.cookies
    stale = visitor.post("/login", {"csrf": form.csrf, "user": user, "secret": secret})
    assert stale.status == 403  # the refusal came with a fresh token: the one before is spent
    assert visitor.post("/login", {"csrf": stale.csrf, "user": user, "secret": secret}).status == 303


def test_after_login_the_browser_goes_only_to_a_path_of_this_node(app, setup):
    user, secret = setup[1]["88.100.101"]
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example", "/logout"):
        reply = Visitor(app).login(user, secret, urllib.parse.quote(target, safe=""))
        assert reply.header("Location") == "/ent", target


def test_sign_out_ends_the_session_and_needs_the_csrf_token(app, ent):
    page = ent.get("/ent")
    assert ent.post("/logout", {"csrf": "0" * 32}).status == 403
    assert ent.get("/ent").status == 200
    kept = dict(ent.cookies)
    reply = ent.post("/logout", {"csrf": page.csrf})
    assert reply.status == 303 and reply.header("Location") == "/login"
    assert "idnode_session" not in ent.cookies
    replay = Visitor(app, kept)  # a copy of the cookie taken before: dead on the server too
    assert replay.get("/ent").status == 303


def test_rotating_the_secret_ends_the_sessions_of_that_user(app, setup, ent):
    assert ent.get("/ent").status == 200
    setup[1]["88.100.101"] = issue_credential(app.store, "88.100.101")  # the later tests sign in with it
    assert ent.get("/ent").status == 303


def test_an_enterprise_cannot_open_the_operator_pages_nor_the_operator_the_workspace(ent, operator):
    assert ent.get("/admin").status == 403
    assert operator.get("/ent").status == 403
    assert operator.get("/admin").status == 200


# -- CSRF and cross-site posts ---------------------------------------------------------------------------------


def test_every_post_without_the_sessions_csrf_token_is_refused_and_writes_nothing(app, ent):
    before = app.state()
    fields = {"template": "batch", "suffix": "BATCH-CSRF-1", "f.batchNumber": "CSRF-0001",
              "f.productionDate": "2025-01-01", "f.productionLine": "L1", "f.supplier": "88.100.102/SUP-0001",
              "f.material": "steel"}  # fmt: skip
    for token in (None, "", "0" * 32):
        sent = dict(fields) if token is None else {**fields, "csrf": token}
        reply = ent.post("/ent/new", sent)
        assert reply.status == 403 and "security token" in reply.text
    edit = ent.post("/ent/edit/88.100.101/PART-000001", {"f.partName": "x", "csrf": "1" * 32})
    assert edit.status == 403
    assert app.state() == before
    good = ent.post("/ent/new", {**fields, "csrf": ent.get("/ent/new?template=batch").csrf})
    assert good.status == 303 and app.state() != before


def test_a_post_from_another_origin_is_refused_even_with_a_valid_token(app, ent):
    before = app.state()
    token = ent.get("/ent/new").csrf
    reply = ent.post("/ent/new", {"csrf": token, "suffix": "X-1"}, headers={"Origin": "https://evil.example"})
    assert reply.status == 403 and "another site" in reply.text
    assert app.state() == before


# -- headers, CSP, escaping --------------------------------------------------------------------------------------


def test_every_page_sends_a_strict_csp_and_the_style_sheet_matches_its_hash(app, ent, operator):
    pages = [Visitor(app).get("/login"), operator.get("/admin")] + [ent.get(p) for p in SIGNED_IN_PAGES[1:]]
    for reply in pages:
        assert reply.status == 200, reply.text[:300]
        csp = reply.header("Content-Security-Policy")
        assert csp == layout.CONTENT_SECURITY_POLICY and "unsafe" not in csp and "script-src" not in csp
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "form-action 'self'" in csp
        assert reply.header("X-Content-Type-Options") == "nosniff"
        assert reply.header("X-Frame-Options") == "DENY"
        assert reply.header("Cache-Control") == "no-store"
        styles = re.findall(r"<style>(.*?)</style>", reply.text, re.S)
        assert len(styles) == 1
        digest = base64.b64encode(hashlib.sha256(styles[0].encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp
        assert "<script" not in reply.text.replace("&lt;script", "")


def test_markup_in_handles_values_and_names_is_shown_as_text(app, ent, operator):
    listing = ent.get("/ent?q=%3C")
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in listing.text.lower()  # stored upper-cased
    assert HOSTILE_SUFFIX.upper() not in listing.text and "<img" not in listing.text
    edit = ent.get("/ent/edit/" + urllib.parse.quote(f"88.100.101/{HOSTILE_SUFFIX}", safe="/"))
    assert edit.status == 200 and "&lt;img src=x onerror=alert(1)&gt;&quot;&#x27;&amp;" in edit.text
    assert "<img" not in edit.text
    # a write through the form with markup in its suffix: the audit on the dashboard shows it as text
    token = ent.get("/ent/new").csrf
    assert ent.post("/ent/new", {"csrf": token, "template": "", "suffix": "<i>NEW</i>"}).status in (303, 422)
    dashboard = operator.get("/admin")
    assert "&lt;b&gt;Evil &amp; Co&lt;/b&gt;" in dashboard.text and HOSTILE_ORG not in dashboard.text
    assert "<i>NEW</i>" not in dashboard.text
    login = Visitor(app).login("<script>x</script>", "whatever-secret")
    assert "<script>x" not in login.text and "&lt;script&gt;x" in login.text


def test_the_markup_helpers_escape_everything_that_is_not_marked_as_markup():
    assert render("<p>{}</p>", "<b>&") == "<p>&lt;b&gt;&amp;</p>"
    assert render('<a href="{}">', '" onclick="x') == '<a href="&quot; onclick=&quot;x">'
    assert render("{:,}", 1234567) == "1,234,567"
    assert render("<p>{}</p>", Html("<b>ok</b>")) == "<p><b>ok</b></p>"
    assert join(["<", Html("<br>")]) == "&lt;<br>" and esc(Html("<x>")) == "<x>"


def test_no_secret_in_any_page_or_url(app, setup, ent, operator):
    user, secret = setup[1]["88.100.101"]
    for reply in [operator.get("/admin")] + [ent.get(p) for p in SIGNED_IN_PAGES[1:]]:
        assert secret not in reply.text and OPERATOR_SECRET not in reply.text
    visitor = Visitor(app)
    reply = visitor.login(user, secret, "/ent")
    assert secret not in (reply.header("Location") or "")
    assert (
        'type="password"' in Visitor(app).get("/login").text
    )  # the form posts it in the body, never the URL
    assert 'method="post" action="/login"' in Visitor(app).get("/login").text


# -- the login throttle ------------------------------------------------------------------------------------------


def test_the_login_form_is_throttled_with_the_apis_throttle(app, setup):
    user, secret = setup[1]["88.100.7"]
    visitor = Visitor(app)
    for _ in range(MAX_AUTH_FAILURES):
        assert visitor.login(user, "wrong-secret-123").status == 401
    throttled = visitor.login(user, secret)  # even the right secret now waits
    assert throttled.status == 429 and throttled.header("Retry-After")
    assert "idnode_session" not in visitor.cookies
    api = app.call("GET", "/api/whoami", auth=(user, secret))  # the API counts the same failures
    assert api.status == 429


# -- several workers -------------------------------------------------------------------------------------------


def test_the_session_table_is_shared_bounded_and_expires():
    memory = SharedMemory(1 << 20)
    now = [1000.0]
    first, second = SessionTable(memory, lambda: now[0]), SessionTable(memory, lambda: now[0])  # two workers
    token, opened = first.open("operator", b"tag45678")
    assert second.get(token) == opened
    assert second.close(token) and first.get(token) is None
    token, _ = first.open("operator", b"tag45678")
    now[0] += session.SESSION_IDLE_S - 1
    assert second.get(token) is not None  # used: the idle clock starts again
    now[0] += session.SESSION_IDLE_S + 1
    assert first.get(token) is None
    token, _ = first.open("operator", b"tag45678")
    for _ in range(int(session.SESSION_MAX_S // session.SESSION_IDLE_S) + 1):
        now[0] += session.SESSION_IDLE_S - 1
        found = first.get(token)
    assert found is None  # used all along, yet ended SESSION_MAX_S after sign-in
    small = SessionTable(SharedMemory(1 << 20), lambda: now[0], slots=16)
    tokens = [small.open("operator", b"tag45678")[0] for _ in range(100)]
    assert len(small) == 16 and small.get(tokens[-1]) is not None
    assert small.get("x" * 500) is None and small.get(None) is None


def _cookie(page, name: str) -> str:
    return next(c.split(";")[0] for c in page.set_cookies() if c.startswith(name + "="))


def test_a_session_works_on_every_worker_of_a_node(setup):
    user, secret = setup[1]["88.100.101"]
    form_type = {"Content-Type": "application/x-www-form-urlencoded"}
    with http_node(setup[0], workers=2) as node:
        port = node.http_port
        form = http_page(port, "GET", "/login")
        body = urllib.parse.urlencode({"csrf": form.csrf, "user": user, "secret": secret}).encode()
        reply = http_page(
            port, "POST", "/login", body, {"Cookie": _cookie(form, "idnode_login"), **form_type}
        )
        assert reply.status == 303, reply.text
        cookie = {"Cookie": _cookie(reply, "idnode_session")}
        # each request is a new connection, spread over both workers by SO_REUSEPORT
        pages = [http_page(port, "GET", "/ent", headers=cookie) for _ in range(12)]
        assert [p.status for p in pages] == [200] * 12
        body = urllib.parse.urlencode({"csrf": pages[0].csrf}).encode()
        assert http_page(port, "POST", "/logout", body, {**cookie, **form_type}).status == 303
        after = [http_page(port, "GET", "/ent", headers=cookie).status for _ in range(6)]
        assert after == [303] * 6  # signed out on every worker
