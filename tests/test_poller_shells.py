"""The poller owns every process it starts (issue 14): a poller started and
stopped five times, by SIGKILL and SIGTERM, over queued and running runs,
leaves none of radical.saga's shells, wrappers, tails or monitors once the last
one has stopped cleanly; the launchers of runs that still run go on."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from django.conf import settings as django_settings

from poller.saga_shells import _is_saga_helper
from scheduler import services
from scheduler.models import Run, TaskDefinition, TaskParameter
from tests.poller_process import PROGRAMS, poller_env, start_poller

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def ours(base: str) -> list[psutil.Process]:
    """Every process radical.saga's shells of ``base`` started, and their children."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if proc.environ().get("RADICAL_BASE") == base and proc.status() != "zombie":
                found.append(proc)
        except psutil.Error:
            continue
    return found


def launcher_group(proc: psutil.Process) -> bool:
    """Is ``proc`` in a run launcher's own process group (the launcher or its program)?"""
    try:
        leader = psutil.Process(os.getpgid(proc.pid))
        return "scheduler_client.py" in " ".join(leader.cmdline())
    except (psutil.Error, OSError):
        return False


def helpers(base: str) -> list[str]:
    """The command lines of radical.saga's shells, wrappers and tails of ``base``."""
    found = []
    for proc in ours(base):
        try:
            cmdline = proc.cmdline()
        except psutil.Error:
            continue
        if _is_saga_helper(cmdline, base):
            found.append(" ".join(cmdline))
    return found


def command(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return "(gone)"


def started(poller) -> bool:
    from scheduler.models import PollerHeartbeat

    return PollerHeartbeat.objects.filter(ident="shells", pid=poller.pid).exists()


def wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def pilot_pid(resource) -> int | None:
    import json

    from poller import pilots

    try:
        return json.loads((pilots.home(resource) / "pilot.json").read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.parametrize("pilot", [False, True], ids=["bundles", "pilot"])
def test_five_starts_and_kills_leave_no_saga_process_but_running_launchers(
    local_resource, settings, tmp_path, pilot
):
    local_resource.pilot = pilot
    local_resource.save()
    settings.SCHEDULER_PROGRAM_DIRS = [*django_settings.SCHEDULER_PROGRAM_DIRS, PROGRAMS]
    settings.SCHEDULER_SAGA_BASE = tmp_path / "saga"
    base = str(settings.SCHEDULER_SAGA_BASE)
    definition = TaskDefinition.objects.create(name="Shells", program="behave.py")
    TaskParameter.objects.create(definition=definition, name="mode", default="ok")
    sleepers = [
        services.run_enqueue(definition=definition, parameters={"mode": "sleep"}) for _ in range(2)
    ]
    for _ in range(10):
        services.run_enqueue(definition=definition)
    env = poller_env()
    log = (tmp_path / "poller.log").open("ab")
    seen = []
    try:
        for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL):
            poller = start_poller("--name", "shells", "--interval", "0.05", env=env, log=log)
            # It has started (its first beat: stale shells ended, signals handled)
            # and its job services are open, shells with their wrappers.
            assert wait_for(lambda p=poller: started(p), 30), "the poller did not start"
            assert wait_for(lambda: len(helpers(base)) >= 8, 30), "no job services opened"
            seen.append(len(ours(base)))
            time.sleep(0.5)
            poller.send_signal(sig)
            poller.wait(timeout=30)
        poller = start_poller("--name", "shells", "--interval", "0.05", env=env, log=log)
        assert wait_for(lambda p=poller: started(p), 30), "the poller did not start"
        assert wait_for(
            lambda: (
                Run.objects.filter(state=Run.State.SUCCEEDED).count() == 10
                and Run.objects.filter(pk__in=[r.pk for r in sleepers], state="RUNNING").count()
                == 2
            ),
            60,
        ), list(Run.objects.values_list("state", flat=True))
        poller.send_signal(signal.SIGTERM)
        poller.wait(timeout=30)
        time.sleep(0.5)
        left = ours(base)
        others = [command(p) for p in left if not launcher_group(p)]
        assert helpers(base) == [] and others == [], (helpers(base), others, seen)
        # The running runs' launchers go on, each in a group of its own; so
        # does the resource's pilot, by design (it ends itself when idle).
        standing = pilot_pid(local_resource)
        assert bool(standing) == pilot
        launchers = {os.getpgid(p.pid) for p in left if launcher_group(p)} - {standing}
        assert len(launchers) == 2, [command(p) for p in left]
        assert Run.objects.filter(pk__in=[r.pk for r in sleepers], state="RUNNING").count() == 2
    finally:
        for proc in ours(base):
            try:
                os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        log.close()
