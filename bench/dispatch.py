"""Dispatch throughput: N trivial runs queued at once on fork://localhost.

Prints runs per second from queued to final through the real poller, and beside
it, in the same run, the same program started bare by `xargs -P 2` through the
same launcher (scheduler_client.py run), the same launcher submitted straight
through radical.saga with the poller's services and bundles of runs (what the
shell adaptor itself costs), and once more with one SAGA job a run (what a
bundle saves), the machine's CPU per run for each, and the ratios.

The poller and the fork floor are measured --rounds times (3 by default),
alternated; the last line gives each round's ratio against the floor measured
beside it, and their median. The lines before it are the first round's. On
this 2-core VM one ratio moved from 0.4 to 0.9 between two minutes with the
same tree: read the median, not one round.

    .venv/bin/python bench/dispatch.py --runs 300 --services 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
from common import BENCH_DIR, PY, ROOT, make_site, mkdir_cost, scratch, setup_django


def machine_cpu() -> float:
    """Seconds of CPU the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as fh:
        ticks = [int(v) for v in fh.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def run_dirs(n: int) -> tuple[Path, list[str]]:
    """n staged run directories of the trivial program, as the poller stages them."""
    work = scratch("scheduler-bare-")
    client = ROOT / "task_programs" / "scheduler_client.py"
    program = ROOT / "bench" / "programs" / "trivial.py"
    dirs = []
    for i in range(n):
        d = work / f"run-{i}"
        (d / "outputs").mkdir(parents=True)
        shutil.copy(client, d)
        shutil.copy(program, d)
        (d / "run.json").write_text(
            json.dumps({"v": 1, "run_id": i, "parameters": {}, "args": [], "program": "trivial.py"})
        )
        dirs.append(str(d))
    return work, dirs


def saga_alone(n: int, services: int, bulk: int, *, bundled: bool) -> tuple[float, float]:
    """The same launcher in staged directories, submitted straight through
    radical.saga (no poller, no database): `services` job services in parallel,
    through the poller's local shell. bundled: one SAGA job per `bulk` runs
    (scheduler_client.py bundle), as the poller submits; otherwise one SAGA job
    per run, `bulk` jobs to one exchange (radical.saga's task container). What
    radical.saga's shell adaptor itself costs; finished when every exit record
    is there."""
    import threading

    from django.conf import settings

    from poller import saga_shells
    from poller.saga_executor import radical_base, radical_saga
    from scheduler.models import ExecutionResource

    rs = radical_saga()
    work, dirs = run_dirs(n)
    resource = ExecutionResource(name="bench", job_service_url="fork://localhost")
    with radical_base(resource):
        pool = [rs.job.Service("fork://localhost") for _ in range(services)]
    # Their shells' process groups, ended after the close, as the poller's pool
    # does (radical.saga's close left the shell and its tail -f running).
    shells = [pgid for service in pool for pgid in saga_shells.service_shells(service)]

    def description(d: str, arguments: list[str]):
        jd = rs.job.Description()
        jd.executable = PY
        jd.arguments = ["scheduler_client.py", *arguments]
        jd.working_directory = d
        jd.output, jd.error = "stdout.txt", "stderr.txt"
        jd.environment = {"SCHEDULER_RUN_DIR": d, "SCHEDULER_RUN_ID": "0"}
        return jd

    def submit(k: int) -> None:
        for start in range(k * bulk, n, services * bulk):
            group = dirs[start : start + bulk]
            if bundled:
                pool[k].create_job(description(group[0], ["bundle", *group])).run()
                continue
            container = rs.task.Container()
            for d in group:
                container.add(pool[k].create_job(description(d, ["run", "trivial.py"])))
            container.run()

    cpu0 = machine_cpu()
    start = time.monotonic()
    threads = [threading.Thread(target=submit, args=(k,)) for k in range(services)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    while not all(os.path.exists(os.path.join(d, "exit.json")) for d in dirs):
        if time.monotonic() - start > 600:
            raise SystemExit("radical.saga alone: timed out")
        time.sleep(0.05)
    elapsed = time.monotonic() - start
    cpu = machine_cpu() - cpu0
    for service in pool:
        service.close()
    saga_shells.end_groups(shells, str(settings.SCHEDULER_SAGA_BASE))
    shutil.rmtree(work)
    return n / elapsed, cpu / n


def bare(n: int) -> tuple[float, float]:
    work, dirs = run_dirs(n)
    script = f'cd "$1" && SCHEDULER_RUN_DIR="$1" {PY} scheduler_client.py run trivial.py >stdout.txt 2>stderr.txt'
    cpu0 = machine_cpu()
    start = time.monotonic()
    subprocess.run(
        ["xargs", "-P", "2", "-n", "1", "sh", "-c", script, "sh"],
        input="\n".join(dirs).encode(),
        check=True,
    )
    elapsed = time.monotonic() - start
    cpu = machine_cpu() - cpu0
    ok = sum(1 for d in dirs if (Path(d) / "exit.json").exists())
    shutil.rmtree(work)
    assert ok == n, f"bare: only {ok} of {n} wrote an exit record"
    return n / elapsed, cpu / n


FORK_FLOOR = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
import scheduler_client as c
limit, dirs = int(sys.argv[2]), sys.stdin.read().split()
children = set()
for d in dirs:
    while len(children) >= limit:
        pid, status = os.waitpid(-1, 0)
        children.discard(pid)
    pid = c._start_in(d)
    if pid:
        children.add(pid)
while children:
    pid, _ = os.waitpid(-1, 0)
    children.discard(pid)
"""


def fork_floor(n: int, concurrency: int) -> tuple[float, float]:
    """The floor of a pilot: a bare Python loop that forks the same launcher
    (scheduler_client._start_in, as the pilot and the bundle do) for each staged
    run, at most ``concurrency`` at once; no database, no SAGA, no poller."""
    work, dirs = run_dirs(n)
    cpu0 = machine_cpu()
    start = time.monotonic()
    subprocess.run(
        [PY, "-c", FORK_FLOOR, str(ROOT / "task_programs"), str(concurrency)],
        input="\n".join(dirs).encode(),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    elapsed = time.monotonic() - start
    cpu = machine_cpu() - cpu0
    ok = sum(1 for d in dirs if (Path(d) / "exit.json").exists())
    shutil.rmtree(work)
    assert ok == n, f"fork floor: only {ok} of {n} wrote an exit record"
    return n / elapsed, cpu / n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--services", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="measure the poller and the fork floor this many times, alternated, and print "
        "each round's ratio and the median (the lines above are the first round's)",
    )
    parser.add_argument(
        "--pilot",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the local resource starts runs through its pilot (the default; --no-pilot: bundles)",
    )
    args = parser.parse_args()

    env = make_site()
    setup_django(env)
    from scheduler import services
    from scheduler.models import ExecutionResource, Run, TaskDefinition

    local = ExecutionResource.objects.get(name="local")
    local.max_concurrent_runs = args.concurrency
    local.pilot = args.pilot
    local.save()
    definition = TaskDefinition.objects.create(name="trivial", program="trivial.py")
    poller = subprocess.Popen(
        [PY, "manage.py", "run_poller", "--services", str(args.services), "--interval", "0.2"],
        cwd=ROOT,
        env=env,
    )
    # Let the poller create its job services before the clock starts: a
    # long-lived poller has them already.
    time.sleep(1.5 + 0.2 * args.services)
    if args.pilot:
        # And its pilot: a long-lived poller has it running already.
        warm = services.run_enqueue(definition=definition)
        while not Run.objects.get(pk=warm.pk).is_final:
            time.sleep(0.05)
        Run.objects.filter(pk=warm.pk).delete()
    proc = psutil.Process(poller.pid)
    pilot_proc = None
    if args.pilot:
        from poller import pilots

        pid = (pilots.record(local) or {}).get("pid")
        pilot_proc = psutil.Process(pid) if pid else None

    def poller_round() -> dict:
        """Queue the runs, wait until all are final: the poller's figures."""
        before = Run.objects.filter(state__in=Run.FINAL_STATES).count()
        poller_cpu0 = sum(proc.cpu_times()[:2])
        poller_sys0 = proc.cpu_times().system
        cpu0 = machine_cpu()
        pilot_cpu0 = sum(pilot_proc.cpu_times()[:2]) if pilot_proc else 0.0
        me = psutil.Process()
        start = time.monotonic()
        me_cpu0 = sum(me.cpu_times()[:2])
        for _ in range(args.runs):
            services.run_enqueue(definition=definition)
        enqueue_cpu = sum(me.cpu_times()[:2]) - me_cpu0
        peak_rss = 0
        while True:
            done = Run.objects.filter(state__in=Run.FINAL_STATES).count() - before
            peak_rss = max(peak_rss, proc.memory_info().rss)
            if done >= args.runs:
                break
            if time.monotonic() - start > 600:
                raise SystemExit(f"timed out: {done} of {args.runs} final")
            time.sleep(0.1)
        elapsed = time.monotonic() - start
        return {
            "elapsed": elapsed,
            "rate": args.runs / elapsed,
            "cpu": machine_cpu() - cpu0,
            "poller_cpu": sum(proc.cpu_times()[:2]) - poller_cpu0,
            "poller_sys": proc.cpu_times().system - poller_sys0,
            "pilot_cpu": sum(pilot_proc.cpu_times()[:2]) - pilot_cpu0 if pilot_proc else 0.0,
            "enqueue_cpu": enqueue_cpu,
            "peak_rss": peak_rss,
        }

    # Rounds after the first alternate with the fork floor: the machine's
    # speed moves from minute to minute, and a ratio of two moments is noise.
    rounds = [poller_round()]
    floors = []
    for _ in range(args.rounds - 1):
        floors.append(fork_floor(args.runs, args.concurrency))
        rounds.append(poller_round())
    first = rounds[0]
    rate, elapsed, cpu = first["rate"], first["elapsed"], first["cpu"]
    poller_cpu, poller_sys, pilot_cpu = first["poller_cpu"], first["poller_sys"], first["pilot_cpu"]
    enqueue_cpu, peak_rss = first["enqueue_cpu"], first["peak_rss"]
    poller.terminate()
    poller.wait(timeout=60)
    if args.pilot:
        from poller import pilots

        record = pilots.record(local) or {}
        if record.get("pid"):
            os.kill(record["pid"], 15)
    states = dict(
        Run.objects.values_list("state").annotate(
            n=__import__("django.db.models").db.models.Count("pk")
        )
    )
    files = sum(1 for r in Run.objects.all() if r.files.filter(kind="output").exists())
    jobs = Run.objects.values("saga_job_id").distinct().count()
    bare_rate, bare_cpu = bare(args.runs)
    from django.conf import settings

    bulk = settings.SCHEDULER_SUBMIT_BULK
    saga_rate, saga_cpu = saga_alone(args.runs, args.services, bulk, bundled=True)
    job_rate, job_cpu = saga_alone(args.runs, args.services, bulk, bundled=False)
    floor_rate, floor_cpu = fork_floor(args.runs, args.concurrency)
    floors.append((floor_rate, floor_cpu))
    print(
        f"runs: {args.runs}, job services: {args.services}, concurrency limit: {args.concurrency}"
        + (", through the resource's pilot" if args.pilot else "")
    )
    print(f"final states: {states}; runs with their output file home: {files}")
    print(f"SAGA jobs: {jobs}, {args.runs * len(rounds) / jobs:.1f} runs a job")
    print(
        f"poller: {rate:.1f} runs/s queued->final ({elapsed:.1f} s), peak poller RSS {peak_rss / 2**20:.0f} MiB"
    )
    print(
        f"CPU per run: {cpu / args.runs * 1000:.1f} ms on the whole machine, of which the "
        f"poller process {poller_cpu / args.runs * 1000:.1f} ms"
    )
    print(
        f"CPU per run, more: the poller in the kernel {poller_sys / args.runs * 1000:.1f} ms "
        f"(files, sockets, the database file), the pilot process {pilot_cpu / args.runs * 1000:.1f} ms (its "
        f"launchers and programs not counted), queuing the runs (run_enqueue, in the bench) "
        f"{enqueue_cpu / args.runs * 1000:.1f} ms"
    )
    print(
        f"bare xargs -P 2 with the same launcher: {bare_rate:.1f} runs/s, "
        f"{bare_cpu * 1000:.1f} ms CPU per run"
    )
    print(
        f"radical.saga alone, the same launcher, {args.services} services, {bulk} runs a job "
        f"(as the poller): {saga_rate:.1f} runs/s, {saga_cpu * 1000:.1f} ms CPU per run"
    )
    print(
        f"radical.saga alone, one job a run, {bulk} jobs an exchange: {job_rate:.1f} runs/s, "
        f"{job_cpu * 1000:.1f} ms CPU per run"
    )
    print(
        f"ratio poller/bare: {rate / bare_rate:.2f}, poller/radical.saga alone: {rate / saga_rate:.2f}"
    )
    print(
        f"fork floor (a bare Python loop forking the same launcher, {args.concurrency} at once): "
        f"{floor_rate:.1f} runs/s, {floor_cpu * 1000:.1f} ms CPU per run"
    )
    print(f"ratio poller/fork floor: {rate / floor_rate:.2f}")
    if args.rounds > 1:
        # Round k of the poller against the fork floor measured next to it (the
        # last round against the floor above).
        ratios = [r["rate"] / f[0] for r, f in zip(rounds, floors, strict=True)]
        print(
            f"ratio poller/fork floor over {args.rounds} alternated rounds: "
            + ", ".join(f"{x:.2f}" for x in ratios)
            + f"; median {statistics.median(ratios):.2f}; poller runs/s "
            + ", ".join(f"{r['rate']:.1f}" for r in rounds)
            + "; fork floor runs/s "
            + ", ".join(f"{f[0]:.1f}" for f in floors)
            + "; the poller's CPU a run "
            + ", ".join(f"{r['poller_cpu'] / args.runs * 1000:.1f}" for r in rounds)
            + " ms, of it kernel "
            + ", ".join(f"{r['poller_sys'] / args.runs * 1000:.1f}" for r in rounds)
            + " ms"
        )
    print(
        f"mkdir in the bench's folder ({BENCH_DIR}): {mkdir_cost(BENCH_DIR) * 1e6:.0f} us; "
        f"in {tempfile.gettempdir()}: {mkdir_cost(Path(tempfile.gettempdir())) * 1e6:.0f} us "
        "(the poller makes 6 folders a run, staged and home; the fork floor's are made before its clock)"
    )


if __name__ == "__main__":
    main()
