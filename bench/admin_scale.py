"""Admin pages with 1,000,000 runs and 10,000,000 status messages on SQLite.

Fills a throwaway SQLite database (bulk INSERTs in big transactions), then times
the pages an operator opens most - the dashboard (admin index), the run list,
filtered run lists, a run's page, the definition list and a definition's
statistics - for a superuser, for a staff operator outside a restricted
definition's groups and for one inside them, through Django's test client,
several times each. Beside them, the bare baseline: the admin login page,
which touches no scheduler table. Target: each page under 300 ms.

    .venv/bin/python bench/admin_scale.py                # 1M runs, 10M messages
    .venv/bin/python bench/admin_scale.py --runs 100000 --messages 1000000
    .venv/bin/python bench/admin_scale.py --keep        # then: --reuse /tmp/scheduler-bench-...

The database (about 1.7 GB at full size) is removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import secrets
import shutil
import sqlite3
import statistics
import time

from common import ROOT, make_site, setup_django

STATES = (
    ["SUCCEEDED"] * 80
    + ["FAILED"] * 12
    + ["CANCELLED"] * 3
    + ["TIMED_OUT"] * 2
    + ["LOST"] * 1
    + ["QUEUED"] * 1
    + ["RUNNING"] * 1
)
FINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "LOST"}


def fill(db_path: str, runs: int, messages: int, definition_ids: list[int], resource_id: int):
    con = sqlite3.connect(db_path)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-512000")
    cols = [row[1] for row in con.execute("PRAGMA table_info(scheduler_run)")]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rng = random.Random(7)
    base = {
        "parameters": "{}",
        "args": "[]",
        "attempt": 1,
        "saga_job_id": "",
        "run_directory": "",
        "status_message": "",
        "error": "",
        "poller": "",
        "events_offset": 0,
        "events_seq": 0,
        "resource_id": resource_id,
    }
    t = time.perf_counter()
    batch = []
    span = 365 * 24 * 3600
    insert = (
        f"INSERT INTO scheduler_run ({', '.join(c for c in cols if c != 'id')}) "
        f"VALUES ({', '.join('?' for c in cols if c != 'id')})"
    )
    for i in range(runs):
        state = STATES[rng.randrange(len(STATES))]
        queued = now - dt.timedelta(seconds=span * (runs - i) / runs)
        started = queued + dt.timedelta(seconds=rng.randint(1, 60))
        row = dict(base)
        row.update(
            definition_id=definition_ids[i % len(definition_ids)],
            state=state,
            due_at=queued,
            queued_at=queued,
            submitted_at=queued if state != "QUEUED" else None,
            started_at=started if state != "QUEUED" else None,
            finished_at=started + dt.timedelta(seconds=rng.randint(5, 600))
            if state in FINAL
            else None,
            progress=100 if state == "SUCCEEDED" else rng.randint(0, 99),
            exit_code=0 if state == "SUCCEEDED" else (1 if state == "FAILED" else None),
            error="Traceback ...\nValueError: no input" if state == "FAILED" else "",
            status_message="done" if state == "SUCCEEDED" else "working",
        )
        batch.append(tuple(_sql(row.get(c)) for c in cols if c != "id"))
        if len(batch) == 50_000:
            con.executemany(insert, batch)
            batch.clear()
    if batch:
        con.executemany(insert, batch)
    con.commit()
    runs_time = time.perf_counter() - t
    t = time.perf_counter()
    first_id = con.execute("SELECT min(id) FROM scheduler_run").fetchone()[0]
    batch = []
    insert = (
        "INSERT INTO scheduler_statusmessage (run_id, created_at, level, text, progress, seq) "
        "VALUES (?, ?, ?, ?, ?, ?)"
    )
    per_run = max(1, messages // runs)
    stamp = now.isoformat(sep=" ")
    for i in range(messages):
        run_id = first_id + (i // per_run) % runs
        batch.append(
            (run_id, stamp, "info", f"step {i % per_run} of the task", i % 100, i % per_run)
        )
        if len(batch) == 200_000:
            con.executemany(insert, batch)
            batch.clear()
    if batch:
        con.executemany(insert, batch)
    con.commit()
    con.execute("ANALYZE")
    con.close()
    return runs_time, time.perf_counter() - t


def _sql(value):
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return value


def time_page(client, url: str, repeat: int) -> tuple[float, float, int, int, float]:
    """Median and max ms of ``repeat`` requests after a warm one; the status, and the
    number of queries and ms in SQL of one more request (where the time goes)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.get(url)  # warm: templates, caches
    times = []
    status = 0
    for _ in range(repeat):
        t = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - t) * 1000)
        status = response.status_code
    with CaptureQueriesContext(connection) as queries:
        client.get(url)
    sql_ms = sum(float(q["time"]) for q in queries) * 1000
    return statistics.median(times), max(times), status, len(queries), sql_ms


