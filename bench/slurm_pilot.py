"""Short runs on Slurm: one pilot holding the cores against one batch job a run.

Starts a single-node Slurm of its own (munged, slurmctld, slurmd, as the test
fixture does; the node declares --cores CPUs), then through the real poller:
N runs of a program that sleeps 1 s (a) through the resource's pilot, one
Slurm job holding --cores cores, and (b) one Slurm job a run, at most --cores
at once. Beside them, in the same run, the bare floor: the same 1-second sleep
run by `xargs -P CORES`. Prints runs/s for each and the ratio pilot/per-job.

Needs root, slurm-wlm and munge (scripts/system-packages).

    .venv/bin/python bench/slurm_pilot.py --runs 200 --cores 4
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import PY, ROOT, make_site, setup_django

sys.path.insert(0, str(ROOT))


def _through_poller(env, definition, resource, n: int, *, pilot: bool) -> tuple[float, dict, int]:
    from django.db.models import Count

    from scheduler import services
    from scheduler.models import Run

    resource.pilot = pilot
    resource.save()
    Run.objects.all().delete()
    poller = subprocess.Popen(
        [PY, "manage.py", "run_poller", "--services", "1", "--interval", "0.2"],
        cwd=ROOT,
        env=env,
    )
    try:
        if pilot:
            # A long-lived poller has its pilot running already: one run first.
            warm = services.run_enqueue(definition=definition)
            deadline = time.monotonic() + 120
            while not Run.objects.get(pk=warm.pk).is_final:
                if time.monotonic() > deadline:
                    raise SystemExit("the pilot did not start within 120 s")
                time.sleep(0.1)
            Run.objects.filter(pk=warm.pk).delete()
        start = time.monotonic()
        for _ in range(n):
            services.run_enqueue(definition=definition)
        while Run.objects.filter(state__in=Run.FINAL_STATES).count() < n:
            if time.monotonic() - start > 1800:
                raise SystemExit("timed out")
            time.sleep(0.2)
        elapsed = time.monotonic() - start
    finally:
        poller.terminate()
        poller.wait(timeout=60)
    states = dict(Run.objects.values_list("state").annotate(n=Count("pk")))
    jobs = Run.objects.values("saga_job_id").distinct().count()
    return elapsed, states, jobs


def _bare(n: int, cores: int) -> float:
    start = time.monotonic()
    subprocess.run(
        ["xargs", "-P", str(cores), "-n", "1", "sleep"],
        input="1\n" * n,
        text=True,
        check=True,
    )
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--job-runs", type=int, default=None, help="per-job runs (default --runs)")
    parser.add_argument("--cores", type=int, default=4)
    args = parser.parse_args()
    job_runs = args.job_runs or args.runs

    from tests.fixtures_slurm import _start, _stop

    folder = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
    folder.chmod(0o755)
    cluster, procs = _start(folder, min_job_age=300, cpus=args.cores)
    try:
        env = make_site()
        env["SLURM_CONF"] = str(cluster.conf)
        env["SCHEDULER_PILOT_IDLE_SECONDS"] = "60"
        setup_django(env)
        from scheduler.models import ExecutionResource, TaskDefinition

        runs_root = Path(env["SCHEDULER_VAR_DIR"]) / "cluster-runs"
        resource = ExecutionResource.objects.create(
            name="cluster",
            job_service_url="slurm://localhost/",
            queue="debug",
            working_root=str(runs_root),
            max_concurrent_runs=args.cores,
        )
        definition = TaskDefinition.objects.create(
            name="one second",
            program="sleeper.py",
            default_args=["1"],
            default_resource=resource,
        )
        pilot_s, pilot_states, pilot_jobs = _through_poller(
            env, definition, resource, args.runs, pilot=True
        )
        cluster.run("scancel", "--user", "root")  # the pilot
        time.sleep(1)
        job_s, job_states, job_jobs = _through_poller(
            env, definition, resource, job_runs, pilot=False
        )
        bare_s = _bare(args.runs, args.cores)
    finally:
        cluster.run("scancel", "--user", "root")
        _stop(cluster, procs)
        shutil.rmtree(folder, ignore_errors=True)
    pilot_rate, job_rate, bare_rate = args.runs / pilot_s, job_runs / job_s, args.runs / bare_s
    print(f"Slurm, one node of {args.cores} CPUs; a program that sleeps 1 s")
    print(
        f"through one pilot holding {args.cores} cores: {args.runs} runs in {pilot_s:.1f} s, "
        f"{pilot_rate:.2f} runs/s; final states {pilot_states}; job ids {pilot_jobs}"
    )
    print(
        f"one batch job a run, at most {args.cores} at once: {job_runs} runs in {job_s:.1f} s, "
        f"{job_rate:.2f} runs/s; final states {job_states}; job ids {job_jobs}"
    )
    print(
        f"bare floor, xargs -P {args.cores} sleep 1: {args.runs} in {bare_s:.1f} s, "
        f"{bare_rate:.2f} runs/s"
    )
    print(f"ratio pilot/per-job: {pilot_rate / job_rate:.1f}")
    print(f"ratio pilot/bare floor: {pilot_rate / bare_rate:.2f}")


if __name__ == "__main__":
    main()
