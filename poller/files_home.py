"""Bring a run's registered outputs, stdout and stderr home into the file store.

Files land in ``SCHEDULER_FILE_ROOT/<run id>/<kind>/<name>`` through a temporary
name and a rename, with size, SHA-256 and content type recorded on an
OutputFile row. Nothing a task does can make the poller copy a file from outside
its run directory: names are checked, links are never followed (also not in a
parent folder), and per-file and per-run size limits apply. Every refusal is a
message on the run, never an exception that stops the poller.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from poller.events import registered_outputs
from poller.rundir import RefusedFile
from scheduler import services
from scheduler.models import OutputFile, Run

MAX_NAME_LENGTH = 200
CHUNK = 1024 * 1024


def check_name(name: str) -> None:
    if not name:
        raise RefusedFile("an empty file name")
    if "/" in name or "\\" in name:
        raise RefusedFile(f"{name[:80]!r}: a name may not contain '/'")
    if ".." in name:
        raise RefusedFile(f"{name[:80]!r}: a name may not contain '..'")
    if "\x00" in name:
        raise RefusedFile(f"{name[:80]!r}: a name may not contain NUL")
    if name.startswith("."):
        raise RefusedFile(f"{name[:80]!r}: a name may not start with a dot")
    if len(name) > MAX_NAME_LENGTH:
        raise RefusedFile(f"{name[:80]!r}…: names are limited to {MAX_NAME_LENGTH} characters")


@dataclass
class Wanted:
    name: str
    path: str  # relative to the run directory
    kind: str


def wanted_files(run: Run, rundir) -> tuple[list[Wanted], list[str]]:
    """The files to bring home: stdout, stderr and every registered output."""
    wanted = [
        Wanted("stdout.txt", "stdout.txt", OutputFile.Kind.STDOUT),
        Wanted("stderr.txt", "stderr.txt", OutputFile.Kind.STDERR),
    ]
    problems: list[str] = []
    stream = rundir.read_from(run.run_directory, "events.jsonl", 0)
    for name, path in registered_outputs(stream).items():
        try:
            check_name(name)
        except RefusedFile as exc:
            problems.append(f"Output file refused: {exc}.")
            continue
        wanted.append(Wanted(name, path, OutputFile.Kind.OUTPUT))
    return wanted, problems


def bring_files_home(run: Run, rundir) -> list[OutputFile]:
    """Copy the run's files into the store and record them. Safe to call again."""
    if not run.run_directory:
        return []
    wanted, problems = wanted_files(run, rundir)
    store = Path(settings.SCHEDULER_FILE_ROOT) / str(run.pk)
    max_file = settings.SCHEDULER_MAX_FILE_BYTES
    max_run = settings.SCHEDULER_MAX_RUN_BYTES
    total = 0  # every pass copies all wanted files again, so this is the run's total
    stored: list[OutputFile] = []
    new_rows: list[OutputFile] = []
    existing = {(f.kind, f.name): f for f in run.files.all()}
    for item in wanted:
        try:
            size = rundir.regular_file_size(run.run_directory, item.path)
        except FileNotFoundError:
            if item.kind == OutputFile.Kind.OUTPUT:
                problems.append(f"Output file {item.name!r} was registered but is not there.")
            continue
        except RefusedFile as exc:
            problems.append(f"Output file {item.name!r} refused: {exc}.")
            continue
        if size > max_file:
            problems.append(
                f"Output file {item.name!r} is {size} bytes, over the per-file limit of "
                f"{max_file} bytes (SCHEDULER_MAX_FILE_BYTES); not brought home."
            )
            continue
        if total + size > max_run:
            problems.append(
                f"Output file {item.name!r} ({size} bytes) would pass the per-run limit of "
                f"{max_run} bytes (SCHEDULER_MAX_RUN_BYTES); "
                "not brought home."
            )
            continue
        folder = store / item.kind
        folder.mkdir(parents=True, exist_ok=True, mode=0o750)
        target = folder / item.name
        tmp = folder / f".{item.name[:50]}.{uuid.uuid4().hex}.part"
        digest = hashlib.sha256()
        copied = 0
        try:
            with open(tmp, "wb") as out:
                for chunk in rundir.read_chunks(run.run_directory, item.path, max_file + 1):
                    copied += len(chunk)
                    if copied > max_file:
                        raise RefusedFile(f"it grew past the per-file limit of {max_file} bytes")
                    digest.update(chunk)
                    out.write(chunk)
            os.replace(tmp, target)
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            problems.append(f"Output file {item.name!r} vanished before it could be copied.")
            continue
        except RefusedFile as exc:
            tmp.unlink(missing_ok=True)
            problems.append(f"Output file {item.name!r} refused: {exc}.")
            continue
        total += copied
        content_type = mimetypes.guess_type(item.name)[0] or (
            "text/plain" if item.kind != OutputFile.Kind.OUTPUT else "application/octet-stream"
        )
        fields = {
            "size": copied,
            "sha256": digest.hexdigest(),
            "content_type": content_type,
            "stored_path": str(target.relative_to(settings.SCHEDULER_FILE_ROOT)),
        }
        row = existing.get((item.kind, item.name))
        if row is None:
            row = OutputFile(run=run, kind=item.kind, name=item.name, **fields)
            new_rows.append(row)
        elif any(getattr(row, k) != v for k, v in fields.items()):
            for key, value in fields.items():
                setattr(row, key, value)
            row.save(update_fields=list(fields))
        stored.append(row)
    # ignore_conflicts: a bring-home running twice at once (sync, then the end)
    # keeps one row per (run, kind, name) through the unique constraint.
    OutputFile.objects.bulk_create(new_rows, ignore_conflicts=True)
    if problems:
        known = set(run.messages.filter(level="warning").values_list("text", flat=True))
        for text in problems:
            if text not in known:  # a second bring-home (sync, then the end) says it once
                services.run_add_message(run=run, text=text, level="warning")
    return stored
