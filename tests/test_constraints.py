"""Constraints the database enforces whatever code path writes."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from scheduler import services
from scheduler.models import Recurrence, Run


def _run(definition, resource, **fields):
    return Run.objects.create(definition=definition, resource=resource, **fields)


def test_progress_must_stay_between_0_and_100(definition, local_resource):
    with pytest.raises(IntegrityError), transaction.atomic():
        _run(definition, local_resource, progress=101)
    run = _run(definition, local_resource, progress=100)
    assert run.progress == 100


def test_a_final_state_needs_a_finish_time(definition, local_resource):
    with pytest.raises(IntegrityError), transaction.atomic():
        _run(definition, local_resource, state=Run.State.SUCCEEDED)
    run = _run(definition, local_resource, state=Run.State.FAILED, finished_at=timezone.now())
    assert run.is_final


def test_one_run_per_recurrence_and_due_time(definition, local_resource):
    rec = Recurrence.objects.create(definition=definition, name="r", kind="once")
    due = timezone.now()

    def occurrence() -> Run:
        return Run(definition=definition, resource=local_resource, recurrence=rec, due_at=due)

    services.runs_enqueue_occurrences(runs=[occurrence()])
    services.runs_enqueue_occurrences(runs=[occurrence()])  # a second poller: left alone
    assert Run.objects.filter(recurrence=rec).count() == 1
    with pytest.raises(IntegrityError), transaction.atomic():
        _run(definition, local_resource, recurrence=rec, due_at=due)


def test_manual_runs_may_share_a_due_time(definition, local_resource):
    due = timezone.now()
    _run(definition, local_resource, due_at=due)
    _run(definition, local_resource, due_at=due)
    assert Run.objects.filter(due_at=due).count() == 2


def test_a_claim_is_won_once_and_a_final_state_is_entered_once(definition, local_resource):
    run = _run(definition, local_resource)
    assert services.run_claim(run_id=run.pk, poller="a") is True
    assert services.run_claim(run_id=run.pk, poller="b") is False
    run.refresh_from_db()
    assert run.poller == "a"
    assert services.run_finish(run=run, state=Run.State.SUCCEEDED, exit_code=0) is True
    assert services.run_finish(run=run, state=Run.State.FAILED, exit_code=1) is False
    run.refresh_from_db()
    assert (run.state, run.exit_code, run.progress) == ("SUCCEEDED", 0, 100)


def test_a_failed_run_with_retries_left_queues_the_next_attempt_after_a_backoff(
    definition, local_resource
):
    definition.max_retries, definition.retry_backoff_seconds = 2, 30
    definition.save()
    run = _run(definition, local_resource)
    services.run_claim(run_id=run.pk, poller="a")
    services.run_finish(run=run, state=Run.State.FAILED, exit_code=3)
    retry = Run.objects.get(retry_of=run)
    assert retry.attempt == 2 and retry.state == Run.State.QUEUED
    assert 25 <= (retry.due_at - run.finished_at).total_seconds() <= 35
    services.run_claim(run_id=retry.pk, poller="a", now=retry.due_at)
    services.run_finish(run=retry, state=Run.State.FAILED, exit_code=3)
    third = Run.objects.get(retry_of=run, attempt=3)
    assert 55 <= (third.due_at - retry.finished_at).total_seconds() <= 65
    services.run_claim(run_id=third.pk, poller="a", now=third.due_at)
    services.run_finish(run=third, state=Run.State.FAILED, exit_code=3)
    assert Run.objects.filter(retry_of=run).count() == 2


def test_messages_from_events_are_stored_once_and_cut_to_the_limit(
    definition, local_resource, settings
):
    settings.SCHEDULER_MESSAGE_MAX_CHARS = 100
    run = _run(definition, local_resource)
    assert services.run_add_message(run=run, text="x" * 5000, seq=1, progress=140)
    assert services.run_add_message(run=run, text="again", seq=1) is None
    message = run.messages.get()
    assert message.text.endswith("[cut: 5000 chars, limit 100]")
    run.refresh_from_db()
    assert run.progress == 100


def test_due_runs_are_claimed_best_first_within_the_limits_in_one_write(definition, local_resource):
    # An idle tick (nothing due) asks one question, not one per limit.
    with CaptureQueriesContext(connection) as idle:
        assert services.runs_claim_due(poller="a", resources=[local_resource]) == []
    assert len(idle.captured_queries) == 1, [q["sql"] for q in idle.captured_queries]

    local_resource.max_concurrent_runs = 3
    local_resource.save()
    past = timezone.now() - dt.timedelta(seconds=5)
    low = [_run(definition, local_resource, due_at=past) for _ in range(3)]
    high = [_run(definition, local_resource, due_at=past, priority=5) for _ in range(2)]
    _run(definition, local_resource, due_at=timezone.now() + dt.timedelta(hours=1))
    with CaptureQueriesContext(connection) as busy:
        claimed = services.runs_claim_due(poller="a", resources=[local_resource])
    assert [r.pk for r in claimed] == [high[0].pk, high[1].pk, low[0].pk]
    assert all(r.state == Run.State.SUBMITTED for r in claimed)
    updates = [q["sql"] for q in busy.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 1, updates
    assert set(Run.objects.filter(poller="a").values_list("pk", flat=True)) == {
        r.pk for r in claimed
    }
    # The resource is full: the next tick claims nothing, another poller neither.
    assert services.runs_claim_due(poller="b", resources=[local_resource]) == []


def test_a_batch_claim_leaves_out_the_runs_another_poller_took(definition, local_resource):
    runs = [_run(definition, local_resource) for _ in range(3)]
    assert services.run_claim(run_id=runs[1].pk, poller="b")
    taken = services.runs_claim(run_ids=[r.pk for r in runs], poller="a")
    assert taken == {runs[0].pk, runs[2].pk}
    assert Run.objects.get(pk=runs[1].pk).poller == "b"
