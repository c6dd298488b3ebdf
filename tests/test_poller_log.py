"""The poller's log at INFO says what an operator looks for, one line each: runs
taken back after a restart, runs adopted from a dead poller, a resource failing
and recovering, a prune, and a summary a minute while busy."""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from django.utils import timezone

from poller.loop import Poller
from scheduler import services
from scheduler.models import ExecutionResource, Run, TaskDefinition
from tests.poller_helpers import poller_fixture, run_to_end

pytestmark = pytest.mark.django_db(transaction=True)

poller = poller_fixture("log-poller")


@pytest.fixture
def hello(local_resource):
    return TaskDefinition.objects.create(
        name="Hello", program="hello.py", default_resource=local_resource
    )


def _lines(caplog, level=logging.INFO) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name.startswith("poller") and r.levelno >= level
    ]


def test_a_busy_minute_is_one_line_and_an_idle_one_is_none(poller, hello, caplog, settings):
    settings.SCHEDULER_LOG_SUMMARY_SECONDS = 0
    caplog.set_level(logging.INFO, logger="poller")
    runs = [services.run_enqueue(definition=hello) for _ in range(3)]
    for run in runs:
        run_to_end(poller, run)
    caplog.clear()
    poller._next_summary = 0
    poller.summarize()
    lines = [line for line in _lines(caplog) if line.startswith("last ")]
    assert lines == ["last 0 s: launched 3, ended 3 (3 succeeded); in flight 0, due and waiting 0"]
    caplog.clear()
    poller._next_summary = 0
    poller.summarize()  # nothing happened since: no line
    assert not [line for line in _lines(caplog) if line.startswith("last ")]


def test_runs_of_a_dead_poller_are_adopted_in_one_line(poller, hello, caplog):
    caplog.set_level(logging.INFO, logger="poller")
    expired = timezone.now() - dt.timedelta(minutes=5)
    ids = []
    for _ in range(3):
        run = services.run_enqueue(definition=hello)
        Run.objects.filter(pk=run.pk).update(
            state=Run.State.RUNNING,
            poller="old-host",
            lease_expires_at=expired,
            saga_job_id="[fork://localhost]-[1]",
        )
        ids.append(run.pk)
    assert poller.adopt_orphans()
    assert _lines(caplog) == [
        f"adopted 3 runs of poller old-host, whose lease ran out: {', '.join(map(str, ids))}"
    ]


def test_a_restart_says_which_runs_it_takes_back(hello, caplog):
    caplog.set_level(logging.INFO, logger="poller")
    run = services.run_enqueue(definition=hello)
    Run.objects.filter(pk=run.pk).update(state=Run.State.RUNNING, poller="same-name")
    again = Poller(name="same-name")
    try:
        assert again.log_taken_back() == 1
    finally:
        again.close()
    assert f"took back 1 run in flight from an earlier start of same-name: {run.pk}" in _lines(
        caplog
    )


def test_a_failing_resource_is_said_once_and_its_recovery_too(poller, hello, caplog):
    caplog.set_level(logging.INFO, logger="poller")
    down = ExecutionResource.objects.create(
        name="far", job_service_url="ssh://127.0.0.1:1", working_root="/tmp/far"
    )
    runs = [services.run_enqueue(definition=hello, resource=down) for _ in range(2)]
    for run in runs:
        Run.objects.filter(pk=run.pk).update(state=Run.State.SUBMITTED, poller=poller.ident)
        run.refresh_from_db()
        poller._launch_failed(run, OSError("Connection refused"))
    failing = [line for line in _lines(caplog, logging.WARNING) if line.startswith("resource far")]
    assert (
        len(failing) == 1 and "failing: Could not launch on far: Connection refused" in failing[0]
    )
    poller._resource_ok(down)
    assert any(line.startswith("resource far recovered after ") for line in _lines(caplog))
    assert [r.state for r in Run.objects.filter(pk__in=[r.pk for r in runs])] == ["QUEUED"] * 2


def test_a_prune_is_one_line(hello, caplog):
    from scheduler.retention import prune

    caplog.set_level(logging.INFO, logger="scheduler")
    old = services.run_enqueue(definition=hello)
    Run.objects.filter(pk=old.pk).update(
        state=Run.State.SUCCEEDED, finished_at=timezone.now() - dt.timedelta(days=40)
    )
    prune(older_than=dt.timedelta(days=30), keep_last=0)
    lines = [r.getMessage() for r in caplog.records if "retention" in r.getMessage()]
    assert lines == [
        "retention: pruned 1 runs, 0 messages, 0 files (0.0 MiB) (finished more than 30 days "
        "ago, the newest 0 per definition kept)"
    ]


def test_a_run_ended_before_its_launch_was_collected_leaves_no_flight(poller, hello):
    """collect_launches gave such a run a flight that nothing removed (one object
    per quick run, for the poller's life); the next tracking pass drops it."""
    run = run_to_end(poller, services.run_enqueue(definition=hello))
    poller._flights.setdefault(run.pk, object())  # what a late collection did
    poller.track()
    assert run.pk not in poller._flights
