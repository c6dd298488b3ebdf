"""Latency: runs due at known times, an idle poller; due time -> the program's first line.

Queues runs due at spread-out future moments while a poller with the default
poll interval idles, and prints the median and the 99th percentile of the delay
from each run's due time to the moment its program's first line ran. Then runs
queued for now (Run now), one at a time: queued -> first line. Before both, the
CPU the idle poller and its SAGA helpers use, beside a bare sleep loop.

    .venv/bin/python bench/latency.py --runs 40
    .venv/bin/python bench/latency.py --database-url postgres://postgres@127.0.0.1/latency
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from common import PY, ROOT, make_site, scratch, setup_django


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
    work = scratch("scheduler-bare-latency-")
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


def _idle_cpu(pid: int, seconds: float) -> tuple[float, float, float]:
    """CPU of the idle poller and of its SAGA helpers (its descendants and the
    shells that left its tree), in % of one core over ``seconds``; and of a bare
    Python loop sleeping the poll interval, measured the same way."""
    import psutil
    from django.conf import settings

    def helpers():
        found = {p.pid: p for p in psutil.Process(pid).children(recursive=True)}
        base = str(settings.SCHEDULER_SAGA_BASE)
        for proc in psutil.process_iter():
            try:
                if proc.environ().get("RADICAL_BASE") == base:
                    found.setdefault(proc.pid, proc)
            except psutil.Error:
                continue
        return list(found.values())

    def cpu(procs):
        total = 0.0
        for proc in procs:
            try:
                times = proc.cpu_times()
                total += times.user + times.system
            except psutil.Error:
                continue
        return total

    poller = psutil.Process(pid)
    procs = helpers()
    before_own, before_helpers = cpu([poller]), cpu(procs)
    time.sleep(seconds)
    own = (cpu([poller]) - before_own) / seconds * 100
    helper = (cpu(procs) - before_helpers) / seconds * 100
    loop = subprocess.Popen(
        [PY, "-c", f"import time\nwhile True: time.sleep({settings.SCHEDULER_POLL_INTERVAL})"]
    )
    time.sleep(0.5)
    bare_proc = psutil.Process(loop.pid)
    start = cpu([bare_proc])
    time.sleep(seconds)
    bare = (cpu([bare_proc]) - start) / seconds * 100
    loop.kill()
    loop.wait()
    return own, helper, bare


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
    parser.add_argument(
        "--database-url", default=None, help="e.g. postgres://postgres@127.0.0.1/bench (a new db)"
    )
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument(
        "--pilot",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the local resource starts runs through its pilot (the default; --no-pilot: bundles)",
    )
    args = parser.parse_args()
    env = make_site(database_url=args.database_url)
    setup_django(env)
    from django.conf import settings
    from django.db import connection
    from django.utils import timezone

    from scheduler import services
    from scheduler.models import ExecutionResource, Run, TaskDefinition

    local = ExecutionResource.objects.get(name="local")
    local.pilot = args.pilot
    local.save()
    definition = TaskDefinition.objects.create(name="first line", program="first_line.py")
    poller = subprocess.Popen([PY, "manage.py", "run_poller"], cwd=ROOT, env=env)
    time.sleep(4)  # job services created, poller idle
    if args.pilot:  # and the pilot started, as a poller that has run before has it
        warm = services.run_enqueue(definition=definition)
        while not Run.objects.get(pk=warm.pk).is_final:
            time.sleep(0.05)
        Run.objects.filter(pk=warm.pk).delete()
    time.sleep(6)  # past its first ticks and the periodic-task sync: idle
    idle = _idle_cpu(poller.pid, args.idle_seconds)
    base = timezone.now() + dt.timedelta(seconds=2)
    # Due times fall at arbitrary points inside the poll interval.
    offsets = [i * args.spacing + (i * 0.137) % 1 for i in range(args.runs)]
    for i in range(args.runs):
        due = base + dt.timedelta(seconds=offsets[i])
        services.run_enqueue(definition=definition, due_at=due)
    end = time.monotonic() + 60 + args.runs * args.spacing
    while Run.objects.exclude(state__in=Run.FINAL_STATES).exists() and time.monotonic() < end:
        time.sleep(0.2)
    # Run now: queued for now, one at a time, while the poller sleeps between polls.
    now_runs = []
    for i in range(args.runs):
        time.sleep(args.spacing + (i * 0.137) % 1)
        now_runs.append(services.run_enqueue(definition=definition))
    end = time.monotonic() + 60
    while Run.objects.exclude(state__in=Run.FINAL_STATES).exists() and time.monotonic() < end:
        time.sleep(0.2)
    poller.terminate()
    poller.wait(timeout=60)
    if args.pilot:
        from poller import pilots

        pid = (pilots.record(local) or {}).get("pid")
        if pid:
            os.kill(pid, 15)
    now_ids = {run.pk for run in now_runs}
    delays, now_delays = [], []
    for run in Run.objects.all():
        message = run.messages.filter(text__startswith="first line at").first()
        if message is None:
            continue
        started = float(re.search(r"at ([0-9.]+)", message.text).group(1))
        if run.pk in now_ids:
            now_delays.append(started - run.queued_at.timestamp())
        else:
            delays.append(started - run.due_at.timestamp())
    delays.sort()
    now_delays.sort()
    print(
        f"runs: {len(delays)} of {args.runs}, poll interval {settings.SCHEDULER_POLL_INTERVAL} s"
        + (", through the resource's pilot" if args.pilot else "")
    )
    print(f"scheduler, due -> first line: {_summary(delays)}")
    baseline = bare(offsets)
    print(f"bare sleep-until-due + Popen of the same launcher: {_summary(baseline)}")
    median = statistics.median(delays)
    print(f"target median < 1 s: {'met' if median < 1 else 'NOT met'} ({median:.3f} s)")
    print(
        f"scheduler ({connection.vendor}), queued for now -> first line "
        f"({len(now_delays)} of {args.runs}): {_summary(now_delays)}"
    )
    print(f"bare Popen of the same launcher at once: {_summary(baseline)}")
    own, helpers, bare_idle = idle
    print(
        f"idle poller over {args.idle_seconds:.0f} s: {own + helpers:.2f} % of a core "
        f"(poller {own:.2f} %, SAGA helpers {helpers:.2f} %); "
        f"bare sleep loop at the poll interval: {bare_idle:.2f} %"
    )


if __name__ == "__main__":
    main()
