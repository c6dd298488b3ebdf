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

import logging
import os
import socket
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from poller import pilots
from poller.launching import CLIENT_PATH, Launching
from poller.tracking import Tracking, _Flight
from scheduler import services
from scheduler.models import ExecutionResource, Recurrence, Run

__all__ = ["CLIENT_PATH", "Poller", "keep_database_connections"]

logger = logging.getLogger(__name__)

VERSION = "1.0"
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


@dataclass
class Poller(Launching, Tracking):
    """One poller: the tick and its timers here; launching (claimed runs become
    started programs) in poller.launching, tracking (runs in flight to their
    end, cancels, timeouts) in poller.tracking."""

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
        # Runs a launch thread started but whose job id it could not store: the
        # tick collecting them looks for unsent runs at once (poller.launching).
        self._unstored: set[int] = set()
        self._next_retention_check = 0.0
        self._next_heartbeat = 0.0
        self._next_materialize = 0.0
        self._next_tidy = 0.0
        self._next_unsent_check = 0.0
        self._tidying = None
        self._waker = None  # scheduler.wake.Waker while run_forever runs
        self._pilots = pilots.Pilots()
        # SAGA job states asked for during one track() pass, else None.
        self._job_states: dict[tuple[int, str], tuple[str, int | None]] | None = None
        # The runs ended during one track() pass, finished together at its end, else None.
        self._ending: list | None = None
        # The runs in flight as the last track() pass read them, for
        # enforce_cancels_and_timeouts in the same tick, else None.
        self._in_flight: list | None = None
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
            # Right after the wake: a run due now waits for nothing else.
            self.claim_and_launch,
            self.adopt_orphans,
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
        """Claim due QUEUED runs of the resources that are not failing, within the
        limits (scheduler.services.runs_claim_due); poller.launching starts them."""
        now = time.monotonic()
        resources = [
            r
            for r in ExecutionResource.objects.filter(enabled=True)
            if self._resource_down_until.get(r.pk, 0) <= now
        ]
        return services.runs_claim_due(poller=self.ident, resources=resources)

    # ------------------------------------------------- radical.saga's own state
    def tidy_saga_state(self) -> bool:
        """Every TIDY_SECONDS, in a worker thread: remove radical.saga's folders of
        local jobs that ended, and keep its notifications file short
        (saga_executor.tidy_local_job_state); and the shared copies of the run
        roots on this host that no run links to any more (LocalRunDirs.prune_shared)."""
        if time.monotonic() < self._next_tidy:
            return False
        if self._tidying is not None and not self._tidying.done():
            return False
        self._next_tidy = time.monotonic() + TIDY_SECONDS
        from poller.rundir import LocalRunDirs
        from poller.saga_executor import tidy_local_job_state

        roots = {}
        for resource in ExecutionResource.objects.all():
            if resource.on_this_host():
                files = LocalRunDirs(resource)
                roots.setdefault(files.root, files)

        def tidy() -> None:
            tidy_local_job_state()
            for files in roots.values():
                files.prune_shared()

        self._tidying = self._threads.submit(_quietly, tidy, "tidying SAGA state")
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
