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
import shutil
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from scheduler import services
from scheduler.models import OutputFile, Run, StatusMessage, TaskDefinition

logger = logging.getLogger(__name__)

BATCH = 500


@dataclass
class Pruned:
    runs: int = 0
    messages: int = 0
    files: int = 0
    bytes: int = 0
    folders_missing: int = 0

    def __str__(self) -> str:
        return (
            f"{self.runs} runs, {self.messages} messages, {self.files} files "
            f"({self.bytes / 2**20:.1f} MiB)"
        )


def prune(
    *,
    older_than: dt.timedelta,
    keep_last: int,
    now: dt.datetime | None = None,
    dry_run: bool = False,
    user=None,
) -> Pruned:
    """Delete final runs finished before ``now - older_than``, keeping the newest
    ``keep_last`` runs of every definition. Returns what went (or would go)."""
    if older_than <= dt.timedelta(0):
        raise ValueError("older_than must be positive")
    if keep_last < 0:
        raise ValueError("keep_last must be 0 or more")
    now = now or timezone.now()
    cutoff = now - older_than
    result = Pruned()
    for definition_id in TaskDefinition.objects.values_list("pk", flat=True):
        runs = Run.objects.filter(definition_id=definition_id)
        keep = list(runs.order_by("-queued_at", "-id").values_list("pk", flat=True)[:keep_last])
        old = (
            runs.filter(state__in=Run.FINAL_STATES, finished_at__lt=cutoff)
            .exclude(pk__in=keep)
            .order_by("pk")
        )
        last = 0
        while True:
            ids = list(old.filter(pk__gt=last).values_list("pk", flat=True)[:BATCH])
            if not ids:
                break
            last = ids[-1]
            _prune_batch(ids, result, dry_run)
    if not dry_run:
        # Recorded even when nothing went: it is also how pollers know it ran today.
        services.audit_record(
            action="prune",
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
        logger.info("retention: pruned %s", result)
    return result


def _prune_batch(ids: list[int], result: Pruned, dry_run: bool) -> None:
    files = OutputFile.objects.filter(run_id__in=ids)
    result.runs += len(ids)
    result.messages += StatusMessage.objects.filter(run_id__in=ids).count()
    result.files += files.count()
    result.bytes += sum(files.values_list("size", flat=True))
    if dry_run:
        return
    with transaction.atomic():
        # Rows first, in one transaction; then the files, which nothing points at now.
        StatusMessage.objects.filter(run_id__in=ids).delete()
        OutputFile.objects.filter(run_id__in=ids).delete()
        Run.objects.filter(retry_of_id__in=ids).update(retry_of=None)
        Run.objects.filter(pk__in=ids).delete()
    root = Path(settings.SCHEDULER_FILE_ROOT).resolve()
    for run_id in ids:
        folder = (root / str(run_id)).resolve()
        if folder.parent != root:
            continue  # never outside the store
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
        else:
            result.folders_missing += 1


def prune_if_due(*, now: dt.datetime | None = None) -> Pruned | None:
    """The poller's daily step: prune by SCHEDULER_RETENTION_DAYS (0: keep all),
    unless some poller (or a cron tick) did so in the last 24 hours."""
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
    )
