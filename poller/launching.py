"""Launching: claimed runs become started programs (the poller's steps 2+3).

A claimed run is staged (its run directory: the program, the client, run.json,
its inputs) and started in one of three ways, by what its resource allows:
handed to the resource's pilot (poller.pilots), in a bundle of local runs that
share one SAGA job (``scheduler_client.py bundle``), or as a SAGA job of its
own (remote and batch resources). Launch threads, at most one per job service
of a resource, do the staging and the submitting while the tick goes on; the
job id is stored the moment SAGA (or the pilot) answers.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from concurrent.futures import Future
from pathlib import Path

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.db.models import prefetch_related_objects

from poller import pilots
from poller import rundir as rundirs
from scheduler import inputs as run_inputs
from scheduler import services
from scheduler.display import seconds as display_seconds
from scheduler.models import ExecutionResource, Run

logger = logging.getLogger(__name__)

CLIENT_PATH = settings.BASE_DIR / "task_programs" / "scheduler_client.py"
# A resource that failed is left alone this long before it is tried again.
RESOURCE_RETRY_SECONDS = 30.0
# Runs this poller claimed but never sent are looked for at the first tick, at
# the tick that collects a launch whose job id could not be stored, and this
# often besides.
UNSENT_SECONDS = 60.0
# Set by the bundle for each of its runs (scheduler_client.bundle).
BUNDLE_OWN_ENV = ("SCHEDULER_RUN_DIR", "SCHEDULER_RUN_ID")


class Launching:
    """The launch half of the Poller (poller.loop): its state lives on the Poller."""

    def claim_and_launch(self) -> bool:
        found = self.collect_launches()
        runs = self.claim()
        if time.monotonic() >= self._next_unsent_check:
            # Runs claimed by this poller (or its previous incarnation) that never
            # got a job id: the poller died between claim and submit, or storing
            # the id failed. Submit again; the launcher's marker makes a second
            # start of the program impossible. At the first tick, after a failed
            # store, and every UNSENT_SECONDS: not a question for every tick.
            self._next_unsent_check = time.monotonic() + UNSENT_SECONDS
            unsent = Run.objects.filter(
                poller=self.ident, state=Run.State.SUBMITTED, saga_job_id=""
            ).exclude(pk__in=[r.pk for r in runs] + list(self._launching))
            more = list(unsent.select_related("definition", "resource")[:200])
            if len(more) == 200:
                self._next_unsent_check = 0.0  # the rest at the next tick
            runs += more
        if runs:
            self.launch(runs)
        return found or bool(runs)

    def launch(self, runs: list[Run]) -> None:
        """Hand runs to the launch threads; the tick goes on while they submit.
        (A few runs for a pilot already up on this host are handed over from the
        tick itself: see _pilot_is_up_here.)

        Each resource has a queue of claimed runs and at most one launch thread
        per job service. A thread takes what is queued, up to
        SCHEDULER_SUBMIT_BULK local runs at once (one SAGA job, a bundle, see
        _bundle_spec) or one remote or batch run, submits it, and takes again
        until the queue is empty. So a quiet poller sends a single run at once,
        and a busy one sends bigger bundles instead of more jobs: while the
        services are busy, the runs claimed meanwhile wait for the next bundle
        (bench/dispatch.py, 300 runs on 2 services: a bundle of what each tick
        claimed made 179-193 SAGA jobs, 21-22 runs/s; waiting for a free
        service, 28-34 jobs, 41-45 runs/s)."""
        by_resource: dict[int, list[Run]] = {}
        for run in runs:
            by_resource.setdefault(run.resource_id, []).append(run)
        for resource_id, group in by_resource.items():
            pool = self._pool(group[0].resource)
            bulk = pool.submits_in_bulk or pilots.usable(group[0].resource)
            size = settings.SCHEDULER_SUBMIT_BULK if bulk else 1
            if size >= len(group) and self._pilot_is_up_here(group):
                # A few runs for a pilot that runs on this host: staged and handed
                # over from this thread (a few ms), without the wait for a
                # launch thread's turn. Anything else goes to the launch threads.
                with self._launch_lock:
                    inline = not self._launchers.get(resource_id) and not self._queued.get(
                        resource_id
                    )
                if inline:
                    self._launch_answering(self._launching_now(group))
                    continue
            batch = self._launching_now(group)
            with self._launch_lock:
                queued = self._queued.setdefault(resource_id, [])
                queued += batch
                running = self._launchers.get(resource_id, 0)
                wanted = min(pool.size, -(-len(queued) // size))
                for _ in range(max(0, wanted - running)):
                    self._threads.submit(self._launch_queued, resource_id, size)
                self._launchers[resource_id] = max(running, wanted)

    def _pilot_is_up_here(self, runs: list[Run]) -> bool:
        """Do all ``runs`` go to a pilot that runs on this host now (its record is
        there to read: no SAGA, no SSH)?"""
        resource = runs[0].resource
        if not resource.on_this_host() or not all(pilots.eligible(run) for run in runs):
            return False
        try:
            return pilots.record(resource) is not None
        except Exception:  # noqa: BLE001 - then the launch threads find out
            return False

    def _launching_now(self, runs: list[Run]) -> list[tuple[Run, Future]]:
        """Note ``runs`` as launching (collect_launches reports them); answers
        each with the future its launch answers. Takes _launch_lock: call it
        without holding that lock."""
        batch = [(run, Future()) for run in runs]
        with self._launch_lock:
            for run, future in batch:
                self._launching[run.pk] = (run, future)
        return batch

    def _launch_answering(self, batch: list[tuple[Run, Future]]) -> None:
        """Launch the runs of ``batch`` and answer each one's future: the
        exception that kept it from starting, or None."""
        try:
            results = self._launch_batch([run for run, _ in batch])
        except Exception as exc:  # noqa: BLE001 - reported on the runs
            results = {run.pk: exc for run, _ in batch}
        for run, future in batch:
            future.set_result(results.get(run.pk))

    def _launch_queued(self, resource_id: int, size: int) -> None:
        """A launch thread: launch what the resource's queue holds, ``size`` runs
        at a time, until it is empty."""
        try:
            while True:
                with self._launch_lock:
                    queued = self._queued.get(resource_id) or []
                    if not queued:
                        self._launchers[resource_id] -= 1
                        return
                    batch, self._queued[resource_id] = queued[:size], queued[size:]
                self._launch_answering(batch)
        except BaseException:
            with self._launch_lock:
                self._launchers[resource_id] -= 1
            raise

    def _launch_batch(self, runs: list[Run]) -> dict[int, Exception | None]:
        """In a launch thread: stage, submit (one bundle job for local runs), and
        store each job id at once. Answers, for every run, the exception that kept it from starting
        or None."""
        results: dict[int, Exception | None] = {}
        try:
            staged = []
            # One question for the inputs of the batch, one read of the client
            # and of each program (a bundle's runs are often one definition).
            prefetch_related_objects(runs, "inputs")
            sources = _Sources()
            for run in runs:
                try:
                    staged.append((run, self._stage(run, sources)))
                except Exception as exc:  # noqa: BLE001 - reported on the run
                    results[run.pk] = exc
            if not staged:
                return results
            resource = staged[0][0].resource
            pool = self._pool(resource)
            piloted = [(run, spec) for run, spec in staged if pilots.eligible(run)]
            if piloted and not self._pilots.ensure(resource, pool):
                piloted = []
            # A run whose timeout the batch pilot's time left would cut goes
            # as a job of its own instead of waiting for the next pilot.
            piloted = [pair for pair in piloted if self._pilots.fits(resource, pair[0])]
            rest = [pair for pair in staged if pair not in piloted]
            staged = piloted + rest
            answers = []
            if piloted:
                # The resource's standing launcher starts them (poller.pilots).
                answers += [self._hand_to_pilot(piloted)] * len(piloted)
            if rest and pool.submits_in_bulk:
                # One SAGA job launches the whole bulk (scheduler_client bundle).
                answer = pool.submit_quietly(
                    _bundle_spec([spec for _, spec in rest], run_as=resource.run_as)
                )
                answers += [answer] * len(rest)
            else:
                answers += [pool.submit_quietly(spec) for _, spec in rest]
            submitted = False
            for (run, spec), answer in zip(staged, answers, strict=True):
                if isinstance(answer, Exception):
                    results[run.pk] = answer
                    continue
                # The program is started: whatever happens to this write, the run
                # must not be failed. Each id is its own one-row update: in one
                # transaction over the bundle, PostgreSQL found it deadlocked with
                # this poller's lease renewal (an UPDATE of all its runs), and the
                # bundle's runs were failed while they ran (a CI dry run: 5 of 1,000).
                results[run.pk] = None
                submitted = True
                try:
                    services.run_mark_submitted(
                        run=run, job_id=answer, run_directory=spec.working_directory
                    )
                except DatabaseError:
                    # No id stored: claim_and_launch submits the run again, and the
                    # launcher's marker leaves it to the launcher already running.
                    logger.warning("run %s: storing its job id failed", run.pk, exc_info=True)
                    with self._launch_lock:
                        self._unstored.add(run.pk)
                    close_old_connections()
            if submitted:
                # Here, not when the launch is collected: a quick run can be tracked
                # to its end before the next tick collects it.
                services.resource_record_ok(resource=resource)
                self._resource_ok(resource)
        except Exception as exc:  # noqa: BLE001 - reported on the runs by collect_launches
            for run in runs:
                results.setdefault(run.pk, exc)
        finally:
            close_old_connections()
        return results

    def collect_launches(self, *, wait: bool = False) -> bool:
        """Report finished launches: failures on their runs, successes to tracking."""
        from poller.tracking import _Flight

        collected = False
        for run_id, (run, future) in list(self._launching.items()):
            if not (wait or future.done()):
                continue
            del self._launching[run_id]
            collected = True
            with self._launch_lock:
                if run_id in self._unstored:
                    # Set here, by the tick, not by the launch thread: a tick
                    # between that thread's store and its answer would have
                    # looked for unsent runs without this one (still launching)
                    # and put the next look a minute away.
                    self._unstored.discard(run_id)
                    self._next_unsent_check = 0.0
            exc = future.result()
            if exc is not None:
                try:
                    self._launch_failed(run, exc)
                except Exception:
                    self._next_unsent_check = 0.0  # still claimed, never sent: next tick
                    raise
            else:
                self._counts["launched"] += 1
                self._flights.setdefault(run_id, _Flight())
        return collected

    def _hand_to_pilot(self, staged) -> str | Exception:
        from poller.saga_executor import ExecutorError

        resource = staged[0][0].resource
        try:
            return self._pilots.hand(
                resource, [(run.pk, spec.working_directory) for run, spec in staged]
            )
        except ExecutorError as exc:
            return exc
        except OSError as exc:
            return ExecutorError(f"Could not hand the run to the pilot of {resource.name!r}: {exc}")

    def _stage(self, run: Run, sources: _Sources | None = None):
        """Make the run directory, stage the program, the client and run.json;
        answer the job to submit. ``sources``: what the batch read so far."""
        sources = sources or _Sources()
        resource = run.resource
        files = rundirs.for_resource(resource)
        run_dir = files.run_dir(run.pk)
        program, program_bytes = sources.program(run.definition)
        needs = run.needs or {}
        run_json = {
            "v": 1,
            "run_id": run.pk,
            "definition": run.definition.name,
            "parameters": run.parameters,
            "args": [str(a) for a in run.args],
            "program": program.name,
            "environment": dict((run.needs or {}).get("environment") or {}),
            "cores": run.cores,
            "memory_mb": (run.needs or {}).get("memory_mb"),
            # A batch pilot starts a run only if it can end before the pilot's
            # wall time does (scheduler_client.pilot --wall).
            "timeout_seconds": run.effective_timeout,
        }
        if needs.get("mpi"):
            run_json["mpi_starter"] = resource.mpi_starter_for(run.cores)
        env = {"SCHEDULER_RUN_DIR": run_dir, "SCHEDULER_RUN_ID": str(run.pk)}
        if resource.on_this_host() and not resource.run_as:
            # Local programs may use the site's models (scheduler_client.setup_django):
            # same code, same settings, same database as this poller.
            run_json["site_dir"] = str(settings.BASE_DIR)
            run_json["settings_module"] = os.environ.get(
                "DJANGO_SETTINGS_MODULE", "project.settings"
            )
            env["SCHEDULER_DATABASE_NAME"] = str(connection.settings_dict["NAME"])
            # A pilot's launchers get no job environment: run.json carries it.
            run_json["site_environment"] = {
                "SCHEDULER_DATABASE_NAME": env["SCHEDULER_DATABASE_NAME"]
            }
        files.stage(
            run_dir,
            {
                "scheduler_client.py": sources.client(),
                program.name: program_bytes,
                "run.json": json.dumps(run_json, indent=1).encode(),
            },
            # A shell script or binary keeps its executable bit (docs/client.md).
            executable=frozenset([program.name] if os.access(program, os.X_OK) else []),
            copies=run_inputs.staged_files(run),
            # Alike in every run: hard links to one read-only copy, where the
            # run directories are on this host (LocalRunDirs.stage).
            shared=frozenset(["scheduler_client.py", program.name]),
        )
        from poller.saga_executor import JobSpec

        return JobSpec(
            run_id=run.pk,
            # A program run as another account cannot reach the site's own
            # interpreter (it may live in a home directory): python3 from PATH.
            executable=resource.python
            or (sys.executable if resource.on_this_host() and not resource.run_as else "python3"),
            arguments=["scheduler_client.py", "run", program.name, *run_json["args"]],
            environment=env,
            working_directory=run_dir,
            output="stdout.txt",
            error="stderr.txt",
            queue=needs.get("queue") or resource.queue,
            project=needs.get("project") or resource.project,
            wall_time_minutes=_wall_time_minutes(run),
            cores=run.cores,
            processes_per_host=needs.get("processes_per_host"),
            memory_mb=needs.get("memory_mb"),
            gpus=needs.get("gpus") or 0,
            mpi=bool(needs.get("mpi")),
        )

    def _launch_failed(self, run: Run, exc: Exception) -> None:
        reason = f"Could not launch on {run.resource.name}: {exc}"
        logger.warning("run %s: %s", run.pk, reason)
        services.resource_record_error(resource=run.resource, error=reason)
        if _is_resource_fault(exc):
            # The resource is unreachable: put the run back in the queue to wait,
            # leave the resource alone for a while, try again later.
            self._resource_failing(run.resource, reason)
            self._resource_down(run.resource_id)
            services.run_requeue_unlaunched(run=run)
            services.run_add_message(run=run, text=reason + " The run waits.", level="warning")
        else:
            services.run_add_message(run=run, text=reason, level="error")
            services.run_finish(run=run, state=Run.State.FAILED, error=reason)

    def _resource_failing(self, resource: ExecutionResource, reason: str) -> None:
        """Log a resource's first failure, once, until it recovers."""
        if resource.pk not in self._failing:
            self._failing[resource.pk] = time.monotonic()
            logger.warning(
                "resource %s failing: %s; its runs wait, tried again in %s s",
                resource.name,
                reason,
                RESOURCE_RETRY_SECONDS,
            )

    def _resource_ok(self, resource: ExecutionResource) -> None:
        since = self._failing.pop(resource.pk, None)
        if since is not None:
            logger.info(
                "resource %s recovered after %s",
                resource.name,
                display_seconds(time.monotonic() - since),
            )

    def _resource_down(self, resource_id: int) -> None:
        """Leave a resource that could not be reached alone for a while, and
        start its job services afresh when it is back (JobServicePool.discard_idle)."""
        self._resource_down_until[resource_id] = time.monotonic() + RESOURCE_RETRY_SECONDS
        pool = self._pools.get(resource_id)
        if pool is not None:
            pool.discard_idle()

    def _pool(self, resource: ExecutionResource):
        pool = self._pools.get(resource.pk)
        if pool is None:
            from poller.saga_executor import JobServicePool

            pool = JobServicePool(resource, size=self.services_per_resource)
            self._pools[resource.pk] = pool
        return pool


