"""A standing launcher per local resource (issue 14, poller.pilots) on
fork://localhost, through the real poller and the real SAGA job service."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import time

import psutil
import pytest

from poller import pilots
from scheduler import services
from scheduler.models import Run, TaskDefinition, TaskParameter
from tests.poller_helpers import poller_fixture, run_to_end, tick_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("test_programs")]

poller = poller_fixture("test-pilot", services=1)


@pytest.fixture
def piloted(local_resource, settings):
    settings.SCHEDULER_PILOT_IDLE_SECONDS = 30  # a safety net; the fixture ends it
    local_resource.pilot = True
    local_resource.max_concurrent_runs = 4
    local_resource.save()
    yield local_resource
    pid = _pilot_pid(local_resource)
    if pid:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _pilot_pid(resource) -> int | None:
    try:
        return json.loads((pilots.home(resource) / "pilot.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture
def behave(piloted):
    d = TaskDefinition.objects.create(name="Behave", program="behave.py", default_resource=piloted)
    TaskParameter.objects.create(definition=d, name="mode", default="ok")
    return d


def test_runs_go_through_one_pilot_that_outlives_the_poller(poller, behave, piloted):
    runs = [services.run_enqueue(definition=behave) for _ in range(12)]
    tick_until(poller, lambda: all(Run.objects.get(pk=r.pk).is_final for r in runs), timeout=60)
    for run in Run.objects.filter(pk__in=[r.pk for r in runs]):
        assert run.state == Run.State.SUCCEEDED, run.error
        assert run.saga_job_id == f"pilot:{piloted.pk}"
    pid = _pilot_pid(piloted)
    assert pid and psutil.pid_exists(pid)
    assert "pilot" in psutil.Process(pid).cmdline()
    # Once it has reaped the twelve launchers, a pilot on the poller's host has
    # left no ended/ marks: that poller watches the launchers itself, and no
    # one here removed them (they stayed 7 days, a file a run).
    deadline = time.monotonic() + 10
    while psutil.Process(pid).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    assert not psutil.Process(pid).children()
    assert sorted(os.listdir(pilots.home(piloted) / "ended")) == []
    # Its own session: the job service's shell (and the poller) may go.
    assert os.getsid(pid) == pid
    poller.close()
    time.sleep(0.5)
    assert psutil.pid_exists(pid), "the pilot ended with the poller"
    # The next poller hands its runs to the same pilot.
    from poller.loop import Poller

    second = Poller(name="test-pilot-2", services_per_resource=1)
    try:
        run = run_to_end(second, services.run_enqueue(definition=behave))
        assert run.state == Run.State.SUCCEEDED
        assert _pilot_pid(piloted) == pid
    finally:
        second.close()


def test_a_run_for_a_pilot_up_on_this_host_is_handed_over_within_the_tick(
    poller, behave, piloted, monkeypatch
):
    # The first run starts the pilot (through a launch thread: that takes SAGA).
    assert run_to_end(poller, services.run_enqueue(definition=behave)).state == "SUCCEEDED"
    assert pilots.record(piloted) is not None
    threads = []
    real = poller._launch_queued
    monkeypatch.setattr(poller, "_launch_queued", lambda *a: (threads.append(a), real(*a))[1])
    run = services.run_enqueue(definition=behave)
    poller.tick()
    # No wait for a launch thread's turn: when the tick is over, the run is with the pilot.
    run.refresh_from_db()
    assert threads == []
    assert run.saga_job_id == f"pilot:{piloted.pk}" and run.run_directory
    run = run_to_end(poller, run)
    assert run.state == Run.State.SUCCEEDED, run.error
    assert run.messages.filter(text="mode ok").count() == 1


def _launchers_in(run_dir: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.cwd() == run_dir and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def test_cancel_and_failure_of_a_pilot_run(poller, behave):
    sleeping = services.run_enqueue(definition=behave, parameters={"mode": "stubborn"})
    tick_until(poller, lambda: Run.objects.get(pk=sleeping.pk).state == Run.State.RUNNING)
    sleeping.refresh_from_db()
    assert _launchers_in(sleeping.run_directory)
    services.run_request_cancel(run=Run.objects.get(pk=sleeping.pk))
    sleeping = run_to_end(poller, sleeping)
    assert sleeping.state == Run.State.CANCELLED
    # The poller knew the pilot's launcher (a fork carrying the pilot's command
    # line) and ended it, SIGTERM ignored and all.
    assert not _launchers_in(sleeping.run_directory), "the cancelled program still runs"
    failing = run_to_end(
        poller, services.run_enqueue(definition=behave, parameters={"mode": "exit"})
    )
    assert failing.state == Run.State.FAILED and failing.exit_code == 3
    killed = run_to_end(
        poller, services.run_enqueue(definition=behave, parameters={"mode": "signal"}), timeout=60
    )
    assert killed.state == Run.State.FAILED and "signal 9" in killed.error


def test_a_run_waiting_for_a_killed_pilot_gets_a_new_one(poller, behave, piloted):
    first = run_to_end(poller, services.run_enqueue(definition=behave))
    assert first.state == Run.State.SUCCEEDED
    old = _pilot_pid(piloted)
    os.kill(old, signal.SIGKILL)
    tick_until(poller, lambda: pilots.record(piloted) is None, timeout=10)
    # An entry in the inbox with no pilot to take it, as after a crash.
    run = services.run_enqueue(definition=behave)
    tick_until(poller, lambda: Run.objects.get(pk=run.pk).saga_job_id != "", timeout=30)
    run = run_to_end(poller, run, timeout=60)
    assert run.state == Run.State.SUCCEEDED, run.error
    assert _pilot_pid(piloted) not in (None, old)


def test_an_idle_pilot_ends_itself(poller, behave, piloted, settings):
    settings.SCHEDULER_PILOT_IDLE_SECONDS = 1
    run = run_to_end(poller, services.run_enqueue(definition=behave))
    assert run.state == Run.State.SUCCEEDED
    pid = _pilot_pid(piloted)
    assert pid
    deadline = time.monotonic() + 15
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.Error:
            break
        time.sleep(0.1)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert pilots.record(piloted) is None and not (pilots.home(piloted) / "pilot.json").exists()


def test_a_second_pilot_in_the_same_home_leaves_at_once(poller, behave, piloted):
    import subprocess
    import sys

    run_to_end(poller, services.run_enqueue(definition=behave))
    home = pilots.home(piloted)
    out = subprocess.run(
        [sys.executable, str(home / "scheduler_client.py"), "pilot", str(home)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0 and "another pilot runs" in out.stdout


def test_a_long_pilot_run_is_running_whenever_the_poller_asks(poller, behave, monkeypatch):
    """The periodic check of a run with no exit record asks the pilot's side
    whether the launcher still runs; it must say yes for a pilot's fork (the
    launcher was taken for gone, and the run for LOST, 20 s into any run)."""
    from poller import tracking

    monkeypatch.setattr(tracking, "SAGA_CHECK_SECONDS", 0.2)
    monkeypatch.setattr(tracking, "EXIT_RECORD_GRACE_SECONDS", 0.2)
    run = services.run_enqueue(definition=behave, parameters={"mode": "sleep"})
    tick_until(poller, lambda: Run.objects.get(pk=run.pk).state == Run.State.RUNNING)
    end = time.monotonic() + 3
    while time.monotonic() < end:
        poller.tick()
        time.sleep(0.1)
    run.refresh_from_db()
    assert run.state == Run.State.RUNNING, (run.state, run.error)
    services.run_request_cancel(run=run)
    assert run_to_end(poller, run).state == Run.State.CANCELLED


@pytest.mark.parametrize("kind", ["fifo", "link", "flood"])
def test_a_pilot_record_a_program_tampered_with_is_no_record(local_resource, tmp_path, kind):
    """pilot.json sits where a program of the same account could reach it: a FIFO
    there must not hang the poller, a link must not be followed, a flood must not
    be read whole. The same for the shell command a remote home reads it with."""
    import subprocess

    folder = pilots.home(local_resource)
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / "pilot.json"
    good = json.dumps({"pid": 1, "alive_at": "2026-01-01T00:00:00+00:00"})
    if kind == "fifo":
        os.mkfifo(record)
    elif kind == "link":
        (tmp_path / "elsewhere.json").write_text(good)
        record.symlink_to(tmp_path / "elsewhere.json")
    else:
        record.write_text(json.dumps({"pid": 1, "pad": "x" * 2 * pilots.RECORD_MAX_BYTES}))
    try:
        import threading

        got = []
        reader = threading.Thread(
            target=lambda: got.append(pilots._LocalHome(local_resource)._read_record()),
            daemon=True,
        )
        reader.start()
        reader.join(timeout=3)
        if reader.is_alive():  # let the hung reader go before failing
            os.close(os.open(record, os.O_WRONLY | os.O_NONBLOCK))
        assert got == [None], "the read hung or took a record a program made"
        remote = pilots._RemoteHome.__new__(pilots._RemoteHome)
        remote.q = shlex.quote(str(folder))
        out = subprocess.run(
            ["sh", "-c", remote._read_record_command()],
            capture_output=True,
            timeout=5,
        ).stdout
        assert len(out) <= pilots.RECORD_MAX_BYTES
        if kind != "flood":
            assert out == b""
    finally:
        record.unlink()


WAIT_FOR_RELEASE = """
import os, time
while not os.path.exists("release"):
    time.sleep(0.05)
