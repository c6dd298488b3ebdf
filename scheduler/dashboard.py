"""What the admin index shows: the scheduler at a glance, narrowed to what the user may see.

Every query is indexed and bounded: a capped count per state over the state
index, short lists for the rest, so the page stays fast with a million runs
(bench/admin_scale.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.urls import reverse
from django.utils import timezone

from scheduler import access, charts, services
from scheduler import recurrence as maths
from scheduler.models import ExecutionResource, PollerHeartbeat, Run
from scheduler.paginator import COUNT_CAP

TIMELINE_HOURS = 24
TIMELINE_MAX_BARS = 200
TIMELINE_MAX_MARKS = 300


def dashboard_context(user, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    runs = access.visible_runs(user)
    # One capped count per state over the (state, queued_at) index: a million runs
    # never make a full GROUP BY; past the cap the dashboard says "10000+".
    states = []
    for value, label in Run.State.choices:
        n = runs.filter(state=value)[: COUNT_CAP + 1].count()
        states.append((value, label, f"{COUNT_CAP}+" if n > COUNT_CAP else n))
    active = (
        runs.filter(state__in=Run.ACTIVE_STATES)
        .select_related("definition", "resource")
        .order_by("-submitted_at")[:20]
    )
    queued = (
        runs.filter(state=Run.State.QUEUED, due_at__lte=now)
        .select_related("definition")
        .order_by("due_at")[:10]
    )
    failures = (
        runs.filter(
            state__in=[Run.State.FAILED, Run.State.TIMED_OUT, Run.State.LOST],
            finished_at__gte=now - dt.timedelta(days=1),
        )
        .select_related("definition")
        .order_by("-finished_at")[:10]
    )
    upcoming = (
        access.visible_recurrences(user)
        .filter(enabled=True, next_due_at__isnull=False)
        .select_related("definition")
        .order_by("next_due_at")[:10]
    )
    in_flight = services.active_counts("resource_id")
    resources = [
        {"resource": r, "in_flight": in_flight.get(r.pk, 0)}
        for r in ExecutionResource.objects.order_by("name")
    ]
    pollers = [
        {"beat": b, "alive": b.is_alive(now)}
        for b in PollerHeartbeat.objects.order_by("-last_seen_at")[:5]
    ]
    return {
        "timeline": timeline(user, now),
        "state_counts": states,
        "active_runs": active,
        "queued_runs": queued,
        "recent_failures": failures,
        "upcoming": upcoming,
        "resources": resources,
        "pollers": pollers,
        "any_poller_alive": any(p["alive"] for p in pollers),
    }


def timeline(user, now: dt.datetime):
    """Runs of the last 24 hours as bars, occurrences of the next 24 as marks."""
    start = now - dt.timedelta(hours=TIMELINE_HOURS)
    end = now + dt.timedelta(hours=TIMELINE_HOURS)
    visible = access.visible_runs(user).select_related("definition")
    # Two indexed reads: what is in flight (state index) and what ended since the
    # window's start (finished_at index), newest first, bounded.
    active = list(
        visible.filter(state__in=Run.ACTIVE_STATES, started_at__isnull=False).order_by(
            "-started_at"
        )[: TIMELINE_MAX_BARS // 2]
    )
    ended = list(
        visible.filter(finished_at__gte=start, started_at__isnull=False).order_by(
            "-finished_at"
        )[: TIMELINE_MAX_BARS - len(active)]
    )
    runs = active + ended
    bars = [
        charts.Bar(
            lane=run.definition.name,
            start=max(run.started_at, start),
            end=run.finished_at or now,
            state=run.state,
            title=f"Run {run.pk}: {run.get_state_display()}, "
            f"{timezone.localtime(run.started_at):%H:%M}"
            + (f"-{timezone.localtime(run.finished_at):%H:%M}" if run.finished_at else "-now"),
            url=reverse("admin:scheduler_run_change", args=[run.pk]),
        )
        for run in runs
    ]
    marks = []
    recurrences = (
        access.visible_recurrences(user)
        .filter(enabled=True, next_due_at__isnull=False, next_due_at__lte=end)
        .select_related("definition")
        .order_by("next_due_at")[:100]
    )
    for rec in recurrences:
        try:
            times = maths.occurrences_between(rec, max(now, rec.next_due_at), end, limit=96)
        except Exception:  # noqa: BLE001 - a broken schedule shows its error elsewhere
            continue
        for at in times:
            marks.append(
                charts.Mark(
                    lane=rec.definition.name,
                    at=at,
                    title=f"{rec.name}: {timezone.localtime(at):%H:%M}",
                )
            )
            if len(marks) >= TIMELINE_MAX_MARKS:
                break
    return charts.timeline(
        bars, marks, start=start, end=end, now=now, tz=timezone.get_current_timezone()
    )
