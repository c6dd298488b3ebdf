"""What the admin index shows: the scheduler at a glance, narrowed to what the user may see.

Every query is indexed and bounded: one GROUP BY over the state index for the
counts, short lists for the rest, so the page stays fast with a million runs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Count
from django.utils import timezone

from scheduler import access
from scheduler.models import ExecutionResource, PollerHeartbeat, Run


def dashboard_context(user, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    runs = access.visible_runs(user)
    counts = dict(runs.values_list("state").annotate(n=Count("pk")).order_by())
    states = [(value, label, counts.get(value, 0)) for value, label in Run.State.choices]
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
    in_flight = dict(
        Run.objects.filter(state__in=Run.ACTIVE_STATES)
        .values_list("resource_id")
        .annotate(n=Count("pk"))
        .order_by()
    )
    resources = [
        {"resource": r, "in_flight": in_flight.get(r.pk, 0)}
        for r in ExecutionResource.objects.order_by("name")
    ]
    pollers = [
        {"beat": b, "alive": b.is_alive(now)}
        for b in PollerHeartbeat.objects.order_by("-last_seen_at")[:5]
    ]
    return {
        "state_counts": states,
        "active_runs": active,
        "queued_runs": queued,
        "recent_failures": failures,
        "upcoming": upcoming,
        "resources": resources,
        "pollers": pollers,
        "any_poller_alive": any(p["alive"] for p in pollers),
    }
