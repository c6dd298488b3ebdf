"""A run's input files: uploaded with the run, or taken from an earlier run's
output files (a run feeding the next). Each is copied into the site's store at
queue time (SCHEDULER_FILE_ROOT/<run>/inputs/<name>), so pruning the earlier run
later takes nothing from this one, and the poller stages the copies into
``inputs/`` of the run directory (poller.loop._stage).

Everything here runs inside services.run_enqueue's transaction: a bad input
raises InvalidRequest and neither the run nor any stored byte is left behind.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from django.conf import settings

from scheduler.exceptions import InvalidRequest
from scheduler.models import OutputFile, Run, RunInput

INPUT_DIR = "inputs"
MAX_INPUTS = 100


@dataclass
class Upload:
    """An uploaded file: its name in inputs/ and a readable binary file object."""

    name: str
    file: IO[bytes]
    size: int | None = None


@dataclass
class FromOutput:
    """An output file of an earlier run, by its id; ``name`` in inputs/ (blank: the same name)."""

    file_id: int
    name: str = ""
    label: str = ""  # how the user named it (run:12/out.csv), for the error message


def check_name(name: str) -> None:
    from poller.files_home import check_name as stored_name_check
    from poller.rundir import RefusedFile

    try:
        stored_name_check(name)
    except RefusedFile as exc:
        raise InvalidRequest(f"Input file name refused: {exc}.") from None


def limit() -> int:
    return int(settings.SCHEDULER_MAX_INPUT_BYTES)


def _copy(source: IO[bytes], target: Path, *, name: str, room: int) -> tuple[int, str]:
    """Copy into ``target`` through a hidden temporary name; (size, sha256)."""
    tmp = target.with_name(f".{uuid.uuid4().hex}.part")
    digest = hashlib.sha256()
    size = 0
    try:
        with open(tmp, "wb") as out:
            while True:
                chunk = source.read(1024 * 1024)
                if not chunk:
                    break
                size += len(chunk)
                if size > room:
                    raise InvalidRequest(
                        f"Input file {name!r} is over the limit of {limit():,} bytes for a "
                        "run's input files (SCHEDULER_MAX_INPUT_BYTES)."
                    )
                digest.update(chunk)
                out.write(chunk)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return size, digest.hexdigest()


def attach(*, run: Run, inputs: list, user=None) -> list[RunInput]:
    """Store ``inputs`` for ``run`` (just created); all or none. A FromOutput
    must be an output file of a run ``user`` may see (scheduler.access)."""
    from scheduler import access

    if len(inputs) > MAX_INPUTS:
        raise InvalidRequest(f"At most {MAX_INPUTS} input files a run, got {len(inputs)}.")
    folder = Path(settings.SCHEDULER_FILE_ROOT) / str(run.pk) / INPUT_DIR
    rows: list[RunInput] = []
    names: set[str] = set()
    room = limit()
    made_folder = False
    try:
        for item in inputs:
            source_file_id = source_run_id = None
            if isinstance(item, FromOutput):
                files = OutputFile.objects.filter(kind=OutputFile.Kind.OUTPUT)
                if user is not None:
                    files = access.visible_files(user, files)
                try:
                    output = files.select_related("run").get(pk=int(item.file_id))
                except (OutputFile.DoesNotExist, ValueError, TypeError):
                    raise InvalidRequest(
                        f"Unknown output file {item.label or item.file_id!r} (or one you "
                        "may not see)."
                    ) from None
                name = item.name or output.name
                source_file_id, source_run_id = output.pk, output.run_id
                try:
                    stream = open(output.absolute_path(), "rb")  # noqa: SIM115
                except OSError:
                    raise InvalidRequest(
                        f"Output file {output.name!r} of run {output.run_id} is no longer stored."
                    ) from None
            elif isinstance(item, Upload):
                name = item.name
                stream = item.file
                if item.size is not None and item.size > room:
                    raise InvalidRequest(
                        f"Input file {name!r} ({item.size:,} bytes) is over the limit of "
                        f"{limit():,} bytes for a run's input files (SCHEDULER_MAX_INPUT_BYTES)."
                    )
            else:
                raise InvalidRequest(f"Not an input file: {item!r}.")
            try:
                check_name(name)
                if name in names:
                    raise InvalidRequest(f"Two input files are named {name!r}.")
                names.add(name)
                if not made_folder:
                    folder.mkdir(parents=True, exist_ok=True, mode=0o750)
                    made_folder = True
                size, sha256 = _copy(stream, folder / name, name=name, room=room)
            finally:
                if isinstance(item, FromOutput):
                    stream.close()
            room -= size
            rows.append(
                RunInput(
                    run=run,
                    name=name,
                    size=size,
                    sha256=sha256,
                    stored_path=f"{run.pk}/{INPUT_DIR}/{name}",
                    source_file_id=source_file_id,
                    source_run_id=source_run_id,
                )
            )
        RunInput.objects.bulk_create(rows)
    except BaseException:
        if made_folder:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return rows


def copy_to(*, source: Run, target: Run) -> None:
    """A retry gets the inputs of the run it retries (copies, same names)."""
    rows = list(RunInput.objects.filter(run=source))
    if not rows:
        return
    folder = Path(settings.SCHEDULER_FILE_ROOT) / str(target.pk) / INPUT_DIR
    folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    copies = []
    for row in rows:
        try:
            with open(row.absolute_path(), "rb") as stream:
                size, sha256 = _copy(stream, folder / row.name, name=row.name, room=1 << 62)
        except OSError:
            continue  # removed from the store meanwhile; the retry's page lists what it got
        copies.append(
            RunInput(
                run=target,
                name=row.name,
                size=size,
                sha256=sha256,
                stored_path=f"{target.pk}/{INPUT_DIR}/{row.name}",
                source_file_id=row.source_file_id,
                source_run_id=row.source_run_id,
            )
        )
    RunInput.objects.bulk_create(copies)


def staged_files(run: Run) -> list[tuple[str, Path]]:
    """(path in the run directory, stored copy) of each input file."""
    return [(f"{INPUT_DIR}/{row.name}", row.absolute_path()) for row in run.inputs.all()]