def site_env(var_dir: str) -> dict[str, str]:
    """The environment of a site whose var dir (and database) exists already."""
    return dict(
        os.environ,
        SCHEDULER_VAR_DIR=var_dir,
        SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_SETTINGS_MODULE="project.settings",
        SCHEDULER_PROGRAM_DIRS=str(ROOT / "task_programs"),
        LOG_LEVEL="WARNING",
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--messages", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument(
        "--keep", action="store_true", help="keep the filled site (printed) for --reuse"
    )
    parser.add_argument("--reuse", metavar="VAR_DIR", help="time a site kept by --keep")
    args = parser.parse_args()
    env = site_env(args.reuse) if args.reuse else make_site()
    env["ALLOWED_HOSTS"] = "testserver,127.0.0.1,localhost"
    var_dir = env["SCHEDULER_VAR_DIR"]
    setup_django(env)
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from scheduler.models import Run, TaskDefinition
    from scheduler.roles import OPERATORS

    setup_test_environment()
    settings.ALLOWED_HOSTS = ["testserver"]
    if args.reuse:
        definitions = list(
            TaskDefinition.objects.filter(name__startswith="task ")
            .order_by("name")
            .values_list("pk", flat=True)
        )
        print(f"reusing {Run.objects.count():,} runs in {var_dir}")
    else:
        definitions = make_data(args, connection)
    root, _ = User.objects.get_or_create(
        username="root", defaults={"is_staff": True, "is_superuser": True}
    )
    operator, _ = User.objects.get_or_create(username="operator", defaults={"is_staff": True})
    operator.groups.add(Group.objects.get(name=OPERATORS))
    member, _ = User.objects.get_or_create(username="member", defaults={"is_staff": True})
    member.groups.add(Group.objects.get(name=OPERATORS), Group.objects.get(name="lab"))
    some_run = Run.objects.filter(state="FAILED").order_by("-id").values_list("pk", flat=True)[0]
    pages = [
        ("dashboard (admin index)", "/admin/"),
        ("run list", "/admin/scheduler/run/"),
        ("run list, failed only", "/admin/scheduler/run/?state__exact=FAILED"),
        (
            "run list, one definition",
            f"/admin/scheduler/run/?definition__id__exact={definitions[7]}",
        ),
        ("run page (10 messages)", f"/admin/scheduler/run/{some_run}/change/"),
        ("definition list", "/admin/scheduler/taskdefinition/"),
        ("definition statistics", f"/admin/scheduler/taskdefinition/{definitions[7]}/stats/"),
    ]
    anonymous = Client()
    base_median, base_max, *_ = time_page(anonymous, "/admin/login/", args.repeat)
    print(f"bare baseline, the login page: median {base_median:.0f} ms, max {base_max:.0f} ms")
    worst = 0.0
    users = (
        ("superuser", root),
        ("operator outside a group", operator),
        ("operator in the group", member),
    )
    for who, user in users:
        client = Client()
        client.force_login(user)
        for label, url in pages:
            median, slowest, status, queries, sql_ms = time_page(client, url, args.repeat)
            worst = max(worst, median)
            print(
                f"{who:>24} | {label:<26} {median:5.0f} ms median, {slowest:5.0f} ms max "
                f"[{status}] ({queries} queries, {sql_ms:.0f} ms in SQL)"
            )
    verdict = "met" if worst < 300 else "NOT met"
    print(f"target: every page under 300 ms (median): {verdict} (slowest median {worst:.0f} ms)")
    connection.close()
    if args.keep:
        print(f"kept: --reuse {var_dir}")
    elif not args.reuse:
        shutil.rmtree(var_dir, ignore_errors=True)


def make_data(args, connection) -> list[int]:
    """Definitions (4 of 20 restricted to a "lab" group), then the runs and messages."""
    from django.contrib.auth.models import Group

    from scheduler.models import ExecutionResource, TaskDefinition
    from scheduler.roles import sync_roles

    sync_roles()
    local = ExecutionResource.objects.get(name="local")
    lab = Group.objects.create(name="lab")
    definitions = []
    for i in range(20):
        d = TaskDefinition.objects.create(
            name=f"task {i:02d}", program="hello.py", default_resource=local
        )
        if i < 4:
            d.allowed_groups.add(lab)  # 20% of the runs are invisible to the operator
        definitions.append(d.pk)
    db_path = str(connection.settings_dict["NAME"])
    connection.close()
    runs_time, messages_time = fill(db_path, args.runs, args.messages, definitions, local.pk)
    print(
        f"filled {args.runs:,} runs in {runs_time:.0f} s and {args.messages:,} messages "
        f"in {messages_time:.0f} s (SQLite, {db_path})"
    )
    return definitions


if __name__ == "__main__":
    main()
