"""Tracking: runs in flight are followed to their end (the poller's steps 4+5).

Each tick reads what is new in a run's events (status messages, logs, sync
requests) and looks for its exit record; the record is believed only once the
run's own launcher has ended (its process here; the pilot's word or the SAGA
job's end elsewhere), and SAGA is asked only now and then. What a run's ending
means, from an exit record or from SAGA's state alone, is decided by the two
pure functions at the top (``outcome_of_exit_record``,
``outcome_without_exit_record``); the Tracking methods read the files and
write through scheduler.services. Cancels and timeouts end here too.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from poller import pilots
from poller import rundir as rundirs
from poller.events import MAX_LINE_BYTES, read_new_events
from poller.launching import _is_resource_fault
from scheduler import services, wake
from scheduler.models import Run

logger = logging.getLogger(__name__)

# How often a job with no exit record yet is asked about in SAGA (seconds); the
# exit record is read every tick, which is what notices almost every ending.
SAGA_CHECK_SECONDS = 15.0
# An exit record beside a run of a pilot on another host: its end is asked of
# the pilot's home at most this far apart.
PILOT_CHECK_SECONDS = 1.0
# A job SAGA calls ended, with no exit record: wait this long for the record to
# appear (a slow shared filesystem) before calling the run lost.
EXIT_RECORD_GRACE_SECONDS = 5.0
# Launcher exit status when a run directory was launched before (see scheduler_client).
ALREADY_LAUNCHED_EXIT = 75
# A task's sync events bring its files home at most this often (seconds).
SYNC_SECONDS = 2.0
# Malformed lines reported one by one per read of the event stream; the rest
# as one count.
MALFORMED_PER_READ = 20
# SAGA's words for a job that is over.
ENDED_STATES = ("Done", "Failed", "Canceled", "Unknown")


@dataclass(frozen=True)
class Outcome:
    """How a run ended: its final state, exit code and error, and a warning for
    its messages when the exit record was not as it should be."""

    state: str
    exit_code: int | None
    error: str = ""
    warning: str = ""


def outcome_of_exit_record(record: dict, *, cancel_requested: bool) -> Outcome:
    """A run's end from its launcher's exit record (believed: its launcher ended).
    A cancel asked for wins; an exit code that is not a number counts as a
    failure, with a warning. The caller adds the stderr tail to a failure's error."""
    exit_code = record.get("exit_code")
    warning = ""
    failed = bool(record.get("failed"))
    if not isinstance(exit_code, int) or isinstance(exit_code, bool):
        warning = f"The exit record's exit code {str(exit_code)[:50]!r} is not a number."
        exit_code, failed = 1, True
    failed = failed or exit_code != 0
    if cancel_requested:
        return Outcome(Run.State.CANCELLED, exit_code, "", warning)
    if not failed:
        return Outcome(Run.State.SUCCEEDED, exit_code, "", warning)
    error = str(record.get("error") or "")
    if record.get("signal"):
        error = f"Killed by signal {record['signal']}. {error}".strip()
    return Outcome(Run.State.FAILED, exit_code, error or f"Exit code {exit_code}.", warning)


def outcome_without_exit_record(
    saga_state: str, exit_code: int | None, *, cancel_requested: bool
) -> Outcome:
    """A run's end when its job is over (SAGA's ``saga_state``) and its launcher
    wrote no exit record: killed (an exit code says how), or gone unaccounted
    for (LOST)."""
    if cancel_requested:
        return Outcome(Run.State.CANCELLED, exit_code)
    if saga_state in ("Done", "Failed") and exit_code is not None:
        signum = exit_code - 128 if exit_code > 128 else (-exit_code if exit_code < 0 else 0)
        how = f"killed by signal {signum}" if signum else f"ended with exit code {exit_code}"
        return Outcome(
            Run.State.FAILED,
            exit_code,
            f"The program was {how} before the launcher could write its exit "
            f"record (SAGA state {saga_state}).",
        )
    return Outcome(
        Run.State.LOST,
        exit_code,
        f"The job is gone (SAGA state {saga_state}) and left no exit record: "
        "it cannot be accounted for.",
    )


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


