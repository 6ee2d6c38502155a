"""The figures of a run: the processes' reports merged into one result dict (the JSON written by
``idnode bench … --json``), nearest-rank percentiles, a log-binned latency histogram (for the plot and for
anyone comparing runs later without the raw samples), the progress line and the text table. Imports nothing of
the server."""

from __future__ import annotations

import array
import bisect
import math
from collections.abc import Iterable, Sequence

from bench.load.meter import TIMELINE_INTERVAL_S
from bench.load.protocols import PROTOCOLS, Protocol
from bench.load.spec import DatasetSpec, LoadSpec

HISTOGRAM_BINS_PER_DECADE = 20  #: bins 12% wide: a smooth CDF on a log axis, ~140 bins from 1 µs to 10 s
_RARE = (
    "sent",
    "lost",
    "late",
    "malformed",
    "send_errors",
    "receive_errors",
    "reconnects",
    "outstanding",
    "unsent",
)


def percentiles(sorted_values: Sequence[float], points: Iterable[float]) -> dict[float, float]:
    """Nearest-rank percentiles of sorted values: the smallest value with at least p% at or below it."""
    n = len(sorted_values)
    out = {}
    for p in points:
        if not n:
            out[p] = float("nan")
            continue
        rank = max(1, math.ceil(n * p / 100 - 1e-9))  # the epsilon keeps 1000 * 99.9 / 100 at rank 999
        out[p] = sorted_values[min(n, rank) - 1]
    return out


def latency_histogram(sorted_ns: Sequence[int]) -> dict:
    """Counts of latencies in log-spaced bins: bin i holds (upper_us[i-1], upper_us[i]]."""
    if not sorted_ns:
        return {"bins_per_decade": HISTOGRAM_BINS_PER_DECADE, "upper_us": [], "counts": []}
    per = HISTOGRAM_BINS_PER_DECADE
    low = math.floor(math.log10(max(sorted_ns[0], 1) / 1000) * per)
    high = math.ceil(math.log10(max(sorted_ns[-1], 1) / 1000) * per)
    uppers = [10 ** (i / per) for i in range(low, high + 1)]
    below = [bisect.bisect_right(sorted_ns, upper * 1000) for upper in uppers]
    below[-1] = len(sorted_ns)  # the top edge, rounded, may fall a hair below the largest sample
    counts = [b - a for a, b in zip([0, *below], below, strict=False)]
    return {"bins_per_decade": per, "upper_us": [round(u, 3) for u in uppers], "counts": counts}


def merge_histograms(histograms: Sequence[dict]) -> dict:
    """One histogram of several runs' :func:`latency_histogram` (bins on the same log grid add up)."""
    per = HISTOGRAM_BINS_PER_DECADE
    counts: dict[int, int] = {}
    for histogram in histograms:
        for upper, n in zip(histogram.get("upper_us", []), histogram.get("counts", []), strict=True):
            slot = round(math.log10(upper) * per)
            counts[slot] = counts.get(slot, 0) + n
    if not counts:
        return latency_histogram([])
    slots = range(min(counts), max(counts) + 1)
    return {
        "bins_per_decade": per,
        "upper_us": [round(10 ** (i / per), 3) for i in slots],
        "counts": [counts.get(i, 0) for i in slots],
    }


def _named_codes(protocol: Protocol, raw: dict[int, int]) -> dict[str, int]:
    named: dict[str, int] = {}
    for code, n in sorted(raw.items()):
        if n:
            name = protocol.code_name(code)
            named[name] = named.get(name, 0) + n
    return named


def _settings(spec: LoadSpec) -> dict:
    handles = spec.handles
    settings = {
        "protocol": spec.protocol,
        "mode": "open" if spec.open_loop else "closed",
        "processes": spec.processes,
        "sockets_per_process": spec.sockets,
        "window": spec.window if not spec.open_loop else None,
        "outstanding": spec.processes * spec.sockets * spec.window if not spec.open_loop else None,
        "rate": spec.rate,
        "duration_s": spec.duration_s,
        "count": spec.count,
        "warmup_s": spec.warmup_s,
        "missing_ratio": spec.missing_ratio,
        "popularity": spec.popularity,
        "zipf_s": spec.zipf_s if spec.popularity == "zipf" else None,
        "seed": spec.seed,
        "timeout_s": spec.timeout_s,
        "pool_size": spec.pool_size,
        "handles": (
            {"dataset": {"count": handles.count, "seed": handles.seed, "prefix": handles.prefix,
                         "enterprises": handles.enterprises}}
            if isinstance(handles, DatasetSpec) else {"list": len(handles)}
        ),
        **spec.extra,
    }  # fmt: skip
    if spec.protocol == "dns":
        settings.update(dns_zone=spec.dns_zone, dns_qtype=spec.dns_qtype)
    return settings


