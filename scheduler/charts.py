"""Charts drawn on the server as SVG: no JavaScript library, no CDN.

Every label goes through ``escape``; the functions return markup ready for a
template (``mark_safe``), with each mark carrying a ``<title>`` for a tooltip.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

STATE_COLOURS = {
    "QUEUED": "#9aa5b1",
    "SUBMITTED": "#7fa7d9",
    "RUNNING": "#2f80ed",
    "SUCCEEDED": "#27ae60",
    "FAILED": "#eb5757",
    "CANCELLED": "#b0b0b0",
    "TIMED_OUT": "#f2994a",
    "LOST": "#9b51e0",
}


@dataclass
class Bar:
    lane: str
    start: dt.datetime
    end: dt.datetime
    state: str
    title: str
    url: str = ""


@dataclass
class Mark:
    lane: str
    at: dt.datetime
    title: str


def _x(t: dt.datetime, start: dt.datetime, end: dt.datetime, left: float, width: float) -> float:
    span = (end - start).total_seconds() or 1
    return left + width * min(1.0, max(0.0, (t - start).total_seconds() / span))


def timeline(
    bars: list[Bar],
    marks: list[Mark],
    *,
    start: dt.datetime,
    end: dt.datetime,
    now: dt.datetime,
    tz: dt.tzinfo,
    width: int = 960,
    lane_height: int = 18,
    label_width: int = 160,
) -> SafeString:
    """Runs as bars (coloured by state) and upcoming occurrences as marks, one lane
    per task, between ``start`` and ``end``, with an hour axis and a "now" line."""
    lanes = sorted({b.lane for b in bars} | {m.lane for m in marks})
    plot = width - label_width - 10
    height = 24 + lane_height * max(1, len(lanes)) + 6
    out = [
        # Scales to its box (viewBox), so the whole 48 hours are always in sight.
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="100%" '
        f'viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Runs of the last and next hours">'
    ]
    # Hour axis: a tick every 3 hours of the site's clock. Stepped in real hours
    # (through UTC), so a DST change neither repeats nor skips a tick's place.
    tick = start.astimezone(tz).replace(minute=0, second=0, microsecond=0)
    while tick <= end:
        if tick >= start and tick.hour % 3 == 0:
            x = _x(tick, start, end, label_width, plot)
            out.append(
                f'<line x1="{x:.1f}" y1="14" x2="{x:.1f}" y2="{height - 4}" class="tl-grid"/>'
                f'<text x="{x:.1f}" y="11" class="tl-tick">{tick:%H:%M}</text>'
            )
        tick = (tick.astimezone(dt.UTC) + dt.timedelta(hours=1)).astimezone(tz)
    index = {lane: i for i, lane in enumerate(lanes)}
    for lane, i in index.items():
        y = 24 + i * lane_height
        out.append(
            f'<text x="{label_width - 6}" y="{y + lane_height * 0.7:.1f}" class="tl-lane">'
            f"{escape(lane[:28])}</text>"
        )
    for b in bars:
        y = 24 + index[b.lane] * lane_height + 3
        x1 = _x(b.start, start, end, label_width, plot)
        x2 = max(x1 + 2, _x(b.end, start, end, label_width, plot))
        rect = (
            f'<rect x="{x1:.1f}" y="{y}" width="{x2 - x1:.1f}" height="{lane_height - 6}" '
            f'fill="{STATE_COLOURS.get(b.state, "#777")}" class="tl-bar tl-{escape(b.state.lower())}">'
            f"<title>{escape(b.title)}</title></rect>"
        )
        out.append(f'<a href="{escape(b.url)}">{rect}</a>' if b.url else rect)
    for m in marks:
        y = 24 + index[m.lane] * lane_height + lane_height / 2
        x = _x(m.at, start, end, label_width, plot)
        out.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" class="tl-mark">'
            f"<title>{escape(m.title)}</title></circle>"
        )
    x = _x(now, start, end, label_width, plot)
    out.append(
        f'<line x1="{x:.1f}" y1="14" x2="{x:.1f}" y2="{height}" class="tl-now"/>'
        f'<text x="{x + 3:.1f}" y="{height - 2}" class="tl-tick">now</text>'
    )
    out.append("</svg>")
    return mark_safe("".join(out))  # noqa: S308 - every label above is escaped


def bars_per_day(
    days: list[tuple[dt.date, float | None, int]],
    *,
    width: int = 720,
    height: int = 160,
    title: str = "",
) -> SafeString:
    """Success rate per day: one bar per day (0-100 %), empty days left blank."""
    left, bottom = 34, 18
    plot_w, plot_h = width - left - 6, height - bottom - 8
    step = plot_w / max(1, len(days))
    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
    ]
    for pct in (0, 50, 100):
        y = 8 + plot_h * (1 - pct / 100)
        out.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 6}" y2="{y:.1f}" class="ch-grid"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" class="ch-axis">{pct}%</text>'
        )
    for i, (day, rate, total) in enumerate(days):
        x = left + i * step
        if rate is not None:
            h = plot_h * rate
            colour = "#27ae60" if rate >= 0.95 else "#f2994a" if rate >= 0.8 else "#eb5757"
            out.append(
                f'<rect x="{x + 1:.1f}" y="{8 + plot_h - h:.1f}" width="{max(1.0, step - 2):.1f}" '
                f'height="{h:.1f}" fill="{colour}" class="ch-bar">'
                f"<title>{day:%Y-%m-%d}: {rate * 100:.0f}% of {total}</title></rect>"
            )
        if i % 7 == 0:
            out.append(f'<text x="{x:.1f}" y="{height - 4}" class="ch-axis">{day:%m-%d}</text>')
    out.append("</svg>")
    return mark_safe("".join(out))  # noqa: S308 - no free text in this chart


def durations(
    points: list[tuple[dt.datetime, float, str]],
    *,
    start: dt.datetime,
    end: dt.datetime,
    width: int = 720,
    height: int = 180,
    lines: dict[str, float] | None = None,
) -> SafeString:
    """Duration of each run (seconds) over time as dots coloured by state, with
    horizontal lines (e.g. the median and the 95th percentile)."""
    left, bottom = 52, 18
    plot_w, plot_h = width - left - 6, height - bottom - 8
    top = max([p[1] for p in points] + list((lines or {}).values()) + [1.0]) * 1.1
    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Duration per run">'
    ]

    def y(seconds: float) -> float:
        return 8 + plot_h * (1 - seconds / top)

    for frac in (0, 0.5, 1):
        value = top * frac
        out.append(
            f'<line x1="{left}" y1="{y(value):.1f}" x2="{width - 6}" y2="{y(value):.1f}" '
            f'class="ch-grid"/><text x="{left - 4}" y="{y(value) + 4:.1f}" class="ch-axis">'
            f"{_seconds(value)}</text>"
        )
    for at, seconds, state in points:
        out.append(
            f'<circle cx="{_x(at, start, end, left, plot_w):.1f}" cy="{y(seconds):.1f}" r="2.5" '
            f'fill="{STATE_COLOURS.get(state, "#777")}" class="ch-dot">'
            f"<title>{at:%Y-%m-%d %H:%M}: {_seconds(seconds)} ({escape(state)})</title></circle>"
        )
    for name, value in (lines or {}).items():
        out.append(
            f'<line x1="{left}" y1="{y(value):.1f}" x2="{width - 6}" y2="{y(value):.1f}" '
            f'class="ch-line"/><text x="{width - 8}" y="{y(value) - 3:.1f}" class="ch-label">'
            f"{escape(name)} {_seconds(value)}</text>"
        )
    out.append("</svg>")
    return mark_safe("".join(out))  # noqa: S308 - labels escaped


def _seconds(value: float) -> str:
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"
