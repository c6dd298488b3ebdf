"""Bulk submission to local job services, their shell without a terminal, the
poller's own end of a cancelled local run, and the tidying of radical.saga's state."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from django.conf import settings as django_settings
from django.db import connection

from poller import rundir as rundirs
from poller.loop import keep_database_connections
from poller.saga_executor import JobServicePool, JobSpec, local_job_base, tidy_local_job_state
from scheduler import services
from scheduler.models import ExecutionResource, Run
from tests.poller_helpers import poller_fixture, run_to_end, tick_until

PROGRAMS = Path(__file__).parent / "programs"

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("test_programs", "bundles"),
]


@pytest.fixture
def bundles(local_resource):
    """These tests are about bundles: the local resource's pilot (on by
    default, tests/test_pilot.py) is off here."""
    local_resource.pilot = False
    local_resource.save()
    return local_resource


@pytest.fixture
def pool():
    resource, _ = ExecutionResource.objects.get_or_create(
        name="bulk", defaults={"job_service_url": "fork://localhost"}
    )
    p = JobServicePool(resource, size=2)
    yield p
    p.close()


def _spec(i: int, work: Path, script: str) -> JobSpec:
    d = work / f"job-{i}"
    return JobSpec(
        run_id=i,
        executable="/bin/sh",
        arguments=["-c", script],
        working_directory=str(d),
        environment={"JOB_NUMBER": str(i)},
    )


def _wait_for(predicate, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout} s")


def test_local_job_shells_have_no_controlling_terminal(pool, tmp_path):
    """Without one, dash's job control cannot stop the wrapper (local_shell.sh)."""
    script = "if (exec 3</dev/tty) 2>/dev/null; then echo has-tty; else echo no-tty; fi > tty.txt"
    pool.submit(_spec(0, tmp_path, script))
    out = tmp_path / "job-0" / "tty.txt"
    _wait_for(lambda: out.exists() and out.read_text())
    assert out.read_text() == "no-tty\n"


@pytest.mark.slow
def test_many_jobs_back_to_back_never_hang_a_job_service(pool, tmp_path):
    """Before local_shell.sh, a job service stopped for ever (SIGTTIN from dash's
    `set -m`) about once in 1,000-3,000 jobs."""
    submitted = []
    failures = []

    def work(k: int):
        for i in range(200):
            answer = pool.submit_quietly(_spec(k * 1000 + i, tmp_path, "true"))
            (submitted if isinstance(answer, str) else failures).append(answer)

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(240)
    assert not any(t.is_alive() for t in threads), f"a job service hung after {len(submitted)} jobs"
    assert not failures and len(set(submitted)) == 400


poller = poller_fixture("test-bulk", services=2)


def test_forty_runs_queued_at_once_all_succeed_with_their_files(poller, behave, local_resource):
    local_resource.max_concurrent_runs = 40
    local_resource.save()
    runs = [services.run_enqueue(definition=behave, parameters={"mode": "ok"}) for _ in range(40)]
    tick_until(
        poller,
        lambda: (
            Run.objects.filter(pk__in=[r.pk for r in runs], state__in=Run.FINAL_STATES).count()
            == 40
        ),
        timeout=120,
    )
    pids = set()
    for run in Run.objects.filter(pk__in=[r.pk for r in runs]):
        assert run.state == Run.State.SUCCEEDED, run.error
        assert run.files.filter(name="result.txt").exists()
        pids.add(json.loads(Path(run.run_directory, "launched").read_text())["pid"])
    assert len(pids) == 40, "every run had a launcher process of its own"
    jobs = set(
        Run.objects.filter(pk__in=[r.pk for r in runs]).values_list("saga_job_id", flat=True)
    )
    # Bundles: never more runs to a job than SCHEDULER_SUBMIT_BULK, fewer jobs than runs.
    assert 40 / django_settings.SCHEDULER_SUBMIT_BULK <= len(jobs) < 40, jobs
    assert all(j.startswith("[fork://localhost]-[") for j in jobs)


