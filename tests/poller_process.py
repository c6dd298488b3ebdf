"""Run the poller as a real separate process against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).parent / "programs"


def poller_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SCHEDULER_DATABASE_NAME=str(connection.settings_dict["NAME"]),
        SCHEDULER_FILE_ROOT=str(settings.SCHEDULER_FILE_ROOT),
        SCHEDULER_RUN_ROOT=str(settings.SCHEDULER_RUN_ROOT),
        SCHEDULER_SAGA_BASE=str(settings.SCHEDULER_SAGA_BASE),
        SCHEDULER_PILOT_IDLE_SECONDS=str(settings.SCHEDULER_PILOT_IDLE_SECONDS),
        SCHEDULER_PROGRAM_DIRS=",".join(str(p) for p in settings.SCHEDULER_PROGRAM_DIRS),
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def start_poller(*args: str, env: dict[str, str] | None = None, log=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "run_poller", *args],
        cwd=ROOT,
        env=env or poller_env(),
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
    )
