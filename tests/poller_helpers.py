"""Drive a real poller against the test database until runs end."""

from __future__ import annotations

import time

import pytest

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


def poller_fixture(name: str, *, services: int = 2, scope: str = "function"):
    """A real Poller for a test module, closed after it (its job services and
    their shells end): ``poller = poller_fixture("test-fork", scope="module")``."""

    @pytest.fixture(scope=scope)
    def poller(django_db_blocker):
        p = Poller(name=name, services_per_resource=services)
        yield p
        with django_db_blocker.unblock():
            p.close()

    return poller
