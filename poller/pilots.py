"""Pilots: one standing launcher per resource (issue 14).

A pilot (``scheduler_client.py pilot HOME``) is started through radical.saga
like any job (a fork job, a job over SSH, a Slurm job holding N cores for a
wall time), stays up, and forks a launcher for each run handed to it, as a
bundle does, so a run starts without a SAGA submission nor a new interpreter.
Its HOME is ``.pilot`` in the resource's run root; docs/protocol.md ("The
pilot") has the contract:

- a run is handed over by an entry ``inbox/<run id>`` holding its run
  directory (written under a temporary name and renamed), then a byte into the
  FIFO ``wake`` where the poller can reach it (this host), else the pilot
  looks at its inbox every 0.2 s;
- a run is cancelled by an entry ``cancel/<run id>``; the pilot marks each
  launcher it reaped by an entry ``ended/<run id>``;
- the pilot holds ``pilot.lock`` while it runs and rewrites ``pilot.json``
  every 2 s; it outlives the poller (a session of its own) and ends itself
  when idle for SCHEDULER_PILOT_IDLE_SECONDS; a batch pilot starts only runs
  that end before its wall time, and drains (ends with its last run) in its
  last SCHEDULER_PILOT_DRAIN_SECONDS; the next pilot job takes what waits.

A run handed to a pilot has the job id ``pilot:<resource id>``: its state is
read from its run directory and the pilot (``state``), never from SAGA.

Whose word ends a run. On fork://localhost the poller sees the launcher's
process (poller.rundir, by pid, command line and start time), as for a bundle.
Elsewhere (SSH, a batch system) the poller cannot see the host's processes,
and a remote job's end is SAGA's word, which for a pilot job says nothing of
one run: the word is the pilot's ``ended/<run id>``, written after it reaped
the launcher. A program of the same account could forge that entry, as it
could forge radical.saga's own state files of a remote job; docs/protocol.md
says so.

A resource uses a pilot when it says so (``ExecutionResource.pilot``) and does
not run programs as another account. A run goes through it when it asks for
one core and nothing the pilot's own allocation cannot give it (GPUs, MPI,
memory, another queue or project on a batch system); the others, and any run
whose pilot cannot be started, go by bundles or jobs of their own as before.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import secrets
import shlex
import sys
import threading
import time
from pathlib import Path

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from poller import rundir as rundirs
from scheduler.models import ExecutionResource, Run

logger = logging.getLogger(__name__)

PREFIX = "pilot:"
START_SECONDS = 15.0  # how long a new local pilot may take to say it is alive
# A pilot the poller cannot lock-check (another host) is alive while its
# pilot.json was rewritten this recently (it is every 2 s): by this host's
# clock, or by this poller seeing it change (_fresh), when the clocks disagree.
ALIVE_SECONDS = 15.0
# How often a pilot on another host looks at its inbox (it cannot be woken).
REMOTE_POLL_SECONDS = 0.2
# A pilot that never said it was alive is not tried again for this long.
BROKEN_SECONDS = 300.0
CANCEL_WAIT_SECONDS = 10.0
# pilot.json is a few hundred bytes; a program of the same account could make
# it any size, so no more than this is read.
RECORD_MAX_BYTES = 65536
# A pilot job SAGA said was queued or starting is taken to be so this long.
ON_ITS_WAY_SECONDS = 5.0


def usable(resource: ExecutionResource) -> bool:
    return bool(getattr(resource, "pilot", False)) and not resource.run_as


def eligible(run: Run) -> bool:
    """Does this run go through its resource's pilot? One core, and nothing the
    pilot's allocation does not give."""
    resource = run.resource
    if not usable(resource):
        return False
    needs = run.needs or {}
    if (run.cores or 1) > 1 or needs.get("gpus") or needs.get("mpi"):
        return False
    if resource.is_batch() and (
        needs.get("memory_mb")
        or (needs.get("queue") or resource.queue) != resource.queue
        or (needs.get("project") or resource.project) != resource.project
        or (run.effective_timeout or 0) > longest_run_seconds()
    ):
        return False
    return True


# A batch pilot counts its time from its own start, a little after its job's:
# it is told it has this much less than the job's time limit (its --wall).
WALL_SPARE_SECONDS = 30
# What a run's timeout must leave of a batch pilot's time when it is handed
# over: pilot.json is up to 2 s old, the hand-over and the launcher's start.
FIT_MARGIN_SECONDS = 10


