"""The PNG of a run (or of several, as the scale run draws its stores side by side): answers/s over time, and the
latency distribution as a CDF on a log axis with the percentiles marked. Drawn from result dicts alone (the
timeline and the log-binned histogram), so a JSON written earlier can be drawn again.

matplotlib is the optional ``bench`` extra: without it the functions return why there is no chart and write
nothing. Imports nothing of the server.
"""

from __future__ import annotations

from pathlib import Path

NO_MATPLOTLIB = "matplotlib is not installed (pip install -e '.[bench]'): no PNG"
_MARKED = (("p50", "P50", 0.5), ("p90", "P90", 0.9), ("p99", "P99", 0.99), ("p99.9", "P99.9", 0.999))


def pyplot():
    """matplotlib.pyplot drawing to files only (the Agg backend), or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def series_of(result: dict, label: str | None = None) -> dict:
    """What the plot needs of one run's result."""
    settings = result.get("settings", {})
    return {
        "label": label or f"{result.get('protocol', 'udp')} {result.get('server', '')}".strip(),
        "timeline": result.get("answers_per_s_timeline", []),
        "interval_s": result.get("timeline_interval_s", 0.5),
        "histogram": result.get("latency_histogram", {}),
        "latency_us": result.get("latency_us", {}),
        "target_rate": settings.get("rate"),
    }


def plot_series(series: list[dict], path: Path, title: str) -> str:
    """Two panels for the runs in ``series`` (see :func:`series_of`). Returns "" or why there is no chart."""
    plt = pyplot()
    if plt is None:
        return NO_MATPLOTLIB
    import matplotlib.ticker

    fig, (rate_ax, latency_ax) = plt.subplots(1, 2, figsize=(13, 4.8), dpi=110)
    for number, one in enumerate(series):
        colour = f"C{number}"
        times = [(i + 1) * one["interval_s"] for i in range(len(one["timeline"]))]
        rate_ax.plot(times, [r / 1000 for r in one["timeline"]], color=colour, marker=".", label=one["label"])
        if one.get("target_rate"):
            rate_ax.axhline(one["target_rate"] / 1000, color=colour, linestyle="--", linewidth=0.8,
                            label=f"target {one['target_rate']:,.0f}/s")  # fmt: skip
        histogram = one["histogram"]
        total = sum(histogram.get("counts", []))
        if total:
            running, cdf = 0, []
            for n in histogram["counts"]:
                running += n
                cdf.append(running / total)
            # Points at the bins' upper edges, joined by lines: within a bin the samples' spread is unknown.
            first_lower = histogram["upper_us"][0] / 10 ** (1 / histogram["bins_per_decade"])
            latency_ax.plot(
                [first_lower, *histogram["upper_us"]], [0.0, *cdf], color=colour, label=one["label"]
            )
            marked = [(name, share, one["latency_us"].get(key)) for key, name, share in _MARKED]
            marked = [(name, share, value) for name, share, value in marked if value]
            latency_ax.plot(
                [v for _, _, v in marked], [s for _, s, _ in marked], "o", color=colour, markersize=3
            )
            if len(series) == 1:
                latency_ax.text(0.02, 0.97, "\n".join(f"{name} {value:,.0f} µs" for name, _, value in marked),
                                transform=latency_ax.transAxes, va="top", fontsize=8)  # fmt: skip
    rate_ax.set_xlabel("seconds of the measurement")
    rate_ax.set_ylabel("thousand answers/s")
    top = max(
        [r for one in series for r in one["timeline"]] + [one.get("target_rate") or 0 for one in series] + [1]
    )
    rate_ax.set_ylim(0, top / 1000 * 1.15)
    rate_ax.set_title("answers/s over time", fontsize=10)
    latency_ax.set_xscale("log")
    latency_ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    latency_ax.set_ylim(0, 1.01)
    latency_ax.set_xlabel("latency, µs (log)")
    latency_ax.set_ylabel("share of answers at or below")
    latency_ax.set_title("latency distribution (CDF)", fontsize=10)
    for ax in (rate_ax, latency_ax):
        ax.grid(True, which="both", alpha=0.3)
        if len(series) > 1 or series[0].get("target_rate"):
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return ""


def plot_result(result: dict, path: Path, title: str | None = None) -> str:
    """The PNG of one run. Returns "" or why there is no chart."""
    if title is None:
        s = result.get("settings", {})
        mode = f"open loop {s['rate']:,.0f}/s" if s.get("mode") == "open" else "closed loop"
        title = (f"{result.get('protocol', 'udp')} {result.get('server', '')}, {mode}: "
                 f"{result.get('answers_per_s', 0):,.0f} answers/s")  # fmt: skip
    return plot_series([series_of(result)], path, title)
