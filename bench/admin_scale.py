"""Admin pages with 1,000,000 runs and 10,000,000 status messages on SQLite.

Fills a throwaway SQLite database (bulk INSERTs in big transactions), then times
the pages an operator opens most - the dashboard (admin index), the run list,
a filtered run list, a run's page, the definition list - for a superuser and for
a staff operator outside a restricted definition's groups, through Django's test
client, several times each. Beside them, the bare baseline: the admin login page,
which touches no scheduler table. Target: each page under 300 ms.

    .venv/bin/python bench/admin_scale.py                # 1M runs, 10M messages
    .venv/bin/python bench/admin_scale.py --runs 100000 --messages 1000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sqlite3
import statistics
import time

from common import make_site, setup_django

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


def time_page(client, url: str, repeat: int) -> tuple[float, float, int]:
    client.get(url)  # warm: templates, caches
    times = []
    status = 0
    for _ in range(repeat):
        t = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - t) * 1000)
        status = response.status_code
    return statistics.median(times), max(times), status


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--messages", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    env = make_site()
    env["ALLOWED_HOSTS"] = "testserver,127.0.0.1,localhost"
    setup_django(env)
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment

    from scheduler.models import ExecutionResource, Run, TaskDefinition
    from scheduler.roles import OPERATORS, sync_roles

    setup_test_environment()
    settings.ALLOWED_HOSTS = ["testserver"]
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
    root = User.objects.create_superuser("root", "root@example.org", "x" * 20)
    operator = User.objects.create_user("operator", "op@example.org", "x" * 20, is_staff=True)
    operator.groups.add(Group.objects.get(name=OPERATORS))
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
    ]
    anonymous = Client()
    base_median, base_max, _ = time_page(anonymous, "/admin/login/", args.repeat)
    print(f"bare baseline, the login page: median {base_median:.0f} ms, max {base_max:.0f} ms")
    worst = 0.0
    for who, user in (("superuser", root), ("operator outside a group", operator)):
        client = Client()
        client.force_login(user)
        for label, url in pages:
            median, slowest, status = time_page(client, url, args.repeat)
            worst = max(worst, median)
            print(
                f"{who:>24} | {label:<26} {median:7.0f} ms median, {slowest:7.0f} ms max  [{status}]"
            )
    verdict = "met" if worst < 300 else "NOT met"
    print(f"target: every page under 300 ms (median): {verdict} (slowest median {worst:.0f} ms)")


if __name__ == "__main__":
    main()
