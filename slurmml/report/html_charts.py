"""SVG charts drawn as text, for the report's HTML page (slurmml.report.html): metric curves, efficiency
histograms, horizontal bars. No scripts: tooltips are SVG <title> elements, which browsers show by themselves.
Also the number formats the charts and the page share."""

from __future__ import annotations

import math
from html import escape
from typing import Any, Iterable, Optional, Sequence


# -- formatting -------------------------------------------------------------------------------------------------

def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def hours(value: Optional[float]) -> str:
    if not finite(value):
        return "–"
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def number(value: Optional[float]) -> str:
    if not finite(value):
        return "–"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1e5 or magnitude < 1e-3:
        return f"{value:.3g}"
    if magnitude >= 100:
        return f"{value:,.1f}".rstrip("0").rstrip(".")
    return f"{value:.4f}".rstrip("0").rstrip(".")


# -- SVG charts -------------------------------------------------------------------------------------------------

def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 x 10^k apart) covering [lo, hi]."""
    if not (finite(lo) and finite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(lo / step) * step
    ticks = []
    value = first
    while value < hi + step * 0.999:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _tick_label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.2g}"
    return f"{value:.6g}"


def line_chart(series: Sequence[tuple[str, str, list[tuple[Any, float]]]], width: int = 720, height: int = 330,
               x_label: str = "step", y_label: str = "") -> str:
    """series: (label, color, [(step, value)]). Non-finite values break the line."""
    points_by_series = []
    for label, color, points in series:
        clean = [(float(x if x is not None else i), float(y)) for i, (x, y) in enumerate(points)]
        points_by_series.append((label, color, clean))
    xs = [x for _, _, pts in points_by_series for x, y in pts]
    ys = [y for _, _, pts in points_by_series for x, y in pts if math.isfinite(y)]
    if not xs or not ys:
        return '<div class="empty">No points logged for this metric yet.</div>'
    left, right, top, bottom = 62, 16, 12, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    x_ticks = nice_ticks(min(xs), max(xs), 6)
    span = max(ys) - min(ys)
    pad = span * 0.06 if span else (abs(max(ys)) * 0.05 or 1.0)
    low = min(ys) - pad
    if min(ys) >= 0 > low:
        low = 0.0  # a metric that never goes negative gets no negative axis
    y_ticks = nice_ticks(low, max(ys) + pad, 5)
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def sx(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - (y - y0) / ((y1 - y0) or 1) * plot_h

    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             f'aria-label="{escape(y_label)} by {escape(x_label)}">']
    for y in y_ticks:
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" stroke="#edf0f4"/>')
        parts.append(f'<text x="{left - 8}" y="{sy(y) + 4:.1f}" text-anchor="end">{_tick_label(y)}</text>')
    for x in x_ticks:
        parts.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top + plot_h}" y2="{top + plot_h + 5}" '
                     f'stroke="#98a2b3"/>')
        parts.append(f'<text x="{sx(x):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{_tick_label(x)}</text>')
    parts.append(f'<line x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#98a2b3"/>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 4}" text-anchor="middle">{escape(x_label)}</text>')
    if y_label:
        parts.append(f'<text transform="translate(13 {top + plot_h / 2:.0f}) rotate(-90)" text-anchor="middle">'
                     f'{escape(y_label)}</text>')
    for label, color, pts in reversed(points_by_series):  # the best run is drawn last, on top
        runs, current = [], []
        for x, y in pts:
            if math.isfinite(y):
                current.append(f"{sx(x):.1f},{sy(y):.1f}")
            elif current:
                runs.append(current)
                current = []
        if current:
            runs.append(current)
        for segment in runs:
            if len(segment) == 1:
                cx, cy = segment[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>')
            else:
                parts.append(f'<polyline points="{" ".join(segment)}" fill="none" stroke="{color}" stroke-width="2.2" '
                             f'stroke-linejoin="round" stroke-linecap="round"><title>{escape(label)}</title></polyline>')
        finite = [(x, y) for x, y in pts if math.isfinite(y)]
        if finite:
            x, y = finite[-1]
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3.5" fill="#fff" stroke="{color}" '
                         f'stroke-width="2"><title>{escape(label)}: {number(y)} at {_tick_label(x)}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def histogram_counts(values: Iterable[float]) -> list[int]:
    """Counts in ten 10 % bins (the last includes 100 %) and one bin for figures above 100 %."""
    counts = [0] * 11
    for value in values:
        if not finite(value):
            continue
        if value > 1.0:
            counts[10] += 1
        else:
            counts[min(9, int(max(0.0, value) * 10 + 1e-9))] += 1
    return counts


def histogram(values: list[float], color: str, width: int = 380, height: int = 190) -> str:
    counts = histogram_counts(values)
    if not any(counts):
        return '<div class="empty">No figures yet.</div>'
    left, right, top, bottom = 30, 6, 16, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    gap = 3
    bar_w = plot_w / 11.8  # ten 10 % bins, a gap, and the bin for figures over 100 %
    peak = max(counts)
    y_ticks = [t for t in nice_ticks(0, peak, 3) if t == int(t)]
    y_max = y_ticks[-1] or 1

    def bin_x(i: int) -> float:
        return left + i * bar_w + (0.8 * bar_w if i == 10 else 0)

    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">']
    for t in y_ticks:
        y = top + plot_h - t / y_max * plot_h
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#edf0f4"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{int(t)}</text>')
    for i, count in enumerate(counts):
        x = bin_x(i) + gap / 2
        h = count / y_max * plot_h
        label = f"{i * 10}–{i * 10 + 10}%" if i < 10 else "over 100%"
        fill = "#c93c3c" if i == 10 else color
        if count:
            parts.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w - gap:.1f}" height="{h:.1f}" '
                         f'rx="2" fill="{fill}"><title>{label}: {count} run{"s" * (count != 1)}</title></rect>')
            parts.append(f'<text x="{x + (bar_w - gap) / 2:.1f}" y="{top + plot_h - h - 4:.1f}" '
                         f'text-anchor="middle" style="font-size:10px">{count}</text>')
    base = top + plot_h
    parts.append(f'<line x1="{left}" x2="{bin_x(10) - 0.4 * bar_w:.1f}" y1="{base}" y2="{base}" stroke="#98a2b3"/>')
    parts.append(f'<line x1="{bin_x(10):.1f}" x2="{bin_x(11):.1f}" y1="{base}" y2="{base}" stroke="#98a2b3"/>')
    for i in range(0, 11, 2):
        parts.append(f'<text x="{bin_x(i) if i < 10 else left + 10 * bar_w:.1f}" y="{base + 15}" '
                     f'text-anchor="middle">{i * 10}%</text>')
    over_color = "#c93c3c" if counts[10] else "#98a2b3"
    parts.append(f'<text x="{bin_x(10) + bar_w / 2:.1f}" y="{base + 15}" text-anchor="middle" '
                 f'style="fill:{over_color}">over</text>')
    parts.append(f'<text x="{left + 5 * bar_w:.0f}" y="{height - 3}" text-anchor="middle">runs per 10% bin</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(items: list[tuple[str, float, str]], width: int = 460, unit: str = "GPU-h") -> str:
    """Horizontal bars: (label, value, color)."""
    items = [(label, value, color) for label, value, color in items if finite(value) and value > 0]
    if not items:
        return '<div class="empty">No GPU time recorded for these runs.</div>'
    row_h, right, top = 30, 90, 6
    left = 20 + 8 * max(len(label) for label, _, _ in items)  # 12 px text, capitals included
    height = top * 2 + row_h * len(items)
    peak = max(value for _, value, _ in items)
    plot_w = width - left - right
    total = sum(value for _, value, _ in items)
    parts = [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img">']
    for i, (label, value, color) in enumerate(items):
        y = top + i * row_h
        w = max(2.0, value / peak * plot_w)
        parts.append(f'<text x="{left - 10}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end" '
                     f'style="font-size:12px;fill:#1d2330">{escape(label)}</text>')
        parts.append(f'<rect x="{left}" y="{y + 5}" width="{w:.1f}" height="{row_h - 10}" rx="3" fill="{color}">'
                     f'<title>{escape(label)}: {hours(value)} {unit}</title></rect>')
        parts.append(f'<text x="{left + w + 8:.1f}" y="{y + row_h / 2 + 4:.1f}" style="font-size:12px">'
                     f'{hours(value)} <tspan style="fill:#98a2b3">({100 * value / total:.0f}%)</tspan></text>')
    parts.append("</svg>")
    return "".join(parts)
