"""The pilot on another host (issue 14, poller.pilots): over SSH (the test
sshd) and as a Slurm job holding an allocation (the test cluster), through the
real poller. The poller cannot see the processes of such a pilot: a run ends
on the pilot's word (its ``ended/<run id>``), never on an exit record alone."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil
import pytest

from scheduler import services
from scheduler.models import ExecutionResource, Run, TaskDefinition, TaskParameter
from tests.poller_helpers import poller_fixture, run_to_end, tick_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.usefixtures("test_programs"),
]

poller = poller_fixture("test-pilot-remote", services=1)


def _pilot_record(root: Path) -> dict:
    try:
        return json.loads((root / ".pilot" / "pilot.json").read_text())
    except (OSError, ValueError):
        return {}


def _end_pilot(root: Path) -> None:
    pid = _pilot_record(root).get("pid")
    if pid:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _processes_in(folder: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.cwd().startswith(str(folder)):
                found.append(proc)
    return found


def _assert_ends(run_dir: Path) -> None:
    """No process works in ``run_dir`` within 10 s: a cancelled program ended."""
    deadline = time.monotonic() + 10
    while _processes_in(run_dir) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _processes_in(run_dir), "the cancelled program still runs"


def _one_pilot_job_held_the_cores(slurm, root: Path, cores: int) -> None:
    """One batch job held the cores for every run: the pilot, still there."""
    jobs = slurm.queued_job_ids()
    assert len(jobs) == 1, slurm.run("squeue")
    assert Path(root, ".pilot", "submitted").read_text().endswith(f"[{jobs.pop()}]")
    assert _pilot_record(root)["cores"] == cores


def _ssh_pilot_resource(name: str, sshd_server, root: Path) -> ExecutionResource:
    """A resource on the test sshd whose runs go through its pilot, two at once."""
    return ExecutionResource.objects.create(
        name=name,
        job_service_url=f"ssh://{sshd_server.user}@{sshd_server.host}:{sshd_server.port}",
        ssh_user=sshd_server.user,
        ssh_key_path=sshd_server.key_path,
        working_root=str(root),
        python=sys.executable,
        max_concurrent_runs=2,
        pilot=True,
    )


def _definitions(resource) -> tuple[TaskDefinition, TaskDefinition]:
    behave = TaskDefinition.objects.create(
        name=f"Behave {resource.name}", program="behave.py", default_resource=resource
    )
    TaskParameter.objects.create(definition=behave, name="mode", default="ok")
    hostile = TaskDefinition.objects.create(
        name=f"Hostile {resource.name}", program="hostile.py", default_resource=resource
    )
    for param in ("mode", "other"):
        TaskParameter.objects.create(definition=hostile, name=param, default="")
    return behave, hostile


def _check_pilot_runs(poller, resource, root: Path) -> None:
    """Runs through the pilot end as their programs did; a cancel ends the
    program; a success record forged into a running sibling's directory is not
    believed while the pilot has not said the sibling's launcher ended."""
    behave, hostile = _definitions(resource)
    runs = [services.run_enqueue(definition=behave) for _ in range(4)]
    tick_until(poller, lambda: all(Run.objects.get(pk=r.pk).is_final for r in runs), timeout=120)
    for run in Run.objects.filter(pk__in=[r.pk for r in runs]):
        assert run.state == Run.State.SUCCEEDED, run.error
        assert run.saga_job_id == f"pilot:{resource.pk}"
        assert run.exit_code == 0
    pilot = _pilot_record(root)
    assert pilot.get("pid") and psutil.pid_exists(pilot["pid"])
    # The poller took its word and then its entry away.
    assert not any((root / ".pilot" / "ended").iterdir())

    failing = run_to_end(
        poller, services.run_enqueue(definition=behave, parameters={"mode": "exit"}), timeout=60
    )
    assert failing.state == Run.State.FAILED and failing.exit_code == 3, failing.error

    sleeping = services.run_enqueue(definition=behave, parameters={"mode": "sleep"})
    tick_until(
        poller, lambda: Run.objects.get(pk=sleeping.pk).state == Run.State.RUNNING, timeout=60
    )
    sleeping.refresh_from_db()
    assert _processes_in(Path(sleeping.run_directory))
    services.run_request_cancel(run=sleeping)
    sleeping = run_to_end(poller, sleeping, timeout=60)
    assert sleeping.state == Run.State.CANCELLED
    _assert_ends(Path(sleeping.run_directory))
    assert _pilot_record(root).get("pid") == pilot["pid"], "the cancel ended the pilot"

    victim = services.run_enqueue(definition=hostile, parameters={"mode": "wait"})
    tick_until(poller, lambda: Run.objects.get(pk=victim.pk).state == Run.State.RUNNING, timeout=60)
    victim.refresh_from_db()
    forger = run_to_end(
        poller,
        services.run_enqueue(
            definition=hostile, parameters={"mode": "forge_exit", "other": victim.run_directory}
        ),
        timeout=60,
    )
    assert forger.state == Run.State.SUCCEEDED, forger.error
    assert json.loads(Path(victim.run_directory, "exit.json").read_text())["exit_code"] == 0
    end = time.monotonic() + 3
    while time.monotonic() < end:
        poller.tick()
        time.sleep(0.05)
    victim.refresh_from_db()
    assert victim.state == Run.State.RUNNING, "a forged exit record was believed"
    Path(victim.run_directory, "release").touch()
    victim = run_to_end(poller, victim, timeout=60)
    assert (victim.state, victim.exit_code) == (Run.State.FAILED, 3)