"""


@contextlib.contextmanager
def _pilot_alone(tmp_path, *options: str):
    """A pilot started by hand in ``tmp_path/home`` (no poller, no SAGA), with
    ``options``; killed at the end if still there. Yields (process, home)."""
    import subprocess
    import sys

    from tests.test_client_bundle import CLIENT

    home = tmp_path / "home"
    pilot = subprocess.Popen(
        [sys.executable, str(CLIENT), "pilot", str(home), "--idle", "300", "--poll", "0.05"]
        + ["--no-ended", *options],
        cwd=tmp_path,
    )
    try:
        yield pilot, home
    finally:
        if pilot.poll() is None:
            pilot.kill()
        pilot.wait()


def _pilot_json(home) -> dict:
    try:
        return json.loads((home / "pilot.json").read_text())
    except (OSError, ValueError):
        return {}


def _hand(home, run_dir) -> None:
    """An inbox entry for ``run_dir`` (run-N), as the poller writes one."""
    (home / "inbox" / f".{run_dir.name}").write_text(str(run_dir))
    os.replace(home / "inbox" / f".{run_dir.name}", home / "inbox" / run_dir.name.split("-")[1])


def _wait(what, seconds: float = 15) -> bool:
    end = time.monotonic() + seconds
    while not what() and time.monotonic() < end:
        time.sleep(0.02)
    return bool(what())


def test_a_pilot_near_its_wall_time_starts_only_what_can_end_and_then_ends(tmp_path):
    """A batch pilot (--wall, --drain) starts a run without a timeout only while
    --drain seconds are left, a run with one while it fits; what it cannot
    start stays in its inbox for the next pilot, and once draining it ends with
    its last launcher instead of holding its cores to the wall time."""
    from tests.test_client_bundle import _run_dir

    with _pilot_alone(tmp_path, "--cores", "4", "--wall", "6", "--drain", "4") as (pilot, home):
        assert _wait(lambda: _pilot_json(home).get("pid") == pilot.pid)
        assert _pilot_json(home)["draining"] is False and 0 < _pilot_json(home)["ends_in"] <= 6
        first = _run_dir(tmp_path, 1, WAIT_FOR_RELEASE)
        _hand(home, first)
        assert _wait(lambda: (first / "launched").exists()), "a run that fits was not started"
        assert _wait(lambda: _pilot_json(home).get("draining") is True)
        untimed = _run_dir(tmp_path, 2, "print('late')")
        timed = _run_dir(tmp_path, 3, "print('quick')")
        info = json.loads((timed / "run.json").read_text())
        (timed / "run.json").write_text(json.dumps({**info, "timeout_seconds": 1}))
        _hand(home, untimed)
        _hand(home, timed)
        assert _wait(lambda: (timed / "exit.json").exists()), "a run that fits was not started"
        assert json.loads((timed / "exit.json").read_text())["exit_code"] == 0
        time.sleep(0.3)  # the pilot looked at its inbox several times meanwhile
        assert not (untimed / "launched").exists(), "a run that cannot end in time started"
        assert (home / "inbox" / "2").read_text() == str(untimed), "the next pilot's run is gone"
        assert pilot.poll() is None, "a draining pilot left its running launcher"
        (first / "release").touch()
        # Ends with its last launcher, not at its idle time (300 s).
        assert pilot.wait(timeout=15) == 0
        assert json.loads((first / "exit.json").read_text())["exit_code"] == 0
        assert (home / "inbox" / "2").exists() and not (home / "pilot.json").exists()


def test_a_batch_pilot_gets_only_runs_that_can_end_in_its_time(settings, tmp_path):
    """A run whose timeout a new batch pilot could not hold goes as a job of its
    own; one handed to a running pilot must end FIT_MARGIN_SECONDS before the
    pilot's time does (else it goes as a job of its own, not into an inbox
    where only the next pilot could start it); a run without a timeout waits
    for the pilot, which decides."""
    from scheduler.models import ExecutionResource

    settings.SCHEDULER_PILOT_WALL_MINUTES = 10  # a pilot starts runs for 570 s
    resource = ExecutionResource.objects.create(
        name="batch",
        job_service_url="slurm://localhost/",
        queue="debug",
        working_root=str(tmp_path),
        max_concurrent_runs=2,
        pilot=True,
    )
    d = TaskDefinition.objects.create(name="T", program="behave.py", default_resource=resource)

    def run(timeout):
        needs = {"wall_time_seconds": timeout} if timeout else None
        return services.run_enqueue(definition=d, needs=needs)

    longest = pilots.longest_run_seconds()
    assert longest == 600 - pilots.WALL_SPARE_SECONDS - pilots.FIT_MARGIN_SECONDS
    untimed, fitting, too_long = run(None), run(longest), run(longest + 1)
    assert pilots.eligible(untimed) and pilots.eligible(fitting)
    assert not pilots.eligible(too_long)

    p = pilots.Pilots()
    assert p.fits(resource, fitting)  # no pilot running yet: a new one holds it
    p._records[resource.pk] = {"ends_in": 100.0}
    assert p.fits(resource, run(90)) and not p.fits(resource, run(91))
    assert p.fits(resource, untimed)
    p._records[resource.pk] = {"ends_in": "100"}  # a record a program rewrote
    assert p.fits(resource, run(91))


def test_a_pilot_record_is_fresh_by_the_clock_or_by_being_seen_to_change(monkeypatch):
    """pilots._fresh: by this host's clock when it agrees; else alive once the
    record was seen to change, and dead ALIVE_SECONDS after it last changed."""
    from django.utils import timezone

    clock = [1000.0]
    monkeypatch.setattr(pilots.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(pilots, "_BEATS", {})
    where = (1, "/runs/.pilot")
    hour_ago = timezone.now() - timezone.timedelta(hours=1)

    def beat(seconds: float) -> dict:
        return {"pid": 7, "alive_at": (hour_ago + timezone.timedelta(seconds=seconds)).isoformat()}

    assert pilots._fresh({"pid": 7, "alive_at": timezone.now().isoformat()}, (2, "x"))
    assert not pilots._fresh(beat(0), where)  # first read: only the clock can tell
    clock[0] += 2
    assert not pilots._fresh(beat(0), where)  # the same record: no beat seen
    clock[0] += 2
    assert pilots._fresh(beat(4), where)  # it changed: alive, whatever the clocks say
    clock[0] += pilots.ALIVE_SECONDS - 1
    assert pilots._fresh(beat(4), where)
    clock[0] += 2
    assert not pilots._fresh(beat(4), where)  # unchanged for ALIVE_SECONDS: gone
    assert not pilots._fresh(beat(4))  # without where, only the clock


def test_a_launcher_holds_its_launched_marker_locked_while_it_lives(tmp_path):
    """What a poller asks where it cannot see the launcher's process and its
    pilot is gone (pilots._launcher_holds): the lock is held while the
    launcher runs and released when it ends; a link or a FIFO a program put
    in the marker's place is no launcher, and is not followed or waited on."""
    import subprocess
    import sys

    from tests.test_client_bundle import _run_dir

    d = _run_dir(tmp_path, 1, WAIT_FOR_RELEASE)
    launched = str(d / "launched")
    assert not pilots._launcher_holds(launched)  # not there
    launcher = subprocess.Popen(
        [sys.executable, "scheduler_client.py", "run", "task.py"],
        cwd=d,
        env={**os.environ, "SCHEDULER_RUN_DIR": str(d)},
    )
    try:
        end = time.monotonic() + 15
        while not pilots._launcher_holds(launched) and time.monotonic() < end:
            time.sleep(0.02)
        assert pilots._launcher_holds(launched)
        (d / "release").touch()
        assert launcher.wait(timeout=15) == 0
        assert not pilots._launcher_holds(launched)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    for kind in ("link", "fifo"):
        other = tmp_path / kind
        if kind == "link":
            (tmp_path / "target").write_text("")
            other.symlink_to(tmp_path / "target")
            import fcntl

            held = os.open(tmp_path / "target", os.O_RDONLY)
            fcntl.flock(held, fcntl.LOCK_EX)
        else:
            os.mkfifo(other)
        assert not pilots._launcher_holds(str(other))


def test_a_drain_as_long_as_the_wall_time_is_cut_to_half_of_it(tmp_path):
    """A drain longer than the wall time (--wall 8 --drain 100 here; the site's
    SCHEDULER_PILOT_WALL_MINUTES=5 with the default drain of 300 s gives
    --wall 270 --drain 300): the pilot drained from its start, ended at once
    without starting anything, and the poller started it again, for ever.
    The drain is at most half the wall time: a run without a timeout starts."""
    from tests.test_client_bundle import _run_dir

    with _pilot_alone(tmp_path, "--wall", "8", "--drain", "100") as (pilot, home):
        _wait(lambda: (home / "pilot.json").exists() or pilot.poll() is not None)
        run = _run_dir(tmp_path, 1, "print('ran')")
        _hand(home, run)
        assert _wait(lambda: (run / "exit.json").exists()), "the run was not started"
        assert json.loads((run / "exit.json").read_text())["exit_code"] == 0
