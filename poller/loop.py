"""The poller: one tick = small single-purpose steps that tests can call one by one.

    heartbeat -> materialise schedules -> adopt orphaned runs -> claim -> launch
    -> track (events, exit records, SAGA state) -> enforce (cancels, timeouts)

Safety rests on three things: claims and final transitions are conditional
updates (scheduler.services), the SAGA job id is stored as soon as SAGA returns
it, and the launcher in the run directory refuses to start a program twice (its
``launched`` marker), so re-submitting a run whose job id was lost in a crash is
harmless. Completion is read from the exit record the launcher writes, so a
finished job is seen without asking SAGA about every job on every tick, and even
after a batch system forgot the job.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from poller import pilots
from poller import rundir as rundirs
from poller.events import MAX_LINE_BYTES, read_new_events
from scheduler import inputs as run_inputs
from scheduler import services
from scheduler.display import seconds as display_seconds
from scheduler.models import ExecutionResource, Recurrence, Run

logger = logging.getLogger(__name__)

VERSION = "1.0"
CLIENT_PATH = settings.BASE_DIR / "task_programs" / "scheduler_client.py"
# How often a job with no exit record yet is asked about in SAGA (seconds); the
# exit record is read every tick, which is what notices almost every ending.
SAGA_CHECK_SECONDS = 15.0
# An exit record beside a run of a pilot on another host: its end is asked of
# the pilot's home at most this far apart.
PILOT_CHECK_SECONDS = 1.0
# A job SAGA calls ended, with no exit record: wait this long for the record to
# appear (a slow shared filesystem) before calling the run lost.
EXIT_RECORD_GRACE_SECONDS = 5.0
# The heartbeat and the renewal of this poller's leases (SCHEDULER_LEASE_SECONDS,
# 60 s by default; a poller counts as alive for 30 s) go out this often, not on
# every tick: a busy poller ticks several times a second.
HEARTBEAT_SECONDS = 5.0
# A busy poller (the last tick found work) starts its next tick this long after
# the last one started, or at once if the tick took longer.
BUSY_TICK_SECONDS = 0.1
# How often a sleeping poller looks whether it was asked to stop.
STOP_CHECK_SECONDS = 0.25
# Schedules are turned into runs this often (the default poll interval).
MATERIALIZE_SECONDS = 1.0
# radical.saga's folders of ended local jobs are removed this often.
TIDY_SECONDS = 600.0
# A resource that failed is left alone this long before it is tried again.
RESOURCE_RETRY_SECONDS = 30.0
# Launcher exit status when a run directory was launched before (see scheduler_client).
ALREADY_LAUNCHED_EXIT = 75
# A task's sync events bring its files home at most this often (seconds).
SYNC_SECONDS = 2.0
# Malformed lines reported one by one per read of the event stream; the rest
# as one count.
MALFORMED_PER_READ = 20
# Set by the bundle for each of its runs (scheduler_client.bundle).
BUNDLE_OWN_ENV = ("SCHEDULER_RUN_DIR", "SCHEDULER_RUN_ID")


@dataclass
class _Flight:
    """What this poller remembers about a run in flight between ticks."""

    # A run first seen now is not due for a SAGA check: its exit record usually
    # comes first. With 0.0 every run tracked before its launch was collected
    # asked SAGA at once, and waited for a job service the launch threads held
    # (py-spy: the main thread spent most of its tracking time there).
    last_saga_check: float = field(default_factory=time.monotonic)
    saga_done_at: float | None = None
    # A local run's ``launched`` record, as first read (LocalRunDirs.launched_record).
    launched: dict | None = None
    # An exit record beside a remote job that SAGA still runs: when to ask again.
    next_exit_check: float = 0.0
    exit_check_wait: float = 0.5
    # A sync event asked for the files, and when they last came home (monotonic).
    sync_pending: bool = False
    last_sync: float = float("-inf")


@dataclass
class Poller:
    name: str = ""
    services_per_resource: int = 0
    # One tick a minute from cron (run_poller --once): the heartbeat says so, and
    # the end of a tick is not the poller's stop.
    cron: bool = False
    ident: str = field(init=False)
    pid: int = field(init=False)
    started_at: Any = field(init=False)
    stop_requested: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        # A restarted poller with the same name is the same poller: it takes its
        # runs back at once instead of waiting for their leases to expire.
        self.ident = self.name or socket.gethostname()
        self.pid = os.getpid()
        self.started_at = timezone.now()
        self.services_per_resource = (
            self.services_per_resource or settings.SCHEDULER_SERVICES_PER_RESOURCE
        )
        self._pools: dict[int, Any] = {}
        self._resource_down_until: dict[int, float] = {}
        self._flights: dict[int, _Flight] = {}
        self._launching: dict[int, tuple[Run, Future]] = {}
        # Claimed runs waiting for a launch thread, by resource, and how many
        # launch threads each resource has (at most one per job service).
        self._launch_lock = threading.Lock()
        self._queued: dict[int, list[tuple[Run, Future]]] = {}
        self._launchers: dict[int, int] = {}
        self._next_retention_check = 0.0
        self._next_heartbeat = 0.0
        self._next_materialize = 0.0
        self._next_tidy = 0.0
        self._tidying = None
        self._waker = None  # scheduler.wake.Waker while run_forever runs
        self._pilots = pilots.Pilots()
        # SAGA job states asked for during one track() pass, else None.
        self._job_states: dict[tuple[int, str], tuple[str, int | None]] | None = None
        self._threads = ThreadPoolExecutor(max_workers=max(2, self.services_per_resource * 2))
        # What the operator's log says (INFO): resources seen failing, and what
        # happened since the last one-line summary.
        self._failing: dict[int, float] = {}
        self._counts: Counter = Counter()
        self._next_summary = time.monotonic() + settings.SCHEDULER_LOG_SUMMARY_SECONDS

    # ----------------------------------------------------------------- the loop
    def tick(self) -> bool:
        """One pass over every step; True if any step found work."""
        close_old_connections()
        found = False
        for step in (
            self.heartbeat,
            self.materialize_schedules,
            self.adopt_orphans,
            self.claim_and_launch,
            self.track,
            self.enforce_cancels_and_timeouts,
            self.retention,
            self.tidy_saga_state,
            self.summarize,
        ):
            if self.stop_requested:
                break
            try:
                found = bool(step()) or found
            except Exception:
                # One failing step never stops the poller; it is tried next tick.
                logger.exception("poller step %s failed", step.__name__)
        return found

    def run_forever(self, *, interval: float | None = None) -> None:
        interval = settings.SCHEDULER_POLL_INTERVAL if interval is None else interval
        logger.info("poller %s (pid %s) started", self.ident, self.pid)
        keep_database_connections()
        self.log_taken_back()
        _quietly(_sync_periodic, "syncing the periodic tasks declared in code")
        self.end_stale_shells()
        self.warm_up()
        from scheduler.wake import Waker

        self._waker = Waker()
        try:
            while not self.stop_requested:
                started = time.monotonic()
                found = self.tick()
                if self.stop_requested:
                    break
                if not found:
                    self._sleep(self._idle_seconds(interval))
                else:
                    # Busy: tick again soon, but not back to back. Every tick asks
                    # the database the same questions (~10 ms here), and ticks
                    # that follow each other at once took CPU from the programs.
                    self._sleep(min(interval, BUSY_TICK_SECONDS) - (time.monotonic() - started))
        finally:
            self._waker.close()
            self._waker = None
            self.close()

    def log_taken_back(self) -> int:
        """Say which runs a restart of this poller (same name) takes back: those
        still in flight under its name, tracked again from their run directories."""
        ids = list(
            Run.objects.filter(poller=self.ident, state__in=Run.ACTIVE_STATES)
            .order_by("pk")
            .values_list("pk", flat=True)[:1001]
        )
        if ids:
            logger.info(
                "took back %s run%s in flight from an earlier start of %s: %s",
                f"{len(ids)}+" if len(ids) > 1000 else len(ids),
                "" if len(ids) == 1 else "s",
                self.ident,
                _ids(ids),
            )
        return len(ids)

    def summarize(self) -> bool:
        """Once a minute (SCHEDULER_LOG_SUMMARY_SECONDS), while there was work,
        one line: what was launched and how runs ended since the last line, what
        is in flight and what waits."""
        if time.monotonic() < self._next_summary:
            return False
        self._next_summary = time.monotonic() + settings.SCHEDULER_LOG_SUMMARY_SECONDS
        if not self._counts and not self._flights:
            return False
        counts, self._counts = self._counts, Counter()
        ended = {k: v for k, v in counts.items() if k in Run.FINAL_STATES}
        due = Run.objects.filter(state=Run.State.QUEUED, due_at__lte=timezone.now()).order_by()
        waiting = due[:10_001].count()
        logger.info(
            "last %s s: launched %s, ended %s%s; in flight %s, due and waiting %s",
            settings.SCHEDULER_LOG_SUMMARY_SECONDS,
            counts.get("launched", 0),
            sum(ended.values()),
            (
                " (" + ", ".join(f"{n} {state.lower()}" for state, n in sorted(ended.items())) + ")"
                if ended
                else ""
            ),
            Run.objects.filter(poller=self.ident, state__in=Run.ACTIVE_STATES).count(),
            "10000+" if waiting > 10_000 else waiting,
        )
        return False

    def end_stale_shells(self) -> int:
        """End the SAGA shells a killed poller of this SAGA base left (poller.saga_shells)."""
        from poller import saga_shells

        try:
            return saga_shells.end_stale(str(settings.SCHEDULER_SAGA_BASE))
        except Exception:  # noqa: BLE001 - never a reason not to start
            logger.exception("could not look for stale SAGA shells")
            return 0

    def warm_up(self) -> None:
        """A long-lived poller opens the job services of its local resources in the
        background at start, so the first runs do not wait for them. Remote ones
        open on first use, where a failure is reported on the run and resource."""
        for resource in ExecutionResource.objects.filter(enabled=True):
            if resource.is_local():
                pool = self._pool(resource)
                for _ in range(pool.size):  # in parallel, one service per thread
                    self._threads.submit(_quietly, pool.warm_one, f"warming up {resource.name}")

    def _idle_seconds(self, interval: float) -> float:
        """How long to sleep after a tick that found nothing to do: the poll
        interval while runs of this poller are in flight (their events are read
        at that pace), or when nothing can wake it; with none in flight, up to
        SCHEDULER_IDLE_SECONDS, since a queued run, a cancel or Run now wakes
        the poller (scheduler.wake). Never past the next due time of a queued
        run or of a schedule's occurrence."""
        now = timezone.now()
        longest = interval
        listening = self._waker is not None and self._waker.listening
        if listening and not self._flights and not self._launching:
            in_flight = Run.objects.filter(poller=self.ident, state__in=Run.ACTIVE_STATES)
            if not in_flight.exists():
                longest = max(interval, settings.SCHEDULER_IDLE_SECONDS)
        # Only future runs: a due run held back by a limit must not spin the loop.
        due = [
            Run.objects.filter(state=Run.State.QUEUED, due_at__gt=now)
            .order_by("due_at")
            .values_list("due_at", flat=True)
            .first()
        ]
        if longest > interval:
            due.append(
                Recurrence.objects.filter(enabled=True, next_due_at__isnull=False)
                .order_by("next_due_at")
                .values_list("next_due_at", flat=True)
                .first()
            )
        waits = [(d - now).total_seconds() for d in due if d is not None]
        if any(w <= 0 for w in waits):
            # A schedule's occurrence is due: made into runs at the next
            # materialisation (at most every MATERIALIZE_SECONDS).
            return max(0.01, min(interval, MATERIALIZE_SECONDS))
        return max(0.01, min([longest, *waits]))

    def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds``, or until a run is queued (scheduler.wake) or a stop
        is asked for (looked at every STOP_CHECK_SECONDS)."""
        end = time.monotonic() + seconds
        while not self.stop_requested and time.monotonic() < end:
            step = min(STOP_CHECK_SECONDS, max(0.0, end - time.monotonic()))
            if self._waker is None:
                time.sleep(step)
            elif self._waker.wait(step):
                return

    def close(self) -> None:
        self._threads.shutdown(wait=True)
        try:
            self.collect_launches(wait=True)
        except Exception:
            logger.exception("recording the last launches failed")
        for pool in self._pools.values():
            try:
                pool.close()
            except Exception:
                logger.exception("closing a job service pool failed")
        self._pools.clear()
        if self.cron:
            return
        try:
            services.heartbeat_stop(ident=self.ident)
        except Exception:
            logger.exception("could not record the poller's stop")

    # --------------------------------------------------------------- 1 heartbeat
    def heartbeat(self) -> bool:
        if time.monotonic() < self._next_heartbeat:
            return False
        self._next_heartbeat = time.monotonic() + HEARTBEAT_SECONDS
        services.heartbeat_beat(
            ident=self.ident,
            host=socket.gethostname(),
            pid=self.pid,
            started_at=self.started_at,
            version=VERSION,
            cron=self.cron,
        )
        services.run_renew_leases(poller=self.ident)
        return False

    # ----------------------------------------------------- 2 schedules -> runs
    def materialize_schedules(self) -> bool:
        """Queue the runs of due schedule occurrences, at most every
        MATERIALIZE_SECONDS: a busy poller ticks ten times a second."""
        if time.monotonic() < self._next_materialize:
            return False
        self._next_materialize = time.monotonic() + MATERIALIZE_SECONDS
        from scheduler.scheduling import schedule_materialize

        return bool(schedule_materialize(now=timezone.now()))

    # ---------------------------------------- 7 reattach after restart/takeover
    def adopt_orphans(self) -> bool:
        """Take over in-flight runs whose poller's lease expired."""
        now = timezone.now()
        orphans = Run.objects.filter(state__in=Run.ACTIVE_STATES, lease_expires_at__lt=now).exclude(
            poller=self.ident
        )
        adopted: dict[str, list[int]] = {}
        for run_id, owner in orphans.order_by("pk").values_list("pk", "poller")[:500]:
            if services.run_take_over(run_id=run_id, poller=self.ident, now=now):
                adopted.setdefault(owner or "none", []).append(run_id)
        for owner, ids in adopted.items():
            logger.info(
                "adopted %s run%s of poller %s, whose lease ran out: %s",
                len(ids),
                "" if len(ids) == 1 else "s",
                owner,
                _ids(ids),
            )
        return bool(adopted)

    # ------------------------------------------------------- 2+3 claim, launch
    def claim(self) -> list[Run]:
        """Claim due QUEUED runs within the per-resource and per-definition limits."""
        now = timezone.now()
        active = Run.objects.filter(state__in=Run.ACTIVE_STATES)
        per_resource = services.active_counts("resource_id")
        per_definition = services.active_counts("definition_id")
        busy_recurrences = set(
            active.filter(recurrence__overlap_policy=Recurrence.Overlap.QUEUE).values_list(
                "recurrence_id", flat=True
            )
        )
        resources = {
            r.pk: r
            for r in ExecutionResource.objects.filter(enabled=True)
            if self._resource_down_until.get(r.pk, 0) <= time.monotonic()
        }
        room = {pk: r.max_concurrent_runs - per_resource.get(pk, 0) for pk, r in resources.items()}
        if not any(v > 0 for v in room.values()):
            return []
        candidates = (
            Run.objects.filter(
                state=Run.State.QUEUED, due_at__lte=now, resource_id__in=list(resources)
            )
            .select_related("definition", "resource", "recurrence")
            .order_by("-priority", "due_at", "id")[
                : max(50, sum(max(v, 0) for v in room.values()) * 2)
            ]
        )
        claimed: list[Run] = []
        for run in candidates:
            if room.get(run.resource_id, 0) <= 0:
                continue
            limit = run.definition.max_concurrent_runs
            if limit is not None and per_definition.get(run.definition_id, 0) >= limit:
                continue
            if (
                run.recurrence_id
                and run.recurrence.overlap_policy == Recurrence.Overlap.QUEUE
                and run.recurrence_id in busy_recurrences
            ):
                continue
            if services.run_claim(run_id=run.pk, poller=self.ident, now=now):
                run.state = Run.State.SUBMITTED
                room[run.resource_id] -= 1
                per_definition[run.definition_id] = per_definition.get(run.definition_id, 0) + 1
                if run.recurrence_id:
                    busy_recurrences.add(run.recurrence_id)
                claimed.append(run)
        return claimed

    def claim_and_launch(self) -> bool:
        found = self.collect_launches()
        runs = self.claim()
        # Runs claimed by this poller (or its previous incarnation) that never got
        # a job id: the poller died between claim and submit. Submit again; the
        # launcher's marker makes a second start of the program impossible.
        unsent = Run.objects.filter(
            poller=self.ident, state=Run.State.SUBMITTED, saga_job_id=""
        ).exclude(pk__in=[r.pk for r in runs] + list(self._launching))
        runs += list(unsent.select_related("definition", "resource")[:200])
        if runs:
            self.launch(runs)
        return found or bool(runs)

    def launch(self, runs: list[Run]) -> None:
        """Hand runs to the launch threads; the tick goes on while they submit.

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
            with self._launch_lock:
                queued = self._queued.setdefault(resource_id, [])
                for run in group:
                    future: Future = Future()
                    self._launching[run.pk] = (run, future)
                    queued.append((run, future))
                running = self._launchers.get(resource_id, 0)
                wanted = min(pool.size, -(-len(queued) // size))
                for _ in range(max(0, wanted - running)):
                    self._threads.submit(self._launch_queued, resource_id, size)
                self._launchers[resource_id] = max(running, wanted)

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
                try:
                    results = self._launch_batch([run for run, _ in batch])
                except Exception as exc:  # noqa: BLE001 - reported on the runs
                    results = {run.pk: exc for run, _ in batch}
                for run, future in batch:
                    future.set_result(results.get(run.pk))
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
            for run in runs:
                try:
                    staged.append((run, self._stage(run)))
                except Exception as exc:  # noqa: BLE001 - reported on the run
                    results[run.pk] = exc
            if not staged:
                return results
            resource = staged[0][0].resource
            pool = self._pool(resource)
            piloted = [(run, spec) for run, spec in staged if pilots.eligible(run)]
            if piloted and not self._pilots.ensure(resource, pool):
                piloted = []
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
        collected = False
        for run_id, (run, future) in list(self._launching.items()):
            if not (wait or future.done()):
                continue
            del self._launching[run_id]
            collected = True
            exc = future.result()
            if exc is not None:
                self._launch_failed(run, exc)
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

    def _stage(self, run: Run):
        """Make the run directory, stage the program, the client and run.json;
        answer the job to submit."""
        resource = run.resource
        files = rundirs.for_resource(resource)
        run_dir = files.run_dir(run.pk)
        program = run.definition.program_path()
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
        files.stage(
            run_dir,
            {
                "scheduler_client.py": CLIENT_PATH.read_bytes(),
                program.name: program.read_bytes(),
                "run.json": json.dumps(run_json, indent=1).encode(),
            },
            # A shell script or binary keeps its executable bit (docs/client.md).
            executable=frozenset([program.name] if os.access(program, os.X_OK) else []),
            copies=run_inputs.staged_files(run),
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

    # -------------------------------------------------------------- 4 tracking
    def track(self) -> bool:
        # Runs of one bundle share a SAGA job: ask about it once a pass.
        self._job_states = {}
        try:
            return self._track_all()
        finally:
            self._job_states = None

    def _track_all(self) -> bool:
        mine = (
            Run.objects.filter(poller=self.ident, state__in=Run.ACTIVE_STATES)
            .exclude(saga_job_id="")
            .select_related("definition", "resource")
        )
        found = False
        from poller.saga_executor import ExecutorError

        mine = list(mine)
        # A quick run can be tracked to its end before its launch is collected,
        # and the collection then gave it a flight that nothing would remove:
        # keep flights only for the runs still in flight.
        for stale in set(self._flights) - {run.pk for run in mine}:
            del self._flights[stale]
        for run in mine:
            if self._resource_down_until.get(run.resource_id, 0) > time.monotonic():
                continue  # its host failed a moment ago: its runs wait, nothing is lost
            try:
                found = self.track_run(run) or found
            except ExecutorError as exc:
                # The resource cannot be reached: say so once, leave its runs alone
                # for a while (they keep their state), try again later.
                logger.warning("tracking run %s: %s", run.pk, exc)
                services.resource_record_error(resource=run.resource, error=str(exc))
                self._resource_failing(run.resource, str(exc))
                self._resource_down(run.resource_id)
            except Exception as exc:  # noqa: BLE001
                logger.exception("tracking run %s failed", run.pk)
                if _is_resource_fault(exc):
                    services.resource_record_error(resource=run.resource, error=str(exc))
        return found

    def track_run(self, run: Run) -> bool:
        flight = self._flights.setdefault(run.pk, _Flight())
        files = rundirs.for_resource(run.resource)
        if flight.launched is None and run.resource.is_local():
            # The launcher as first seen: a record rewritten later (by another
            # program that can write here) does not change whose end is awaited.
            flight.launched = files.launched_record(run.run_directory)
        found, caught_up = self.ingest_piece(run, files)
        exit_record = self._read_record(run, files, rundirs.EXIT_FILE)
        if exit_record is not None and self._launcher_ended(run, files, flight):
            if not caught_up:
                return True  # the rest of its events first, a piece a tick
            self.finish_from_exit_record(run, exit_record, files)
            return True
        if run.state == Run.State.SUBMITTED and (
            run.events_offset > 0 or files.exists(run.run_directory, rundirs.LAUNCHED_FILE)
        ):
            services.run_mark_running(run=run, started_at=_launched_at(files, run))
            found = True
        now = time.monotonic()
        launcher_gone = run.resource.is_local() and files.launcher_gone(
            run.run_directory, flight.launched
        )
        if launcher_gone:
            # Cheap local check: the launcher process is gone without an exit
            # record, so ask SAGA now rather than at the next periodic check.
            flight.last_saga_check = 0.0
        if flight.saga_done_at is None and now - flight.last_saga_check < SAGA_CHECK_SECONDS:
            return found
        flight.last_saga_check = now
        state, exit_code = self._job_state(run)
        if state == "Requeue":
            # Its pilot could not be started, and the run was taken back from
            # its inbox before it started: it waits for its own job.
            if services.run_requeue_from_pilot(run=run):
                services.run_add_message(
                    run=run,
                    text=f"The pilot of {run.resource.name} could not be started; the run "
                    "waits and goes by a job of its own.",
                    level="warning",
                )
                self._flights.pop(run.pk, None)
            return True
        if state == "Running" and run.state == Run.State.SUBMITTED:
            services.run_mark_running(run=run)
            return True
        if state in ("Done", "Failed", "Canceled", "Unknown"):
            if run.resource.is_local():
                if files.launcher_alive(run.run_directory):
                    # A re-submission after a crash found the program started
                    # already; the first launcher's exit record will end this run.
                    return found
            elif exit_code == ALREADY_LAUNCHED_EXIT and files.exists(
                run.run_directory, rundirs.LAUNCHED_FILE
            ):
                return found
            if flight.saga_done_at is None:
                flight.saga_done_at = now
                return found
            if now - flight.saga_done_at < EXIT_RECORD_GRACE_SECONDS:
                return found
            self.finish_without_exit_record(run, files, state, exit_code)
            return True
        return found

    def finish_without_exit_record(self, run: Run, files, state: str, exit_code) -> None:
        """The job ended but the launcher wrote no exit record (it was killed)."""
        tail = _stderr_tail(files, run)
        if run.cancel_requested_at:
            self._finish(run, files, state=Run.State.CANCELLED, exit_code=exit_code)
        elif state in ("Done", "Failed") and exit_code is not None:
            signum = exit_code - 128 if exit_code > 128 else (-exit_code if exit_code < 0 else 0)
            how = f"killed by signal {signum}" if signum else f"ended with exit code {exit_code}"
            self._finish(
                run,
                files,
                state=Run.State.FAILED,
                exit_code=exit_code,
                error=f"The program was {how} before the launcher could write its exit "
                f"record (SAGA state {state}).{tail}",
            )
        else:
            self._finish(
                run,
                files,
                state=Run.State.LOST,
                exit_code=exit_code,
                error=f"The job is gone (SAGA state {state}) and left no exit record: "
                f"it cannot be accounted for.{tail}",
            )

    def _job_state(self, run: Run) -> tuple[str, int | None]:
        """The SAGA state of the run's job, asked once a track() pass per job."""
        if pilots.is_pilot_job(run.saga_job_id):
            return self._pilots.state(
                run, rundirs.for_resource(run.resource), self._pool(run.resource)
            )
        key = (run.resource_id, run.saga_job_id)
        known = self._job_states if self._job_states is not None else {}
        if key not in known:
            known[key] = self._pool(run.resource).state(run.saga_job_id)
        return known[key]

    def _launcher_ended(self, run: Run, files, flight: _Flight) -> bool:
        """Whether an exit record may be believed: the run's own launcher has
        ended. Any program that can write in the run directory can write an
        exit record there (another run's program too); only the launcher's end
        makes it the launcher's. Locally the launcher is the process its
        ``launched`` record names (checked by command line and start time); a
        remote run's job must be over in SAGA. A record found while the launcher
        still runs waits: the launcher writes its own over it when it ends."""
        if run.resource.is_local():
            return not files.launcher_alive(run.run_directory, flight.launched)
        # A remote job is asked at once, then less and less often (1, 2, 4 ...
        # up to SAGA_CHECK_SECONDS): a record another program forged beside a
        # job that runs for hours must not cost a SAGA round trip every tick.
        now = time.monotonic()
        if now < flight.next_exit_check:
            return False
        state, _ = self._job_state(run)
        flight.last_saga_check = now
        if pilots.is_pilot_job(run.saga_job_id):
            # A pilot's word is one look at its home, and comes a moment after
            # the launcher's record (it reaps the launcher first): 0.1, 0.2,
            # 0.4 ... s up to PILOT_CHECK_SECONDS. Waiting a whole second kept
            # each of a one-core slot's runs a second longer (bench/slurm_pilot.py).
            wait = 0.1 if flight.next_exit_check == 0.0 else flight.exit_check_wait * 2
            flight.exit_check_wait = min(PILOT_CHECK_SECONDS, wait)
        else:
            flight.exit_check_wait = min(SAGA_CHECK_SECONDS, max(1.0, flight.exit_check_wait * 2))
        flight.next_exit_check = now + flight.exit_check_wait
        return state in ("Done", "Failed", "Canceled", "Unknown")

    def _refused(self, run: Run, name: str, exc: rundirs.RefusedFile) -> None:
        """A run-directory file the poller would not read: said once on the run."""
        services.run_add_message(
            run=run, text=rundirs.refusal_text(name, exc), level="warning", once=True
        )

    def _read_record(self, run: Run, files, name: str) -> dict | None:
        try:
            return files.read_json(run.run_directory, name)
        except rundirs.RefusedFile as exc:
            self._refused(run, name, exc)
            return None

    def ingest_piece(self, run: Run, files) -> tuple[bool, bool]:
        """Apply at most EVENTS_READ_BYTES of new events (one run's flood never
        holds up the tick: the rest waits for the next). Answers whether there
        were events, and whether the stream is read to its end."""
        limit = rundirs.EVENTS_READ_BYTES
        try:
            data = files.read_from(run.run_directory, rundirs.EVENTS_FILE, run.events_offset, limit)
            if len(data) == limit and b"\n" not in data:
                # One line longer than a piece: read up to the longest line there may be.
                limit = MAX_LINE_BYTES
                data = files.read_from(
                    run.run_directory, rundirs.EVENTS_FILE, run.events_offset, limit
                )
        except rundirs.RefusedFile as exc:
            self._refused(run, rundirs.EVENTS_FILE, exc)
            return False, True
        if not data:
            return False, True
        caught_up = len(data) < limit
        events, malformed, new_offset = read_new_events(
            data, run.events_offset, max_chars=settings.SCHEDULER_MESSAGE_MAX_CHARS
        )
        seq = run.events_seq
        batch: list[dict] = []
        sync_asked = False
        for event in events:
            if event.seq <= seq:
                continue
            seq = event.seq
            if event.type in ("status", "log", "fail"):
                batch.append(
                    {
                        "text": event.message or "",
                        "level": event.level or ("error" if event.type == "fail" else "info"),
                        "progress": event.progress if event.type == "status" else None,
                        "seq": event.seq,
                        "created_at": parse_datetime(event.time) if event.time else None,
                    }
                )
            elif event.type == "sync":
                sync_asked = True
        for bad in malformed[:MALFORMED_PER_READ]:
            services.run_add_message(
                run=run, text=f"Malformed event ignored: {bad.reason}", level="warning"
            )
        if len(malformed) > MALFORMED_PER_READ:
            services.run_add_message(
                run=run,
                text=f"{len(malformed) - MALFORMED_PER_READ} more malformed events ignored.",
                level="warning",
            )
        if batch or new_offset != run.events_offset or seq != run.events_seq:
            services.run_record_events(run=run, messages=batch, offset=new_offset, seq=seq)
        flight = self._flights.setdefault(run.pk, _Flight())
        flight.sync_pending = flight.sync_pending or sync_asked
        if flight.sync_pending and time.monotonic() - flight.last_sync >= SYNC_SECONDS:
            # The files the task asked for, after the messages before the ask:
            # at most once a piece and every SYNC_SECONDS (each bring-home
            # reads the whole event stream; a task asking in a loop must not
            # make that the poller's work), the rest when the run ends.
            flight.sync_pending, flight.last_sync = False, time.monotonic()
            from poller.files_home import bring_files_home

            bring_files_home(run, files)
        return bool(events or malformed), caught_up

    def ingest_events(self, run: Run, files) -> bool:
        """Apply everything new in the run's events.jsonl, each event once, to
        its end: the last read of a run that ended loses nothing."""
        found = False
        while True:
            more, caught_up = self.ingest_piece(run, files)
            found = found or more
            if caught_up:
                return found

    def finish_from_exit_record(self, run: Run, record: dict, files) -> None:
        exit_code = record.get("exit_code")
        if not isinstance(exit_code, int) or isinstance(exit_code, bool):
            services.run_add_message(
                run=run,
                text=f"The exit record's exit code {str(exit_code)[:50]!r} is not a number.",
                level="warning",
            )
            exit_code = 1
            record = {**record, "failed": True}
        failed = bool(record.get("failed")) or exit_code != 0
        error = ""
        if run.cancel_requested_at:
            state = Run.State.CANCELLED
        elif failed:
            state = Run.State.FAILED
            error = record.get("error") or ""
            if record.get("signal"):
                error = f"Killed by signal {record['signal']}. {error}".strip()
            error = (error or f"Exit code {exit_code}.") + _stderr_tail(files, run)
        else:
            state = Run.State.SUCCEEDED
        started_at, finished_at = self._record_times(run, record)
        if started_at is None and run.started_at is None:
            started_at = _launched_at(files, run)
        self._finish(
            run,
            files,
            state=state,
            exit_code=exit_code,
            error=error,
            started_at=started_at,
            finished_at=finished_at,
        )

    def _record_times(self, run: Run, record: dict):
        """The exit record's start and end, believed only within the run's
        submitted..now window (with a second of slack for clocks); otherwise
        the poller's own times, and a word on the run."""
        now = timezone.now()
        earliest = run.submitted_at or run.queued_at
        times = []
        for key in ("started_at", "finished_at"):
            value = record.get(key)
            when = None
            if isinstance(value, str):
                try:
                    when = parse_datetime(value)
                except ValueError:
                    when = None
            if when is not None and timezone.is_naive(when):
                when = None
            if when is not None and not (
                earliest - dt.timedelta(seconds=1) <= when <= now + dt.timedelta(seconds=1)
            ):
                services.run_add_message(
                    run=run,
                    text=f"The exit record's {key} {value[:40]!r} lies outside the run's "
                    f"submitted..now window; not believed.",
                    level="warning",
                )
                when = None
            times.append(when)
        return times[0], times[1]

    def _finish(self, run: Run, files, **fields) -> None:
        # Read the last events first, to the end, so the final messages are not lost.
        self.ingest_events(run, files)
        if run.messages_dropped:
            keep = settings.SCHEDULER_MAX_MESSAGES
            services.run_add_message(
                run=run,
                text=f"{run.messages_dropped:,} older status messages were dropped: a run "
                f"keeps its newest {keep:,} (SCHEDULER_MAX_MESSAGES).",
                level="warning",
                once=True,
            )
        try:
            from poller.files_home import bring_files_home

            bring_files_home(run, files)
        except Exception as exc:  # noqa: BLE001
            logger.exception("bringing files home for run %s failed", run.pk)
            services.run_add_message(
                run=run, text=f"Could not bring the files home: {exc}", level="error"
            )
        if services.run_finish(run=run, **fields):
            self._counts[fields.get("state", "")] += 1
        self._flights.pop(run.pk, None)
        if pilots.is_pilot_job(run.saga_job_id):
            self._pilots.forget(run)
            return
        pool = self._pools.get(run.resource_id)
        if pool is not None and run.saga_job_id:
            shared = pool.submits_in_bulk and (
                Run.objects.filter(saga_job_id=run.saga_job_id, state__in=Run.ACTIVE_STATES)
                .exclude(pk=run.pk)
                .exists()
            )
            if not shared:  # the last run of a bundle lets its job go
                pool.forget(run.saga_job_id)

    # ------------------------------------------------- radical.saga's own state
    def tidy_saga_state(self) -> bool:
        """Every TIDY_SECONDS, in a worker thread: remove radical.saga's folders of
        local jobs that ended, and keep its notifications file short
        (saga_executor.tidy_local_job_state)."""
        if time.monotonic() < self._next_tidy:
            return False
        if self._tidying is not None and not self._tidying.done():
            return False
        self._next_tidy = time.monotonic() + TIDY_SECONDS
        from poller.saga_executor import tidy_local_job_state

        self._tidying = self._threads.submit(_quietly, tidy_local_job_state, "tidying SAGA state")
        return False

    # ------------------------------------------------------------- retention
    def retention(self) -> bool:
        """Once a day, prune old runs (SCHEDULER_RETENTION_DAYS; off when 0)."""
        if not settings.SCHEDULER_RETENTION_DAYS:
            return False
        if time.monotonic() < self._next_retention_check:
            return False
        self._next_retention_check = time.monotonic() + 3600  # ask the database hourly
        from scheduler.retention import prune_if_due

        result = prune_if_due()  # logs what it pruned (scheduler.retention), one line
        if result is not None:
            if not result.complete:  # a backlog: the next slice in a minute
                self._next_retention_check = time.monotonic() + 60
        return False

    # ---------------------------------------------------- 5 cancels, timeouts
    def enforce_cancels_and_timeouts(self) -> bool:
        now = timezone.now()
        mine = Run.objects.filter(poller=self.ident, state__in=Run.ACTIVE_STATES).select_related(
            "definition", "resource"
        )
        due = mine.filter(
            Q(cancel_requested_at__isnull=False)
            | Q(definition__timeout_seconds__isnull=False, started_at__isnull=False)
            | Q(timeout_seconds__isnull=False, started_at__isnull=False)
        ).exclude(pk__in=list(self._launching))  # a launch thread still owns those
        ending: list[tuple[Run, str, str]] = []
        for run in due:
            if run.cancel_requested_at:
                ending.append((run, Run.State.CANCELLED, "Cancelled on request."))
            elif (now - run.started_at).total_seconds() > run.effective_timeout:
                reason = f"Timed out after {run.effective_timeout} s; the job was cancelled."
                ending.append((run, Run.State.TIMED_OUT, reason))
        # The SAGA cancels (~0.2-0.5 s each) go out in parallel, one per job
        # service of the pool; the database work stays in this thread.
        for run, _, _ in ending:
            if run.saga_job_id:
                self._pool(run.resource)  # made here, not raced for by the workers
        failures = list(self._threads.map(self._cancel_job, [run for run, _, _ in ending]))
        for (run, state, reason), failure in zip(ending, failures, strict=True):
            self._end_job(run, state, reason, cancel_failure=failure)
        return bool(ending)

    def _cancel_job(self, run: Run) -> Exception | None:
        """In a worker thread: cancel the run's SAGA job; the error, if any."""
        if not run.saga_job_id:
            return None
        try:
            if run.resource.is_local():
                # The job is the bundle of several runs: only this run's launcher ends.
                if run.run_directory:
                    rundirs.for_resource(run.resource).end_launcher(run.run_directory)
                return None
            if pilots.is_pilot_job(run.saga_job_id):
                self._pilots.cancel(run)  # the pilot ends the launcher it started
                return None
            self._pool(run.resource).cancel(run.saga_job_id)
            return None
        except Exception as exc:  # noqa: BLE001 - reported on the run by _end_job
            return exc

    def _end_job(
        self, run: Run, state: str, reason: str, *, cancel_failure: Exception | None = None
    ) -> None:
        if cancel_failure is not None:
            services.run_add_message(
                run=run, text=f"Cancelling the job failed: {cancel_failure}", level="error"
            )
            return
        files = rundirs.for_resource(run.resource)
        services.run_add_message(run=run, text=reason, level="warning")
        self._finish(run, files, state=state, error=reason if state != "CANCELLED" else "")


