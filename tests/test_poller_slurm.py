"""Runs on a slurm://localhost resource through a real single-node Slurm, end to end."""

from __future__ import annotations

import hashlib
import time

import pytest
from django.conf import settings as django_settings

from poller.loop import Poller
from scheduler import services
from scheduler.models import ExecutionResource, Run, TaskDefinition, TaskParameter
from tests.poller_helpers import run_to_end, tick_until
from tests.poller_process import PROGRAMS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture(autouse=True)
def _programs(settings):
    settings.SCHEDULER_PROGRAM_DIRS = [*django_settings.SCHEDULER_PROGRAM_DIRS, PROGRAMS]


@pytest.fixture
def cluster(slurm, tmp_path):
    return ExecutionResource.objects.create(
        name="cluster",
        job_service_url="slurm://localhost/",
        queue="debug",
        working_root=str(tmp_path / "slurm-runs"),
        max_concurrent_runs=4,
    )


@pytest.fixture
def behave(cluster):
    d = TaskDefinition.objects.create(
        name="Behave slurm", program="behave.py", default_resource=cluster
    )
    TaskParameter.objects.create(definition=d, name="mode", default="ok")
    return d


@pytest.fixture
def poller(django_db_blocker):
    p = Poller(name="test-slurm", services_per_resource=1)
    yield p
    with django_db_blocker.unblock():
        p.close()


def _job_number(run: Run) -> str:
    # "[slurm://localhost/]-[42]"
    return run.saga_job_id.rsplit("[", 1)[1].rstrip("]")


def test_the_hello_example_runs_as_a_slurm_job_with_messages_and_files_home(
    poller, cluster, slurm
):
    hello = TaskDefinition.objects.create(
        name="Hello slurm", program="hello.py", default_resource=cluster
    )
    TaskParameter.objects.create(definition=hello, name="name", default="Slurm")
    run = run_to_end(poller, services.run_enqueue(definition=hello), timeout=90)
    assert run.state == Run.State.SUCCEEDED, (run.error, slurm.logs()[-2000:])
    assert run.exit_code == 0 and run.progress == 100
    assert run.saga_job_id.startswith("[slurm://localhost/]-[")
    texts = " ".join(run.messages.values_list("text", flat=True))
    assert "Slurm" in texts
    for f in run.files.all():
        data = f.absolute_path().read_bytes()
        assert hashlib.sha256(data).hexdigest() == f.sha256 and len(data) == f.size
    assert run.files.filter(kind="stdout").exists()


def test_a_failing_program_on_slurm_fails_with_its_stderr(poller, behave):
    run = run_to_end(
        poller, services.run_enqueue(definition=behave, parameters={"mode": "exit"}), timeout=90
    )
    assert run.state == Run.State.FAILED
    assert run.exit_code == 3
    assert "about to exit with 3" in run.error


def test_cancel_ends_the_slurm_job(poller, behave, slurm):
    run = services.run_enqueue(definition=behave, parameters={"mode": "sleep"})
    tick_until(
        poller,
        lambda: Run.objects.get(pk=run.pk).progress >= 3,  # the program is really going
        timeout=90,
    )
    run.refresh_from_db()
    job = _job_number(run)
    assert job in slurm.queued_job_ids()
    services.run_request_cancel(run=run)
    run = run_to_end(poller, run, timeout=60)
    assert run.state == Run.State.CANCELLED
    deadline = time.monotonic() + 30
    while job in slurm.queued_job_ids() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert job not in slurm.queued_job_ids(), "the batch job really ended"


def test_a_job_slurm_has_forgotten_is_finished_from_the_exit_record(poller, behave, slurm):
    run = services.run_enqueue(definition=behave)
    tick_until(poller, lambda: bool(Run.objects.get(pk=run.pk).saga_job_id), timeout=60)
    run.refresh_from_db()
    job = _job_number(run)
    # No ticks while the job runs, ends and ages out of slurmctld (MinJobAge=2).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shown = slurm.run("scontrol", "show", "job", job)
        if "JobState" not in shown:
            break
        time.sleep(1)
    assert "JobState" not in slurm.run("scontrol", "show", "job", job), "Slurm forgot the job"
    run = run_to_end(poller, run, timeout=60)
    assert run.state == Run.State.SUCCEEDED, run.error
    assert run.exit_code == 0
    assert run.files.get(name="result.txt", kind="output").size == 5
