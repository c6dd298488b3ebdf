"""Drive a real poller against the test database until runs end."""

from __future__ import annotations

import time

from poller.loop import Poller
from scheduler.models import Run


def tick_until(poller: Poller, predicate, *, timeout: float = 30.0, pause: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        poller.tick()
        if predicate():
            return
        time.sleep(pause)
    raise AssertionError(f"condition not met within {timeout} s")


def run_to_end(poller: Poller, run: Run, *, timeout: float = 30.0) -> Run:
    tick_until(poller, lambda: Run.objects.get(pk=run.pk).is_final, timeout=timeout)
    run.refresh_from_db()
    return run
