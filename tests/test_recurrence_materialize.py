"""Occurrences into runs: downtime per misfire policy, re-enabling, overlaps, no duplicates."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.db import close_old_connections

from poller.loop import Poller
from scheduler import recurrence as maths
from scheduler.models import Recurrence, Run, TaskDefinition
from scheduler.scheduling import schedule_materialize

UTC = dt.UTC
T0 = dt.datetime(2026, 5, 4, 0, 0, tzinfo=UTC)  # a Monday
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def definition(db, local_resource):
    return TaskDefinition.objects.create(
        name="Hourly", program="hello.py", default_resource=local_resource
    )


def hourly(definition, **fields) -> Recurrence:
    rec = Recurrence.objects.create(
        definition=definition,
        name="hourly",
        kind="interval",
        interval_every=1,
        interval_unit="hours",
        timezone="Europe/Amsterdam",
        start_at=T0,
        misfire_grace_seconds=300,
        **fields,
    )
    # As the admin leaves it: due from its start on.
    rec.next_due_at = maths.next_due_on_enable(rec, T0)
    rec.save()
    return rec


def due_times(rec) -> list[dt.datetime]:
    return list(
        Run.objects.filter(recurrence=rec).order_by("due_at").values_list("due_at", flat=True)
    )


@pytest.mark.parametrize(
    ("policy", "cap", "expected"),
    [
        # skip: nothing of the missed week; the next on-time occurrence runs later.
        ("skip", 10, []),
        # run_once: one run for everything missed, due at the latest missed time.
        ("run_once", 10, [T0 + 7 * 24 * HOUR]),
        # run_each: the missed ones, capped at the latest 10.
        ("run_each", 10, [T0 + (7 * 24 - 9 + i) * HOUR for i in range(10)]),
        ("run_each", 3, [T0 + (7 * 24 - 2 + i) * HOUR for i in range(3)]),
    ],
)
def test_a_week_without_a_poller_by_misfire_policy(definition, policy, cap, expected):
    rec = hourly(definition, misfire_policy=policy, misfire_max_runs=cap)
    schedule_materialize(now=T0)  # the poller's last tick before it stopped: one run at T0
    assert due_times(rec) == [T0]
    back = T0 + 7 * 24 * HOUR + dt.timedelta(minutes=20)  # 20 min after the last occurrence
    schedule_materialize(now=back)
    assert due_times(rec) == [T0, *expected]
    rec.refresh_from_db()
    assert rec.next_due_at == T0 + (7 * 24 + 1) * HOUR  # on with the schedule, nothing stale
    # A tick later nothing more is made: the catch-up happened once.
    schedule_materialize(now=back + dt.timedelta(minutes=1))
    assert due_times(rec) == [T0, *expected]


def test_an_occurrence_within_the_grace_period_is_on_time_under_every_policy(definition):
    for policy in ("skip", "run_once", "run_each"):
        rec = hourly(definition, misfire_policy=policy)
        schedule_materialize(now=T0 + dt.timedelta(minutes=4))  # 4 min late, grace is 5
        assert due_times(rec) == [T0], policy
        rec.delete()


def test_re_enabling_a_paused_schedule_never_fires_the_past(definition):
    rec = hourly(definition, misfire_policy="run_each")
    schedule_materialize(now=T0)
    rec.enabled = False
    rec.save()
    schedule_materialize(now=T0 + 48 * HOUR)  # paused: nothing
    assert due_times(rec) == [T0]
    now = T0 + 72 * HOUR + dt.timedelta(minutes=30)
    rec.enabled = True
    rec.next_due_at = maths.next_due_on_enable(rec, now)  # what the admin's resume does
    rec.save()
    schedule_materialize(now=now)
    assert due_times(rec) == [T0]
    assert rec.next_due_at == T0 + 73 * HOUR
    schedule_materialize(now=T0 + 73 * HOUR)
    assert due_times(rec) == [T0, T0 + 73 * HOUR]


def test_materialising_twice_or_from_two_pollers_at_once_never_duplicates(definition):
    rec = hourly(definition, misfire_policy="run_each", misfire_max_runs=50)
    now = T0 + 30 * HOUR
    schedule_materialize(now=now)
    first = due_times(rec)
    assert first == [T0 + i * HOUR for i in range(31)]  # 30 missed (cap 50) + 1 on time
    # A restarted poller that lost its tick's update of next_due_at:
    Recurrence.objects.filter(pk=rec.pk).update(next_due_at=T0, runs_created=0)
    schedule_materialize(now=now)
    assert due_times(rec) == first


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_materialisers_make_each_run_once(local_resource):
    definition = TaskDefinition.objects.create(
        name="Every minute", program="hello.py", default_resource=local_resource
    )
    recs = [
        Recurrence.objects.create(
            definition=definition,
            name=f"r{i}",
            kind="cron",
            cron_expression="* * * * *",
            timezone="UTC",
            start_at=T0,
            misfire_policy="run_each",
            misfire_max_runs=20,
            misfire_grace_seconds=0,
            next_due_at=T0,
        )
        for i in range(20)
    ]
    now = T0 + dt.timedelta(minutes=9)
    errors = []

    def tick():
        try:
            schedule_materialize(now=now)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for rec in recs:
        assert due_times(rec) == [T0 + dt.timedelta(minutes=i) for i in range(10)]


# ----------------------------------------------------------------- overlaps
def _going(rec) -> Run:
    run = Run.objects.filter(recurrence=rec).order_by("due_at").last()
    Run.objects.filter(pk=run.pk).update(state=Run.State.RUNNING, poller="elsewhere")
    return run


def test_overlap_skip_drops_an_occurrence_while_the_previous_run_goes_on(definition):
    rec = hourly(definition, overlap_policy="skip")
    schedule_materialize(now=T0)
    first = _going(rec)
    schedule_materialize(now=T0 + HOUR)
    assert due_times(rec) == [T0]  # skipped: the T0 run still going
    Run.objects.filter(pk=first.pk).update(state=Run.State.SUCCEEDED, finished_at=T0 + HOUR)
    schedule_materialize(now=T0 + 2 * HOUR)
    assert due_times(rec) == [T0, T0 + 2 * HOUR]


def test_overlap_allow_runs_beside_and_queue_waits_for_the_previous_run(definition):
    allow = hourly(definition, overlap_policy="allow")
    queue = Recurrence.objects.get(pk=hourly(definition, overlap_policy="queue").pk)
    schedule_materialize(now=T0)
    _going(allow)
    _going(queue)
    schedule_materialize(now=T0 + HOUR)
    assert due_times(allow) == [T0, T0 + HOUR]
    assert due_times(queue) == [T0, T0 + HOUR]  # made, but held back at claim time
    poller = Poller(name="overlap-test")
    try:
        claimed = {run.recurrence_id: run for run in poller.claim()}
    finally:
        poller._threads.shutdown(wait=True)
    assert allow.pk in claimed and queue.pk not in claimed
    assert Run.objects.get(recurrence=queue, due_at=T0 + HOUR).state == Run.State.QUEUED
    Run.objects.filter(recurrence=queue, due_at=T0).update(
        state=Run.State.SUCCEEDED, finished_at=T0 + HOUR
    )
    poller = Poller(name="overlap-test")
    try:
        assert queue.pk in {run.recurrence_id for run in poller.claim()}
    finally:
        poller._threads.shutdown(wait=True)


def test_the_tick_selects_only_due_recurrences(definition, django_assert_max_num_queries):
    for i in range(30):
        Recurrence.objects.create(
            definition=definition,
            name=f"later {i}",
            kind="cron",
            cron_expression="0 9 * * *",
            timezone="UTC",
            start_at=T0,
            next_due_at=T0 + 24 * HOUR,
        )
    hourly(definition)
    # One select of due rows; per due recurrence: insert (savepoint), update.
    with django_assert_max_num_queries(10):
        made = schedule_materialize(now=T0)
    assert made == 1