class _Sources:
    """The client and the programs a batch stages, each found and read once (a
    bundle's runs are often of one definition)."""

    def __init__(self) -> None:
        self._client: bytes | None = None
        self._programs: dict[str, tuple[Path, bytes]] = {}

    def client(self) -> bytes:
        if self._client is None:
            self._client = CLIENT_PATH.read_bytes()
        return self._client

    def program(self, definition) -> tuple[Path, bytes]:
        if definition.program not in self._programs:
            path = definition.program_path()
            self._programs[definition.program] = (path, path.read_bytes())
        return self._programs[definition.program]


def _bundle_spec(specs, *, run_as: str = ""):
    """One job that starts the launchers of several local runs at once
    (``scheduler_client.py bundle DIR...``, see the client): radical.saga's shell
    service costs the machine ~30 ms of shell work per job, as much as a run's
    launcher, so local runs share jobs. Each run keeps its own launcher, process
    group, stdout, stderr and exit record; the bundle writes the record of a
    launcher that was killed before it could."""
    from poller.saga_executor import JobSpec

    first = specs[0]
    common = {k: v for k, v in first.environment.items() if k not in BUNDLE_OWN_ENV}
    for spec in specs[1:]:
        own = {k: v for k, v in spec.environment.items() if k not in BUNDLE_OWN_ENV}
        if own != common or spec.executable != first.executable:
            raise ValueError("runs of one bundle must share interpreter and environment")
    # The bundle's own output (an interpreter that does not start, say) goes to
    # the files of a run not launched yet: SAGA truncates them, and a launched
    # run's (a bundle submitted again after a crash) belong to its launcher.
    home = next(
        (
            s
            for s in specs
            if not os.path.lexists(os.path.join(s.working_directory, rundirs.LAUNCHED_FILE))
        ),
        None,
    )
    executable, arguments = (
        first.executable,
        [
            "scheduler_client.py",
            "bundle",
            *(s.working_directory for s in specs),
        ],
    )
    if run_as:
        # Started as the run account (runuser as root, else sudo -n). The
        # bundle's own output goes nowhere: a file the job's shell made would
        # be the poller's, and the run's launcher could not append to it.
        executable, arguments = (
            rundirs.run_as_prefix(run_as)[0],
            [
                *rundirs.run_as_prefix(run_as)[1:],
                executable,
                *arguments,
            ],
        )
        home = None
    return JobSpec(
        run_id=first.run_id,
        executable=executable,
        arguments=arguments,
        environment=common,
        working_directory=(home or first).working_directory,
        output="stdout.txt" if home else "/dev/null",
        error="stderr.txt" if home else "/dev/null",
    )


def _wall_time_minutes(run: Run) -> int | None:
    timeout = run.effective_timeout
    if timeout:
        # The batch limit a little above our own timeout, so ours fires first.
        return max(1, -(-timeout // 60) + 1)
    return run.resource.wall_time_minutes or None


def _is_resource_fault(exc: Exception) -> bool:
    from poller.saga_executor import ExecutorError

    return isinstance(exc, (ExecutorError, OSError, ConnectionError)) and not isinstance(
        exc, FileNotFoundError
    )
