"""Charts drawn on the server as inline SVG: no script, no assets, nothing fetched, readable in any browser
and in a screenshot. A stacked bar per day with a legend; each bar carries a <title> with its numbers (a
tooltip on hover, read by screen readers). Pure functions of their data; no I/O."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from resolver.console.markup import Html, join, render

WIDTH, HEIGHT = 720, 240  #: the drawing's own units; it scales to the page's width
LEFT, RIGHT, TOP, BOTTOM = 56, 8, 10, 44  #: room for the axis labels
PALETTE = ("#1f5fa0", "#e07b24", "#2e9e5b", "#b3261e", "#7b52ab", "#8c6d31", "#5d6b78")  #: series colours
GRID_LINES = 4  #: horizontal lines of the value axis


def _nice_top(value: int) -> int:
    """The smallest 1, 2 or 5 × 10^n at or above `value`: round axis labels."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if step * top >= value:
                return step * top
        top *= 10


def _short(n: int) -> str:
    for size, unit in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def stacked_bars(title: str, days: Sequence[str], series: Mapping[str, Mapping[str, int]]) -> Html:
    """One bar per day (`days`, YYYYMMDD), stacked by series name -> day -> count, with a legend."""
    names = list(series)
    totals = [sum(series[name].get(day, 0) for name in names) for day in days]
    step = _nice_top(-(-max(totals, default=0) // GRID_LINES) or 1)  # whole numbers on every grid line
    top = step * GRID_LINES
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(days), 1)
    bar_w = max(slot * 0.75, 1.0)
    parts = []
    for n in range(GRID_LINES + 1):
        y = TOP + plot_h - plot_h * n / GRID_LINES
        parts.append(render(
            '<line x1="{x1}" y1="{y:.1f}" x2="{x2}" y2="{y:.1f}" stroke="#e1e6eb"/>'
            '<text x="{tx}" y="{ty:.1f}" text-anchor="end">{label}</text>',
            x1=LEFT, x2=WIDTH - RIGHT, y=y, tx=LEFT - 4, ty=y + 4, label=_short(step * n),
        ))  # fmt: skip
    label_every = max(1, len(days) // 10)
    for i, day in enumerate(days):
        x = LEFT + i * slot + (slot - bar_w) / 2
        base = TOP + plot_h
        tip = [f"{day[:4]}-{day[4:6]}-{day[6:]}: {totals[i]:,}"]
        for k, name in enumerate(names):
            n = series[name].get(day, 0)
            if not n:
                continue
            h = plot_h * n / top
            base -= h
            tip.append(f"{name} {n:,}")
            parts.append(render(
                '<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="{}"/>',
                x, base, bar_w, h, PALETTE[k % len(PALETTE)],
            ))  # fmt: skip
        parts.append(render(
            '<rect x="{:.1f}" y="{}" width="{:.1f}" height="{}" fill="transparent"><title>{}</title></rect>',
            LEFT + i * slot, TOP, slot, plot_h, " · ".join(tip),
        ))  # fmt: skip
        if i % label_every == 0:
            parts.append(render(
                '<text x="{:.1f}" y="{}" text-anchor="middle">{}</text>',
                LEFT + i * slot + slot / 2, HEIGHT - BOTTOM + 14, f"{day[4:6]}-{day[6:]}",
            ))  # fmt: skip
    legend = []
    x = LEFT
    for k, name in enumerate(names):
        legend.append(render(
            '<rect x="{}" y="{}" width="10" height="10" fill="{}"/><text x="{}" y="{}">{}</text>',
            x, HEIGHT - 16, PALETTE[k % len(PALETTE)], x + 14, HEIGHT - 7, name,
        ))  # fmt: skip
        x += 24 + 7 * len(name)
    if not any(totals):
        parts.append(render(
            '<text x="{}" y="{}" text-anchor="middle">nothing counted in these days</text>',
            LEFT + plot_w / 2, TOP + plot_h / 2,
        ))  # fmt: skip
    return render(
        '<figure><figcaption>{title}</figcaption><svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" '
        'width="{w}" height="{h}" role="img" aria-label="{title}">{parts}{legend}</svg></figure>',
        title=title, w=WIDTH, h=HEIGHT, parts=join(parts), legend=join(legend),
    )  # fmt: skip
