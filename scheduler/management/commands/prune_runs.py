"""Prune old runs: manage.py prune_runs --older-than 90 --keep-last 20 [--dry-run]."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from scheduler.retention import prune


class Command(BaseCommand):
    help = (
        "Delete final runs older than an age (with their messages and files), keeping the "
        "newest N of each definition. Defaults from SCHEDULER_RETENTION_DAYS/_KEEP_LAST."
    )

    def add_arguments(self, parser):
        parser.add_argument("--older-than", type=float, metavar="DAYS")
        parser.add_argument("--keep-last", type=int, metavar="N")
        parser.add_argument("--dry-run", action="store_true", help="Only say what would go.")

    def handle(self, *args, older_than, keep_last, dry_run, **options):
        days = older_than if older_than is not None else settings.SCHEDULER_RETENTION_DAYS
        keep = keep_last if keep_last is not None else settings.SCHEDULER_RETENTION_KEEP_LAST
        if not days or days <= 0:
            raise CommandError(
                "Give --older-than DAYS (a positive number) or set SCHEDULER_RETENTION_DAYS."
            )
        if keep < 0:
            raise CommandError("--keep-last must be 0 or more.")
        result = prune(older_than=dt.timedelta(days=days), keep_last=keep, dry_run=dry_run)
        verb = "Would remove" if dry_run else "Removed"
        self.stdout.write(
            f"{verb} {result} finished more than {days:g} days ago, "
            f"keeping the newest {keep} runs of each definition."
        )
