"""What the admin index shows: the scheduler at a glance, narrowed to what the user may see.

Every query is indexed and bounded: a capped count per state over the state
index, short lists for the rest, so the page stays fast with a million runs
(bench/admin_scale.py).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from django.urls import reverse
from django.utils import timezone

from scheduler import access, charts
from scheduler import recurrence as maths
from scheduler.models import ExecutionResource, PollerHeartbeat, Run

# Counts per state stop here ("1000+"; the run list counts on to 10,000). For a user
# who sees only some definitions, each counted run is a table lookup for its
# definition (the state indexes do not hold it): 8 states x 10,000 lookups made the
# dashboard 230-330 ms with a million runs, 8 x 1,000 keep it bounded. An index on
# (state, definition) would make these counts index-only (see bench/admin_scale.py).
COUNT_CAP = 1_000
TIMELINE_HOURS = 24
TIMELINE_MAX_BARS = 200
# Occurrences drawn: a schedule every minute has 1,440 in the next 24 hours; the
# chart draws dense ones as a band with a count (scheduler.charts).
TIMELINE_MAX_MARKS = 5000
TIMELINE_MARKS_PER_SCHEDULE = 1500


def dashboard_context(user, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    runs = access.visible_runs(user)
    # One capped count per state over a state index: a million runs never make a
    # full GROUP BY; past the cap the dashboard says "1000+".
    states = []
    for value, label in Run.State.choices:
        # No ORDER BY in the capped count: any index on state serves it.
        n = runs.filter(state=value).order_by()[: COUNT_CAP + 1].count()
        states.append((value, label, f"{COUNT_CAP}+" if n > COUNT_CAP else n))
    active = newest_in_states(runs.select_related("definition", "resource"), Run.ACTIVE_STATES, 20)
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
    recurrences = access.visible_recurrences(user)
    upcoming = (
        recurrences.filter(enabled=True, next_due_at__isnull=False)
        .select_related("definition")
        .order_by("next_due_at")[:10]
    )
    # Runs in flight per resource, of the runs this user may see: a restricted
    # definition's runs count for nobody outside its groups (superusers see all).
    in_flight = Counter(
        runs.filter(state__in=Run.ACTIVE_STATES).order_by().values_list("resource_id", flat=True)
    )
    resources = [
        {"resource": r, "in_flight": in_flight.get(r.pk, 0), "failing": _failing(r)}
        for r in ExecutionResource.objects.order_by("name")
    ]
    pollers = [
        {"beat": b, "alive": b.is_alive(now)}
        for b in PollerHeartbeat.objects.order_by("-last_seen_at")[:5]
    ]
    # Spans the page writes as "4 min 12 s" (scheduler.display.seconds).
    queued = list(queued)
    for run in queued:
        run.waiting = now - run.due_at
    failures = list(failures)
    for run in failures:
        run.ago = now - run.finished_at
        run.error_line = _first_line(run.error)
    upcoming = list(upcoming)
    for rec in upcoming:
        rec.due_in = max(dt.timedelta(0), rec.next_due_at - now)
    return {
        "timeline": timeline(user, now, runs=runs, recurrences=recurrences),
        "state_counts": states,
        "active_runs": active,
        "queued_runs": queued,
        "recent_failures": failures,
        "upcoming": upcoming,
        "resources": resources,
        "pollers": pollers,
        "any_poller_alive": any(p["alive"] for p in pollers),
    }


def newest_in_states(runs, states, limit: int) -> list[Run]:
    """The ``limit`` newest runs (by queued time) in any of ``states``.

    One query per state, each read in the order of the (state, -queued_at, -id)
    index and stopping at ``limit``, merged here: with ``state IN (...)`` SQLite
    would sort every run in those states (thousands in flight on a busy cluster)."""
    found = [
        run
        for state in states
        for run in runs.filter(state=state).order_by("-queued_at", "-id")[:limit]
    ]
    found.sort(key=lambda run: (run.queued_at, run.pk), reverse=True)
    return found[:limit]


def _first_line(text: str) -> str:
    """An error's summary: its first line, which the poller makes the summary
    (the traceback follows, shown on the run page); for an error that is a bare
    traceback, its last line, which names the exception."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


def _failing(resource: ExecutionResource) -> bool:
    """The resource's last word was an error (none since, or never a success)."""
    if not resource.last_error:
        return False
    return resource.last_ok_at is None or (
        resource.last_error_at is not None and resource.last_error_at >= resource.last_ok_at
    )


def timeline(user, now: dt.datetime, *, runs=None, recurrences=None):
    """Runs of the last 24 hours as bars, occurrences of the next 24 as marks.

    ``runs`` and ``recurrences`` are the user's visible querysets when the caller
    has them already (saves working out the visible definitions again)."""
    start = now - dt.timedelta(hours=TIMELINE_HOURS)
    end = now + dt.timedelta(hours=TIMELINE_HOURS)
    if runs is None:
        runs = access.visible_runs(user)
    if recurrences is None:
        recurrences = access.visible_recurrences(user)
    visible = runs.select_related("definition")
    # Two indexed reads: what is in flight (state index) and what ended since the
    # window's start (finished_at index), newest first, bounded.
    active = newest_in_states(
        visible.filter(started_at__isnull=False), Run.ACTIVE_STATES, TIMELINE_MAX_BARS // 2
    )
    ended = list(
        visible.filter(finished_at__gte=start, started_at__isnull=False).order_by("-finished_at")[
            : TIMELINE_MAX_BARS - len(active)
        ]
    )
    # One reverse() for up to 200 bars: the run's id goes into the URL of run 0.
    run_url = reverse("admin:scheduler_run_change", args=[0])
    bars = [
        charts.Bar(
            lane=run.definition.name,
            start=max(run.started_at, start),
            end=run.finished_at or now,
            state=run.state,
            title=f"Run {run.pk}: {run.get_state_display()}, "
            f"{timezone.localtime(run.started_at):%H:%M}"
            + (f"-{timezone.localtime(run.finished_at):%H:%M}" if run.finished_at else "-now"),
            url=run_url.replace("/0/", f"/{run.pk}/", 1),
        )
        for run in active + ended
    ]
    marks: list[charts.Mark] = []
    scheduled = (
        recurrences.filter(enabled=True, next_due_at__isnull=False, next_due_at__lte=end)
        .select_related("definition")
        .order_by("next_due_at")[:100]
    )
    for rec in scheduled:
        if len(marks) >= TIMELINE_MAX_MARKS:
            break
        try:
            times = maths.occurrences_between(
                rec, max(now, rec.next_due_at), end, limit=TIMELINE_MARKS_PER_SCHEDULE
            )
        except Exception:  # noqa: BLE001 - a broken schedule shows its error elsewhere
            continue
        marks.extend(
            charts.Mark(
                lane=rec.definition.name,
                at=at,
                title=f"{rec.name}: {timezone.localtime(at):%H:%M}",
            )
            for at in times[: TIMELINE_MAX_MARKS - len(marks)]
        )
    return charts.timeline(
        bars, marks, start=start, end=end, now=now, tz=timezone.get_current_timezone()
    )
