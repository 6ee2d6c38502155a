"""The node's statistics and acceptance figures, read from the store: identifiers held, registrations and
resolutions per prefix, per day and per protocol, enterprises connected, application scenarios. `idnode stats`,
`idnode report` and the HTTP API all call these, so every face of the node says the same numbers. No servers.
"""

from __future__ import annotations

import time
import unicodedata
from pathlib import Path

from resolver.templates import all_template_sets
from storage.counters import RESOLUTIONS, per_node, totals
from storage.enterprises import ADMIN_SUFFIX, CONNECTED_WINDOW_S, enterprises
from storage.keys import prefix_sort_key
from storage.store import REGISTRATIONS, Store

# The project call's acceptance thresholds (DESIGN.md, "What it is").
IDENTIFIERS_REQUIRED = 20_000_000  #: ≥ registered identifiers (标识注册量), read as identifiers held
RESOLUTIONS_REQUIRED = 5_000_000  #: ≥ cumulative resolutions (累计标识解析量)
ENTERPRISES_REQUIRED = 30  #: more than this many connected enterprise nodes (接入企业节点)
SCENARIOS_REQUIRED = 2  #: ≥ industry application scenarios (标识应用场景)
SCENARIO_SCAN_KEYS = 2_000  #: identifiers looked at per prefix to find one a scenario template applies to
LOAD_SOURCE = "load"  #: registrations counted without a protocol: `idnode load`


def _counter_block(store: Store, kind: str, per_prefix: bool) -> dict:
    total, prefixes, days, protocols = totals(store, kind)
    if kind == REGISTRATIONS:
        other = total - sum(protocols.values())
        if other:
            protocols[LOAD_SOURCE] = other
    block = {
        "total": total,
        "per_day": dict(sorted(days.items())),
        "per_protocol": dict(sorted(protocols.items())),
    }
    if per_prefix:
        block["per_prefix"] = {p: prefixes[p] for p in sorted(prefixes, key=prefix_sort_key)}
    nodes = per_node(store, kind)
    if any(nodes):  # a cluster: every member's counts arrive through the log; "" is what was counted before
        block["per_node"] = dict(sorted(nodes.items()))
    return block


def collect_stats(store: Store, per_prefix: bool = True, now_s: int | None = None) -> dict:
    """Everything counted, persisted: what `idnode stats` and `GET /api/stats` show."""
    from resolver.recursion.probe import annotate  # enterprise nodes answering probes count as connected

    listed = annotate(enterprises(store, now_s), Path(store.path), now_s)
    return {
        "identifiers": store.count_identifiers(),
        "prefixes": len(listed),
        "registrations": _counter_block(store, REGISTRATIONS, per_prefix),
        "resolutions": _counter_block(store, RESOLUTIONS, per_prefix),
        "enterprises": {
            "known": len(listed),
            "with_credential": sum(1 for e in listed if e["credential"]),
            "own_nodes": sum(1 for e in listed if e["state"] == "referral"),
            "connected": sum(1 for e in listed if e["connected"]),
            "connected_window_s": CONNECTED_WINDOW_S,
            "nodes_up": sum(1 for e in listed if e.get("node") and e["node"]["up"]),
            "nodes_probed": sum(1 for e in listed if e.get("node")),
        },
    }


def scenarios(store: Store) -> dict[str, list[str]]:
    """Scenario name -> prefixes where it is in use: a template document names it, its prefix is not
    disabled, and at least one identifier there is one its templates apply to."""
    prefixes = store.prefixes()
    found: dict[str, list[str]] = {}
    with store.env.begin(db=store.handles) as txn, txn.cursor() as cursor:
        for key, template_set in sorted(
            all_template_sets(store).items(), key=lambda i: prefix_sort_key(i[0])
        ):
            info = prefixes.get(key)
            if not template_set.scenario or info is None or info.state == "disabled":
                continue
            start = key + b"/"
            if not cursor.set_range(start):
                continue
            for n, stored in enumerate(cursor.iternext(values=False)):
                if not stored.startswith(start) or n >= SCENARIO_SCAN_KEYS:
                    break
                suffix = stored[len(start) :].decode(errors="replace")
                if suffix.upper() != ADMIN_SUFFIX and template_set.template_for(suffix) is not None:
                    found.setdefault(template_set.scenario, []).append(info.prefix)
                    break
    return found


def acceptance_report(store: Store, now_s: int | None = None) -> dict:
    """The call's acceptance figures against its thresholds, each saying whether it holds."""
    now_s = int(time.time()) if now_s is None else now_s
    stats = collect_stats(store, per_prefix=False, now_s=now_s)
    in_use = scenarios(store)
    figures = [
        {
            "name": "registered identifiers (标识注册量)",
            "value": stats["identifiers"],
            "threshold": IDENTIFIERS_REQUIRED,
            "comparison": ">=",
            "note": f"identifiers held in the store now; {stats['registrations']['total']:,} registrations "
            "counted since counting began (deleted identifiers are not held)",
        },
        {
            "name": "cumulative resolutions (累计标识解析量)",
            "value": stats["resolutions"]["total"],
            "threshold": RESOLUTIONS_REQUIRED,
            "comparison": ">=",
            "note": "every protocol: "
            + (
                ", ".join(f"{p} {n:,}" for p, n in sorted(stats["resolutions"]["per_protocol"].items()))
                or "none"
            ),
        },
        {
            "name": "connected enterprise nodes (接入企业节点)",
            "value": stats["enterprises"]["connected"],
            "threshold": ENTERPRISES_REQUIRED,
            "comparison": ">",
            "note": f"enabled prefixes whose enterprise authenticated in the last "
            f"{CONNECTED_WINDOW_S // 3600} h or whose node answers the probes; "
            f"{stats['enterprises']['known']} prefixes known, "
            f"{stats['enterprises']['own_nodes']} served by their own node "
            f"({stats['enterprises']['nodes_up']} of {stats['enterprises']['nodes_probed']} probed up)",
        },
        {
            "name": "application scenarios (标识应用场景)",
            "value": len(in_use),
            "threshold": SCENARIOS_REQUIRED,
            "comparison": ">=",
            "note": "; ".join(f"{name}: {', '.join(p)}" for name, p in sorted(in_use.items()))
            or "none in use",
        },
    ]
    for figure in figures:
        if figure["comparison"] == ">":
            figure["holds"] = figure["value"] > figure["threshold"]
        else:
            figure["holds"] = figure["value"] >= figure["threshold"]
    return {"generated": now_s, "figures": figures, "all_hold": all(f["holds"] for f in figures)}


def _width(text: str) -> int:
    """Columns `text` takes in a terminal: CJK characters take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int, right: bool = False) -> str:
    fill = " " * (width - _width(text))
    return fill + text if right else text + fill


def format_report(report: dict) -> str:
    rows = [("figure", "value", "required", "holds")]
    for f in report["figures"]:
        value, required = f"{f['value']:,}", f"{f['comparison']} {f['threshold']:,}"
        rows.append((f["name"], value, required, "yes" if f["holds"] else "NO"))
    widths = [max(_width(r[i]) for r in rows) for i in range(4)]
    lines = []
    for n, row in enumerate(rows):
        lines.append("  ".join(_pad(cell, widths[i], right=i > 0) for i, cell in enumerate(row)))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines += [f"{f['name']}: {f['note']}" for f in report["figures"]]
    lines.append("")
    lines.append("all thresholds hold" if report["all_hold"] else "not every threshold holds")
    return "\n".join(lines)
