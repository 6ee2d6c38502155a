"""The operator's dashboard, `GET /admin`: the call's acceptance figures against its thresholds (the same
`acceptance_report` as `idnode report`) and the security log upload; registrations and resolutions per day
as charts, by protocol and by prefix (server-drawn SVG, charts.py); the enterprise nodes with their state,
last seen, connected, and for those that run their own node whether it answers; the templates in force; the
newest audit entries. Read-only: prefixes, credentials and templates are changed with `idnode prefix` /
`idnode template` or the operator API."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from aiohttp import web

from resolver.console.charts import stacked_bars
from resolver.console.layout import page
from resolver.console.login import PageUser, signed_in
from resolver.console.markup import Html, join, render
from resolver.http.context import CONTEXT
from resolver.reports import LOAD_SOURCE, acceptance_report
from resolver.templates import all_template_sets
from storage import audit
from storage.counters import RESOLUTIONS, split_counter_key
from storage.enterprises import enterprises
from storage.keys import prefix_sort_key
from storage.store import REGISTRATIONS

DAYS_SHOWN = 30  #: the charts show this many days, today last
TOP_PREFIXES = 5  #: prefixes drawn apart in the by-prefix charts; the rest are "other"
AUDIT_SHOWN = 50  #: newest audit entries listed
HEALTH_TIMEOUT_S = (
    1.0  #: an enterprise node that has not accepted a TCP connection by then is "not answering"
)
HEALTH_CACHE_S = 60.0  #: a probe's answer is reused this long per worker, so reloading the page probes nobody
MAX_HEALTH_PROBES = 64  #: enterprise nodes probed per page; the others say "not probed"

_health: dict[str, tuple[float, bool]] = {}  # site address -> (when probed, answered)


def days_until(today_s: float, count: int = DAYS_SHOWN) -> list[str]:
    return [time.strftime("%Y%m%d", time.gmtime(today_s - 86_400 * n)) for n in range(count - 1, -1, -1)]


def daily(counters: dict[bytes, int], kind: str, days: list[str]) -> tuple[dict, dict]:
    """(by source/protocol -> day -> n, by prefix -> day -> n) of counter `kind` over `days`; the prefixes
    beyond the TOP_PREFIXES busiest are summed as "other"."""
    wanted = set(days)
    by_source: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    by_prefix: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for key, n in counters.items():
        key_kind, _node, day, prefix = split_counter_key(key)  # a cluster's members' counts are summed
        base, _, source = key_kind.partition(".")
        if base != kind or day not in wanted:
            continue
        by_source[source or LOAD_SOURCE][day] += n
        by_prefix[prefix][day] += n
    busiest = sorted(by_prefix, key=lambda p: -sum(by_prefix[p].values()))
    shown: dict[str, dict[str, int]] = {p: by_prefix[p] for p in busiest[:TOP_PREFIXES]}
    if len(busiest) > TOP_PREFIXES:
        other: dict[str, int] = defaultdict(int)
        for p in busiest[TOP_PREFIXES:]:
            for day, n in by_prefix[p].items():
                other[day] += n
        shown["other"] = other
    return dict(sorted(by_source.items())), shown


async def _probe(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host.strip("[]"), int(port)), HEALTH_TIMEOUT_S
        )
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    return True


async def node_health(addresses: list[str], now: float) -> dict[str, bool]:
    """Whether each enterprise node accepts a Handle TCP connection, probed together (at most
    MAX_HEALTH_PROBES, HEALTH_TIMEOUT_S each), answers cached HEALTH_CACHE_S."""
    due = [a for a in addresses if a not in _health or now - _health[a][0] > HEALTH_CACHE_S][
        :MAX_HEALTH_PROBES
    ]
    for address, ok in zip(due, await asyncio.gather(*(_probe(a) for a in due)), strict=True):
        _health[address] = (now, ok)
    return {a: _health[a][1] for a in addresses if a in _health}


def _figures(report: dict, seclog: dict) -> Html:
    cards = []
    for f in report["figures"]:
        holds = Html(
            '<span class="ok">✔ 达标 holds</span>'
            if f["holds"]
            else '<span class="bad">✘ 未达标 short</span>'
        )
        cards.append(render(
            '<div class="card"><div>{name}</div><div class="value">{value:,}</div>'
            '<div>required {cmp} {threshold:,} · {holds}</div><div class="muted">{note}</div></div>',
            name=f["name"], value=f["value"], cmp=f["comparison"], threshold=f["threshold"], holds=holds,
            note=f["note"],
        ))  # fmt: skip
    if seclog["enabled"]:
        state = Html('<span class="ok">✔ on</span>')
        note = (
            f"{seclog['waiting']:,} events waiting, {seclog['appended']:,} queued since the start, "
            f"{seclog['dropped']:,} dropped by the bound"
        )
    else:
        state = Html('<span class="bad">✘ off</span>')
        note = "no collector configured: set security_log.collector (README, Security log upload)"
    cards.append(render(
        '<div class="card"><div>安全日志上传 security log upload</div><div class="value">{}</div>'
        '<div class="muted">{}</div></div>', state, note,
    ))  # fmt: skip
    overall = "✔ all thresholds hold" if report["all_hold"] else "✘ not every threshold holds"
    return render('<section><h2>验收指标 · acceptance figures</h2><p>{}</p><div class="cards">{}</div></section>',
                  overall, join(cards))  # fmt: skip


def _seclog(ctx) -> dict:
    stats = ctx.events.queue_stats() if ctx.events.enabled else None
    if stats is None:
        return {"enabled": ctx.events.enabled, "waiting": 0, "appended": 0, "dropped": 0}
    return {"enabled": True, "waiting": stats.events, "appended": stats.appended, "dropped": stats.dropped}


def _when(seconds: int | None, now: float) -> str:
    if seconds is None:
        return "never"
    ago = int(now - seconds)
    stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(seconds)) + " UTC"
    if ago < 3600:
        return f"{stamp} ({max(ago, 0) // 60} min ago)"
    if ago < 86_400 * 2:
        return f"{stamp} ({ago // 3600} h ago)"
    return f"{stamp} ({ago // 86_400} days ago)"


def _enterprise_rows(listed: list[dict], health: dict[str, bool], now: float) -> Html:
    rows = []
    for e in listed:
        connected = Html('<span class="ok">yes</span>' if e["connected"] else '<span class="muted">no</span>')
        site = e.get("site")
        if e["state"] == "referral" and site:
            ok = health.get(site)
            answer = "not probed" if ok is None else "answers" if ok else "not answering"
            node = render('{} · <span class="{}">{}</span>', site, "ok" if ok else "bad", answer)
        else:
            node = Html('<span class="muted">hosted here</span>')
        rows.append(render(
            '<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="wrap">{}</td></tr>',
            e["prefix"], e["org"], e["state"], "yes" if e["credential"] else "no", _when(e["lastSeen"], now),
            connected, node,
        ))  # fmt: skip
    return join(rows)


def _templates(store) -> Html:
    rows = []
    for _key, ts in sorted(all_template_sets(store).items(), key=lambda i: prefix_sort_key(i[0])):
        for t in ts.templates:
            rows.append(render(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                ts.prefix, ts.scenario, t.name, t.suffix_pattern.pattern, ", ".join(f.name for f in t.fields),
            ))  # fmt: skip
    if not rows:
        return Html('<p class="muted">no templates: <code>idnode template set</code></p>')
    return render(
        "<table><tr><th>prefix</th><th>scenario</th><th>template</th><th>suffix</th><th>fields</th></tr>{}</table>",
        join(rows),
    )


def _audit(store) -> Html:
    rows = [
        render(
            '<tr><td>{}</td><td>{}</td><td class="wrap">{}</td><td>{}</td><td>{}</td></tr>',
            audit.format_time(e.time_ns)[:19].replace("T", " "), e.operation, e.handle, e.identity, e.source,
        )
        for e in reversed(audit.query(store, limit=AUDIT_SHOWN, newest=True))
    ]  # fmt: skip
    return render(
        "<table><tr><th>time (UTC)</th><th>operation</th><th>handle</th><th>by</th><th>from</th></tr>{}</table>",
        join(rows),
    )


@signed_in(operator=True)
async def dashboard(request: web.Request, user: PageUser) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    ctx.service.refresh()
    store = ctx.store
    now = time.time()
    report = acceptance_report(store, int(now))
    days = days_until(now)
    counters = store.counters()
    res_protocol, res_prefix = daily(counters, RESOLUTIONS, days)
    reg_source, reg_prefix = daily(counters, REGISTRATIONS, days)
    charts = join([
        stacked_bars("每日解析量 · resolutions per day, by protocol", days, res_protocol),
        stacked_bars("每日解析量 · resolutions per day, by prefix", days, res_prefix),
        stacked_bars("每日注册量 · registrations per day, by source", days, reg_source),
        stacked_bars("每日注册量 · registrations per day, by prefix", days, reg_prefix),
    ])  # fmt: skip
    listed = enterprises(store, int(now))
    sites = [e["site"] for e in listed if e["state"] == "referral" and e.get("site")]
    health = await node_health(sites, time.monotonic()) if sites else {}
    connected = sum(1 for e in listed if e["connected"])
    body = render(
        "<h1>运营看板 · Operator dashboard</h1>{figures}"
        "<section><h2>解析与注册 · resolutions and registrations, last {days} days (UTC)</h2>{charts}</section>"
        "<section><h2>企业节点 · enterprise nodes ({n} prefixes, {connected} connected)</h2>"
        "<table><tr><th>prefix</th><th>organisation</th><th>state</th><th>credential</th><th>last seen</th>"
        "<th>connected</th><th>own node</th></tr>{rows}</table></section>"
        "<section><h2>模板 · templates</h2>{templates}</section>"
        "<section><h2>审计 · newest audit entries</h2>{audit}</section>",
        figures=_figures(report, _seclog(ctx)), days=DAYS_SHOWN, charts=charts, n=len(listed), connected=connected,
        rows=_enterprise_rows(listed, health, now), templates=_templates(store), audit=_audit(store),
    )  # fmt: skip
    return page("运营看板 dashboard", body, header=user.header())
