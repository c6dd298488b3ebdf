"""Two pollers against one PostgreSQL database take 1,000 runs; none launched twice."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.helpers import require_or_skip
from tests.poller_process import PROGRAMS, ROOT

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

RUNS = 1000
ADMIN_URL = os.environ.get("SCHEDULER_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def _psql(sql: str) -> None:
    import psycopg

    with psycopg.connect(ADMIN_URL.replace("postgres://", "postgresql://"), autocommit=True) as c:
        c.execute(sql)


@pytest.fixture
def pg_site(tmp_path):
    name = f"scheduler_two_pollers_{secrets.token_hex(4)}"
    try:
        _psql(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # noqa: BLE001
        require_or_skip(f"PostgreSQL not reachable at {ADMIN_URL}: {exc}")
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    env = dict(os.environ)
    env.pop("SCHEDULER_DATABASE_NAME", None)
    env.update(
        DATABASE_URL=url,
        SECRET_KEY=secrets.token_urlsafe(50),
        SCHEDULER_VAR_DIR=str(tmp_path / "var"),
        SCHEDULER_PROGRAM_DIRS=f"{ROOT / 'task_programs'},{PROGRAMS}",
        LOG_LEVEL="WARNING",
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    yield env
    _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _shell(env, code: str) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    # Django 5.2+ shell may first say how many objects it imported: keep our lines.
    return "\n".join(
        line for line in out.splitlines() if "imported automatically" not in line and line
    )


def test_two_pollers_share_a_thousand_runs_and_launch_none_twice(pg_site, tmp_path):
    ledger = tmp_path / "ledger.txt"
    _shell(
        pg_site,
        "from scheduler.models import *; from scheduler import services\n"
        "r = ExecutionResource.objects.get(name='local'); r.max_concurrent_runs = 24; r.save()\n"
        "d = TaskDefinition.objects.create(name='Two', program='behave.py')\n"
        "TaskParameter.objects.create(definition=d, name='mode', default='ok')\n"
        f"TaskParameter.objects.create(definition=d, name='ledger', default={str(ledger)!r})\n"
        f"for _ in range({RUNS}): services.run_enqueue(definition=d)\n",
    )
    pollers = [
        subprocess.Popen(
            [sys.executable, "manage.py", "run_poller", "--name", name, "--interval", "0.1"],
            cwd=ROOT,
            env=pg_site,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in ("poller-a", "poller-b")
    ]
    count_open = (
        "from scheduler.models import Run; "
        "print(Run.objects.exclude(state__in=Run.FINAL_STATES).count())"
    )
    try:
        end = time.monotonic() + 600
        while time.monotonic() < end and int(_shell(pg_site, count_open)) > 0:
            time.sleep(2)
    finally:
        for p in pollers:
            p.send_signal(signal.SIGTERM)
        for p in pollers:
            p.wait(timeout=60)
    out = _shell(
        pg_site,
        "from scheduler.models import Run; from collections import Counter; "
        "print(dict(Counter(Run.objects.values_list('state', flat=True)))); "
        "print(dict(Counter(Run.objects.values_list('poller', flat=True)))); "
        "print([(r.pk, r.exit_code, r.error[:300]) for r in Run.objects.exclude(state='SUCCEEDED')[:5]])",
    ).splitlines()
    assert out[0] == "{'SUCCEEDED': 1000}", out
    by_poller = eval(out[1])  # noqa: S307 - our own repr of a dict of str: int
    assert set(by_poller) == {"poller-a", "poller-b"}, by_poller
    started = Counter(ledger.read_text().split())
    assert len(started) == RUNS
    assert max(started.values()) == 1, {k: v for k, v in started.items() if v > 1}
