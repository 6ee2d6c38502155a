"""The console's routes, added to the HTTP application by `add_routes` (resolver/http/app.py) before the
catch-all `/{handle}`: these paths are therefore never read as handles on the browser page (prefixes named
`admin`, `ent`, `login` or `logout` still resolve over the API and the Handle protocol)."""

from __future__ import annotations

from aiohttp import web

from resolver.console import admin, forms, login, upload, workspace
from resolver.console.session import SessionTable
from resolver.http.context import CONTEXT


def add_routes(app: web.Application) -> None:
    app[login.SESSIONS] = SessionTable(app[CONTEXT].memory)
    router = app.router
    router.add_get("/login", login.login_form)
    router.add_post("/login", login.login)
    router.add_post("/logout", login.logout)
    router.add_get("/admin", admin.dashboard)
    router.add_get("/ent", workspace.identifiers)
    router.add_get("/ent/new", forms.new_form)
    router.add_post("/ent/new", forms.create)
    router.add_get("/ent/edit/{handle:.+}", forms.edit_form)
    router.add_post("/ent/edit/{handle:.+}", forms.update)
    router.add_get("/ent/upload", upload.upload_form)
    router.add_post("/ent/upload", upload.upload)
