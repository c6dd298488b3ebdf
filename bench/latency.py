"""Latency: runs due at known times, an idle poller; due time -> the program's first line.

Queues runs due at spread-out future moments while a poller with the default
poll interval idles, and prints the median and the 99th percentile of the delay
from each run's due time to the moment its program's first line ran.

    .venv/bin/python bench/latency.py --runs 40
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import PY, ROOT, make_site, setup_django


def _first_line_at(path: Path) -> float | None:
    try:
        for line in path.read_text().splitlines():
            match = re.search(r"first line at ([0-9.]+)", line)
            if match:
                return float(match.group(1))
    except OSError:
        pass
    return None


def bare(due_offsets: list[float]) -> list[float]:
    """The baseline: a plain loop that sleeps until each due time and starts the
    same launcher and program with Popen, no database, no SAGA."""
    work = Path(tempfile.mkdtemp(prefix="scheduler-bare-latency-"))
    client = ROOT / "task_programs" / "scheduler_client.py"
    program = ROOT / "bench" / "programs" / "first_line.py"
    base = time.time() + 1
    procs = []
    for i, offset in enumerate(due_offsets):
        d = work / f"run-{i}"
        (d / "outputs").mkdir(parents=True)
        shutil.copy(client, d)
        shutil.copy(program, d)
        (d / "run.json").write_text(json.dumps({"v": 1, "run_id": i, "parameters": {}, "args": []}))
        due = base + offset
        time.sleep(max(0.0, due - time.time()))
        out = open(d / "stdout.txt", "wb")  # noqa: SIM115 - closed below
        procs.append(
            (
                due,
                d,
                out,
                subprocess.Popen(
                    [PY, "scheduler_client.py", "run", "first_line.py"],
                    cwd=d,
                    env={"SCHEDULER_RUN_DIR": str(d), "PATH": "/usr/bin:/bin"},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                ),
            )
        )
    delays = []
    for due, d, out, proc in procs:
        proc.wait()
        out.close()
        started = _first_line_at(d / "events.jsonl")
        if started is not None:
            delays.append(started - due)
    shutil.rmtree(work)
    return sorted(delays)


def _summary(delays: list[float]) -> str:
    p99 = delays[min(len(delays) - 1, int(round(0.99 * (len(delays) - 1))))]
    return (
        f"median {statistics.median(delays):.3f} s, p99 {p99:.3f} s, "
        f"min {delays[0]:.3f} s, max {delays[-1]:.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--spacing", type=float, default=0.7, help="seconds between due times")
    args = parser.parse_args()
    env = make_site()
    setup_django(env)
    from django.conf import settings
    from django.utils import timezone

    from scheduler import services
    from scheduler.models import Run, TaskDefinition

    definition = TaskDefinition.objects.create(name="first line", program="first_line.py")
    poller = subprocess.Popen([PY, "manage.py", "run_poller"], cwd=ROOT, env=env)
    time.sleep(4)  # job services created, poller idle
    base = timezone.now() + dt.timedelta(seconds=2)
    # Due times fall at arbitrary points inside the poll interval.
    offsets = [i * args.spacing + (i * 0.137) % 1 for i in range(args.runs)]
    for i in range(args.runs):
        due = base + dt.timedelta(seconds=offsets[i])
        services.run_enqueue(definition=definition, due_at=due)
    end = time.monotonic() + 60 + args.runs * args.spacing
    while Run.objects.exclude(state__in=Run.FINAL_STATES).exists() and time.monotonic() < end:
        time.sleep(0.2)
    poller.terminate()
    poller.wait(timeout=60)
    delays = []
    for run in Run.objects.all():
        message = run.messages.filter(text__startswith="first line at").first()
        if message is None:
            continue
        started = float(re.search(r"at ([0-9.]+)", message.text).group(1))
        delays.append(started - run.due_at.timestamp())
    delays.sort()
    print(f"runs: {len(delays)} of {args.runs}, poll interval {settings.SCHEDULER_POLL_INTERVAL} s")
    print(f"scheduler, due -> first line: {_summary(delays)}")
    baseline = bare(offsets)
    print(f"bare sleep-until-due + Popen of the same launcher: {_summary(baseline)}")
    median = statistics.median(delays)
    print(f"target median < 1 s: {'met' if median < 1 else 'NOT met'} ({median:.3f} s)")


if __name__ == "__main__":
    main()
