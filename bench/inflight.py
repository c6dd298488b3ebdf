"""Poller memory with many runs in flight (default 1,000) on fork://localhost.

Queues N runs of a program that sleeps, lets one poller launch them all, and
prints the poller's resident memory idle (the baseline, same process before any
run) and once all N are RUNNING, with the memory of its SAGA shell helpers and of
the task processes beside it. Then cancels them all and prints how long that took.

    .venv/bin/python bench/inflight.py --runs 1000
"""

from __future__ import annotations

import argparse
import subprocess
import time

import psutil
from common import PY, ROOT, make_site, setup_django


def _tree_rss(proc: psutil.Process) -> tuple[int, int]:
    """(RSS of the process, RSS of all its descendants)."""
    own = proc.memory_info().rss
    children = 0
    for child in proc.children(recursive=True):
        try:
            children += child.memory_info().rss
        except psutil.Error:
            pass
    return own, children


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--services", type=int, default=8)
    parser.add_argument("--sleep", type=int, default=600)
    parser.add_argument(
        "--pilot",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the local resource starts runs through its pilot (the default; --no-pilot: bundles)",
    )
    args = parser.parse_args()
    env = make_site()
    setup_django(env)
    from django.db.models import Count

    from scheduler import services
    from scheduler.models import ExecutionResource, Run, TaskDefinition

    local = ExecutionResource.objects.get(name="local")
    local.max_concurrent_runs = args.runs
    local.pilot = args.pilot
    local.save()
    definition = TaskDefinition.objects.create(
        name="sleeper", program="sleeper.py", default_args=[str(args.sleep)]
    )
    poller = subprocess.Popen(
        [PY, "manage.py", "run_poller", "--services", str(args.services)], cwd=ROOT, env=env
    )
    proc = psutil.Process(poller.pid)
    time.sleep(2 + 0.2 * args.services)
    idle_own, idle_helpers = _tree_rss(proc)
    start = time.monotonic()
    for _ in range(args.runs):
        services.run_enqueue(definition=definition)
    peak = 0
    while True:
        running = Run.objects.filter(state=Run.State.RUNNING).count()
        own, _ = _tree_rss(proc)
        peak = max(peak, own)
        if running >= args.runs:
            break
        if time.monotonic() - start > 900:
            print(f"timed out: {running} of {args.runs} running")
            break
        time.sleep(1)
    ramp = time.monotonic() - start
    time.sleep(15)  # a few tracking ticks with everything in flight
    own, descendants = _tree_rss(proc)
    # Local runs are launched through the pilot (one process, not the poller's
    # child: it has a session of its own) or in bundles (one process per SAGA
    # job), with one forked launcher per run, sharing pages; PSS counts a
    # shared page once.
    tasks = task_pss = task_count = 0
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "scheduler_client.py" in cmd and (
            "sleeper.py" in cmd or " bundle " in cmd or " pilot " in cmd
        ):
            try:
                info = p.memory_full_info()
            except psutil.Error:
                continue
            tasks += info.rss
            task_pss += info.pss
            task_count += 1
    cancel_start = time.monotonic()
    for run in Run.objects.exclude(state__in=Run.FINAL_STATES):
        services.run_request_cancel(run=run)
    while Run.objects.exclude(state__in=Run.FINAL_STATES).exists():
        if time.monotonic() - cancel_start > 900:
            break
        time.sleep(1)
    cancel_took = time.monotonic() - cancel_start
    poller.terminate()
    poller.wait(timeout=120)
    states = dict(Run.objects.values_list("state").annotate(n=Count("pk")).order_by())
    mib = 2**20
    print(
        f"runs: {args.runs}, job services: {args.services}; all RUNNING after {ramp:.0f} s"
        + (", through the resource's pilot" if args.pilot else "")
    )
    print(
        f"poller RSS idle (baseline): {idle_own / mib:.0f} MiB, SAGA helpers {idle_helpers / mib:.0f} MiB"
    )
    print(
        f"poller RSS with {args.runs} in flight: {own / mib:.0f} MiB (peak {peak / mib:.0f} MiB), "
        f"+{(own - idle_own) / mib:.0f} MiB, {(own - idle_own) / args.runs / 1024:.0f} KiB per run"
    )
    print(
        f"task processes (bundles + launchers with their program): {task_count}, "
        f"RSS {tasks / mib:.0f} MiB in all, PSS {task_pss / mib:.0f} MiB "
        f"({task_pss / max(1, args.runs) / 1024:.0f} KiB per run)"
    )
    print(f"cancelling all: {cancel_took:.0f} s; final states: {states}")


if __name__ == "__main__":
    main()