def wall_seconds() -> int:
    """How long a batch pilot may start runs for (--wall): its job's time limit,
    SCHEDULER_PILOT_WALL_MINUTES, less WALL_SPARE_SECONDS."""
    return max(1, int(settings.SCHEDULER_PILOT_WALL_MINUTES)) * 60 - WALL_SPARE_SECONDS


def longest_run_seconds() -> int:
    """The longest timeout a run may have to go through a batch pilot: what a
    new pilot can give. Longer runs go as jobs of their own."""
    return wall_seconds() - FIT_MARGIN_SECONDS


def job_id(resource: ExecutionResource) -> str:
    return f"{PREFIX}{resource.pk}"


def is_pilot_job(job: str) -> bool:
    return job.startswith(PREFIX)


def home(resource: ExecutionResource) -> Path:
    """The pilot's home on this host (resources whose run root is here)."""
    return rundirs.LocalRunDirs(resource).root / ".pilot"


def place(resource: ExecutionResource) -> _LocalHome | _RemoteHome:
    if resource.on_this_host():
        return _LocalHome(resource)
    return _RemoteHome(resource)


def record(resource: ExecutionResource) -> dict | None:
    """The running pilot's ``pilot.json``, or None if none runs."""
    return place(resource).record()


# The pilot records read from another host, by where: what it said last
# (pid and alive_at), when this poller first read that (time.monotonic), and
# whether it had read another before (then the pilot was seen beating).
_BEATS: dict[tuple[int, str], tuple[str, float, bool]] = {}


def _fresh(data: dict | None, where: tuple[int, str] | None = None) -> bool:
    """Is a pilot whose record is ``data`` alive? Its ``alive_at`` is younger
    than ALIVE_SECONDS by this host's clock; or, whatever the clocks say (a
    cluster's clock may be off by minutes), this poller saw the record change
    (the pilot rewrites it every 2 s) less than ALIVE_SECONDS ago. ``where``
    (resource id, home) keeps what was read before; without it, only the
    clock. Before, a pilot on a host whose clock was 15 s off was taken for
    dead: its runs were finished as lost while they ran."""
    data = data or {}
    when = parse_datetime(str(data.get("alive_at") or ""))
    clock = (
        when is not None
        and not timezone.is_naive(when)
        and abs((timezone.now() - when).total_seconds()) < ALIVE_SECONDS
    )
    if where is None:
        return clock
    token = f"{data.get('pid')!r} {data.get('alive_at')!r}"
    now = time.monotonic()
    seen = _BEATS.get(where)
    if seen is None or seen[0] != token:
        if len(_BEATS) > 1000:
            _BEATS.clear()
        seen = _BEATS[where] = (token, now, seen is not None)
    return clock or (seen[2] and now - seen[1] < ALIVE_SECONDS)