def test_cancelling_one_run_of_a_bundle_leaves_the_others_running(poller, behave, local_resource):
    local_resource.max_concurrent_runs = 10
    local_resource.save()
    sleeper = services.run_enqueue(definition=behave, parameters={"mode": "sleep"})
    nappers = [
        services.run_enqueue(definition=behave, parameters={"mode": "nap"}) for _ in range(2)
    ]
    everyone = [sleeper, *nappers]
    tick_until(
        poller,
        lambda: Run.objects.filter(pk__in=[r.pk for r in everyone], events_seq__gte=2).count() == 3,
        timeout=60,
    )
    job = {r.pk: r.saga_job_id for r in Run.objects.filter(pk__in=[r.pk for r in everyone])}
    assert any(job[n.pk] == job[sleeper.pk] for n in nappers), "claimed in one tick, bundled"
    services.run_request_cancel(run=sleeper)
    sleeper = run_to_end(poller, sleeper, timeout=30)
    assert sleeper.state == Run.State.CANCELLED
    for napper in nappers:
        napper = run_to_end(poller, napper, timeout=60)
        assert napper.state == Run.State.SUCCEEDED, napper.error
        assert napper.files.filter(name="result.txt").exists()


def test_a_run_killed_inside_a_bundle_fails_with_the_signal_and_its_siblings_succeed(
    poller, behave, local_resource
):
    local_resource.max_concurrent_runs = 10
    local_resource.save()
    killed = services.run_enqueue(definition=behave, parameters={"mode": "signal"})
    fine = [services.run_enqueue(definition=behave, parameters={"mode": "ok"}) for _ in range(3)]
    for run in [killed, *fine]:
        run_to_end(poller, run, timeout=60)
    killed.refresh_from_db()
    assert killed.state == Run.State.FAILED
    assert "Killed by signal 9" in killed.error and killed.exit_code == 137, killed.error
    assert all(Run.objects.get(pk=r.pk).state == Run.State.SUCCEEDED for r in fine)
    job = dict(Run.objects.values_list("pk", "saga_job_id"))
    assert any(job[r.pk] == job[killed.pk] for r in fine), "claimed in one tick, bundled"


