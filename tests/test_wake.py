"""A queued run wakes an idle poller at once (scheduler.wake, issue 14): on
SQLite by a datagram to its socket, on PostgreSQL by NOTIFY. The pollers here
poll only every 30 s, so a run that ends within a few seconds of being queued
was started by the nudge, not by a poll."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from scheduler import services
from scheduler.models import PollerHeartbeat, Run, TaskDefinition, TaskParameter
from tests.poller_process import ROOT, poller_env, start_poller
from tests.test_poller_postgres import _shell, pg_site  # noqa: F401 - a fixture

pytestmark = [pytest.mark.django_db(transaction=True)]

POLL = "30"  # seconds: far longer than any nudged start takes


def _wait(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _sqlite_only() -> None:
    from django.db import connection

    if connection.vendor != "sqlite":
        # On PostgreSQL the pollers LISTEN: test_..._wakes_an_idle_poller_by_notify.
        pytest.skip("the wake-up by socket is SQLite's")


def test_a_run_queued_on_sqlite_wakes_an_idle_poller(local_resource, settings):
    from django.conf import settings as django_settings

    _sqlite_only()

    from tests.poller_process import PROGRAMS

    settings.SCHEDULER_PROGRAM_DIRS = [*django_settings.SCHEDULER_PROGRAM_DIRS, PROGRAMS]
    # A short folder: a UNIX socket's path must fit in 108 bytes.
    settings.SCHEDULER_WAKE_DIR = Path(tempfile.mkdtemp(prefix="wake-"))
    definition = TaskDefinition.objects.create(name="Hello", program="hello.py")
    env = poller_env(SCHEDULER_WAKE_DIR=str(settings.SCHEDULER_WAKE_DIR))
    poller = start_poller("--name", "sleepy", "--interval", POLL, env=env)
    try:
        assert _wait(lambda: PollerHeartbeat.objects.filter(pid=poller.pid).exists(), 30)
        assert _wait(lambda: any(settings.SCHEDULER_WAKE_DIR.glob("*.sock")), 30)
        time.sleep(1.0)  # past its first ticks: asleep for up to 30 s now
        timings = []
        for _ in range(3):
            queued = time.monotonic()
            run = services.run_enqueue(definition=definition)
            # Taken and submitted: the poller woke. (It tracks runs in flight at
            # its poll interval, so their end is not what is measured here.)
            assert _wait(lambda r=run: Run.objects.get(pk=r.pk).state != "QUEUED", 10), "not woken"
            timings.append(time.monotonic() - queued)
            time.sleep(0.5)
        assert max(timings) < 10, timings
        # A cancel wakes it too: a running run is ended at once, not at the next poll.
        sleeper = TaskDefinition.objects.create(name="Sleep", program="behave.py")
        TaskParameter.objects.create(definition=sleeper, name="mode", default="sleep")
        run = services.run_enqueue(definition=sleeper)

        def launched():
            directory = Run.objects.get(pk=run.pk).run_directory
            return bool(directory) and (Path(directory) / "launched").exists()

        assert _wait(launched, 15)
        time.sleep(1.0)
        asked = time.monotonic()
        assert services.run_request_cancel(run=Run.objects.get(pk=run.pk)) == "requested"
        assert _wait(lambda: Run.objects.get(pk=run.pk).is_final, 15), "not woken to cancel"
        assert Run.objects.get(pk=run.pk).state == Run.State.CANCELLED
        assert time.monotonic() - asked < 10
    finally:
        poller.terminate()
        poller.wait(timeout=30)
    # Its socket goes with it.
    assert not any(settings.SCHEDULER_WAKE_DIR.glob("*.sock"))


@pytest.mark.slow
@pytest.mark.postgres
def test_a_run_queued_on_postgresql_wakes_an_idle_poller_by_notify(pg_site):  # noqa: F811
    _shell(
        pg_site,
        "from scheduler.models import TaskDefinition\n"
        "TaskDefinition.objects.create(name='Hello', program='hello.py')\n",
    )
    poller = subprocess.Popen(
        [sys.executable, "manage.py", "run_poller", "--name", "pg-sleepy", "--interval", POLL],
        cwd=ROOT,
        env=pg_site,
    )
    try:
        assert _wait(
            lambda: (
                "yes"
                in _shell(
                    pg_site,
                    "from scheduler.models import PollerHeartbeat\n"
                    f"print('yes' if PollerHeartbeat.objects.filter(pid={poller.pid}).exists() "
                    "else 'no')",
                )
            ),
            60,
        )
        time.sleep(1.0)
        # Queued and then watched from one process: the answer is the seconds
        # from queueing to the run's end.
        out = _shell(
            pg_site,
            "import time\n"
            "from scheduler import services\n"
            "from scheduler.models import Run, TaskDefinition\n"
            "d = TaskDefinition.objects.get(name='Hello')\n"
            "t = time.monotonic(); run = services.run_enqueue(definition=d)\n"
            "while time.monotonic() - t < 20 and Run.objects.get(pk=run.pk).state == 'QUEUED':\n"
            "    time.sleep(0.05)\n"
            "run.refresh_from_db(); print(run.state, round(time.monotonic() - t, 2))\n",
        )
        state, seconds = out.split()[-2:]
        assert state != "QUEUED" and float(seconds) < 10, out
    finally:
        poller.terminate()
        poller.wait(timeout=30)


def test_a_poller_that_cannot_be_woken_sleeps_and_polls_at_its_interval(db, settings):
    """A wake folder that cannot be made (here under /proc): no socket, so the
    poller neither spins (it took a whole core) nor sleeps past its interval."""
    from poller.loop import Poller
    from scheduler.wake import Waker

    _sqlite_only()
    settings.SCHEDULER_WAKE_DIR = Path("/proc/no-such-wake-dir")
    settings.SCHEDULER_IDLE_SECONDS = 10
    waker = Waker()
    try:
        assert not waker.listening
        started, cpu = time.monotonic(), time.process_time()
        assert waker.wait(0.3) is False
        assert time.monotonic() - started >= 0.29
        assert time.process_time() - cpu < 0.05
        poller = Poller(name="unwakeable", services_per_resource=1)
        poller._waker = waker
        assert poller._idle_seconds(1.0) <= 1.0
    finally:
        waker.close()
    settings.SCHEDULER_WAKE_DIR = Path(tempfile.mkdtemp(prefix="wake-"))
    waker = Waker()
    try:
        assert waker.listening
        poller = Poller(name="wakeable", services_per_resource=1)
        poller._waker = waker
        assert poller._idle_seconds(1.0) == pytest.approx(10, abs=0.5)  # nothing in flight
    finally:
        waker.close()


def test_queueing_a_run_wakes_a_listening_waker(local_resource, settings):
    """The nudge itself, on the suite's database: NOTIFY on PostgreSQL (CI's
    second cell, Django 6.1), a datagram on SQLite. Nothing before the queueing,
    one wake-up after it, nothing again."""
    from scheduler.wake import Waker

    settings.SCHEDULER_WAKE_DIR = Path(tempfile.mkdtemp(prefix="wake-"))
    definition = TaskDefinition.objects.create(name="Hello", program="hello.py")
    waker = Waker()
    try:
        assert waker.listening
        assert waker.wait(0.2) is False
        services.run_enqueue(definition=definition)
        assert waker.wait(5) is True
        assert waker.wait(0.2) is False
    finally:
        waker.close()


def test_a_nudge_for_the_others_wakes_another_poller_not_its_sender(local_resource, settings):
    """A poller that finished runs (room under a limit) nudges the other pollers,
    not itself: woken by itself, a busy poller ticked without a pause and spent
    more CPU a run (bench/dispatch.py). On the suite's database."""
    import socket

    from django.db import connection

    from scheduler import wake

    settings.SCHEDULER_WAKE_DIR = Path(tempfile.mkdtemp(prefix="wake-"))
    waker = wake.Waker()
    other = listener = None
    try:
        if connection.vendor == "postgresql":
            import psycopg

            params = connection.get_connection_params()
            for key in ("cursor_factory", "context", "prepare_threshold"):
                params.pop(key, None)
            listener = psycopg.connect(**params, autocommit=True)
            listener.execute(f"LISTEN {wake.CHANNEL}")
        else:
            other = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            other.bind(str(settings.SCHEDULER_WAKE_DIR / "another-poller.sock"))
            other.settimeout(5)
        wake.nudge(others=True)
        assert waker.wait(0.3) is False, "the sender is not woken by its own nudge"
        if listener is not None:
            notices = list(listener.notifies(timeout=5, stop_after=1))
            assert [n.channel for n in notices] == [wake.CHANNEL]
        else:
            assert other.recv(64) == b"!"
        wake.nudge()  # a queued run: every poller, the sender too
        assert waker.wait(5) is True
    finally:
        waker.close()
        if other is not None:
            other.close()
        if listener is not None:
            listener.close()
