"""Retention on a big SQLite database: scheduler.retention.prune beside bare SQL DELETEs.

Fills a throwaway database like bench/admin_scale.py (runs spread over a year,
ten messages each), copies it, then times on the original a dry run and the real
prune (older than 30 days, keeping the newest 20 runs of each definition), and on
the copy the bare baseline: the same rows deleted by two plain DELETE statements
(no batches, no file store, no audit). Prints the peak Python memory of a dry run
(which walks the same batches), traced apart from the timed runs.

    .venv/bin/python bench/retention.py                     # 200,000 runs, 2,000,000 messages
    .venv/bin/python bench/retention.py --runs 1000000 --messages 10000000
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sqlite3
import time
import tracemalloc

from admin_scale import fill
from common import make_site, setup_django


def bare_delete(db_path: str, cutoff: dt.datetime, keep_last: int) -> tuple[float, int]:
    con = sqlite3.connect(db_path)
    t = time.perf_counter()
    old = (
        "SELECT id FROM scheduler_run r WHERE state IN "
        "('SUCCEEDED','FAILED','CANCELLED','TIMED_OUT','LOST') AND finished_at < ? "
        "AND id NOT IN (SELECT id FROM scheduler_run k WHERE k.definition_id = r.definition_id "
        f"ORDER BY queued_at DESC, id DESC LIMIT {keep_last})"
    )
    stamp = cutoff.replace(tzinfo=None).isoformat(sep=" ")
    con.execute(f"CREATE TEMP TABLE old AS {old}", [stamp])
    con.execute("DELETE FROM scheduler_statusmessage WHERE run_id IN (SELECT id FROM old)")
    gone = con.execute("DELETE FROM scheduler_run WHERE id IN (SELECT id FROM old)").rowcount
    con.commit()
    con.close()
    return time.perf_counter() - t, gone


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200_000)
    parser.add_argument("--messages", type=int, default=2_000_000)
    args = parser.parse_args()
    env = make_site()
    setup_django(env)
    from django.db import connection
    from django.utils import timezone

    from scheduler.models import ExecutionResource, Run, StatusMessage, TaskDefinition
    from scheduler.retention import prune

    local = ExecutionResource.objects.get(name="local")
    definitions = [
        TaskDefinition.objects.create(name=f"task {i:02d}", program="hello.py").pk
        for i in range(20)
    ]
    db_path = str(connection.settings_dict["NAME"])
    connection.close()
    runs_time, messages_time = fill(db_path, args.runs, args.messages, definitions, local.pk)
    print(
        f"filled {args.runs:,} runs in {runs_time:.0f} s and {args.messages:,} messages "
        f"in {messages_time:.0f} s (SQLite, {db_path})"
    )
    copy = db_path + ".baseline"
    shutil.copyfile(db_path, copy)

    now = timezone.now()
    older_than, keep_last = dt.timedelta(days=30), 20
    t = time.perf_counter()
    would = prune(older_than=older_than, keep_last=keep_last, now=now, dry_run=True)
    dry = time.perf_counter() - t
    tracemalloc.start()
    prune(older_than=older_than, keep_last=keep_last, now=now, dry_run=True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    t = time.perf_counter()
    done = prune(older_than=older_than, keep_last=keep_last, now=now)
    real = time.perf_counter() - t
    left = Run.objects.count(), StatusMessage.objects.count()
    connection.close()

    bare, bare_gone = bare_delete(copy, now - older_than, keep_last)
    print(f"dry run:               {dry:6.1f} s  would remove {would}")
    print(
        f"prune:                 {real:6.1f} s  removed {done}; left {left[0]:,} runs, "
        f"{left[1]:,} messages"
    )
    print(f"bare baseline, 2 DELETEs: {bare:6.1f} s  removed {bare_gone:,} runs")
    print(f"peak Python memory of a dry run (traced): {peak / 2**20:.1f} MiB")
    assert done.runs == bare_gone, "prune and the bare DELETE disagree on what is old"


if __name__ == "__main__":
    main()
