"""Crash safety: SIGKILL the poller at random moments; every run still ends once."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from scheduler import services
from scheduler.models import Run, TaskDefinition, TaskParameter
from tests.poller_process import PROGRAMS, start_poller

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

RUNS = 200


@pytest.fixture(autouse=True)
def _programs(settings):
    settings.SCHEDULER_PROGRAM_DIRS = [*django_settings.SCHEDULER_PROGRAM_DIRS, PROGRAMS]


def _end_pilot(resource) -> None:
    import json
    import os

    from poller import pilots

    try:
        pid = json.loads((pilots.home(resource) / "pilot.json").read_text())["pid"]
        os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError, KeyError):
        pass


@pytest.mark.parametrize("pilot", [False, True], ids=["bundles", "pilot"])
def test_killing_the_poller_repeatedly_never_launches_twice_or_loses_a_run(
    local_resource, tmp_path, settings, pilot
):
    local_resource.max_concurrent_runs = 16
    # With a pilot (poller.pilots) the runs are handed to one standing launcher
    # that outlives every killed poller; without, each goes in a SAGA bundle.
    local_resource.pilot = pilot
    local_resource.save()
    settings.SCHEDULER_PILOT_IDLE_SECONDS = 20
    ledger = tmp_path / "ledger.txt"
    definition = TaskDefinition.objects.create(name="Crash", program="behave.py")
    TaskParameter.objects.create(definition=definition, name="mode", default="ok")
    TaskParameter.objects.create(definition=definition, name="ledger", default=str(ledger))
    # Through a pilot a run starts in milliseconds: the runs take a moment each,
    # or all 200 end before the poller has been killed often enough to matter.
    TaskParameter.objects.create(definition=definition, name="nap", default="0.5" if pilot else "0")
    for _ in range(RUNS):
        services.run_enqueue(definition=definition)

    rng = random.Random(20261122)
    kills = 0
    deadline = time.monotonic() + 240
    log = (tmp_path / "poller.log").open("ab")
    while time.monotonic() < deadline:
        poller = start_poller("--name", "crashy", "--interval", "0.05", log=log)
        time.sleep(rng.uniform(0.3, 2.5))
        if Run.objects.exclude(state__in=Run.FINAL_STATES).count() == 0:
            poller.send_signal(signal.SIGTERM)
            poller.wait(timeout=30)
            break
        poller.send_signal(signal.SIGKILL)
        poller.wait(timeout=30)
        kills += 1
        if kills >= 40:
            break
    # Then let one poller finish whatever is left.
    poller = start_poller("--name", "crashy", "--interval", "0.05", log=log)
    try:
        end = time.monotonic() + 180
        while time.monotonic() < end:
            if not Run.objects.exclude(state__in=Run.FINAL_STATES).exists():
                break
            time.sleep(0.5)
    finally:
        poller.send_signal(signal.SIGTERM)
        poller.wait(timeout=30)
        if pilot:
            _end_pilot(local_resource)

    if pilot:
        assert Run.objects.filter(saga_job_id=f"pilot:{local_resource.pk}").count() == RUNS
    assert kills >= 5, "the test should have killed the poller several times"
    states = Counter(Run.objects.values_list("state", flat=True))
    assert states == {"SUCCEEDED": RUNS}, states
    started = Counter(Path(ledger).read_text().split())
    twice = {run_id: n for run_id, n in started.items() if n > 1}
    assert not twice, f"programs started more than once: {twice}"
    assert len(started) == RUNS
    # Every run's files came home once, every event was applied once.
    for run in Run.objects.all():
        assert run.files.filter(kind="output", name="result.txt").count() == 1
        assert run.messages.filter(text="done").count() == 1
