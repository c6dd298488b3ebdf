"""Django Tasks through the scheduler (scheduler.tasks_backend).

1. Enqueue cost: N ``add_numbers.enqueue(i, i)`` on our backend against the same
   enqueue on the framework's DummyBackend (keeps the result in memory: the bare
   floor of the API itself), in the same process.
2. N enqueued trivial tasks to final through the real poller on fork://localhost,
   against the bare floor of the same work: N interpreters that set Django up and
   call the function, `--concurrency` at a time (what a task costs without us).

    .venv/bin/python bench/tasks_backend.py --tasks 300
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from common import PY, ROOT, make_site, setup_django


def per_task_ms(fn, n: int) -> list[float]:
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--enqueues", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    env = make_site()
    env["SCHEDULER_PERIODIC_SYNC"] = "0"
    setup_django(env)
    from demo.tasks import add_numbers
    from scheduler.models import ExecutionResource, Run

    try:
        from django.tasks import task_backends
        from django.tasks.backends.dummy import DummyBackend
    except ImportError:
        from django_tasks import task_backends
        from django_tasks.backends.dummy import DummyBackend

    ours_backend = task_backends["default"]
    dummy = DummyBackend(alias="dummy", params={})
    ExecutionResource.objects.filter(name="local").update(max_concurrent_runs=args.concurrency)

    # Both straight through the backend's enqueue(task, args, kwargs).
    ours = per_task_ms(lambda i: ours_backend.enqueue(add_numbers, [i, i], {}), args.enqueues)
    bare = per_task_ms(lambda i: dummy.enqueue(add_numbers, [i, i], {}), args.enqueues)
    print(
        f"enqueue, {args.enqueues} tasks: scheduler median {statistics.median(ours):.2f} ms "
        f"(p95 {sorted(ours)[int(len(ours) * 0.95)]:.2f} ms), DummyBackend (baseline) median "
        f"{statistics.median(bare):.3f} ms, ratio {statistics.median(ours) / statistics.median(bare):.0f}x"
    )
    Run.objects.all().delete()

    # --- N tasks to final through the poller ---------------------------------
    poller = subprocess.Popen(
        [PY, "manage.py", "run_poller", "--interval", "0.2"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(3)  # its job services open, as a long-lived poller's are
        start = time.monotonic()
        results = [add_numbers.enqueue(i, 1) for i in range(args.tasks)]
        while Run.objects.exclude(state__in=Run.FINAL_STATES).exists():
            if time.monotonic() - start > 900:
                raise SystemExit("not all tasks ended within 900 s")
            time.sleep(0.2)
        elapsed = time.monotonic() - start
    finally:
        poller.terminate()
        poller.wait(timeout=60)
    ok = sum(1 for r in results if (r.refresh() or True) and r.status == "SUCCESSFUL")
    right = sum(
        1 for i, r in enumerate(results) if r.status == "SUCCESSFUL" and r.return_value == i + 1
    )

    code = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'project.settings'); "
        "django.setup(); from demo.tasks import add_numbers; add_numbers.call(1, 1)"
    )

    def bare_one(_):
        subprocess.run([PY, "-c", code], cwd=ROOT, env=env, check=True)

    t0 = time.monotonic()
    with ThreadPoolExecutor(args.concurrency) as pool:
        list(pool.map(bare_one, range(args.tasks)))
    bare_elapsed = time.monotonic() - t0
    print(
        f"{args.tasks} tasks to final through the poller: {elapsed:.1f} s, "
        f"{args.tasks / elapsed:.1f} tasks/s ({ok} successful, {right} right return values); "
        f"bare django.setup()+call, {args.concurrency} at a time (baseline): {bare_elapsed:.1f} s, "
        f"{args.tasks / bare_elapsed:.1f} tasks/s; ratio scheduler/bare: "
        f"{(args.tasks / elapsed) / (args.tasks / bare_elapsed):.2f}"
    )


if __name__ == "__main__":
    main()
