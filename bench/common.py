"""Set up a throw-away site (its own SQLite database and var dir) for a benchmark."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def make_site(programs: Path | None = None, database_url: str | None = None) -> dict[str, str]:
    var = Path(tempfile.mkdtemp(prefix="scheduler-bench-"))
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
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    return env


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