class Tracking:
    """The tracking half of the Poller (poller.loop): its state lives on the Poller."""

    def track(self) -> bool:
        # Runs of one bundle share a SAGA job: ask about it once a pass.
        self._job_states = {}
        # The runs this pass finds ended: finished together at its end (_finish).
        self._ending = ending = []
        self._in_flight = None
        try:
            found = self._track_all()
        finally:
            self._job_states = None
            self._ending = None
        if ending:
            try:
                self._finish_all(ending)
            except Exception:  # the next pass tries again
                logger.exception("finishing run %s failed", _pks(ending))
        return found

    def _track_all(self) -> bool:
        mine = list(
            Run.objects.filter(poller=self.ident, state__in=Run.ACTIVE_STATES).select_related(
                "definition", "resource"
            )
        )
        # The same rows serve enforce_cancels_and_timeouts after this pass: one
        # question a tick instead of two (the second was about 6 % of a busy
        # poller's CPU, py-spy over bench/dispatch.py).
        self._in_flight = mine
        # Tracked: the runs with a job; the others are claimed, not started yet.
        mine = [run for run in mine if run.saga_job_id]
        found = False
        from poller.saga_executor import ExecutorError

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
        files = rundirs.for_resource(run.resource)
        with files.holding():  # the run directory opened once for this run's reads
            return self._track_run(run, files)

    def _track_run(self, run: Run, files) -> bool:
        flight = self._flights.setdefault(run.pk, _Flight())
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
        if state in ("New", "Pending", "Running"):
            # An end seen before was not one (a pilot taken for gone, then
            # heard from): a later end gets its own grace.
            flight.saga_done_at = None
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
        outcome = outcome_without_exit_record(
            state, exit_code, cancel_requested=run.cancel_requested_at is not None
        )
        self._finish_as(run, files, outcome)

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
        outcome = outcome_of_exit_record(
            record, cancel_requested=run.cancel_requested_at is not None
        )
        started_at, finished_at = self._record_times(run, record)
        if started_at is None and run.started_at is None:
            started_at = _launched_at(files, run)
        self._finish_as(run, files, outcome, started_at=started_at, finished_at=finished_at)

    def _finish_as(self, run: Run, files, outcome: Outcome, **times) -> None:
        if outcome.warning:
            services.run_add_message(run=run, text=outcome.warning, level="warning")
        error = outcome.error
        if outcome.state in (Run.State.FAILED, Run.State.LOST):
            error += _stderr_tail(files, run)  # read only for a run that failed
        self._finish(
            run, files, state=outcome.state, exit_code=outcome.exit_code, error=error, **times
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
        """End ``run`` with ``fields`` (services.run_finish): its last events and
        its files home now; the writes at the end of the track() pass, together
        with the other runs it found ended (_finish_all), else now."""
        from poller.files_home import copy_files_home

        # The last events first, to the end, so the final messages are not lost.
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
            results = copy_files_home(run, files)
        except Exception as exc:  # noqa: BLE001
            logger.exception("bringing files home for run %s failed", run.pk)
            services.run_add_message(
                run=run, text=f"Could not bring the files home: {exc}", level="error"
            )
            results = []
        if self._ending is not None:
            self._ending.append((run, results, fields))
        else:
            self._finish_all([(run, results, fields)])

    def _finish_all(self, ending: list) -> None:
        """Record the files and the final states of runs that ended, in one
        transaction. A busy poller finds several ended runs a pass; one at a
        time, these writes were a third of its work (bench/dispatch.py). If
        the batch fails, each run is finished alone, so that one run cannot
        hold up the others."""
        from django.db import transaction

        try:
            with transaction.atomic():
                try:
                    with transaction.atomic():
                        services.runs_record_files(
                            brought=[(run, results) for run, results, _ in ending]
                        )
                except Exception as exc:  # noqa: BLE001
                    logger.exception("recording the files of runs %s failed", _pks(ending))
                    for run, _, _ in ending:
                        services.run_add_message(
                            run=run, text=f"Could not bring the files home: {exc}", level="error"
                        )
                finished = [services.run_finish(run=run, **fields) for run, _, fields in ending]
                if any(finished):
                    # Room under a limit for the runs that wait: another poller
                    # takes it at once, not at its next poll. (This poller's own
                    # next tick is a moment away: without the nudge it took all
                    # the room every time; tests/test_poller_postgres.py.)
                    wake.nudge(others=True)
        except Exception:
            if len(ending) == 1:
                raise
            logger.warning("finishing runs %s together failed; one at a time", _pks(ending))
            for item in ending:
                try:
                    self._finish_all([item])
                except Exception:
                    logger.exception("finishing run %s failed", item[0].pk)
            return
        for (run, _, fields), changed in zip(ending, finished, strict=True):
            if changed:
                self._counts[fields.get("state", "")] += 1
            self._let_go(run)

    def _let_go(self, run: Run) -> None:
        """A finished run's flight, pilot slot or SAGA job (a bundle's last run)."""
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

    def enforce_cancels_and_timeouts(self) -> bool:
        """End the runs of this poller whose cancel was asked for or whose time
        is up: of the runs the tick's track() pass read (those it ended are
        final by now), else read here. A cancel asked for during the pass is
        seen at the next tick, which the cancel's wake starts at once."""
        mine, self._in_flight = self._in_flight, None
        if mine is None:
            mine = Run.objects.filter(
                poller=self.ident, state__in=Run.ACTIVE_STATES
            ).select_related("definition", "resource")
        now = timezone.now()
        launching = self._launching  # a launch thread still owns those
        ending: list[tuple[Run, str, str]] = []
        for run in mine:
            if run.state not in Run.ACTIVE_STATES or run.pk in launching:
                continue
            if run.cancel_requested_at:
                ending.append((run, Run.State.CANCELLED, "Cancelled on request."))
            elif (
                run.started_at is not None
                and run.effective_timeout is not None
                and (now - run.started_at).total_seconds() > run.effective_timeout
            ):
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


def _pks(brought: list) -> str:
    return ", ".join(str(item[0].pk) for item in brought)


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