def merge(reports: list[dict], spec: LoadSpec, server_cpu: dict | None, other_load: list[dict]) -> dict:
    """One result from the processes' reports."""
    protocol = PROTOCOLS[spec.protocol]
    samples = array.array("q")
    raw_codes: dict[int, int] = {}
    totals = dict.fromkeys(_RARE, 0)
    per_process = []
    timeline: list[int] = []
    for report in sorted(reports, key=lambda r: r["index"]):
        chunk = array.array("q")
        chunk.frombytes(report["latencies_ns"])
        samples.extend(chunk)
        for key in totals:
            totals[key] += report[key]
        for slot, n in enumerate(report["timeline"]):
            if slot < len(timeline):
                timeline[slot] += n
            else:
                timeline.append(n)
        for code, n in report["codes"].items():
            raw_codes[code] = raw_codes.get(code, 0) + n
        per_process.append({
            "index": report["index"],
            "answers": report["answers"],
            "answers_per_s": round(report["answers"] / max(report["elapsed_s"], 1e-9), 1),
            "elapsed_s": round(report["elapsed_s"], 3),
            "cpu_s": round(report["cpu_s"], 3),
            "stopped_by": report["stopped_by"],
        })  # fmt: skip
    ordered = sorted(samples)
    points = percentiles(ordered, (50, 90, 99, 99.9))
    nan = float("nan")
    latency_ns = {
        "min": ordered[0] if ordered else nan,
        "p50": points[50],
        "p90": points[90],
        "p99": points[99],
        "p99.9": points[99.9],
        "max": ordered[-1] if ordered else nan,
        "mean": sum(ordered) / len(ordered) if ordered else nan,
    }
    named = _named_codes(protocol, raw_codes)
    longest = max((p["elapsed_s"] for p in per_process), default=0.0)
    return {
        "server": f"{spec.host}:{spec.port}",
        "protocol": spec.protocol,
        "settings": _settings(spec),
        "elapsed_s": round(longest, 3),
        "answers": len(ordered),
        "answers_per_s": round(sum(p["answers_per_s"] for p in per_process), 1),
        "success": named.get(protocol.found, 0),
        "not_found": named.get(protocol.missing, 0),
        "codes": named,
        "errors": {name: n for name, n in named.items() if protocol.outcome(name) == "error"},
        "sent": totals["sent"],
        "lost": totals["lost"],
        "late": totals["late"],
        "malformed": totals["malformed"],
        "send_errors": totals["send_errors"],
        "receive_errors": totals["receive_errors"],
        "reconnects": totals["reconnects"],
        "outstanding_at_end": totals["outstanding"],
        "unsent_at_end": totals["unsent"],
        "send_lag_max_us": max((r["send_lag_max_us"] for r in reports), default=0.0),
        "stopped_by": sorted({p["stopped_by"] for p in per_process}),
        "latency_us": {k: round(v / 1000, 1) for k, v in latency_ns.items()},
        "latency_histogram": latency_histogram(ordered),
        "timeline_interval_s": TIMELINE_INTERVAL_S,
        "answers_per_s_timeline": [round(n / TIMELINE_INTERVAL_S) for n in timeline],
        "generator_cpu": round(sum(p["cpu_s"] for p in per_process) / longest, 3) if longest else 0.0,
        "server_cpu": server_cpu,
        "other_load": other_load,
        "per_process": per_process,
    }


# --- presentation -----------------------------------------------------------------------------------------


def progress_line(protocol: str, snapshots: dict[int, dict]) -> str:
    """One line of live progress from the processes' latest reports (cumulative counts)."""
    proto = PROTOCOLS[protocol]
    snaps = list(snapshots.values())
    measuring = all(s["measuring"] for s in snaps)
    rate = sum(s["answers"] / s["elapsed_s"] for s in snaps if s["elapsed_s"] > 0)
    found = missing = errors = 0
    for s in snaps:
        for code, n in s["codes"].items():
            outcome = proto.outcome(proto.code_name(code))
            if outcome == "found":
                found += n
            elif outcome == "missing":
                missing += n
            else:
                errors += n
    phase = f"{max(s['elapsed_s'] for s in snaps):6.1f} s" if measuring else "warm-up "
    return (
        f"{phase}  {rate:>10,.0f} answers/s so far  answers {found + missing + errors:,}  "
        f"not found {missing:,}  errors {errors:,}  lost {sum(s['lost'] for s in snaps):,}"
    )


