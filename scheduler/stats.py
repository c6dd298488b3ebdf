"""Per-definition statistics: success rate per day, durations, their median and 95th
percentile, the last failures - over a bounded window (the runs queued in the last
30 days, at most the newest 5000), in two queries."""

from __future__ import annotations

import datetime as dt
import statistics
from typing import Any

from django.utils import timezone

from scheduler import charts
from scheduler.models import Run, TaskDefinition

WINDOW_DAYS = 30
MAX_RUNS = 5000  # the newest ones of the window
MAX_DOTS = 1500  # the duration chart thins out evenly past this many runs
BAD = {Run.State.FAILED, Run.State.TIMED_OUT, Run.State.LOST}


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation, None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def definition_stats(definition: TaskDefinition, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    start = now - dt.timedelta(days=WINDOW_DAYS)
    # The runs queued in the window that have ended: read along the (definition,
    # -queued_at) index, so only this definition's rows are visited, newest first.
    rows = list(
        Run.objects.filter(definition=definition, queued_at__gte=start, state__in=Run.FINAL_STATES)
        .order_by("-queued_at", "-id")
        .values_list("pk", "state", "started_at", "finished_at", "core_hours", "cost")[:MAX_RUNS]
    )
    tz = timezone.get_current_timezone()
    today = timezone.localtime(now, tz).date()
    days = [today - dt.timedelta(days=i) for i in range(WINDOW_DAYS - 1, -1, -1)]
    per_day: dict[dt.date, list[int]] = {d: [0, 0] for d in days}  # [succeeded, ended badly]
    points, succeeded_durations, bad_ids = [], [], []
    usage: dict[dt.date, list] = {}  # day -> [core-hours, cost or None]
    for pk, state, started, finished, core_hours, cost in rows:
        if finished is None:  # not expected of an ended run; nothing to place it by
            continue
        if core_hours:
            used = usage.setdefault(timezone.localtime(finished, tz).date(), [0.0, None])
            used[0] += core_hours
            if cost is not None:
                used[1] = (used[1] or 0) + cost
        if state in BAD and len(bad_ids) < 10:
            bad_ids.append(pk)
        day = timezone.localtime(finished, tz).date()
        if day in per_day and state != Run.State.CANCELLED:
            per_day[day][0 if state == Run.State.SUCCEEDED else 1] += 1
        if started is not None:
            seconds = (finished - started).total_seconds()
            points.append((finished, seconds, state))
            if state == Run.State.SUCCEEDED:
                succeeded_durations.append(seconds)
    day_rows = []
    for d in days:
        ok, bad = per_day[d]
        total = ok + bad
        day_rows.append((d, ok / total if total else None, total))
    total_ok = sum(v[0] for v in per_day.values())
    total = total_ok + sum(v[1] for v in per_day.values())
    median = statistics.median(succeeded_durations) if succeeded_durations else None
    p95 = percentile(succeeded_durations, 95)
    lines = {k: v for k, v in (("median", median), ("p95", p95)) if v is not None}
    # The last failures are among the rows read: fetch their error text by id.
    failures = list(
        Run.objects.filter(pk__in=bad_ids)
        .order_by("-finished_at", "-id")
        .only("pk", "state", "finished_at", "error", "exit_code")
    )
    points.sort(key=lambda p: p[0])
    step = -(-len(points) // MAX_DOTS)  # ceil: every step-th run is drawn
    dots = points[::step] if step > 1 else points
    return {
        "window_days": WINDOW_DAYS,
        "runs": len(rows),
        "capped": len(rows) >= MAX_RUNS,
        "success_rate": total_ok / total if total else None,
        "median": median,
        "p95": p95,
        "failures": failures,
        "rate_chart": charts.bars_per_day(day_rows, title="Success rate per day"),
        "duration_chart": charts.durations(dots, start=start, end=now, lines=lines),
        "dots_every": step,
        "day_rows": day_rows,
        "points": points,
        # Core-hours and cost per day (days with use only), newest first, and in all.
        "usage": [(d, *usage[d]) for d in sorted(usage, reverse=True)],
        "core_hours": sum(u[0] for u in usage.values()),
        "cost": sum(u[1] for u in usage.values() if u[1] is not None)
        if any(u[1] is not None for u in usage.values())
        else None,
    }