class _LocalHome:
    """The pilot's home in a run root on this host: fork://localhost, or a batch
    system whose run directories are here (slurm://localhost)."""

    def __init__(self, resource: ExecutionResource) -> None:
        self.resource = resource
        self.folder = home(resource)
        self.path = str(self.folder)
        self.beats = (resource.pk, self.path)

    def prepare(self, client: bytes) -> None:
        for sub in ("", "inbox", "cancel", "ended"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.folder / f".client-{secrets.token_hex(4)}"
        tmp.write_bytes(client)
        os.replace(tmp, self.folder / "scheduler_client.py")

    def record(self) -> dict | None:
        if not _lock_held(self.folder):
            # Held by a pilot on another node of a shared filesystem whose
            # locks do not reach here? Then its beats are the word.
            data = self._read_record()
            return data if self.resource.is_batch() and _fresh(data, self.beats) else None
        return self._read_record() or {}  # {}: starting, its first beat not written yet

    def _read_record(self) -> dict | None:
        try:
            # No link followed, no FIFO waited on: a program could put either here.
            fd = os.open(self.folder / "pilot.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            try:
                data = json.loads(os.read(fd, RECORD_MAX_BYTES))
            finally:
                os.close(fd)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def give(self, entries: list[tuple[int, str]]) -> None:
        inbox = self.folder / "inbox"
        for run_id, run_dir in entries:
            tmp = inbox / f".{run_id}.{secrets.token_hex(4)}"
            tmp.write_text(run_dir)
            os.replace(tmp, inbox / str(int(run_id)))
        wake(self.folder)

    def probe(self, run_id: int, run_dir: str) -> dict:
        launched = os.path.join(run_dir, rundirs.LAUNCHED_FILE)
        return {
            "ended": (self.folder / "ended" / str(run_id)).exists(),
            "launched": os.path.lexists(launched),
            "waiting": (self.folder / "inbox" / str(run_id)).exists(),
            "alive": self.record() is not None,
            "held": _launcher_holds(launched),
        }

    def take_back(self, run_id: int) -> bool:
        try:
            os.unlink(self.folder / "inbox" / str(int(run_id)))
        except OSError:
            return False
        return True

    def cancel(self, run_id: int, run_dir: str) -> None:
        with contextlib.suppress(OSError):
            Path(run_dir, rundirs.CANCELLED_FILE).touch()
        (self.folder / "cancel" / str(int(run_id))).touch()
        wake(self.folder)

    def forget(self, run_id: int) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.folder / "ended" / str(int(run_id)))

    def submitted(self) -> str:
        with contextlib.suppress(OSError):
            return (self.folder / "submitted").read_text().strip()
        return ""

    def note_submitted(self, job: str) -> None:
        with contextlib.suppress(OSError):
            (self.folder / "submitted").write_text(job)


class _RemoteHome:
    """The pilot's home on another host, reached through the resource's shell
    (poller.saga_executor.RemoteRunDirs): one round trip a question."""

    def __init__(self, resource: ExecutionResource) -> None:
        self.resource = resource
        self.files = rundirs.for_resource(resource)
        self.path = f"{self.files.root.rstrip('/')}/.pilot"
        self.q = shlex.quote(self.path)
        self.beats = (resource.pk, self.path)

    def _run(self, command: str) -> str:
        from poller.saga_executor import ExecutorError

        ret, out = self.files._run(command)
        if ret:
            raise ExecutorError(
                f"A pilot command on {self.resource.name!r} failed: {out.strip()[:200]}"
            )
        return out

    def prepare(self, client: bytes) -> None:
        self._run(f"mkdir -p {self.q}/inbox {self.q}/cancel {self.q}/ended && chmod 700 {self.q}")
        self.files.stage(self.path, {"scheduler_client.py": client})

    def record(self) -> dict | None:
        out = self._run(f"{self._read_record_command()}; true")
        try:
            data = json.loads(out.strip() or "null")
        except ValueError:
            return None
        return data if isinstance(data, dict) and _fresh(data, self.beats) else None

    def _read_record_command(self) -> str:
        """pilot.json, at most RECORD_MAX_BYTES of it, only if a regular file."""
        record = f"{self.q}/pilot.json"
        return (
            f"{{ test -f {record} && ! test -L {record} && "
            f"head -c {RECORD_MAX_BYTES} {record}; }} 2>/dev/null"
        )

    def give(self, entries: list[tuple[int, str]]) -> None:
        token = secrets.token_hex(4)
        self._run(
            " && ".join(
                f"printf %s {shlex.quote(run_dir)} > {self.q}/inbox/.{int(run_id)}.{token} && "
                f"mv -f {self.q}/inbox/.{int(run_id)}.{token} {self.q}/inbox/{int(run_id)}"
                for run_id, run_dir in entries
            )
        )

    def probe(self, run_id: int, run_dir: str) -> dict:
        n = int(run_id)
        launched = shlex.quote(f"{run_dir}/{rundirs.LAUNCHED_FILE}")
        out = self._run(
            f"test -e {self.q}/ended/{n} && echo ENDED; "
            f"test -e {launched} -o -L {launched} && echo LAUNCHED; "
            f"test -e {self.q}/inbox/{n} && echo WAITING; "
            # The launcher's lock on its marker (a regular file only: flock(1)
            # would create a missing one, and follow a link): 75 = held.
            f"test -f {launched} && ! test -L {launched} && "
            f"{{ flock -n -s -E 75 {launched} true 2>/dev/null; "
            f'test "$?" = 75 && echo HELD; }}; '
            f"echo; {self._read_record_command()}; true"
        )
        words, _, body = out.partition("\n\n")
        try:
            data = json.loads(body.strip() or "null")
        except ValueError:
            data = None
        return {
            "ended": "ENDED" in words.split(),
            "launched": "LAUNCHED" in words.split(),
            "waiting": "WAITING" in words.split(),
            "alive": isinstance(data, dict) and _fresh(data, self.beats),
            "held": "HELD" in words.split(),
        }

    def take_back(self, run_id: int) -> bool:
        ret, _ = self.files._run(f"rm {self.q}/inbox/{int(run_id)} 2>/dev/null")
        return ret == 0

    def cancel(self, run_id: int, run_dir: str) -> None:
        mark = shlex.quote(f"{run_dir}/{rundirs.CANCELLED_FILE}")
        self._run(f"touch {mark} {self.q}/cancel/{int(run_id)}")

    def forget(self, run_id: int) -> None:
        self.files._run(f"rm -f {self.q}/ended/{int(run_id)}")

    def submitted(self) -> str:
        return self._run(f"cat {self.q}/submitted 2>/dev/null; true").strip()

    def note_submitted(self, job: str) -> None:
        self._run(f"printf %s {shlex.quote(job)} > {self.q}/submitted")


def _launcher_holds(launched: str) -> bool:
    """Does a launcher hold its lock on the run's ``launched`` marker (it still
    runs)? Never follows a link nor waits on a FIFO a program put there."""
    return _flock_held(launched, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)


def _lock_held(folder: Path) -> bool:
    """Does a pilot hold the lock of ``folder`` (is one running there)?"""
    return _flock_held(folder / "pilot.lock", os.O_RDWR)


def _flock_held(path, flags: int) -> bool:
    """Does another open of ``path`` hold an flock on it? False if it cannot
    be opened (with ``flags``)."""
    try:
        fd = os.open(path, flags)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


class Pilots:
    """The poller's side: start a resource's pilot when needed, hand it runs."""

    def __init__(self) -> None:
        self._locks: dict[int, threading.Lock] = {}
        self._guard = threading.Lock()
        self._jobs: dict[int, str] = {}  # resource id -> the pilot job it submitted
        self._broken_until: dict[int, float] = {}
        self._on_way_until: dict[int, float] = {}
        self._submitted_at: dict[str, float] = {}  # pilot job -> when first known
        self._records: dict[int, dict | None] = {}  # resource id -> pilot.json last read

    def _lock(self, resource: ExecutionResource) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(resource.pk, threading.Lock())

    def ensure(self, resource: ExecutionResource, pool) -> bool:
        """A pilot runs for ``resource``, or is on its way (a batch job waiting
        in its queue); started through ``pool`` if none is. False if it could
        not be started (the runs then go as before)."""
        where = place(resource)
        if self._alive(resource, where.record()):
            return True
        with self._lock(resource):
            if self._alive(resource, where.record()):
                return True
            if self._broken_until.get(resource.pk, 0) > time.monotonic():
                return False
            if not resource.is_local() and self._on_its_way(resource, where, pool):
                return True
            if self.broken(resource):  # its last pilot job was just given up
                return False
            return self._start(resource, where, pool)

    def _alive(self, resource: ExecutionResource, data: dict | None) -> bool:
        """Is the pilot whose record is ``data`` running? Its record is kept
        for ``fits``."""
        self._records[resource.pk] = data
        if data is None:
            return False
        self._seen_alive(resource)
        return True

    def fits(self, resource: ExecutionResource, run: Run) -> bool:
        """Can the resource's pilot, as ``ensure`` last found it, start ``run``
        before its wall time? Yes when it has none (not a batch job) or is not
        running yet (a new pilot: ``eligible`` checked the run's timeout), and
        for a run without a timeout (the pilot leaves it to the next one in
        its last SCHEDULER_PILOT_DRAIN_SECONDS); else when its timeout ends
        FIT_MARGIN_SECONDS before the pilot's time."""
        left = (self._records.get(resource.pk) or {}).get("ends_in")
        timeout = run.effective_timeout
        if not isinstance(left, (int, float)) or isinstance(left, bool) or not timeout:
            return True
        return timeout + FIT_MARGIN_SECONDS <= left

    def _seen_alive(self, resource: ExecutionResource) -> None:
        """The pilot job this poller submitted said it is alive: it is no longer
        on its way, and its end later (idle, drained, or its wall time) is not a
        pilot that "ended before it ran" (which left the resource without a
        pilot for BROKEN_SECONDS)."""
        self._jobs.pop(resource.pk, None)

    def _on_its_way(self, resource, where, pool) -> bool:
        """A pilot job submitted (by this poller or, noted in its home, an earlier
        one) that has not started or not said so yet."""
        job = self._jobs.get(resource.pk) or where.submitted()
        if not job:
            return False
        # Every waiting run asks this: SAGA is asked at most every few seconds.
        if self._on_way_until.get(resource.pk, 0) > time.monotonic():
            return True
        try:
            state, _ = pool.state(job)
        except Exception:  # noqa: BLE001 - unknown: submit another, the lock keeps one
            state = "Unknown"
        now = time.monotonic()
        since = self._submitted_at.setdefault(job, now)
        if state in ("New", "Pending") and now - since > settings.SCHEDULER_PILOT_QUEUE_SECONDS:
            # A pilot the batch system will not start (it asked for more than
            # the cluster has), or not soon: its runs must not wait for it.
            with contextlib.suppress(Exception):
                pool.cancel(job)
            self._jobs.pop(resource.pk, None)
            self._broken(
                resource,
                f"its pilot job {job} waited in the queue for more than "
                f"{settings.SCHEDULER_PILOT_QUEUE_SECONDS} s (SCHEDULER_PILOT_QUEUE_SECONDS)",
            )
            return False
        if state in ("New", "Pending", "Running"):
            self._jobs[resource.pk] = job
            self._on_way_until[resource.pk] = now + ON_ITS_WAY_SECONDS
            return True
        if self._jobs.pop(resource.pk, None):
            # Ours ended without ever being seen alive: leave the resource's
            # pilot alone for a while; its runs go by their own jobs.
            self._broken(resource, f"its pilot job {job} ended ({state}) before it ran")
            return False
        return False

    def _broken(self, resource: ExecutionResource, why: str) -> None:
        logger.warning(
            "resource %s: %s; its runs go without a pilot for %s s",
            resource.name,
            why,
            int(BROKEN_SECONDS),
        )
        self._broken_until[resource.pk] = time.monotonic() + BROKEN_SECONDS

    def broken(self, resource: ExecutionResource) -> bool:
        return self._broken_until.get(resource.pk, 0) > time.monotonic()

    def _start(self, resource: ExecutionResource, where, pool) -> bool:
        from poller.loop import CLIENT_PATH
        from poller.saga_executor import JobSpec

        try:
            where.prepare(CLIENT_PATH.read_bytes())
        except Exception as exc:  # noqa: BLE001 - the runs go as before
            logger.warning("resource %s: could not prepare its pilot: %s", resource.name, exc)
            return False
        # As many cores as runs may go at once, within what a run may ask for.
        cores = max(1, min(resource.max_concurrent_runs or 1, resource.max_cores or 1 << 20))
        here = resource.is_local()
        spec = JobSpec(
            run_id=0,
            executable=resource.python
            or (sys.executable if resource.on_this_host() else "python3"),
            arguments=[
                "scheduler_client.py",
                "pilot",
                where.path,
                "--cores",
                str(cores),
                "--idle",
                str(int(settings.SCHEDULER_PILOT_IDLE_SECONDS)),
                # On this host the poller watches the launchers itself: no
                # ended/ marks, which nobody here removed (7 days of runs,
                # one file each) and which cost a file a run.
                *(["--no-ended"] if here else ["--poll", str(REMOTE_POLL_SECONDS)]),
                # A batch pilot starts only runs that end before its job does,
                # and ends once it can start none (scheduler_client.pilot).
                *(
                    [
                        "--wall",
                        str(wall_seconds()),
                        "--drain",
                        str(int(settings.SCHEDULER_PILOT_DRAIN_SECONDS)),
                    ]
                    if resource.is_batch()
                    else []
                ),
            ],
            working_directory=where.path,
            output="pilot.out",
            error="pilot.err",
            queue=resource.queue,
            project=resource.project,
            # A batch pilot holds its cores for SCHEDULER_PILOT_WALL_MINUTES.
            wall_time_minutes=max(1, int(settings.SCHEDULER_PILOT_WALL_MINUTES))
            if resource.is_batch()
            else None,
            cores=cores if resource.is_batch() else 1,
        )
        answer = pool.submit_quietly(spec)
        if isinstance(answer, Exception):
            self._broken(resource, f"its pilot could not be started: {answer}")
            return False
        if not here:
            # Not waited for: a batch pilot may wait in its queue; the runs
            # handed meanwhile wait in its inbox (state Pending).
            self._jobs[resource.pk] = answer
            self._submitted_at[answer] = time.monotonic()
            with contextlib.suppress(Exception):
                where.note_submitted(answer)
            logger.info("resource %s: pilot submitted (%s cores): %s", resource.name, cores, answer)
            return True
        end = time.monotonic() + START_SECONDS
        while time.monotonic() < end:
            if where.record() is not None:
                logger.info("resource %s: pilot started (%s cores)", resource.name, cores)
                return True
            time.sleep(0.02)
        self._broken(resource, f"its pilot did not start within {START_SECONDS} s")
        return False

    def hand(self, resource: ExecutionResource, entries: list[tuple[int, str]]) -> str:
        """Give runs (id, run directory) to the resource's pilot; their job id."""
        place(resource).give(entries)
        return job_id(resource)

    def cancel(self, run: Run) -> None:
        """Ask the pilot to end a run's launcher (a pilot on another host), and
        wait a little for its word that it did."""
        where = place(run.resource)
        where.cancel(run.pk, run.run_directory)
        end = time.monotonic() + CANCEL_WAIT_SECONDS
        while time.monotonic() < end:
            seen = where.probe(run.pk, run.run_directory)
            if seen["ended"] or not (seen["launched"] or seen["waiting"]) or not seen["alive"]:
                return
            time.sleep(0.2)

    def forget(self, run: Run) -> None:
        if not run.resource.is_local():
            with contextlib.suppress(Exception):
                place(run.resource).forget(run.pk)

    def state(self, run: Run, files, pool) -> tuple[str, int | None]:
        """A pilot run's state in SAGA's words, from its run directory and the
        pilot: Running while its launcher runs, Done once it ended; before it
        starts, Pending while its entry waits, and the entry is handed over
        again (with a new pilot if needed) when the pilot that should start it
        is gone. ``Requeue`` when no pilot can start it: the run was taken back
        from the inbox and waits in the queue again."""
        resource = run.resource
        where = place(resource)
        if resource.is_local():
            if files.exists(run.run_directory, rundirs.LAUNCHED_FILE):
                return ("Running" if files.launcher_alive(run.run_directory) else "Done"), None
            seen = {
                "launched": False,
                "ended": False,
                "waiting": (home(resource) / "inbox" / str(run.pk)).exists(),
                "alive": record(resource) is not None,
            }
        else:
            seen = where.probe(run.pk, run.run_directory)
            if seen["alive"]:
                self._seen_alive(resource)
            if seen["ended"]:
                return "Done", None
            if seen["launched"]:
                # Its pilot gone (killed, or its batch job's end): a launcher
                # that lives on still holds its lock on its marker, and its
                # exit record is waited for; one that went with the pilot is
                # Done, its exit record waited for a grace. Before, a killed
                # pilot's runs were finished as LOST while they ran on.
                return ("Running" if seen["alive"] or seen.get("held") else "Done"), None
        if seen["alive"]:
            # Waiting in the inbox (a draining pilot leaves it there for the
            # next one), or taken: its launcher is starting.
            return "Pending", None
        if self.ensure(resource, pool):
            if not seen["waiting"]:
                with contextlib.suppress(OSError, Exception):
                    where.give([(run.pk, run.run_directory)])  # the next pilot starts it
            elif resource.is_local():
                wake(home(resource))
            return "Pending", None
        if where.take_back(run.pk) or not seen["waiting"]:
            return "Requeue", None
        return "Pending", None


def wake(folder: Path) -> None:
    """A byte into the pilot's FIFO; no reader (none runs) or a full FIFO is fine."""
    try:
        fd = os.open(folder / "wake", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.write(fd, b"!")
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EPIPE):
            logger.debug("waking the pilot in %s failed: %s", folder, exc)
    finally:
        os.close(fd)