def format_result(result: dict) -> str:
    """A short human-readable table of a run's result."""
    s = result["settings"]
    protocol = PROTOCOLS[result.get("protocol", "udp")]
    lat = result["latency_us"]
    if s.get("mode") == "open":
        load = f"open loop at {s['rate']:,.0f}/s over {s['processes']} process(es) x {s['sockets_per_process']} sockets"
    else:
        load = (
            f"{s['processes']} process(es) x {s['sockets_per_process']} sockets x window {s['window']} = "
            f"{s['outstanding']} outstanding"
        )
    bound = f"{s['count']:,} answers" if s.get("count") else f"{s['duration_s']:g} s"
    popularity = f"Zipf s={s['zipf_s']:g}" if s.get("popularity") == "zipf" else "uniform"
    lines = [
        f"{protocol.label} {result['server']}: {load}, missing {s['missing_ratio']:.0%}, {popularity}, "
        f"{bound} measured after {s['warmup_s']:g} s warm-up",
        "",
        f"answers/s   {result['answers_per_s']:>12,.0f}",
        f"answers     {result['answers']:>12,}   (sent {result['sent']:,})",
        f"found       {result['success']:>12,}   {protocol.found}",
        f"not found   {result['not_found']:>12,}   {protocol.missing} (asked for missing identifiers)",
        f"errors      {sum(result['errors'].values()):>12,}",
    ]
    for name, n in result["errors"].items():
        lines.append(f"  {name:<22}{n:>12,}")
    lines.append(
        f"lost        {result['lost']:>12,}   (timeout {s['timeout_s']:g} s, late {result['late']:,})"
    )
    other = {
        k: result[k]
        for k in ("malformed", "send_errors", "receive_errors", "reconnects", "unsent_at_end")
        if result.get(k)
    }
    if other:
        lines.append("other       " + ", ".join(f"{k} {v:,}" for k, v in other.items()))
    if s.get("mode") == "open":
        lines.append(f"schedule    sends fell behind by at most {result['send_lag_max_us'] / 1000:,.1f} ms")
    lines += [
        "",
        "latency µs     Min      P50      P90      P99    P99.9      Max",
        "          " + "".join(f"{lat[k]:>9,.0f}" for k in ("min", "p50", "p90", "p99", "p99.9", "max")),
        "",
        f"generator CPU {result['generator_cpu']:.2f} cores"
        + (
            "; server CPU " + ", ".join(f"pid {p}: {c:.2f}" for p, c in result["server_cpu"].items())
            if result.get("server_cpu")
            else ""
        ),
    ]
    if result.get("machine_busy"):
        busy = result["machine_busy"]
        lines[-1] += f"; whole machine {busy['cores']:.2f} of {busy['of']} cores"
    if result.get("other_load"):
        lines.append(
            "WARNING: other processes were busy meanwhile: "
            + ", ".join(f"{o['name']} ({o['pid']}) {o['cpu']:.2f}" for o in result["other_load"])
        )
    return "\n".join(lines)


def summary_rows(result: dict) -> list[tuple[str, str, str]]:
    """(figure, measured, target) rows of a result for its markdown summary (bench.results_io.write_summary)."""
    latency = result["latency_us"]
    errors = sum(result["errors"].values())
    server = ", ".join(f"{share:.2f} (pid {pid})" for pid, share in (result.get("server_cpu") or {}).items())
    return [
        ("answers/s", f"{result['answers_per_s']:,.0f}", ""),
        ("answers", f"{result['answers']:,} ({result['not_found']:,} not found)", ""),
        ("errors", f"{errors:,}" + (f" ({', '.join(sorted(result['errors']))})" if errors else ""), "0"),
        ("lost", f"{result['lost']:,}", "0"),
        ("latency µs min / P50 / P90 / P99 / P99.9 / max",
         " / ".join(f"{latency[k]:,.0f}" for k in ("min", "p50", "p90", "p99", "p99.9", "max")), ""),
        ("generator CPU (cores)", f"{result['generator_cpu']:.2f}", ""),
        ("server CPU (cores)", server or "not measured (--server-pid)", ""),
    ]  # fmt: skip
