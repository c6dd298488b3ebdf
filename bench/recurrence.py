"""Materialisation ticks over many recurrences, 1% of them due.

Creates 10,000 and then 100,000 recurrences (cron, interval and RFC 5545 kinds in
several zones) in a throwaway SQLite database, 1% of them due, and times the
poller's schedule step (scheduler.scheduling.schedule_materialize): the tick that
turns the due ones into runs, and a tick with nothing due. Beside it, the bare
baseline: the indexed SELECT of the due rows alone, and a bulk INSERT of the same
number of runs in one transaction. Target: 100,000 recurrences with 1,000 due in
under 1 s.

    .venv/bin/python bench/recurrence.py
"""

from __future__ import annotations

import datetime as dt
import statistics
import time

from common import make_site, setup_django

SIZES = (10_000, 100_000)
DUE_SHARE = 0.01
ZONES = ["UTC", "Europe/Amsterdam", "America/New_York", "Australia/Lord_Howe", "Asia/Tokyo"]


def main() -> None:
    env = make_site()
    setup_django(env)
    from django.db import connection, transaction
    from django.utils import timezone

    from scheduler import recurrence as maths
    from scheduler.models import ExecutionResource, Recurrence, Run, TaskDefinition
    from scheduler.scheduling import schedule_materialize

    local = ExecutionResource.objects.get(name="local")
    definitions = [
        TaskDefinition.objects.create(name=f"task {i}", program="hello.py", default_resource=local)
        for i in range(50)
    ]
    kinds = [
        {"kind": "cron", "cron_expression": "*/5 * * * *"},
        {"kind": "cron", "cron_expression": "30 7 * * MON-FRI"},
        {"kind": "interval", "interval_every": 15, "interval_unit": "minutes"},
        {"kind": "interval", "interval_every": 1, "interval_unit": "days"},
        {"kind": "rrule", "rrule": "FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=7;BYMINUTE=30"},
    ]
    # "now" on a five-minute boundary so the due ones are due exactly now.
    now = timezone.now().replace(second=0, microsecond=0)
    now -= dt.timedelta(minutes=now.minute % 5)
    start = now - dt.timedelta(days=30)
    made_so_far = 0
    due_ids: list[int] = []
    print(f"SQLite, {connection.vendor}; a tick = schedule_materialize(now)")
    for size in SIZES:
        todo = size - made_so_far
        due_every = int(1 / DUE_SHARE)
        rows = []
        for i in range(made_so_far, size):
            kind = kinds[i % len(kinds)]
            rows.append(
                Recurrence(
                    definition=definitions[i % len(definitions)],
                    name=f"schedule {i}",
                    timezone=ZONES[i % len(ZONES)],
                    start_at=start,
                    misfire_grace_seconds=600,
                    # The due ones fell due at this tick; the rest later (spread over a day).
                    next_due_at=now + dt.timedelta(seconds=60 + (i * 7919) % 86_400),
                    **kind,
                )
            )
        t = time.perf_counter()
        created = Recurrence.objects.bulk_create(rows, batch_size=2000)
        made_so_far = size
        fill = time.perf_counter() - t
        due_ids += [rec.pk for i, rec in enumerate(created) if i % due_every == 0]
        # Every 1% must be due at this tick (those of the last round too): each set
        # to its true occurrence at or before now (on time, or missed within the
        # last days for kinds with no occurrence near now), with no runs yet.
        Run.objects.all().delete()
        for rec in Recurrence.objects.filter(pk__in=due_ids):
            nxt = maths.next_after(rec, now - dt.timedelta(days=8), count_limit=False)
            Recurrence.objects.filter(pk=rec.pk).update(next_due_at=min(nxt, now), runs_created=0)
        due_count = Recurrence.objects.filter(enabled=True, next_due_at__lte=now).count()

        # Bare baseline 1: the indexed SELECT of the due rows.
        selects = []
        for _ in range(5):
            t = time.perf_counter()
            list(
                Recurrence.objects.filter(enabled=True, next_due_at__lte=now)
                .order_by("next_due_at")
                .values_list("pk", "next_due_at")[:2000]
            )
            selects.append(time.perf_counter() - t)

        t = time.perf_counter()
        made = schedule_materialize(now=now)
        tick = time.perf_counter() - t
        t = time.perf_counter()
        again = schedule_materialize(now=now)
        idle = time.perf_counter() - t

        # Bare baseline 2: the same number of runs by one bulk INSERT.
        definition = definitions[0]
        t = time.perf_counter()
        with transaction.atomic():
            bulk = Run.objects.bulk_create(
                [Run(definition=definition, resource=local, due_at=now) for _ in range(made)],
                batch_size=1000,
            )
            Run.objects.filter(pk__in=[r.pk for r in bulk]).delete()
        bulk_time = time.perf_counter() - t

        print(
            f"{size:>7,} recurrences ({todo:,} added in {fill:.1f} s), {due_count:,} due: "
            f"tick {tick * 1000:.0f} ms making {made:,} runs "
            f"({tick / max(made, 1) * 1e6:.0f} us per run); "
            f"next tick, nothing due: {idle * 1000:.1f} ms ({again} runs)"
        )
        print(
            f"        bare: indexed SELECT of the due rows {statistics.median(selects) * 1000:.1f} ms; "
            f"bulk INSERT of {made:,} runs {bulk_time * 1000:.0f} ms"
        )
        if size == 100_000:
            verdict = "met" if tick < 1 else "NOT met"
            print(f"target: a tick with 100,000 recurrences and 1,000 due under 1 s: {verdict}")


if __name__ == "__main__":
    main()
