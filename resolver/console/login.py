"""Signing in and out of the pages, and the gate every signed-in page passes.

`GET /login` shows the form; `POST /login` checks the user and secret with the HTTP API's own check
(Authenticator.verify: the same credentials, the same failed-login throttle for the whole node, the same
refusals, reported to the security log), then opens a session (session.py) under a new token and sends the
browser where it was going. The login form carries a CSRF token of its own (a random value in a short-lived
cookie and in the form, which must agree) so that another site cannot sign a browser in as someone else.
`POST /logout` ends the session for every worker.

`signed_in(...)` wraps a page handler: without a live session a GET is sent to the login form and a POST is
refused; a session of the wrong kind (an enterprise on the operator's pages) is refused; every POST must come
from this node's own pages (Origin) and carry the session's CSRF token, before its handler runs.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDictProxy

from resolver.console import session as sessions
from resolver.console.layout import SECURITY_HEADERS, error_page, nav, page, page_errors
from resolver.console.markup import Html, render
from resolver.handle.constants import ResponseCode
from resolver.http.auth import Identity
from resolver.http.common import BODY_READ_TIMEOUT_S, HttpError
from resolver.http.context import CONTEXT, client_source

MAX_FORM_BYTES = 64 * 1024  #: a form of one identifier: far above any template's fields, far below memory
MAX_SECRET_CHARS = 1024  #: longer is not a secret this node issued; refused before it is hashed
MAX_NEXT_CHARS = 2048  #: where to go after signing in: a path of this node, at most this long
LOGIN_CSRF_BYTES = 16  #: randomness of the login form's own CSRF token
SESSIONS = web.AppKey("console.sessions", sessions.SessionTable)
FORM = web.RequestKey("console.form", MultiDictProxy)  #: the checked form of a POST
NEXT = web.RequestKey("console.next", str)  #: where the login form goes after signing in


@dataclass(frozen=True, slots=True)
class PageUser:
    """Who is signed in on this request."""

    identity: Identity
    session: sessions.Session

    @property
    def csrf(self) -> str:
        return self.session.csrf

    def header(self) -> Html:
        links = (("/admin", "运营 dashboard"),) if self.identity.is_operator else (("/ent", "标识 identifiers"),
                 ("/ent/new", "新建 new"), ("/ent/upload", "批量 upload"))  # fmt: skip
        return nav(self.identity.user, self.csrf, links)


def current(request: web.Request) -> PageUser | None:
    """The signed-in user of `request`, or None: no cookie, an ended session, or a credential rotated or
    prefix disabled since the session began."""
    found = request.app[SESSIONS].get(sessions.read_cookie(request))
    if found is None:
        return None
    identity = request.app[CONTEXT].auth.resume(found.user, found.credential_tag)
    if identity is None:
        return None
    return PageUser(identity, found)


def is_local_path(target: str | None) -> bool:
    """Whether `target` is a path of this node to go to after signing in: never another site (no scheme, no
    `//`, no backslash), never the login or logout themselves."""
    return bool(
        target
        and len(target) <= MAX_NEXT_CHARS
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and target.isprintable()
        and not target.startswith(("/login", "/logout"))
    )


def home(identity: Identity) -> str:
    return "/admin" if identity.is_operator else "/ent"


def redirect(location: str) -> web.Response:
    """303 See Other: after a POST the browser GETs `location` (a reload does not send the form again)."""
    return web.Response(status=303, headers={"Location": location, **SECURITY_HEADERS})


async def read_form(request: web.Request, limit: int = MAX_FORM_BYTES):
    """The form fields of a POST (urlencoded or multipart), refused with 413 past `limit` bytes and 408 when
    the body has not arrived in time."""
    if request.content_length is not None and request.content_length > limit:
        raise HttpError(413, ResponseCode.PROTOCOL_ERROR, f"the form is larger than {limit:,} bytes")
    try:
        async with asyncio.timeout(BODY_READ_TIMEOUT_S):
            return await request.post()
    except TimeoutError:
        raise HttpError(408, ResponseCode.PROTOCOL_ERROR, "the form did not arrive in time") from None
    except ValueError as exc:  # a malformed multipart body
        raise HttpError(400, ResponseCode.PROTOCOL_ERROR, f"the form cannot be read: {exc}") from None


Handler = Callable[[web.Request, PageUser], Awaitable[web.StreamResponse]]


def signed_in(*, operator: bool, form_limit: int = MAX_FORM_BYTES):
    """A page for the operator (`operator=True`) or for an enterprise: handler(request, user). POSTs are
    checked for origin and CSRF token first, and their form is read into request[FORM]."""

    def wrap(handler: Handler):
        @page_errors
        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            user = current(request)
            if user is None:
                if request.method == "GET":
                    return redirect("/login?next=" + quote(request.path_qs, safe="/"))
                return error_page(403, "your session has ended: sign in again (nothing was written)")
            if user.identity.is_operator != operator:
                where = "/admin" if user.identity.is_operator else "/ent"
                return error_page(403, f"these pages are for {'the operator' if operator else 'enterprises'}; "
                                  f"yours are at {where}", header=user.header())  # fmt: skip
            if request.method == "POST":
                if not sessions.same_origin(request):
                    return error_page(403, "a form sent from another site is refused", header=user.header())
                form = await read_form(request, form_limit)
                if not sessions.same_token(user.csrf, form.get("csrf")):
                    return error_page(403, "the form's security token is missing or stale: reload the page "
                                      "and send it again (nothing was written)", header=user.header())  # fmt: skip
                request[FORM] = form
            return await handler(request, user)

        return wrapped

    return wrap


# -- the login form ----------------------------------------------------------------------------------------

_LOGIN = """<section><h1>登录 · Sign in</h1>{message}
<form class="stack" method="post" action="/login">
<input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="next" value="{next}">
<label for="user">用户 user</label>
<input type="text" id="user" name="user" value="{user}" autocomplete="username" required
 placeholder="300:88.100.7/ADMIN or operator">