def test_the_pilot_over_ssh(poller, sshd_server, tmp_path, settings):
    settings.SCHEDULER_PILOT_IDLE_SECONDS = 60
    root = tmp_path / "ssh-runs"
    resource = _ssh_pilot_resource("sshpilot", sshd_server, root)
    try:
        _check_pilot_runs(poller, resource, root)
    finally:
        _end_pilot(root)


def test_the_pilot_as_a_slurm_job_holding_its_cores(poller, slurm, tmp_path, settings):
    settings.SCHEDULER_PILOT_IDLE_SECONDS = 60
    root = tmp_path / "slurm-runs"
    resource = ExecutionResource.objects.create(
        name="slurmpilot",
        job_service_url="slurm://localhost/",
        queue="debug",
        working_root=str(root),
        max_concurrent_runs=2,
        pilot=True,
    )
    try:
        _check_pilot_runs(poller, resource, root)
        _one_pilot_job_held_the_cores(slurm, root, cores=2)
    finally:
        slurm.run("scancel", "--user", "root")
        _end_pilot(root)


def test_the_pilot_as_a_slurm_job_submitted_over_ssh_to_a_login_node(
    poller, slurm, slurm_login_node, tmp_path, settings
):
    """slurm+ssh://, a site's usual cluster: the pilot's job goes in by sbatch
    over SSH, and its inbox, records and the runs' directories are read and
    written over SSH, on the cluster's file system (here the same host)."""
    settings.SCHEDULER_PILOT_IDLE_SECONDS = 60
    login = slurm_login_node
    root = tmp_path / "login-runs"
    resource = ExecutionResource.objects.create(
        name="loginpilot",
        job_service_url=f"slurm+ssh://{login.user}@{login.host}:{login.port}/",
        ssh_user=login.user,
        ssh_key_path=login.key_path,
        queue="debug",
        working_root=str(root),
        python=sys.executable,
        max_concurrent_runs=2,
        pilot=True,
    )
    assert not resource.on_this_host()
    behave, _ = _definitions(resource)
    try:
        runs = [services.run_enqueue(definition=behave) for _ in range(3)]
        runs.append(services.run_enqueue(definition=behave, parameters={"mode": "sleep"}))
        tick_until(
            poller, lambda: Run.objects.get(pk=runs[-1].pk).state == Run.State.RUNNING, timeout=90
        )
        services.run_request_cancel(run=Run.objects.get(pk=runs[-1].pk))
        tick_until(poller, lambda: all(Run.objects.get(pk=r.pk).is_final for r in runs), timeout=60)
        states = [Run.objects.get(pk=r.pk).state for r in runs]
        assert states == [Run.State.SUCCEEDED] * 3 + [Run.State.CANCELLED], states
        for run in Run.objects.filter(pk__in=[r.pk for r in runs]):
            assert run.saga_job_id == f"pilot:{resource.pk}"
        assert Run.objects.get(pk=runs[0].pk).files.filter(kind="output").exists()
        sleeping = Run.objects.get(pk=runs[-1].pk)
        _assert_ends(Path(sleeping.run_directory))
        _one_pilot_job_held_the_cores(slurm, root, cores=2)
    finally:
        slurm.run("scancel", "--user", "root")
        _end_pilot(root)


