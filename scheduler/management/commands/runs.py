"""Runs from the terminal: queue, list, show, follow, cancel and fetch files.

    manage.py runs queue "Report writer" -p rows=50 [--resource local] [--at 2026-05-04T07:30Z]
    manage.py runs list [--state FAILED] [--definition NAME] [--limit 20]
    manage.py runs show 42
    manage.py runs follow 42          # prints new messages until the run ends
    manage.py runs cancel 42
    manage.py runs fetch 42 [--dest DIR]

Everything goes through scheduler.api, so the rules are the Python API's; with
--user NAME a command acts as that user (their role and groups), without it as
the site. Bad input is a one-line error, never a traceback.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from scheduler import api, services
from scheduler.exceptions import SchedulerError
from scheduler.models import OutputFile, Run

FINAL = set(Run.FINAL_STATES)


class Command(BaseCommand):
    help = "Queue, list, show, follow, cancel runs and fetch their files."

    def add_arguments(self, parser):
        parser.add_argument("--user", help="Act as this user (their role and groups).")
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        queue = sub.add_parser("queue", help="Queue a run of a definition.")
        queue.add_argument("definition")
        queue.add_argument(
            "-p",
            "--param",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="A parameter value (repeatable); checked against the parameter's type.",
        )
        queue.add_argument("--resource", help="Run on this resource instead of the default.")
        queue.add_argument("--at", help="Run at this time (ISO 8601 with a zone).")
        for flag, what in (
            ("--cores", "Cores, e.g. 16."),
            ("--processes-per-host", "Processes per host for MPI, e.g. 32."),
            ("--memory-mb", "Memory in MB, e.g. 64000."),
            ("--gpus", "GPUs (batch systems), e.g. 1."),
            ("--wall-time", "Wall time in seconds, e.g. 3600."),
            ("--queue", "Batch queue, e.g. long."),
            ("--project", "Batch project/account, e.g. proj123."),
        ):
            queue.add_argument(flag, help=what + " Default: the definition's.")
        queue.add_argument("--mpi", action="store_true", help="Start under mpirun (batch).")
        queue.add_argument(
            "-e",
            "--env",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="An environment variable for the program (repeatable).",
        )
        queue.add_argument(
            "-i",
            "--input",
            action="append",
            default=[],
            metavar="FILE|run:ID/NAME|file:ID",
            help="An input file for inputs/: a path here, an output file of an earlier run "
            "(run:12/result.csv) or an output file by id (file:34). Repeatable.",
        )
        listing = sub.add_parser("list", help="Recent runs, newest first.")
        listing.add_argument("--state", choices=list(Run.State.values))
        listing.add_argument("--definition")
        listing.add_argument("--limit", type=int, default=20)
        show = sub.add_parser("show", help="A run: state, times, messages, files.")
        show.add_argument("run_id", type=int)
        follow = sub.add_parser("follow", help="Print new messages until the run ends.")
        follow.add_argument("run_id", type=int)
        follow.add_argument("--interval", type=float, default=1.0)
        follow.add_argument("--timeout", type=float, default=0, help="Give up after seconds.")
        cancel = sub.add_parser("cancel", help="Cancel a run.")
        cancel.add_argument("run_id", type=int)
        fetch = sub.add_parser("fetch", help="Copy a run's files here, checking SHA-256.")
        fetch.add_argument("run_id", type=int)
        fetch.add_argument("--dest", default=".", help="Folder to put them in (default: .).")

    def handle(self, *args, action: str, user: str | None = None, **options):
        self.user = self._user(user)
        try:
            result = getattr(self, f"do_{action}")(**options)
            self.stdout.flush()
            return result
        except SchedulerError as exc:
            raise CommandError(str(exc)) from None
        except BrokenPipeError:
            # The reader went away (`runs show 8 | head -2`): what it wanted it has.
            # Point stdout at /dev/null so the interpreter's last flush is quiet too,
            # and end as a piped Unix tool does, without a traceback.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(1)

    def _user(self, name: str | None):
        if not name:
            return None
        try:
            user = get_user_model().objects.get(username=name)
        except get_user_model().DoesNotExist:
            raise CommandError(f"No user {name!r}.") from None
        if not user.is_active:
            raise CommandError(f"User {name!r} is inactive.")
        return user

    # ------------------------------------------------------------ subcommands
    @staticmethod
    def _needs(options) -> dict:
        needs: dict = {}
        for key in ("cores", "processes_per_host", "memory_mb", "gpus", "queue", "project"):
            if options.get(key) not in (None, ""):
                needs[key] = options[key]
        if options.get("wall_time") not in (None, ""):
            needs["wall_time_seconds"] = options["wall_time"]
        if options.get("mpi"):
            needs["mpi"] = True
        env = {}
        for item in options.get("env") or []:
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise CommandError(f"-e takes NAME=VALUE, not {item!r}.")
            env[name.strip()] = value
        if env:
            needs["environment"] = env
        return needs

    def _inputs(self, items) -> list:
        from scheduler import inputs as run_inputs
        from scheduler.models import OutputFile

        found: list = []
        for item in items:
            if item.startswith("file:"):
                try:
                    found.append(run_inputs.FromOutput(int(item[5:])))
                except ValueError:
                    raise CommandError(f"-i {item!r}: give file:ID, e.g. file:34.") from None
            elif item.startswith("run:"):
                run_id, sep, name = item[4:].partition("/")
                if not sep or not run_id.isdigit() or not name:
                    raise CommandError(f"-i {item!r}: give run:ID/NAME, e.g. run:12/result.csv.")
                file_id = (
                    OutputFile.objects.filter(run_id=int(run_id), kind="output", name=name)
                    .values_list("pk", flat=True)
                    .first()
                )
                if file_id is None:
                    raise CommandError(f"-i {item!r}: run {run_id} has no output file {name!r}.")
                found.append(run_inputs.FromOutput(file_id))
            else:
                found.append(item)  # a path on this host (scheduler.api opens it)
        return found

    def do_queue(self, *, definition, param, resource, at, **options):
        parameters = {}
        for item in param:
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                raise CommandError(f"-p takes NAME=VALUE, not {item!r}.")
            parameters[name.strip()] = value
        run_at = None
        if at:
            run_at = parse_datetime(at)
            if run_at is None or run_at.tzinfo is None:
                raise CommandError(
                    f"--at {at!r}: give an ISO 8601 time with a zone, e.g. 2026-05-04T07:30Z."
                )
        run_id = api.submit_task(
            definition,
            parameters=parameters,
            resource=resource,
            run_at=run_at,
            user=self.user,
            needs=self._needs(options),
            inputs=self._inputs(options.get("input") or []),
        )
        services.audit_record(
            action="queue",
            user=self.user,
            obj=Run.objects.get(pk=run_id),
            detail={"definition": definition, "via": "cli"},
        )
        self.stdout.write(f"Queued run {run_id} of {definition!r}.")
        return None

    def do_list(self, *, state, definition, limit, **_):
        if not 1 <= limit <= 1000:
            raise CommandError("--limit must be 1-1000.")
        rows = api.list_runs(user=self.user, state=state, definition=definition, limit=limit)
        if not rows:
            self.stdout.write("No runs.")
            return
        self.stdout.write(
            f"{'run':>7}  {'state':<10} {'prog':>4}  {'queued':<16}  definition / message"
        )
        for r in rows:
            queued = timezone.localtime(r["queued_at"]).strftime("%Y-%m-%d %H:%M")
            note = r["error"].strip().splitlines()[-1] if r["error"].strip() else r["message"]
            self.stdout.write(
                f"{r['run_id']:>7}  {r['state']:<10} {r['progress']:>3}%  {queued:<16}  "
                f"{r['definition']}" + (f" - {note[:80]}" if note else "")
            )

    def do_show(self, *, run_id, **_):
        r = api.get_task_results(run_id, user=self.user)
        self.stdout.write(
            f"Run {r['run_id']} of {r['definition']!r}: {r['state']} ({r['progress']}%)"
        )
        for label in ("due_at", "queued_at", "started_at", "finished_at"):
            if r[label]:
                self.stdout.write(
                    f"  {label[:-3]:<9} {timezone.localtime(r[label]):%Y-%m-%d %H:%M:%S %Z}"
                )
        if r["exit_code"] is not None:
            self.stdout.write(f"  exit code {r['exit_code']}")
        from scheduler.needs import summary

        if r["needs"]:
            self.stdout.write(f"  needs     {summary(r['needs'])}")
        if r["core_hours"] is not None:
            cost = f", cost {r['cost']:.4f}" if r["cost"] is not None else ""
            self.stdout.write(f"  used      {r['core_hours']:.4f} core-hours{cost}")
        for i in r["inputs"]:
            self.stdout.write(
                f"  input     {i['name']}  {i['size']} bytes  sha256 {i['sha256'][:16]}…"
            )
        if r["error"]:
            self.stdout.write("  error:")
            for line in r["error"].splitlines()[-20:]:
                self.stdout.write(f"    {line}")
        self.stdout.write(f"Messages ({len(r['messages'])}):")
        for m in r["messages"]:
            self.stdout.write(self._message(m))
        self.stdout.write(f"Files ({len(r['files'])}):")
        for f in r["files"]:
            self.stdout.write(
                f"  {f['kind']:<6} {f['name']}  {f['size']} bytes  sha256 {f['sha256'][:16]}…"
            )

    def do_follow(self, *, run_id, interval, timeout, **_):
        api.get_task_status(run_id, user=self.user)  # unknown or invisible: an error now
        seen = 0
        deadline = time.monotonic() + timeout if timeout else None
        while True:
            r = api.get_task_results(run_id, user=self.user)
            for m in r["messages"][seen:]:
                self.stdout.write(self._message(m))
            seen = len(r["messages"])
            if r["state"] in FINAL:
                self.stdout.write(
                    f"Run {run_id} ended {r['state']}"
                    + (f" (exit code {r['exit_code']})" if r["exit_code"] is not None else "")
                )
                if r["state"] != Run.State.SUCCEEDED:
                    raise CommandError(r["error"].splitlines()[-1] if r["error"] else r["state"])
                return
            if deadline is not None and time.monotonic() > deadline:
                raise CommandError(f"Run {run_id} is still {r['state']} after {timeout:g} s.")
            time.sleep(interval)

    def do_cancel(self, *, run_id, **_):
        outcome = api.cancel_task(run_id, user=self.user)
        if outcome != "final":
            services.audit_record(
                action="cancel",
                user=self.user,
                obj=Run.objects.get(pk=run_id),
                detail={"outcome": outcome, "via": "cli"},
            )
        self.stdout.write(
            {
                "cancelled": f"Run {run_id} was queued: cancelled.",
                "requested": f"Run {run_id}: cancel requested; the poller ends the job.",
                "final": f"Run {run_id} had already ended; nothing to do.",
            }[outcome]
        )

    def do_fetch(self, *, run_id, dest, **_):
        if self.user is not None and not self.user.has_perm("scheduler.download_outputfile"):
            raise CommandError("You may not download files.")
        r = api.get_task_results(run_id, user=self.user)
        folder = Path(dest) / f"run-{run_id}"
        folder.mkdir(parents=True, exist_ok=True)
        problems = 0
        for f in r["files"]:
            output = OutputFile.objects.get(pk=f["id"])
            source = output.absolute_path()
            target = folder / (f["name"] if f["kind"] == "output" else f"{f['kind']}.txt")
            try:
                with open(source, "rb") as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1024 * 1024)
            except OSError as exc:
                self.stderr.write(f"  {f['name']}: not copied ({exc.strerror}).")
                problems += 1
                continue
            digest = _sha256(target)
            ok = digest == f["sha256"]
            problems += not ok
            self.stdout.write(
                f"  {target}  {f['size']} bytes  " + ("sha256 ok" if ok else "SHA-256 MISMATCH")
            )
        if problems:
            raise CommandError(f"{problems} file(s) of run {run_id} did not arrive intact.")
        self.stdout.write(f"{len(r['files'])} file(s) of run {run_id} in {folder}.")

    @staticmethod
    def _message(m) -> str:
        progress = f" [{m['progress']:>3}%]" if m["progress"] is not None else ""
        return f"  {timezone.localtime(m['time']):%H:%M:%S} {m['level']:<7}{progress} {m['text']}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()
