"""Turning due occurrences into runs: idempotent, bounded by what is due.

Called by the poller each tick. Selects only recurrences whose indexed
next_due_at has come (never scans all of them), works out their due times in
Python, then writes in bulk: one INSERT of the new runs that leaves any
(recurrence, due_at) pair already present alone (the unique constraint), and one
conditional UPDATE per recurrence that moves next_due_at on only if nobody else
did. So restarts and several pollers never produce a duplicate, and a tick costs
a few queries per batch plus one small UPDATE per due recurrence.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.utils import timezone

from scheduler import recurrence as maths
from scheduler import services
from scheduler.exceptions import SchedulerError
from scheduler.models import ExecutionResource, Recurrence, Run

logger = logging.getLogger(__name__)

BATCH = 2000
CHUNK = 500  # recurrences per INSERT/lookup round (bounded SQL parameters)


def schedule_materialize(*, now: dt.datetime | None = None, batch: int = BATCH) -> int:
    """Queue the runs of every due occurrence; returns how many runs were made."""
    now = now or timezone.now()
    # New or edited outside the admin (no next due time yet): schedule from now.
    for rec in Recurrence.objects.filter(
        enabled=True, next_due_at__isnull=True, last_due_at__isnull=True
    )[:batch]:
        Recurrence.objects.filter(pk=rec.pk, next_due_at__isnull=True).update(
            next_due_at=rec.next_due_on_enable(now),
            last_due_at=None,
        )
    due = list(
        Recurrence.objects.filter(enabled=True, next_due_at__lte=now)
        .select_related("definition__default_resource", "resource")
        .prefetch_related("definition__parameters")
        .order_by("next_due_at")[:batch]
    )
    made = 0
    for start in range(0, len(due), CHUNK):
        made += _fire(due[start : start + CHUNK], now)
    return made


@dataclass
class _Plan:
    rec: Recurrence
    next_due: dt.datetime | None = None
    times: list[dt.datetime] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    error: str = ""
    failed: bool = False


def _fire(recs: list[Recurrence], now: dt.datetime) -> int:
    enabled_resources = set(
        ExecutionResource.objects.filter(enabled=True).values_list("pk", flat=True)
    )
    skip_ids = [r.pk for r in recs if r.overlap_policy == Recurrence.Overlap.SKIP]
    busy = (
        set(
            Run.objects.filter(recurrence_id__in=skip_ids)
            .exclude(state__in=Run.FINAL_STATES)
            .values_list("recurrence_id", flat=True)
        )
        if skip_ids
        else set()
    )
    local = _Lazy(lambda: ExecutionResource.objects.filter(name="local").first())
    plans = [_plan(rec, now, busy, enabled_resources, local) for rec in recs]

    wanted = {(p.rec.pk, t) for p in plans for t in p.times}
    existing = set()
    if wanted:
        existing = set(
            Run.objects.filter(
                recurrence_id__in={pk for pk, _ in wanted},
                due_at__in={t for _, t in wanted},
            ).values_list("recurrence_id", "due_at")
        )
    made = 0
    with transaction.atomic():
        new_runs = []
        for plan in plans:
            plan.runs = [r for r in plan.runs if (plan.rec.pk, r.due_at) not in existing]
            new_runs += plan.runs
        # A second poller may insert the same occurrence between our lookup and
        # this INSERT; the unique constraint keeps one.
        services.runs_enqueue_occurrences(runs=new_runs, batch_size=CHUNK)
        failed = [p for p in plans if p.failed]
        for plan in failed:
            # One bad schedule never stops the rest: it says why and moves on.
            Recurrence.objects.filter(pk=plan.rec.pk).update(
                last_error=plan.error[:2000], next_due_at=plan.next_due
            )
        made = _move_on([p for p in plans if not p.failed])
    return made


def _move_on(plans: list[_Plan]) -> int:
    """One conditional UPDATE per recurrence, sent as one executemany: each moves
    on only if its next_due_at is still the one we read (else a second poller got
    there first, and its runs exist). Returns the runs made by the rows moved."""
    if not plans:
        return 0
    table = connection.ops.quote_name(Recurrence._meta.db_table)
    due_field = Recurrence._meta.get_field("next_due_at")

    def prep(value):
        return due_field.get_db_prep_value(value, connection) if value is not None else None

    rows = [
        (
            prep(p.next_due),
            prep(p.times[-1] if p.times else p.rec.last_due_at),
            len(p.runs),
            p.error[:2000],
            p.rec.pk,
            prep(p.rec.next_due_at),
        )
        for p in plans
    ]
    with connection.cursor() as cursor:
        cursor.executemany(
            f"UPDATE {table} SET next_due_at = %s, last_due_at = %s, "
            "runs_created = runs_created + %s, last_error = %s "
            "WHERE id = %s AND next_due_at = %s",
            rows,
        )
        moved = cursor.rowcount
    if moved == len(plans):
        return sum(len(p.runs) for p in plans)
    # Some were moved on by another poller meanwhile: count what is ours by row.
    ours = Recurrence.objects.filter(pk__in=[p.rec.pk for p in plans if p.runs]).values_list(
        "pk", "next_due_at"
    )
    now_due = dict(ours)
    return sum(len(p.runs) for p in plans if p.runs and now_due.get(p.rec.pk) == p.next_due)


def _plan(rec, now, busy, enabled_resources, local) -> _Plan:
    plan = _Plan(rec=rec)
    try:
        times, plan.next_due = maths.due_occurrences(rec, now)
    except Exception as exc:  # noqa: BLE001 - reported on the schedule
        logger.exception("recurrence %s failed", rec.pk)
        plan.failed = True
        plan.error = f"{type(exc).__name__}: {exc}"
        plan.next_due = _safe_next(rec, now)
        return plan
    if rec.overlap_policy == Recurrence.Overlap.SKIP:
        if rec.pk in busy:
            if times:
                logger.info("recurrence %s: skipped %s, previous run still going", rec.pk, times)
            times = []
        else:
            times = times[:1]  # the rest would overlap the one made now
    plan.times = times
    if not times:
        return plan
    definition = rec.definition
    try:
        # The checks of every queued run (services.run_enqueue's), with the
        # resources' states asked once for the whole batch.
        parameters, resource = services.run_target(
            definition=definition,
            parameters=rec.parameters,
            resource=rec.resource or definition.default_resource or local.get(),
            enabled_resources=enabled_resources,
        )
        needs = services.run_needs(definition=definition, resource=resource, override=rec.needs)
    except SchedulerError as exc:
        # The occurrences pass without runs; the schedule shows why.
        plan.error = str(exc)
        return plan
    queued_at = timezone.now()
    plan.runs = [
        Run(
            definition=definition,
            resource=resource,
            parameters=parameters,
            args=list(definition.default_args or []),
            due_at=t,
            queued_at=queued_at,
            recurrence=rec,
            needs=needs,
            timeout_seconds=needs.get("wall_time_seconds"),
        )
        for t in times
    ]
    return plan


def _safe_next(rec, now):
    try:
        return rec.next_after(now, count_limit=False)
    except Exception:  # noqa: BLE001
        return None


class _Lazy:
    def __init__(self, fn):
        self._fn, self._done, self._value = fn, False, None

    def get(self):
        if not self._done:
            self._value, self._done = self._fn(), True
        return self._value
