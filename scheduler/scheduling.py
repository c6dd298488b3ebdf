"""Turning due occurrences into runs: idempotent, bounded by what is due.

Called by the poller each tick. Selects only recurrences whose indexed
next_due_at has come (never scans all of them), creates their runs under the
unique (recurrence, due_at) constraint, so restarts and several pollers never
produce a duplicate, and moves next_due_at on with a conditional update.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.db.models import F
from django.utils import timezone

from scheduler import recurrence as maths
from scheduler import services
from scheduler.exceptions import SchedulerError
from scheduler.models import Recurrence, Run

logger = logging.getLogger(__name__)

BATCH = 2000


def schedule_materialize(*, now: dt.datetime | None = None, batch: int = BATCH) -> int:
    """Queue the runs of every due occurrence; returns how many runs were made."""
    now = now or timezone.now()
    made = 0
    # New or edited outside the admin (no next due time yet): schedule from now.
    for rec in Recurrence.objects.filter(
        enabled=True, next_due_at__isnull=True, last_due_at__isnull=True
    )[:batch]:
        Recurrence.objects.filter(pk=rec.pk, next_due_at__isnull=True).update(
            next_due_at=maths.next_due_on_enable(rec, now),
            last_due_at=None,
        )
    due = (
        Recurrence.objects.filter(enabled=True, next_due_at__lte=now)
        .select_related("definition", "resource")
        .order_by("next_due_at")[:batch]
    )
    for rec in due:
        try:
            made += recurrence_fire(rec=rec, now=now)
        except Exception as exc:  # noqa: BLE001 - one bad schedule never stops the rest
            logger.exception("recurrence %s failed", rec.pk)
            Recurrence.objects.filter(pk=rec.pk).update(
                last_error=f"{type(exc).__name__}: {exc}"[:2000],
                next_due_at=maths.next_after(rec, now, count_limit=False),
            )
    return made


def recurrence_fire(*, rec: Recurrence, now: dt.datetime) -> int:
    times, next_due = maths.due_occurrences(rec, now)
    made = 0
    error = ""
    for due_at in times:
        if rec.overlap_policy == Recurrence.Overlap.SKIP and (
            Run.objects.filter(recurrence=rec).exclude(state__in=Run.FINAL_STATES).exists()
        ):
            logger.info("recurrence %s: skipped %s, previous run still going", rec.pk, due_at)
            continue
        try:
            run = services.run_enqueue_occurrence(recurrence=rec, due_at=due_at)
        except SchedulerError as exc:
            error = str(exc)
            continue
        if run is not None:
            made += 1
    # Conditional on the due time we read: a second poller that got here first
    # has moved it on already, and its runs exist (the unique constraint).
    Recurrence.objects.filter(pk=rec.pk, next_due_at=rec.next_due_at).update(
        next_due_at=next_due,
        last_due_at=times[-1] if times else rec.last_due_at,
        runs_created=F("runs_created") + made,
        last_error=error,
    )
    return made
