"""Pilots: one standing launcher per local resource (issue 14).

A pilot (``scheduler_client.py pilot HOME``) is started through radical.saga
like any job, stays up, and forks a launcher for each run handed to it, as a
bundle does, so a run starts without a SAGA submission nor a new interpreter.
Its HOME is ``.pilot`` in the resource's run root; docs/protocol.md ("The
pilot") has the contract:

- a run is handed over by an entry ``inbox/<run id>`` holding its run
  directory (written under a temporary name and renamed), then a byte into the
  FIFO ``wake``;
- the pilot holds ``pilot.lock`` while it runs and rewrites ``pilot.json``
  every 2 s; it outlives the poller (a session of its own) and ends itself
  when idle for SCHEDULER_PILOT_IDLE_SECONDS.

A run handed to a pilot has the job id ``pilot:<resource id>``: its state is
read from its run directory and the pilot (``state``), never from SAGA. Only
local resources that run programs as the site's own account use a pilot, and
only when the resource says so (``ExecutionResource.pilot``); the others, and
any run whose pilot cannot be started, go by bundles as before.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import sys
import threading
import time
from pathlib import Path

from django.conf import settings

from poller import rundir as rundirs
from scheduler.models import ExecutionResource, Run

logger = logging.getLogger(__name__)

PREFIX = "pilot:"
START_SECONDS = 15.0  # how long a new pilot may take to say it is alive
UNCLAIMED_SECONDS = 60.0  # an entry the pilot took without a launcher following


def usable(resource: ExecutionResource) -> bool:
    return bool(getattr(resource, "pilot", False)) and resource.is_local() and not resource.run_as


def home(resource: ExecutionResource) -> Path:
    return rundirs.LocalRunDirs(resource).root / ".pilot"


def job_id(resource: ExecutionResource) -> str:
    return f"{PREFIX}{resource.pk}"


def is_pilot_job(job: str) -> bool:
    return job.startswith(PREFIX)


def _lock_held(folder: Path) -> bool:
    """Does a pilot hold the lock of ``folder`` (is one running there)?"""
    try:
        fd = os.open(folder / "pilot.lock", os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def record(resource: ExecutionResource) -> dict | None:
    """The running pilot's ``pilot.json``, or None if none runs."""
    folder = home(resource)
    if not _lock_held(folder):
        return None
    try:
        data = json.loads((folder / "pilot.json").read_text())
    except (OSError, ValueError):
        return {}  # starting: the lock is held, the first beat not written yet
    return data if isinstance(data, dict) else {}


class Pilots:
    """The poller's side: start a resource's pilot when needed, hand it runs."""

    def __init__(self) -> None:
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, resource: ExecutionResource) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(resource.pk, threading.Lock())

    def ensure(self, resource: ExecutionResource, pool) -> bool:
        """A pilot runs for ``resource``, started through ``pool`` if none did.
        False if it could not be started (the runs then go by bundle)."""
        if record(resource) is not None:
            return True
        with self._lock(resource):
            if record(resource) is not None:
                return True
            return self._start(resource, pool)

    def _start(self, resource: ExecutionResource, pool) -> bool:
        from poller.loop import CLIENT_PATH
        from poller.saga_executor import JobSpec

        folder = home(resource)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        (folder / "inbox").mkdir(exist_ok=True, mode=0o700)
        tmp = folder / f".client-{secrets.token_hex(4)}"
        tmp.write_bytes(CLIENT_PATH.read_bytes())
        os.replace(tmp, folder / "scheduler_client.py")
        cores = max(1, resource.max_concurrent_runs or 1)
        spec = JobSpec(
            run_id=0,
            executable=resource.python or sys.executable,
            arguments=[
                "scheduler_client.py",
                "pilot",
                str(folder),
                "--cores",
                str(cores),
                "--idle",
                str(int(settings.SCHEDULER_PILOT_IDLE_SECONDS)),
            ],
            working_directory=str(folder),
            output="pilot.out",
            error="pilot.err",
        )
        answer = pool.submit_quietly(spec)
        if isinstance(answer, Exception):
            logger.warning("resource %s: could not start its pilot: %s", resource.name, answer)
            return False
        end = time.monotonic() + START_SECONDS
        while time.monotonic() < end:
            if record(resource) is not None:
                logger.info("resource %s: pilot started (%s cores)", resource.name, cores)
                return True
            time.sleep(0.02)
        logger.warning(
            "resource %s: its pilot did not start within %s s", resource.name, START_SECONDS
        )
        return False

    def hand(self, resource: ExecutionResource, run_id: int, run_dir: str) -> str:
        """Give the run to the resource's pilot; its job id."""
        give(resource, run_id, run_dir)
        return job_id(resource)


def give(resource: ExecutionResource, run_id: int, run_dir: str) -> None:
    folder = home(resource)
    inbox = folder / "inbox"
    tmp = inbox / f".{run_id}.{secrets.token_hex(4)}"
    tmp.write_text(run_dir)
    os.replace(tmp, inbox / str(int(run_id)))
    wake(folder)


def wake(folder: Path) -> None:
    """A byte into the pilot's FIFO; no reader (none runs) or a full FIFO is fine."""
    try:
        fd = os.open(folder / "wake", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.write(fd, b"!")
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EPIPE):
            logger.debug("waking the pilot in %s failed: %s", folder, exc)
    finally:
        os.close(fd)


def state(run: Run, files) -> tuple[str, int | None]:
    """A pilot run's state in SAGA's words, from its run directory and the pilot:
    Running while its launcher runs, Done once it ended; before it starts,
    Pending while its entry waits, and the entry is handed over again (with a
    new pilot if needed) when the pilot that should start it is gone."""
    resource = run.resource
    if files.exists(run.run_directory, rundirs.LAUNCHED_FILE):
        return ("Running" if files.launcher_alive(run.run_directory) else "Done"), None
    entry = home(resource) / "inbox" / str(run.pk)
    alive = record(resource) is not None
    if entry.exists():
        if not alive:
            wake(home(resource))
        return "Pending", None
    if alive:
        # Taken: its launcher is starting. A pilot that took it and died before
        # the launcher claimed the directory is caught by the else below.
        return "Pending", None
    with contextlib.suppress(OSError):
        give(resource, run.pk, run.run_directory)  # the next pilot starts it
    return "Pending", None