def test_a_pilot_slurm_will_not_start_leaves_the_runs_to_jobs_of_their_own(
    poller, slurm, tmp_path, settings
):
    # 8 cores on a node of 2: the pilot's job waits in the queue for ever.
    settings.SCHEDULER_PILOT_QUEUE_SECONDS = 3
    resource = ExecutionResource.objects.create(
        name="slurmnopilot",
        job_service_url="slurm://localhost/",
        queue="debug",
        working_root=str(tmp_path / "slurm-runs"),
        max_concurrent_runs=8,
        pilot=True,
    )
    behave, _ = _definitions(resource)
    runs = [services.run_enqueue(definition=behave) for _ in range(2)]
    tick_until(poller, lambda: all(Run.objects.get(pk=r.pk).is_final for r in runs), timeout=120)
    for run in Run.objects.filter(pk__in=[r.pk for r in runs]):
        assert run.state == Run.State.SUCCEEDED, run.error
        assert run.saga_job_id.startswith("[slurm://localhost/]-["), run.saga_job_id
    assert poller._pilots.broken(resource)
    assert slurm.queued_job_ids() == set(), "the pilot's job was not cancelled"
    texts = " ".join(Run.objects.get(pk=runs[0].pk).messages.values_list("text", flat=True))
    assert "pilot of slurmnopilot could not be started" in texts


def test_a_batch_pilot_drains_before_its_wall_time_and_the_next_one_takes_over(
    poller, slurm, tmp_path, settings
):
    """A Slurm pilot of 1 minute (it starts runs for 30 s of it) with 20 s to
    drain: a run without a timeout queued after its first 10 s is not started
    by it (Slurm would cut it), the pilot ends with its last run instead of at
    its wall time, and the next pilot job starts the waiting run. Before, a
    pilot that had run and ended left the resource without a pilot for 5
    minutes, its end taken for a pilot that "ended before it ran"."""
    settings.SCHEDULER_PILOT_IDLE_SECONDS = 60
    settings.SCHEDULER_PILOT_WALL_MINUTES = 1
    settings.SCHEDULER_PILOT_DRAIN_SECONDS = 20
    root = tmp_path / "slurm-runs"
    resource = ExecutionResource.objects.create(
        name="slurmdrain",
        job_service_url="slurm://localhost/",
        queue="debug",
        working_root=str(root),
        max_concurrent_runs=2,
        pilot=True,
    )
    behave, hostile = _definitions(resource)
    try:
        holder = services.run_enqueue(definition=hostile, parameters={"mode": "wait"})
        tick_until(
            poller, lambda: Run.objects.get(pk=holder.pk).state == Run.State.RUNNING, timeout=90
        )
        holder.refresh_from_db()
        first_job = (root / ".pilot" / "submitted").read_text()
        tick_until(poller, lambda: _pilot_record(root).get("draining") is True, timeout=30)
        late = services.run_enqueue(definition=behave)
        end = time.monotonic() + 3
        while time.monotonic() < end:
            poller.tick()
            time.sleep(0.1)
        late.refresh_from_db()
        assert late.state == Run.State.SUBMITTED, (late.state, late.error)
        assert not Path(late.run_directory, "launched").exists()
        Path(holder.run_directory, "release").touch()
        late = run_to_end(poller, late, timeout=120)
        assert late.state == Run.State.SUCCEEDED, late.error
        assert late.saga_job_id == f"pilot:{resource.pk}"
        assert (root / ".pilot" / "submitted").read_text() != first_job, "no second pilot job"
        assert not poller._pilots.broken(resource)
        holder = run_to_end(poller, holder, timeout=60)
        assert (holder.state, holder.exit_code) == (Run.State.FAILED, 3), holder.error
        assert len(slurm.queued_job_ids()) == 1, slurm.run("squeue")  # the new pilot only
    finally:
        slurm.run("scancel", "--user", "root")
        _end_pilot(root)


