"""Django's Tasks framework through the scheduler (scheduler.tasks_backend), with a
real poller on fork://localhost: Django 6.1's django.tasks on Python 3.12+, the
django-tasks backport on Django 5.2 (the two CI cells)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from demo.tasks import add_numbers, count_measurements, which_attempt
from scheduler import periodic, services
from scheduler.models import ExecutionResource, Recurrence, Run, TaskDefinition
from scheduler.tasks_backend import (
    InvalidTask,
    PeriodicTask,
    SchedulerBackend,
    TaskResultDoesNotExist,
)
from tests.poller_helpers import poller_fixture, run_to_end, tick_until
from tests.tasks_for_tests import big, on_mars, renamed, sleep_until_cancelled
from tests.tasks_for_tests import echo as not_json

pytestmark = pytest.mark.django_db(transaction=True)

poller = poller_fixture("test-django-tasks", services=2, scope="module")

try:
    from django.tasks import TaskResultStatus, task, task_backends
except ImportError:
    from django_tasks import TaskResultStatus, task, task_backends

default_task_backend = task_backends["default"]


def _run(result) -> Run:
    return Run.objects.get(pk=int(result.id))


def test_the_backend_is_ours_and_says_what_it_supports():
    assert isinstance(default_task_backend, SchedulerBackend)
    assert default_task_backend.supports_defer and default_task_backend.supports_get_result
    assert default_task_backend.supports_priority


def test_enqueue_runs_the_function_and_the_result_has_its_return_value(poller, local_resource):
    result = add_numbers.enqueue(2, 3)
    assert result.status == TaskResultStatus.READY and result.args == [2, 3]
    run = _run(result)
    definition = run.definition
    assert (definition.name, definition.program) == ("demo.tasks.add_numbers", "django_task.py")
    assert run.resource == local_resource
    run_to_end(poller, run)
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 5
    assert result.is_finished and result.errors == []
    assert result.enqueued_at <= result.started_at <= result.finished_at
    assert result.last_attempted_at == result.started_at and result.attempts == 1
    again = default_task_backend.get_result(result.id)
    assert again.return_value == 5 and again.task.module_path == "demo.tasks.add_numbers"


def test_an_exception_fails_the_run_with_its_traceback(poller, local_resource):
    result = add_numbers.enqueue(2, "three")  # int + str: TypeError inside the task
    run = run_to_end(poller, _run(result))
    assert run.state == Run.State.FAILED
    assert "TypeError" in run.error and "return a + b" in run.error
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    (error,) = result.errors
    assert error.exception_class is TypeError
    assert "return a + b" in error.traceback
    with pytest.raises(ValueError, match="failed"):
        _ = result.return_value


def test_a_return_value_too_big_to_keep_fails_the_run_with_the_reason(poller, local_resource):
    """Over RETURN_LIMIT_BYTES the value was written, then read back as None: a
    SUCCESSFUL result without its value. Now the run fails and says why."""
    from scheduler.tasks_backend import RETURN_LIMIT_BYTES

    fits = run_to_end(poller, _run(big.enqueue(1000)))
    assert fits.state == Run.State.SUCCEEDED, fits.error
    result = big.enqueue(RETURN_LIMIT_BYTES)  # its JSON has two quotes more
    run = run_to_end(poller, _run(result), timeout=60)
    assert run.state == Run.State.FAILED
    assert f"returned {RETURN_LIMIT_BYTES + 2:,} bytes of JSON" in run.error
    assert not run.files.filter(name="return_value.json").exists()
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert "output file" in result.errors[0].traceback


def test_retries_are_attempts_of_one_result_and_the_context_counts_them(poller, local_resource):
    result = which_attempt.enqueue(fail_until=2)
    definition = _run(result).definition
    TaskDefinition.objects.filter(pk=definition.pk).update(max_retries=2, retry_backoff_seconds=0)
    first = run_to_end(poller, _run(result))
    assert first.state == Run.State.FAILED
    retry = Run.objects.get(retry_of=first)
    run_to_end(poller, retry)
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {"attempt": 2, "result_id": result.id}
    assert result.attempts == 2 and len(result.errors) == 1
    assert "attempt 1 fails on purpose" in result.errors[0].traceback


def test_run_after_is_the_due_time_and_priority_orders_the_claims(poller, local_resource):
    later = timezone.now() + dt.timedelta(hours=2)
    waiting = add_numbers.using(run_after=later).enqueue(1, 1)
    assert _run(waiting).due_at == later
    low = add_numbers.using(priority=-10).enqueue(1, 2)
    high = add_numbers.using(priority=50).enqueue(1, 3)
    claimed = poller.claim()
    assert [r.pk for r in claimed][:2] == [int(high.id), int(low.id)]
    assert int(waiting.id) not in [r.pk for r in claimed]
    poller.launch(claimed)
    for run in claimed:
        run_to_end(poller, run)
    waiting.refresh()
    assert waiting.status == TaskResultStatus.READY


def test_cancel_ends_the_result_failed(poller, local_resource):
    result = add_numbers.using(run_after=timezone.now() + dt.timedelta(hours=1)).enqueue(1, 1)
    assert services.run_request_cancel(run=_run(result)) == "cancelled"
    result.refresh()
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[0].exception_class_path == "scheduler.tasks_backend.TaskCancelled"


def test_cancelling_a_running_task_ends_it_and_its_result_says_cancelled(poller, local_resource):
    result = sleep_until_cancelled.enqueue()
    run = _run(result)
    tick_until(poller, lambda: Run.objects.get(pk=run.pk).state == Run.State.RUNNING)
    result.refresh()
    assert result.status == TaskResultStatus.RUNNING
    assert services.run_request_cancel(run=Run.objects.get(pk=run.pk)) == "requested"
    run = run_to_end(poller, run)
    assert run.state == Run.State.CANCELLED
    result.refresh()
    assert result.status == TaskResultStatus.FAILED and result.is_finished
    assert result.errors[-1].exception_class_path == "scheduler.tasks_backend.TaskCancelled"


@pytest.mark.parametrize(
    ("call", "error", "says"),
    [
        (lambda: not_json.enqueue(object()), TypeError, "Unsupported type"),
        (lambda: not_json.enqueue(float("nan")), ValueError, "JSON compliant"),
        (lambda: on_mars.enqueue(), InvalidTask, "Queue 'mars' is not valid"),
        (lambda: not_json.enqueue("x" * 20_000), InvalidTask, "at most 10,000"),
        (lambda: not_json.using(priority=101).enqueue(1), InvalidTask, "priority"),
        (lambda: renamed.enqueue(1), InvalidTask, "cannot be imported by its path"),
        (lambda: not_json.using(queue_name="far").enqueue(1), InvalidTask, "is not on this host"),
    ],
)
def test_bad_input_is_djangos_error_at_enqueue_and_queues_nothing(
    local_resource, call, error, says
):
    ExecutionResource.objects.create(
        name="far", job_service_url="ssh://cluster.example.org", working_root="/scratch/x"
    )
    with pytest.raises(error, match=says):
        call()
    assert not Run.objects.exists()
    assert not TaskDefinition.objects.exists()  # nothing half-made either


def test_a_task_that_is_not_a_module_level_function_is_refused(local_resource):
    def inner():
        return 1

    with pytest.raises(InvalidTask, match="module level"):
        task(inner)
    with pytest.raises(InvalidTask, match="bad schedule"):
        PeriodicTask(func=add_numbers.func, schedule="61 * * * *")


def test_an_unknown_result_id_does_not_exist(local_resource):
    for bad in ("nope", "999999"):
        with pytest.raises(TaskResultDoesNotExist):
            default_task_backend.get_result(bad)
    # a run that is not a task's is not a task result either
    other = TaskDefinition.objects.create(name="Hello", program="hello.py")
    run = services.run_enqueue(definition=other, resource=local_resource)
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(str(run.pk))


def test_periodic_tasks_sync_add_change_keep_a_pause_and_disable_when_gone(
    local_resource, settings
):
    report = periodic.sync()
    assert report["added"] == ["demo.tasks.count_measurements"]
    rec = Recurrence.objects.get(name=periodic.DECLARED)
    assert rec.definition.name == "demo.tasks.count_measurements"
    assert (rec.cron_expression, rec.timezone, rec.enabled) == (
        "30 3 * * *",
        "Europe/Amsterdam",
        True,
    )
    assert rec.next_due_at is not None
    assert periodic.sync() == {"added": [], "changed": [], "disabled": [], "refused": []}

    # An operator pauses it; a deploy changes the time: changed, still paused.
    services.recurrence_pause(recurrences=Recurrence.objects.filter(pk=rec.pk))
    settings.SCHEDULER_PERIODIC_TASKS = {
        "demo.tasks.count_measurements": {"schedule": "0 4 * * *", "timezone": "UTC"}
    }
    assert periodic.sync()["changed"] == ["demo.tasks.count_measurements"]
    rec.refresh_from_db()
    assert (rec.cron_expression, rec.timezone, rec.enabled) == ("0 4 * * *", "UTC", False)

    # Gone from the code: disabled with a note, never deleted.
    settings.SCHEDULER_PERIODIC_TASKS = {}
    periodic._declared.pop("demo.tasks.count_measurements")
    try:
        services.recurrence_resume(rec=rec)
        rec.save()
        assert periodic.sync()["disabled"] == ["demo.tasks.count_measurements"]
        rec.refresh_from_db()
        assert not rec.enabled and "Not declared in code any more" in rec.last_error
        assert Recurrence.objects.filter(pk=rec.pk).exists()
    finally:
        periodic.declare(count_measurements)
    # Back in the code: enabled again (the sync disabled it, not an operator).
    assert periodic.sync()["changed"] == ["demo.tasks.count_measurements"]
    rec.refresh_from_db()
    assert rec.enabled and rec.last_error == ""


def test_a_periodic_occurrence_runs_the_task(poller, local_resource):
    from scheduler.scheduling import schedule_materialize

    periodic.sync()
    rec = Recurrence.objects.get(name=periodic.DECLARED)
    # The schedule's next occurrence (03:30 Amsterdam) as the clock will find it ...
    assert schedule_materialize(now=rec.next_due_at + dt.timedelta(seconds=1)) == 1
    run = Run.objects.get(recurrence=rec)
    assert run.due_at == rec.next_due_at
    # ... made due now, as an operator's Run now on the queued run does.
    assert services.run_make_due_now(run=run)
    run = run_to_end(poller, run)
    assert run.state == Run.State.SUCCEEDED
    result = default_task_backend.get_result(str(run.pk))
    assert result.return_value == 0  # no demo measurements in the test database