def keep_database_connections() -> None:
    """A long-lived poller keeps its database connections open between ticks.

    With the web's default (DATABASE_CONN_MAX_AGE=0) every tick and every launch
    thread opened a new connection: SQLite's page cache is per connection, so each
    query read its pages afresh (0.7 ms a query, 35 ms an idle tick here). A
    connection that broke is still replaced: close_old_connections() drops an
    unusable one after an error."""
    from django.db import connections

    for alias in connections:
        connections.settings[alias]["CONN_MAX_AGE"] = None
        connections[alias].close_at = None


def _quietly(fn, what: str) -> None:
    try:
        fn()
    except Exception:
        logger.warning("%s failed", what, exc_info=True)


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


def _launched_at(files, run: Run):
    try:
        record = files.read_json(run.run_directory, rundirs.LAUNCHED_FILE)
    except rundirs.RefusedFile as exc:
        services.run_add_message(
            run=run,
            text=rundirs.refusal_text(rundirs.LAUNCHED_FILE, exc),
            level="warning",
            once=True,
        )
        return None
    if record and isinstance(record.get("started_at"), str):
        try:
            return parse_datetime(record["started_at"])
        except ValueError:
            return None
    return None


def _sync_periodic() -> None:
    """At start, like after migrate: a deploy that changed a @task schedule
    brings it into the admin without a migrate (scheduler.periodic)."""
    from scheduler import periodic

    if settings.SCHEDULER_PERIODIC_SYNC:
        periodic.sync()


def _ids(ids: list[int], most: int = 20) -> str:
    """Run ids for a log line: the first ``most``, then how many more."""
    shown = ", ".join(str(i) for i in ids[:most])
    return shown + (f" and {len(ids) - most} more" if len(ids) > most else "")


def _stderr_tail(files, run: Run, lines: int = 20) -> str:
    try:
        data = files.read_tail(run.run_directory, rundirs.STDERR_FILE, 8192)
    except rundirs.RefusedFile as exc:
        text = rundirs.refusal_text(rundirs.STDERR_FILE, exc)
        services.run_add_message(run=run, text=text, level="warning", once=True)
        return f"\n({text})"
    except Exception:  # noqa: BLE001
        return ""
    text = data.decode("utf-8", "replace").strip()
    if not text:
        return ""
    return "\n--- last lines of stderr ---\n" + "\n".join(text.splitlines()[-lines:])


def _is_resource_fault(exc: Exception) -> bool:
    from poller.saga_executor import ExecutorError

    return isinstance(exc, (ExecutorError, OSError, ConnectionError)) and not isinstance(
        exc, FileNotFoundError
    )
