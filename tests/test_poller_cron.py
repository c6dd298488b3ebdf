"""Cron mode: the CRONJOBS entry, run the way django-crontab runs it, does one tick."""

from __future__ import annotations

import time

import pytest
from django_crontab.crontab import Crontab

from scheduler import services
from scheduler.models import PollerHeartbeat, Run, TaskDefinition

pytestmark = pytest.mark.django_db(transaction=True)


def _job_hash() -> str:
    """The hash `manage.py crontab add` writes into the crontab line."""
    with Crontab(readonly=True, verbosity=0) as crontab:
        crontab.crontab_lines = []
        crontab.add_jobs()
        (line,) = crontab.crontab_lines
    assert line.startswith("* * * * *"), line
    return line.split("crontab run ")[1].split()[0]


def test_the_cron_entry_ticks_once_per_call_and_runs_end(local_resource):
    definition = TaskDefinition.objects.create(
        name="Hello", program="hello.py", default_resource=local_resource
    )
    run = services.run_enqueue(definition=definition)
    job = _job_hash()

    with Crontab(readonly=True, verbosity=0) as crontab:
        crontab.run_job(job)  # one tick: claimed and submitted, then the process would exit
    run.refresh_from_db()
    assert run.state in (Run.State.SUBMITTED, Run.State.RUNNING, Run.State.SUCCEEDED)
    assert run.saga_job_id, "the job id is stored before the tick ends"

    deadline = time.monotonic() + 60
    while not run.is_final and time.monotonic() < deadline:
        time.sleep(0.5)
        with Crontab(readonly=True, verbosity=0) as crontab:
            crontab.run_job(job)  # a later minute's tick tracks the job to its end
        run.refresh_from_db()
    assert run.state == Run.State.SUCCEEDED, (run.state, run.error)
    assert run.files.filter(kind="stdout").exists()

    beat = PollerHeartbeat.objects.get()
    assert beat.cron and beat.stopped_at is None
    assert beat.is_alive(), "a cron poller between two ticks is not shown as down"
