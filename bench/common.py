"""Set up a throw-away site (its own SQLite database and var dir) for a benchmark."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
# Where a bench's throw-away site and staged directories go: var/bench beside
# the code, where a site keeps its files by default (SCHEDULER_VAR_DIR), not
# /tmp. What a mkdir costs on this machine's disk moves from minute to minute
# (21-266 us in /tmp and in var/bench alike over one hour), and a run costs the
# poller a dozen such metadata writes inside the clock; bench/dispatch.py prints
# the figure of the moment beside its results.
BENCH_DIR = Path(os.environ.get("SCHEDULER_BENCH_DIR", ROOT / "var" / "bench"))


def scratch(prefix: str) -> Path:
    """A new folder in BENCH_DIR, removed when the bench ends."""
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=BENCH_DIR))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def mkdir_cost(where: Path, n: int = 200) -> float:
    """Seconds a mkdir (and a nested one) takes in ``where``: what staging and
    storing a run's files cost on that disk."""
    folder = Path(tempfile.mkdtemp(dir=where))
    try:
        start = time.perf_counter()
        for i in range(n):
            os.mkdir(folder / str(i))
            os.mkdir(folder / str(i) / "o")
        return (time.perf_counter() - start) / (2 * n)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def make_site(programs: Path | None = None, database_url: str | None = None) -> dict[str, str]:
    var = scratch("scheduler-bench-")
    env = dict(os.environ)
    env.update(
        SCHEDULER_VAR_DIR=str(var),
        SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_SETTINGS_MODULE="project.settings",
        SCHEDULER_PROGRAM_DIRS=",".join(
            str(p) for p in [ROOT / "task_programs", programs or ROOT / "bench" / "programs"]
        ),
        LOG_LEVEL="WARNING",
    )
    if database_url:
        env["DATABASE_URL"] = database_url
    if subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env).returncode:
        raise SystemExit(
            "bench: could not set up the site's database (manage.py migrate failed, its error is "
            "above)" + (f"; does {database_url} exist? createdb makes it" if database_url else "")
        )
    return env


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
