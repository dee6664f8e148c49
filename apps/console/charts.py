"""Server-rendered SVG charts for the admin dashboard: no JavaScript library, no CDN, works printed.

Everything interpolated into the markup is either a number we computed or passes through
``escape``, so a team called ``<script>`` renders as text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

# An upper bound on one character's advance at the axis' 11 px (digits and "$" are about 6.1 px in the
# admin's sans-serif fonts; the chart scales down with the page, so the margin scales with it).
AXIS_CHAR_WIDTH = 7.0


@dataclass(frozen=True)
class Point:
    label: str
    value: Decimal | float | int
    hint: str = ""  # tooltip text; defaults to "label: value"


def nice_ceiling(value: float) -> float:
    """The smallest 1/2/2.5/5 x 10^n at or above ``value``, so the axis reads in round numbers."""
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value * (1 - 1e-12):
            return step * magnitude
    return 10 * magnitude


def format_money(value: float | Decimal) -> str:
    """Dollars, with as many decimals as it takes to show two significant digits of a tiny amount."""
    value = float(value)
    if value == 0:
        return "$0"
    if abs(value) < 0.01:
        decimals = min(10, 1 - math.floor(math.log10(abs(value))))
        return f"${value:.{decimals}f}"
    if abs(value) < 100:
        return f"${value:,.2f}"
    return f"${value:,.0f}"


def format_count(value: float | Decimal) -> str:
    value = float(value)
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def bar_chart(
    points: Sequence[Point],
    *,
    width: int = 900,
    height: int = 220,
    title: str = "",
    money: bool = True,
    css_class: str = "gw-chart",
    label_every: int = 1,
) -> SafeString:
    """A bar chart with a labelled y axis (0, half, max) and every ``label_every``-th x label."""
    fmt = format_money if money else format_count
    peak = nice_ceiling(max((float(p.value) for p in points), default=0.0))
    ticks = [(fraction, fmt(peak * fraction)) for fraction in (0.0, 0.5, 1.0)]
    # The y axis is as wide as its longest label ("$0.00050" is 8 characters at 11 px), so none is clipped.
    left = max(40, round(max(len(text) for _, text in ticks) * AXIS_CHAR_WIDTH) + 12)
    right, top, bottom = 8, 12, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        f'<svg class="{escape(css_class)}" viewBox="0 0 {width} {height}" width="100%" '
        f'preserveAspectRatio="xMidYMid meet" role="img" aria-label="{escape(title)}">'
    ]
    if title:
        parts.append(f"<title>{escape(title)}</title>")
    for fraction, text in ticks:
        y = top + plot_h * (1 - fraction)
        parts.append(f'<line class="gw-grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        tick = escape(text)
        parts.append(f'<text class="gw-axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>')
    count = max(len(points), 1)
    slot = plot_w / count
    bar_w = max(slot * 0.7, 1.0)
    for index, point in enumerate(points):
        value = float(point.value)
        bar_h = plot_h * value / peak if peak else 0
        x = left + slot * index + (slot - bar_w) / 2
        y = top + plot_h - bar_h
        hint = point.hint or f"{point.label}: {fmt(value)}"
        parts.append(
            f'<rect class="gw-bar" x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{max(bar_h, 0):.1f}" '
            f'data-value="{value:.6f}"><title>{escape(hint)}</title></rect>'
        )
        if index % label_every == 0:
            parts.append(
                f'<text class="gw-axis" x="{x + bar_w / 2:.1f}" y="{height - 6}" text-anchor="middle">'
                f"{escape(point.label)}</text>"
            )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated string is escaped above
