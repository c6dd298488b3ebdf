"""How the console writes times, durations and sizes: one spelling for every page
(the run page, the live status JSON, the files pages, the dashboard, the charts).

- A time: ``2026-12-02 04:45:13`` in the current time zone (the site's,
  TIME_ZONE), whose name the page says once (``zone_note``).
- A duration: ``850 ms``, ``3.2 s``, ``4 min 12 s``, ``2 h 5 min``, ``3 d 4 h``.
- A size: ``951 bytes``, ``1.2 MB (1,234,567 bytes)``.
"""

from __future__ import annotations

import datetime as dt

from django.utils import timezone
from django.utils.formats import number_format

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


def when(value: dt.datetime | None) -> str:
    """A moment to the second in the current time zone; '' for none."""
    if value is None:
        return ""
    if timezone.is_aware(value):
        value = timezone.localtime(value)
    return value.strftime(TIME_FORMAT)


def zone_note() -> str:
    """The zone the page's times are in, said once per page."""
    name = timezone.get_current_timezone_name()
    offset = timezone.localtime(timezone.now()).strftime("%z")
    offset = f"{offset[:3]}:{offset[3:]}" if offset else ""
    return f"Times are in {name} (UTC{offset})." if name != "UTC" else "Times are in UTC."


def seconds(value: float | dt.timedelta | None) -> str:
    """A duration the way a person says it: ms when short, then s, min, h, d."""
    if value is None:
        return ""
    if isinstance(value, dt.timedelta):
        value = value.total_seconds()
    value = max(0.0, float(value))
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 10:
        return f"{value:.1f} s"
    if value < 60:
        return f"{value:.0f} s"
    whole = int(round(value))
    if whole < 3600:
        minutes, secs = divmod(whole, 60)
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    if whole < 86400:
        hours, rest = divmod(whole, 3600)
        minutes = rest // 60
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, rest = divmod(whole, 86400)
    hours = rest // 3600
    return f"{days} d {hours} h" if hours else f"{days} d"


def size(value: int | None) -> str:
    """Bytes as a person reads them; the exact count beside a rounded one."""
    if value is None:
        return ""
    exact = number_format(value, force_grouping=True)
    if value < 1024:
        return f"{exact} byte{'' if value == 1 else 's'}"
    for unit, scale in (("KB", 1024), ("MB", 1024**2), ("GB", 1024**3), ("TB", 1024**4)):
        if value < scale * 1024 or unit == "TB":
            return f"{value / scale:.1f} {unit} ({exact} bytes)"
    return exact  # not reached


def duration(run) -> str:
    """How long the run ran, or has run so far."""
    if run.started_at is None:
        return ""
    return seconds(run.duration) + ("" if run.finished_at else " so far")


def wait(run) -> str:
    """From when the run was due (or queued, if later) to its start, or so far."""
    if run.queued_at is None or run.due_at is None:
        return ""
    since = max(run.queued_at, run.due_at)
    until = run.started_at or (None if run.is_final else timezone.now())
    if until is None or until < since:
        return ""
    return seconds(until - since) + ("" if run.started_at else " so far")


def run_times(run) -> dict[str, str]:
    """A run's times and the spans between them, written out for a page."""
    return {
        "due_at": when(run.due_at),
        "queued_at": when(run.queued_at),
        "submitted_at": when(run.submitted_at),
        "started_at": when(run.started_at),
        "finished_at": when(run.finished_at),
        "duration": duration(run),
        "wait": wait(run),
    }
