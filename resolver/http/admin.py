"""The operator's API (credentials of the user `operator`), the same operations as `idnode prefix`,
`idnode template` and `idnode report`:

    GET  /api/admin/enterprises                     prefixes, organisations, state, last seen, connected
    POST /api/admin/prefixes                        {"prefix", "org", "site"?: "HOST:PORT", "force"?,
                                                    "outsideNodePrefix"?}: add or update (checks as the CLI's)
    POST /api/admin/prefixes/{prefix}/disable       nothing under it resolves, its credential is refused
    POST /api/admin/prefixes/{prefix}/enable
    POST /api/admin/prefixes/{prefix}/credential    issue or rotate the secret: {"user", "secret"}, shown once;
                                                    also the Handle HS_SECKEY (300), encrypted with the node key
    POST /api/admin/prefixes/{prefix}/public-key    {"key": PEM text, or base64 of DER or of the Handle
                                                    encoding, "index"?: 301..399}: an RSA/DSA/SM2 HS_PUBKEY of
                                                    <prefix>/ADMIN (default index 301 RSA, 302 DSA, 303 SM2)
    PUT|GET|DELETE /api/admin/templates/{prefix}    the prefix's template document
    GET  /api/admin/report                          the acceptance figures

and `GET /api/whoami` for any authenticated user (an enterprise node's heartbeat: it marks it connected).
Every write is audited as the operator's, from the caller's address, and reported to the security log.
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from resolver.admin.crypto import DEFAULT_KEY_INDEX, read_public_key
from resolver.handle.constants import ResponseCode
from resolver.handle.keys import encode_public_key
from resolver.http.common import MAX_ADMIN_BODY_BYTES, HttpError, json_response, parse_json, read_body
from resolver.http.context import CONTEXT, actor_of
from resolver.reports import acceptance_report
from resolver.templates import TemplateError, delete_templates, get_templates, set_templates
from storage import audit
from storage.enterprises import (
    EnterpriseError,
    add_prefix,
    enterprises,
    issue_credential,
    register_public_key,
    set_prefix_enabled,
)
from storage.handlekeys import NodeKeyError, load_node_key


def _bad(exc: Exception) -> HttpError:
    return HttpError(400, ResponseCode.INVALID_VALUE, str(exc), field=str(exc).split(":", 1)[0])


def _info_json(info) -> dict:
    return {
        "prefix": info.prefix,
        "org": info.org,
        "state": info.state,
        "site": info.extra.get("site_address"),
    }


async def whoami(request: web.Request) -> web.Response:
    identity = await request.app[CONTEXT].auth.require(request)
    prefix = identity.prefix.decode() if identity.prefix is not None else None
    return json_response(
        {"responseCode": 1, "user": identity.user, "prefix": prefix, "operator": identity.is_operator}
    )


async def list_enterprises(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    await ctx.auth.require_operator(request)
    listed = enterprises(ctx.store)
    return json_response(
        {"responseCode": 1, "connected": sum(1 for e in listed if e["connected"]), "enterprises": listed}
    )


def _reported(ctx, actor, operation: str, prefix: str) -> None:
    ctx.events.write(actor.identity, actor.source, operation, f"0.NA/{prefix}")


async def add_prefix_route(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    actor = actor_of(await ctx.auth.require_operator(request), request)
    obj = parse_json(await read_body(request, MAX_ADMIN_BODY_BYTES))
    if not isinstance(obj, dict):
        raise HttpError(
            400, ResponseCode.INVALID_VALUE,
            'the body is {"prefix", "org", "site"?, "force"?, "outsideNodePrefix"?}',
        )  # fmt: skip
    for name in ("prefix", "org", "site"):
        if name in obj and obj[name] is not None and not isinstance(obj[name], str):
            raise HttpError(400, ResponseCode.INVALID_VALUE, f"{name}: must be a string", field=name)
    for name in ("force", "outsideNodePrefix"):
        if name in obj and not isinstance(obj[name], bool):
            raise HttpError(400, ResponseCode.INVALID_VALUE, f"{name}: must be true or false", field=name)
    try:
        # the same checks as `idnode prefix add` (storage.enterprises.check_prefix_change)
        info = await ctx.write(
            add_prefix, obj.get("prefix") or "", obj.get("org") or "", obj.get("site"), actor=actor,
            node_prefix=ctx.service.node_prefix.decode(), force=obj.get("force", False),
            outside_node_prefix=obj.get("outsideNodePrefix", False),
        )  # fmt: skip
    except EnterpriseError as exc:
        raise _bad(exc) from exc
    _reported(ctx, actor, audit.PREFIX_ADD, info.prefix)
    ctx.service.reload_prefixes()
    return json_response({"responseCode": 1, **_info_json(info)})


async def _set_enabled(request: web.Request, enabled: bool) -> web.Response:
    ctx = request.app[CONTEXT]
    actor = actor_of(await ctx.auth.require_operator(request), request)
    try:
        info = await ctx.write(set_prefix_enabled, request.match_info["prefix"], enabled, actor=actor)
    except EnterpriseError as exc:
        raise HttpError(
            404 if "not known" in str(exc) else 400, ResponseCode.INVALID_VALUE, str(exc)
        ) from exc
    _reported(ctx, actor, audit.PREFIX_ENABLE if enabled else audit.PREFIX_DISABLE, info.prefix)
    ctx.service.reload_prefixes()
    return json_response({"responseCode": 1, **_info_json(info)})


async def disable_prefix(request: web.Request) -> web.Response:
    return await _set_enabled(request, False)


async def enable_prefix(request: web.Request) -> web.Response:
    return await _set_enabled(request, True)


async def credential(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    actor = actor_of(await ctx.auth.require_operator(request), request)
    try:  # as `idnode prefix credential`: the secret also serves the Handle protocol, encrypted with the node key
        node_key = load_node_key(ctx.store.path, create=True)
    except NodeKeyError as exc:
        raise HttpError(500, ResponseCode.ERROR, str(exc)) from exc
    try:
        user, secret = await ctx.write(
            issue_credential, request.match_info["prefix"], actor=actor, node_key=node_key
        )
    except EnterpriseError as exc:
        raise HttpError(
            404 if "not known" in str(exc) else 400, ResponseCode.INVALID_VALUE, str(exc)
        ) from exc
    ctx.after_write()  # the prefix's ADMIN identifier may be new
    _reported(ctx, actor, audit.CREDENTIAL_ISSUE, user[user.index(":") + 1 : user.rindex("/")])
    return json_response({"responseCode": 1, "user": user, "secret": secret})


async def public_key(request: web.Request) -> web.Response:
    """Register an enterprise's public key for `<prefix>/ADMIN`: the same checks and write as `idnode prefix
    credential P --public-key FILE`."""
    ctx = request.app[CONTEXT]
    actor = actor_of(await ctx.auth.require_operator(request), request)
    obj = parse_json(await read_body(request, MAX_ADMIN_BODY_BYTES))
    if not isinstance(obj, dict) or not isinstance(obj.get("key"), str):
        raise HttpError(400, ResponseCode.INVALID_VALUE,
                        'key: the body is {"key": PEM text or base64 (DER or Handle encoding), "index"?}',
                        field="key")  # fmt: skip
    index = obj.get("index")
    if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
        raise HttpError(400, ResponseCode.INVALID_VALUE, "index: must be a number", field="index")
    text = obj["key"].strip()
    try:
        raw = text.encode() if text.startswith("-----BEGIN") else base64.b64decode(text, validate=True)
        key = read_public_key(raw)
    except (binascii.Error, ValueError) as exc:  # KeyError_ is a ValueError
        raise HttpError(400, ResponseCode.INVALID_VALUE, f"key: {exc}", field="key") from exc
    index = index if index is not None else DEFAULT_KEY_INDEX[key.key_type]
    prefix = request.match_info["prefix"]
    try:
        identity = await ctx.write(register_public_key, prefix, index, encode_public_key(key), actor=actor)
    except EnterpriseError as exc:
        raise HttpError(
            404 if "not known" in str(exc) else 400, ResponseCode.INVALID_VALUE, str(exc)
        ) from exc
    ctx.after_write()  # the prefix's ADMIN identifier changed (maybe new)
    _reported(ctx, actor, audit.CREDENTIAL_ISSUE, identity.split(":", 1)[1].rsplit("/", 1)[0])
    return json_response({"responseCode": 1, "identity": identity, "keyType": key.key_type, "index": index})


async def put_templates(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    actor = actor_of(await ctx.auth.require_operator(request), request)
    document = parse_json(await read_body(request, MAX_ADMIN_BODY_BYTES))
    prefix = request.match_info["prefix"]
    if isinstance(document, dict) and str(document.get("prefix", "")).upper() != prefix.upper():
        raise HttpError(
            400, ResponseCode.INVALID_VALUE, f"prefix: the document is for another prefix than {prefix}"
        )
    try:
        template_set = await ctx.write(set_templates, document, actor=actor)
    except TemplateError as exc:
        raise _bad(exc) from exc
    _reported(ctx, actor, audit.TEMPLATE_SET, template_set.prefix)
    names = [t.name for t in template_set.templates]
    return json_response({"responseCode": 1, "prefix": template_set.prefix, "templates": names})


async def get_templates_route(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    await ctx.auth.require(request)  # an enterprise may read its own; the operator any
    prefix = request.match_info["prefix"]
    document = get_templates(ctx.store, prefix)
    if document is None:
        raise HttpError(404, ResponseCode.VALUES_NOT_FOUND, f"no templates for {prefix}")
    return json_response(document)


async def delete_templates_route(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    actor = actor_of(await ctx.auth.require_operator(request), request)
    prefix = request.match_info["prefix"]
    if not await ctx.write(delete_templates, prefix, actor=actor):
        raise HttpError(404, ResponseCode.VALUES_NOT_FOUND, f"no templates for {prefix}")
    _reported(ctx, actor, audit.TEMPLATE_DELETE, prefix)
    return json_response({"responseCode": 1, "prefix": prefix})


async def report(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    await ctx.auth.require_operator(request)
    return json_response(acceptance_report(ctx.store))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/whoami", whoami)
    app.router.add_get("/api/admin/enterprises", list_enterprises)
    app.router.add_post("/api/admin/prefixes", add_prefix_route)
    app.router.add_post("/api/admin/prefixes/{prefix}/disable", disable_prefix)
    app.router.add_post("/api/admin/prefixes/{prefix}/enable", enable_prefix)
    app.router.add_post("/api/admin/prefixes/{prefix}/credential", credential)
    app.router.add_post("/api/admin/prefixes/{prefix}/public-key", public_key)
    app.router.add_put("/api/admin/templates/{prefix}", put_templates)
    app.router.add_get("/api/admin/templates/{prefix}", get_templates_route)
    app.router.add_delete("/api/admin/templates/{prefix}", delete_templates_route)
    app.router.add_get("/api/admin/report", report)