def test_cancel_ends_a_local_program_that_ignores_sigterm(poller, behave):
    run = services.run_enqueue(definition=behave, parameters={"mode": "stubborn"})
    tick_until(poller, lambda: Run.objects.get(pk=run.pk).messages.count() >= 2)
    run.refresh_from_db()
    pid = int(Path(run.run_directory, "stubborn.pid").read_text())
    assert psutil.pid_exists(pid)
    services.run_request_cancel(run=run)
    run = run_to_end(poller, run, timeout=60)
    assert run.state == Run.State.CANCELLED
    _wait_for(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", 15)


def test_a_launcher_that_finds_the_cancelled_mark_starts_nothing(tmp_path):
    run_dir = tmp_path / "run-1"
    (run_dir / "outputs").mkdir(parents=True)
    client = Path(django_settings.BASE_DIR) / "task_programs" / "scheduler_client.py"
    (run_dir / "scheduler_client.py").write_bytes(client.read_bytes())
    (run_dir / "task.py").write_text("open('started', 'w').write('yes')\n")
    (run_dir / "run.json").write_text('{"v": 1, "run_id": 1, "parameters": {}, "args": []}')
    (run_dir / "cancelled").touch()
    import subprocess

    done = subprocess.run(
        [sys.executable, "scheduler_client.py", "run", "task.py"],
        cwd=run_dir,
        env={**os.environ, "SCHEDULER_RUN_DIR": str(run_dir)},
        timeout=60,
    )
    assert done.returncode == 143
    assert not (run_dir / "started").exists()
    record = json.loads((run_dir / "exit.json").read_text())
    assert record["failed"] and "Cancelled before the program started" in record["error"]


def test_end_launcher_leaves_a_process_that_is_not_the_runs_launcher_alone(tmp_path):
    """A reused pid in `launched` is never signalled."""
    import socket
    import subprocess

    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run_dir = tmp_path / "run-7"
        run_dir.mkdir()
        (run_dir / "launched").write_text(
            json.dumps({"pid": stranger.pid, "host": socket.gethostname()})
        )
        resource = ExecutionResource(name="x", job_service_url="fork://localhost")
        assert rundirs.for_resource(resource).end_launcher(str(run_dir), grace=0.5) is False
        assert stranger.poll() is None
        assert (run_dir / "cancelled").exists()
    finally:
        stranger.kill()
        stranger.wait()


def test_tidy_removes_only_ended_saga_job_folders_and_truncates_long_notifications(
    settings, tmp_path
):
    settings.SCHEDULER_SAGA_BASE = tmp_path / "saga"
    base = local_job_base()
    base.mkdir(parents=True)
    old = time.time() - 3600
    for name, states in [
        ("100.0", "NEW \nRUNNING \nDONE \n"),
        ("101.0", "NEW \nRUNNING \nFAILED \n"),
        ("102.0", "NEW \nRUNNING \n"),
        ("103.0", "NEW \nRUNNING \nCANCELED \n"),
    ]:
        (base / name).mkdir()
        (base / name / "state").write_text(states)
        os.utime(base / name / "state", (old, old))
    (base / "104.0").mkdir()
    (base / "104.0" / "state").write_text("NEW \nRUNNING \nDONE \n")  # ended a moment ago
    (base / "wrapper.sh").write_text("#!/bin/sh\n")
    (base / "notifications").write_bytes(b"1.0:DONE:0 \n" * 1000)
    removed, truncated = tidy_local_job_state(older_than=600, truncate_at=5000)
    assert removed == 3 and truncated
    assert sorted(p.name for p in base.iterdir()) == [
        "102.0",
        "104.0",
        "notifications",
        "wrapper.sh",
    ]
    assert (base / "notifications").stat().st_size == 0
    assert tidy_local_job_state(older_than=600, truncate_at=5000) == (0, False)


def test_a_long_lived_poller_keeps_its_database_connection_between_ticks(poller):
    from django.db import connections

    before = {alias: connections.settings[alias]["CONN_MAX_AGE"] for alias in connections}
    keep_database_connections()
    try:
        poller.tick()
        first = connection.connection
        poller.tick()
        poller.tick()
        assert first is not None and connection.connection is first
    finally:
        for alias, value in before.items():
            connections.settings[alias]["CONN_MAX_AGE"] = value


def test_services_forget_ended_jobs_and_bound_what_their_monitors_keep(pool, tmp_path):
    from poller.saga_executor import _BoundedEvents

    job_id = pool.submit(_spec(0, tmp_path, "true"))
    [service] = pool._all
    assert job_id in service._adaptor.jobs
    pool.forget(job_id)
    assert job_id not in service._adaptor.jobs
    events = service._adaptor.monitor.events
    assert isinstance(events, _BoundedEvents)

    bounded = _BoundedEvents()
    for i in range(_BoundedEvents.LIMIT + 500):
        bounded[f"job-{i}"] = ["RUNNING"]
        bounded[f"job-{i}"].append("DONE")
    assert len(bounded) == _BoundedEvents.LIMIT
    assert "job-0" not in bounded and bounded[f"job-{_BoundedEvents.LIMIT + 499}"] == [
        "RUNNING",
        "DONE",
    ]


def test_a_launchers_descendants_are_found_without_reading_every_process():
    """rundir._descendants walks /proc/PID/task/TID/children; it must find what
    psutil's scan of every process finds, grandchildren included."""
    import subprocess

    from poller.rundir import _descendants

    tree = subprocess.Popen(["sh", "-c", "sleep 60 & (sleep 60 & wait) & wait"])
    try:
        top = psutil.Process(tree.pid)
        _wait_for(lambda: len(top.children(recursive=True)) == 3, 10)
        ours = sorted(p.pid for p in _descendants(top))
        assert ours == sorted(p.pid for p in top.children(recursive=True))
        assert len(ours) == 3
    finally:
        for proc in psutil.Process(tree.pid).children(recursive=True):
            proc.kill()
        tree.kill()
        tree.wait()


@pytest.mark.slow
def test_a_local_resource_whose_python_does_not_exist_fails_its_runs_with_the_reason(
    poller, behave, local_resource
):
    local_resource.python = "/nonexistent/python3"
    local_resource.save()
    runs = [services.run_enqueue(definition=behave, parameters={"mode": "ok"}) for _ in range(2)]
    for run in runs:
        run = run_to_end(poller, run, timeout=90)
        assert run.state == Run.State.FAILED
        assert run.exit_code == 127, (run.exit_code, run.error)
    errors = " ".join(
        Run.objects.filter(pk__in=[r.pk for r in runs]).values_list("error", flat=True)
    )
    assert "/nonexistent/python3" in errors and "not found" in errors, errors


def test_one_tracking_pass_asks_saga_once_about_a_bundles_job(poller, behave, local_resource):
    poller.services_per_resource = 1  # before its first tick makes the pool: one bundle
    local_resource.max_concurrent_runs = 10
    local_resource.save()
    runs = [services.run_enqueue(definition=behave, parameters={"mode": "nap"}) for _ in range(2)]
    tick_until(
        poller,
        lambda: (
            Run.objects.filter(pk__in=[r.pk for r in runs], state=Run.State.RUNNING).count() == 2
        ),
        timeout=60,
    )
    jobs = {r.saga_job_id for r in Run.objects.filter(pk__in=[r.pk for r in runs])}
    assert len(jobs) == 1, "two runs claimed in one tick by a one-service poller share a job"
    pool = poller._pool(local_resource)
    asked = []
    real_state = pool.state
    pool.state = lambda job_id: asked.append(job_id) or real_state(job_id)
    for flight in poller._flights.values():
        flight.last_saga_check = 0.0  # due for a SAGA check now
    poller.track()
    assert asked == list(jobs)
    for run in runs:
        assert run_to_end(poller, run, timeout=60).state == Run.State.SUCCEEDED


def test_a_run_whose_job_id_could_not_be_stored_is_not_failed_nor_started_twice(
    poller, behave, local_resource, monkeypatch, tmp_path
):
    """The database refusing the job id's write (PostgreSQL chose the launch's
    update as a deadlock's victim in a CI run) leaves the run to be submitted
    again; its launcher, already running, is the only one."""
    from django.db import OperationalError

    from scheduler.models import TaskParameter

    local_resource.max_concurrent_runs = 10
    local_resource.save()
    TaskParameter.objects.create(definition=behave, name="ledger", default="")
    ledger = tmp_path / "ledger.txt"
    runs = [
        services.run_enqueue(definition=behave, parameters={"mode": "nap", "ledger": str(ledger)})
        for _ in range(2)
    ]
    real = services.run_mark_submitted
    refused = []

    def refuse_once(*, run, job_id, run_directory):
        if not refused:
            refused.append(run.pk)
            raise OperationalError("deadlock detected")
        return real(run=run, job_id=job_id, run_directory=run_directory)

    monkeypatch.setattr(services, "run_mark_submitted", refuse_once)
    for run in runs:
        run = run_to_end(poller, run, timeout=90)
        assert run.state == Run.State.SUCCEEDED, run.error
    assert refused and Run.objects.get(pk=refused[0]).saga_job_id
    assert sorted(ledger.read_text().split()) == sorted(str(r.pk) for r in runs)


def test_runs_claimed_while_the_services_are_busy_go_out_together_in_the_next_bundle(
    poller, behave, local_resource
):
    poller.services_per_resource = 1
    local_resource.max_concurrent_runs = 10
    local_resource.save()
    pool = poller._pool(local_resource)
    first = services.run_enqueue(definition=behave, parameters={"mode": "ok"})
    with pool.service():  # the only job service is busy: launches wait for it
        poller.launch(poller.claim())
        later = []
        for _ in range(3):  # claimed in three ticks
            later.append(services.run_enqueue(definition=behave, parameters={"mode": "ok"}))
            claimed = poller.claim()
            assert [r.pk for r in claimed] == [later[-1].pk]
            poller.launch(claimed)
        time.sleep(0.5)
        assert not Run.objects.exclude(saga_job_id="").exists(), "nothing went out yet"
    for run in [first, *later]:
        assert run_to_end(poller, run, timeout=60).state == Run.State.SUCCEEDED
    job = dict(Run.objects.values_list("pk", "saga_job_id"))
    assert len({job[r.pk] for r in later}) == 1, "the three waited and went out in one bundle"
    assert job[first.pk] != job[later[0].pk]