def test_a_pilot_on_a_host_whose_clock_is_off_is_alive_while_it_beats(
    poller, sshd_server, tmp_path, settings, monkeypatch
):
    """The poller's clock an hour off the pilot's (a cluster without NTP): the
    pilot's alive_at always looks an hour old. Its runs must run on, taken for
    alive because its record keeps changing; before, the run was finished as
    lost 5 s after it started, while its program ran."""
    import datetime as dt
    import types

    from django.utils import timezone as real

    from poller import pilots, tracking

    monkeypatch.setattr(tracking, "SAGA_CHECK_SECONDS", 0.3)
    # Longer than the pilot's 2 s between beats (it is 5 s): an end seen at
    # the first read of the record waits for a second read.
    monkeypatch.setattr(tracking, "EXIT_RECORD_GRACE_SECONDS", 3.0)
    monkeypatch.setattr(
        pilots,
        "timezone",
        types.SimpleNamespace(
            now=lambda: real.now() + dt.timedelta(hours=1), is_naive=real.is_naive
        ),
    )
    settings.SCHEDULER_PILOT_IDLE_SECONDS = 60
    root = tmp_path / "ssh-runs"
    resource = _ssh_pilot_resource("sshskew", sshd_server, root)
    behave, _ = _definitions(resource)
    try:
        run = services.run_enqueue(definition=behave, parameters={"mode": "sleep"})
        tick_until(
            poller, lambda: Run.objects.get(pk=run.pk).state == Run.State.RUNNING, timeout=60
        )
        end = time.monotonic() + 8
        while time.monotonic() < end:
            poller.tick()
            time.sleep(0.1)
        run.refresh_from_db()
        assert run.state == Run.State.RUNNING, (run.state, run.error)
        assert run.saga_job_id == f"pilot:{resource.pk}"
        services.run_request_cancel(run=run)
        run = run_to_end(poller, run, timeout=60)
        assert run.state == Run.State.CANCELLED, run.error
    finally:
        _end_pilot(root)


def test_a_run_outlives_its_killed_ssh_pilot_and_ends_by_its_own_record(
    poller, sshd_server, tmp_path, settings, monkeypatch
):
    """SIGKILL to a pilot over SSH: its launchers live on (each in a process
    group of its own), and the poller cannot see them. The launcher's lock on
    its ``launched`` marker says it runs: the run stays RUNNING and ends by
    its own exit record. Before, it was finished as LOST 5 s after the pilot
    died, while its program ran on."""
    from poller import pilots, tracking

    monkeypatch.setattr(tracking, "SAGA_CHECK_SECONDS", 0.3)
    monkeypatch.setattr(tracking, "EXIT_RECORD_GRACE_SECONDS", 1.0)
    # A dead pilot's last pilot.json is taken for gone 4 s after (15 s): the
    # pilot rewrites it every 2 s while it lives.
    monkeypatch.setattr(pilots, "ALIVE_SECONDS", 4.0)
    settings.SCHEDULER_PILOT_IDLE_SECONDS = 60
    root = tmp_path / "ssh-runs"
    resource = _ssh_pilot_resource("sshkilled", sshd_server, root)
    _, hostile = _definitions(resource)
    try:
        run = services.run_enqueue(definition=hostile, parameters={"mode": "wait"})
        tick_until(
            poller, lambda: Run.objects.get(pk=run.pk).state == Run.State.RUNNING, timeout=60
        )
        run.refresh_from_db()
        pid = _pilot_record(root)["pid"]
        os.kill(pid, signal.SIGKILL)
        assert _processes_in(Path(run.run_directory)), "the launcher went with the pilot"
        # The pilot taken for gone (4 s), then the grace of its run's end (1 s).
        end = time.monotonic() + 8
        while time.monotonic() < end:
            poller.tick()
            time.sleep(0.1)
        run.refresh_from_db()
        assert run.state == Run.State.RUNNING, (run.state, run.error)
        Path(run.run_directory, "release").touch()
        run = run_to_end(poller, run, timeout=60)
        assert (run.state, run.exit_code) == (Run.State.FAILED, 3), run.error
    finally:
        _end_pilot(root)