<span class="check">企业管理员 enterprise administrator: 300:&lt;prefix&gt;/ADMIN · 运营方 the operator: operator</span>
<label for="secret">密钥 secret</label>
<input type="password" id="secret" name="secret" autocomplete="current-password" required>
<button class="primary">登录 sign in</button></form></section>"""


def _login_page(request: web.Request, *, message: str = "", user: str = "", status: int = 200,
                headers: dict | None = None) -> web.Response:  # fmt: skip
    token = secrets.token_hex(LOGIN_CSRF_BYTES)
    shown = render('<p class="flash error">{}</p>', message) if message else Html("")
    wanted = request.query.get("next") if request.method == "GET" else request.get(NEXT)
    next_path = wanted if is_local_path(wanted) else ""
    body = render(_LOGIN, message=shown, csrf=token, next=next_path, user=user)
    response = page("登录 sign in", body, status=status, headers=headers)
    sessions.set_cookie(response, request, sessions.LOGIN_COOKIE, token, sessions.LOGIN_COOKIE_MAX_AGE_S)
    return response


@page_errors
async def login_form(request: web.Request) -> web.StreamResponse:
    user = current(request)
    if user is not None and "next" not in request.query:
        return redirect(home(user.identity))
    return _login_page(request)


@page_errors
async def login(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    if not sessions.same_origin(request):
        return _login_page(request, message="a sign-in sent from another site is refused", status=403)
    form = await read_form(request)
    request[NEXT] = str(form.get("next", ""))
    expected = sessions.read_cookie(request, sessions.LOGIN_COOKIE)
    if expected is None or not sessions.same_token(expected, form.get("csrf")):
        return _login_page(request, message="the sign-in form was stale; please try again", status=403)
    user, secret = form.get("user"), form.get("secret")
    if not isinstance(user, str) or not isinstance(secret, str) or not user.strip() or not secret:
        return _login_page(request, message="give a user and its secret", status=400)
    user = user.strip()
    if len(secret) > MAX_SECRET_CHARS or len(user.encode()) > sessions.MAX_USER_BYTES:
        return _login_page(request, message="that is not a user and secret of this node", status=400)
    try:
        identity = await ctx.auth.verify(request, user, secret)
    except HttpError as exc:
        if ctx.events.enabled:
            if exc.status == 429:
                ctx.events.rate_limited(request.remote or "?", "http")
            else:
                ctx.events.auth_failure(user, client_source(request), exc.message, transport="http")
        retry = {k: v for k, v in (exc.headers or {}).items() if k == "Retry-After"}
        # A wrong secret and an unknown user read the same to the visitor; the security log says which.
        message = exc.message if exc.status in (403, 429) else "wrong user or secret"
        return _login_page(request, message=message, user=user, status=exc.status, headers=retry or None)
    tag = ctx.auth.credential_tag(identity.user)
    if tag is None:  # the credential went away between the check and now
        return _login_page(request, message="wrong user or secret", user=user, status=401)
    token, _ = request.app[SESSIONS].open(identity.user, tag)
    response = redirect(request[NEXT] if is_local_path(request[NEXT]) else home(identity))
    sessions.set_cookie(response, request, sessions.COOKIE, token)
    sessions.clear_cookie(response, request, sessions.LOGIN_COOKIE)
    return response


@page_errors
async def logout(request: web.Request) -> web.StreamResponse:
    user = current(request)
    if user is not None:
        if not sessions.same_origin(request):
            return error_page(403, "a form sent from another site is refused")
        form = await read_form(request)
        if not sessions.same_token(user.csrf, form.get("csrf")):
            return error_page(403, "the form's security token is missing or stale: reload the page")
        request.app[SESSIONS].close(sessions.read_cookie(request))
    response = redirect("/login")
    sessions.clear_cookie(response, request, sessions.COOKIE)
    return response
