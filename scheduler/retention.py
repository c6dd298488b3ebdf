"""Retention: prune old runs with their messages, file rows and stored files.

Final runs whose finish is older than the age go; the newest ``keep_last`` runs
of each definition always stay, whatever their age, and a run that is not final
is never touched. Work goes in batches of ids, so a million old runs never sit
in memory. The poller runs it once a day when SCHEDULER_RETENTION_DAYS is set;
``manage.py prune_runs`` runs it by hand.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from scheduler import services
from scheduler.models import OutputFile, Run, StatusMessage, TaskDefinition

logger = logging.getLogger(__name__)

BATCH = 2000  # runs a transaction
PARAMS = 900  # ids a statement
POLLER_BUDGET_SECONDS = 10.0  # one poller tick prunes at most this long; the rest later


@dataclass
class Pruned:
    runs: int = 0
    messages: int = 0
    files: int = 0
    bytes: int = 0
    folders_missing: int = 0
    complete: bool = True  # False: stopped at its time budget, older runs are left

    def __str__(self) -> str:
        return (
            f"{self.runs} runs, {self.messages} messages, {self.files} files "
            f"({self.bytes / 2**20:.1f} MiB)"
            + ("" if self.complete else ", stopped at its time limit")
        )


def prune(
    *,
    older_than: dt.timedelta,
    keep_last: int,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    user=None,
    max_seconds: float | None = None,
) -> Pruned:
    """Delete final runs finished before ``now - older_than``, keeping the newest
    ``keep_last`` runs of every definition. Returns what went (or would go).

    With ``max_seconds`` it stops after the batch that passes that time and says
    so (``complete`` False; audited as ``prune_partial``): the next call goes on."""
    if older_than <= dt.timedelta(0):
        raise ValueError("older_than must be positive")
    if keep_last < 0:
        raise ValueError("keep_last must be 0 or more")
    now = now or timezone.now()
    cutoff = now - older_than
    result = Pruned()
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    pending: list[int] = []
    for chunk in _old_run_ids(cutoff, keep_last):
        pending += chunk
        if len(pending) < BATCH:
            continue  # batches span definitions: fewer, fuller transactions
        _prune_batch(pending, result, dry_run)
        pending = []
        if deadline is not None and time.monotonic() > deadline:
            result.complete = False
            break
    if pending and result.complete:
        _prune_batch(pending, result, dry_run)
    if not dry_run:
        # Recorded even when nothing went: it is also how pollers know it ran today.
        services.audit_record(
            action="prune" if result.complete else "prune_partial",
            user=user,
            detail={
                "older_than_days": older_than.total_seconds() / 86400,
                "keep_last": keep_last,
                "runs": result.runs,
                "messages": result.messages,
                "files": result.files,
                "bytes": result.bytes,
            },
        )
        logger.info(
            "retention: pruned %s (finished more than %s days ago, the newest %s per "
            "definition kept)",
            result,
            f"{older_than.total_seconds() / 86400:g}",
            keep_last,
        )
    return result


def _old_run_ids(cutoff: dt.datetime, keep_last: int):
    """Ids of the runs to prune, up to BATCH at a time, definition by definition."""
    for definition_id in TaskDefinition.objects.values_list("pk", flat=True):
        runs = Run.objects.filter(definition_id=definition_id)
        keep = list(runs.order_by("-queued_at", "-id").values_list("pk", flat=True)[:keep_last])
        old = (
            runs.filter(state__in=Run.FINAL_STATES, finished_at__lt=cutoff)
            .exclude(pk__in=keep)
            .order_by("pk")
        )
        last = 0
        while ids := list(old.filter(pk__gt=last).values_list("pk", flat=True)[:BATCH]):
            last = ids[-1]
            yield ids


def _prune_batch(ids: list[int], result: Pruned, dry_run: bool) -> None:
    result.runs += len(ids)
    # One transaction for the batch, statements of at most PARAMS ids each (SQLite
    # builds before 3.32 take 999 parameters a statement).
    parts = [ids[i : i + PARAMS] for i in range(0, len(ids), PARAMS)]
    for part in parts:
        files = OutputFile.objects.filter(run_id__in=part)
        result.files += files.count()
        result.bytes += files.aggregate(total=Sum("size"))["total"] or 0
        if dry_run:
            result.messages += StatusMessage.objects.filter(run_id__in=part).count()
    if dry_run:
        return
    with transaction.atomic():
        for part in parts:
            result.messages += services.runs_delete(ids=part)
    # Then the stored files, which no row points at now.
    result.folders_missing += services.runs_remove_stored(ids=ids)


def prune_if_due(
    *, now: dt.datetime | None = None, max_seconds: float | None = POLLER_BUDGET_SECONDS
) -> Pruned | None:
    """The poller's daily step: prune by SCHEDULER_RETENTION_DAYS (0: keep all),
    unless some poller (or a cron tick) finished a prune in the last 24 hours. At
    most ``max_seconds`` a call, so a first prune of a big backlog goes in slices
    between ticks instead of holding the poller for minutes."""
    from scheduler.models import AuditEvent

    days = settings.SCHEDULER_RETENTION_DAYS
    if not days:
        return None
    now = now or timezone.now()
    if AuditEvent.objects.filter(
        action="prune", created_at__gte=now - dt.timedelta(days=1)
    ).exists():
        return None
    return prune(
        older_than=dt.timedelta(days=days),
        keep_last=settings.SCHEDULER_RETENTION_KEEP_LAST,
        now=now,
        max_seconds=max_seconds,
    )
