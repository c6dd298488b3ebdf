"""Pages of a flooded run: 100,000 status messages and 1,000 output files.

A hostile or careless task can write that much (issue: run directories are
hostile input). This fills a throwaway SQLite site with one such run (the
messages as the poller stores them, SCHEDULER_MAX_MESSAGES off so that all
100,000 stay), then times what an operator and a script open: the run page,
the files page (first and last page), the live status JSON, the HTTP API's run
detail and file list, for a superuser and for a viewer, through Django's test
client. Beside them, the bare baseline: the admin login page, which touches no
scheduler table. Target: each under 300 ms (median).

Then the poller's side: how long one pass spends on the run's 100,000-event
stream (one bounded piece, Poller.ingest_piece) and the whole stream to its end,
against the bare baseline of json.loads over the same lines.

    .venv/bin/python bench/flooded_run.py
    .venv/bin/python bench/flooded_run.py --messages 20000 --files 200 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from admin_scale import time_page
from common import make_site, setup_django


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    env = make_site()
    env["ALLOWED_HOSTS"] = "testserver,127.0.0.1,localhost"
    env["SCHEDULER_MAX_MESSAGES"] = "0"  # keep them all: the pages must stay fast anyway
    var_dir = Path(env["SCHEDULER_VAR_DIR"])
    setup_django(env)
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.utils import timezone

    from scheduler import services
    from scheduler.http.tokens import token_issue
    from scheduler.models import (
        ApiToken,
        ExecutionResource,
        OutputFile,
        Run,
        StatusMessage,
        TaskDefinition,
    )
    from scheduler.roles import VIEWERS, sync_roles

    setup_test_environment()
    settings.ALLOWED_HOSTS = ["testserver"]
    sync_roles()
    local = ExecutionResource.objects.get(name="local")
    definition = TaskDefinition.objects.create(
        name="Flood", program="hello.py", default_resource=local
    )
    run = services.run_enqueue(definition=definition)
    t = time.perf_counter()
    batch = []
    for i in range(args.messages):
        batch.append(
            StatusMessage(run=run, text=f"step {i} of a chatty task", progress=i % 100, seq=i + 1)
        )
        if len(batch) == 20_000:
            StatusMessage.objects.bulk_create(batch)
            batch.clear()
    StatusMessage.objects.bulk_create(batch)
    store = Path(settings.SCHEDULER_FILE_ROOT) / str(run.pk) / "output"
    store.mkdir(parents=True)
    files = []
    for i in range(args.files):
        name = f"part-{i:04d}.csv"
        (store / name).write_text(f"a,b\n{i},{i * i}\n")
        files.append(
            OutputFile(
                run=run,
                name=name,
                size=12,
                sha256="0" * 64,
                content_type="text/csv",
                stored_path=f"{run.pk}/output/{name}",
            )
        )
    OutputFile.objects.bulk_create(files)
    now = timezone.now()
    Run.objects.filter(pk=run.pk).update(
        state="SUCCEEDED", progress=100, started_at=now, finished_at=now
    )
    print(
        f"filled one run with {args.messages:,} messages and {args.files:,} files "
        f"in {time.perf_counter() - t:.1f} s (SQLite)"
    )

    root = User.objects.create(username="root", is_staff=True, is_superuser=True)
    viewer = User.objects.create(username="viewer", is_staff=True)
    viewer.groups.add(Group.objects.get(name=VIEWERS))
    last_page = max(1, -(-(args.files + 0) // 100))
    pages = [
        ("run page", f"/admin/scheduler/run/{run.pk}/change/", False),
        ("files page, first", f"/scheduler/runs/{run.pk}/files/", False),
        ("files page, last", f"/scheduler/runs/{run.pk}/files/?page={last_page}", False),
        ("live status JSON", f"/scheduler/runs/{run.pk}/status.json", False),
        ("API run detail", f"/api/v1/runs/{run.pk}/", True),
        ("API files, first page", f"/api/v1/runs/{run.pk}/files/", True),
        ("API files, last page", f"/api/v1/runs/{run.pk}/files/?offset={args.files - 50}", True),
    ]
    base_median, base_max, *_ = time_page(Client(), "/admin/login/", args.repeat)
    print(f"bare baseline, the login page: median {base_median:.0f} ms, max {base_max:.0f} ms")
    worst = 0.0
    for who, user in (("superuser", root), ("viewer", viewer)):
        key = token_issue(token=ApiToken(user=user, name="bench"))
        for label, url, api in pages:
            client = Client(HTTP_AUTHORIZATION=f"Bearer {key}") if api else Client()
            if not api:
                client.force_login(user)
            median, slowest, status, queries, sql_ms = time_page(client, url, args.repeat)
            worst = max(worst, median)
            print(
                f"{who:>10} | {label:<22} {median:5.0f} ms median, {slowest:5.0f} ms max "
                f"[{status}] ({queries} queries, {sql_ms:.0f} ms in SQL)"
            )
    verdict = "met" if worst < 300 else "NOT met"
    print(f"target: every page under 300 ms (median): {verdict} (slowest median {worst:.0f} ms)")
    ingest(args.messages, var_dir)
    shutil.rmtree(var_dir, ignore_errors=True)


def ingest(count: int, var_dir: Path) -> None:
    """One pass of the poller over a flooded event stream, and all of it."""
    from poller import rundir as rundirs
    from poller.loop import Poller
    from scheduler import services
    from scheduler.models import Run, TaskDefinition

    run_dir = var_dir / "runs" / "run-flood"
    run_dir.mkdir(parents=True)
    lines = [
        json.dumps({"v": 1, "seq": i + 1, "type": "status", "message": f"m{i} " + "x" * 100})
        for i in range(count)
    ]
    data = ("\n".join(lines) + "\n").encode()
    (run_dir / "events.jsonl").write_bytes(data)
    t = time.perf_counter()
    for line in data.splitlines():
        json.loads(line)
    bare = time.perf_counter() - t
    run = services.run_enqueue(definition=TaskDefinition.objects.get(name="Flood"))
    Run.objects.filter(pk=run.pk).update(run_directory=str(run_dir))
    run.refresh_from_db()
    poller = Poller(name="bench-flood")
    files = rundirs.for_resource(run.resource)
    pieces = []
    caught_up = False
    t_all = time.perf_counter()
    while not caught_up:
        t = time.perf_counter()
        _, caught_up = poller.ingest_piece(run, files)
        pieces.append(time.perf_counter() - t)
    total = time.perf_counter() - t_all
    poller.close()
    print(
        f"bare baseline, json.loads of {count:,} event lines ({len(data) / 1e6:.1f} MB): "
        f"{bare * 1000:.0f} ms"
    )
    print(
        f"poller: {count:,} events in {len(pieces)} pieces of at most "
        f"{rundirs.EVENTS_READ_BYTES // 1024} KiB: one piece (one run's share of a tick) "
        f"median {statistics.median(pieces) * 1000:.0f} ms, max {max(pieces) * 1000:.0f} ms; "
        f"all {total:.1f} s; kept {run.messages.count():,} messages "
        f"(SCHEDULER_MAX_MESSAGES off in this bench)"
    )


if __name__ == "__main__":
    main()
