"""Latency: runs due at known times, an idle poller; due time -> the program's first line.

Queues runs due at spread-out future moments while a poller with the default
poll interval idles, and prints the median and the 99th percentile of the delay
from each run's due time to the moment its program's first line ran.

    .venv/bin/python bench/latency.py --runs 40
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import subprocess
import time

from common import PY, ROOT, make_site, setup_django


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
    for i in range(args.runs):
        # Due times fall at arbitrary points inside the poll interval.
        due = base + dt.timedelta(seconds=i * args.spacing + (i * 0.137) % 1)
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
    p99 = delays[min(len(delays) - 1, int(round(0.99 * (len(delays) - 1))))]
    print(f"runs: {len(delays)} of {args.runs}, poll interval {settings.SCHEDULER_POLL_INTERVAL} s")
    print(
        f"due -> first line: median {statistics.median(delays):.3f} s, p99 {p99:.3f} s, "
        f"min {delays[0]:.3f} s, max {delays[-1]:.3f} s"
    )


if __name__ == "__main__":
    main()
