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
    width: int = 1400,
    lane_height: int = 20,
    label_width: int = 210,
) -> SafeString:
    """Runs as bars (coloured by state) and upcoming occurrences as marks, one lane
    per task, between ``start`` and ``end``, with an hour axis and a "now" line.

    Every lane is drawn across the whole window. Occurrences closer together than
    BAND_GAP px (a schedule every minute is 1,440 a day) are drawn as one band
    with their count instead of dots that merge into something like a run bar."""
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
        # The lane's row under the hour grid (drawn first), across the whole window.
        out.insert(
            1,
            f'<rect x="{label_width}" y="{y}" width="{plot}" height="{lane_height}" '
            f'class="tl-row tl-row-{i % 2}"/>',
        )
        out.append(
            f'<text x="{label_width - 6}" y="{y + lane_height * 0.7:.1f}" class="tl-lane">'
            f"<title>{escape(lane)}</title>{escape(_short(lane, 34))}</text>"
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
    for lane, group in _mark_groups(marks, start, end, label_width, plot):
        y = 24 + index[lane] * lane_height + lane_height / 2
        if len(group) < BAND_MIN:
            for x, m in group:
                out.append(
                    f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" class="tl-mark">'
                    f"<title>{escape(m.title)}</title></circle>"
                )
            continue
        (x1, first), (x2, last) = group[0], group[-1]
        tz_first, tz_last = first.at.astimezone(tz), last.at.astimezone(tz)
        title = f"{len(group):,} occurrences, {tz_first:%H:%M} to {tz_last:%H:%M}"
        out.append(
            f'<g class="tl-band"><title>{escape(title)}</title>'
            f'<rect x="{x1 - 3:.1f}" y="{y - 6:.1f}" width="{x2 - x1 + 6:.1f}" height="12" rx="6"/>'
        )
        if x2 - x1 > 36:
            out.append(
                f'<text x="{(x1 + x2) / 2:.1f}" y="{y + 3.5:.1f}">{len(group):,}\u00d7</text>'
            )
        out.append("</g>")
    x = _x(now, start, end, label_width, plot)
    out.append(
        f'<line x1="{x:.1f}" y1="14" x2="{x:.1f}" y2="{height}" class="tl-now"/>'
        f'<text x="{x + 3:.1f}" y="{height - 2}" class="tl-tick">now</text>'
    )
    out.append("</svg>")
    return mark_safe("".join(out))  # noqa: S308 - every label above is escaped


BAND_GAP = 6.0  # px: marks closer than this join a band
BAND_MIN = 3  # marks: fewer than this stay dots


def _mark_groups(marks, start, end, left, width):
    """(lane, [(x, mark), ...]) runs of a lane's marks, each next one within
    BAND_GAP px of the one before."""
    by_lane: dict[str, list] = {}
    for m in marks:
        by_lane.setdefault(m.lane, []).append((_x(m.at, start, end, left, width), m))
    for lane, placed in by_lane.items():
        placed.sort(key=lambda p: p[0])
        group = [placed[0]]
        for p in placed[1:]:
            if p[0] - group[-1][0] < BAND_GAP:
                group.append(p)
            else:
                yield lane, group
                group = [p]
        yield lane, group


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "\u2026"


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
    ticks = duration_ticks(max([p[1] for p in points] + list((lines or {}).values()) + [0.0]))
    top = ticks[-1]
    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="Duration per run">'
    ]

    def y(seconds: float) -> float:
        return 8 + plot_h * (1 - seconds / top)

    for value in ticks:
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
    # Line labels at the right end, above their line; one that would overlap the
    # label before it goes below its line instead.
    last_label_y = None
    for name, value in sorted((lines or {}).items(), key=lambda kv: -kv[1]):
        label_y = y(value) - 3
        if last_label_y is not None and label_y - last_label_y < 12:
            label_y = max(y(value) + 11, last_label_y + 12)
        last_label_y = label_y
        out.append(
            f'<line x1="{left}" y1="{y(value):.1f}" x2="{width - 6}" y2="{y(value):.1f}" '
            f'class="ch-line"/><text x="{width - 8}" y="{label_y:.1f}" class="ch-label">'
            f"{escape(name)} {_seconds(value)}</text>"
        )
    out.append("</svg>")
    return mark_safe("".join(out))  # noqa: S308 - labels escaped


# Steps a duration axis may take: each a span a person counts in.
DURATION_STEPS = [
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.25,
    0.5,
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    7 * 86400,
]


def duration_ticks(highest: float, most: int = 5) -> list[float]:
    """Axis ticks from 0 to just above ``highest`` (seconds), at most ``most``+1 of
    them, in a step from DURATION_STEPS: 0, 50 ms, 100 ms, 150 ms for a 0.12 s
    p95, 0, 1 min, 2 min ... for minutes. Never two ticks with one label."""
    highest = max(float(highest), 0.001)
    step = next((s for s in DURATION_STEPS if s * most >= highest), None)
    if step is None:
        step = highest / most
    count = max(1, int(-(-highest // step)))  # ceil
    if count * step <= highest:
        count += 1
    return [round(i * step, 6) for i in range(count + 1)]


def _seconds(value: float) -> str:
    from scheduler.display import seconds

    return "0" if value == 0 else seconds(value)
