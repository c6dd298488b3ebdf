"""Bring a run's registered outputs, stdout and stderr home into the file store.

Files land in ``SCHEDULER_FILE_ROOT/<run id>/<kind>/<name>`` (over an earlier
copy, through a temporary name and a rename), with size, SHA-256 and content
type recorded. Nothing a task does can make the poller copy a file from
outside its run directory: names are checked, links are never followed (also
not in a parent folder), and per-file and per-run size limits apply. Every
refusal is a message for the operator, never an exception that stops the
poller.

Two layers:

- ``collect_files`` does the copying and knows nothing of the database. It reads
  the run directory through a *source*, an object with the methods of
  ``RunDirSource``: ``poller.rundir.LocalRunDirs`` (plain ``os`` calls with
  ``O_NOFOLLOW``, for ``fork://localhost``) and ``poller.saga_executor.RemoteRunDirs``
  (the SAGA shell, for ssh and batch resources) are the two implementations.
  It returns one ``FileResult`` per file, each either a record to store or a
  message saying why not.
- ``bring_files_home`` is the poller's entry point: it applies the results to
  OutputFile rows (one row per run, kind and name: calling it again updates,
  never duplicates) and warning messages on the run.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import unicodedata
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from poller.events import MAX_LINE_BYTES, outputs_in, read_new_events
from poller.rundir import (
    EVENTS_FILE,
    STDERR_FILE,
    STDOUT_FILE,
    OpenedFile,
    RefusedFile,
    refusal_text,
)

MAX_NAME_LENGTH = 200

KIND_OUTPUT, KIND_STDOUT, KIND_STDERR = "output", "stdout", "stderr"


class RunDirSource(Protocol):
    """What files_home needs from a run directory, local or remote (poller.rundir.RunDirs)."""

    def read_from(self, run_dir: str, name: str, offset: int, limit: int = ...) -> bytes:
        """Bytes of ``name`` from ``offset`` on (at most ``limit``); b"" at the end or if absent."""

    def open_regular(self, run_dir: str, relpath: str) -> OpenedFile:
        """The file, opened once after its checks: FileNotFoundError if absent;
        RefusedFile for a link anywhere on the path, a hard link, another owner,
        or anything but a regular file. Its bytes are read from what was opened."""

    def list_files(self, run_dir: str, *, depth: int, limit: int) -> list[str]:
        """Relative paths (a/b.csv) of regular files at most ``depth`` steps
        down, links neither listed nor followed, at most ``limit`` of them."""


# Characters a stored name may not hold: controls (newline, CR, tab, ESC ...),
# and the bidirectional overrides and isolates that make "txt.exe" read as
# "exe.txt" (U+202E) on a page or in a terminal.
BIDI_CONTROLS = set("\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _bad_character(name: str) -> str | None:
    for char in name:
        if char in BIDI_CONTROLS:
            return f"the bidirectional control U+{ord(char):04X}"
        category = unicodedata.category(char)
        if category in ("Cc", "Cs", "Zl", "Zp"):
            return f"the control character U+{ord(char):04X}"
    return None


def check_name(name: str) -> None:
    """Raise RefusedFile, with the reason, for a name that cannot be a stored file name."""
    if not name:
        raise RefusedFile("an empty file name")
    shown = ascii(name[:80]) + ("…" if len(name) > 80 else "")
    if "/" in name or "\\" in name:
        raise RefusedFile(f"{shown}: a name may not contain '/'")
    if ".." in name:
        raise RefusedFile(f"{shown}: a name may not contain '..'")
    if "\x00" in name:
        raise RefusedFile(f"{shown}: a name may not contain NUL")
    bad = _bad_character(name)
    if bad:
        raise RefusedFile(f"{shown}: a name may not contain {bad}")
    if name.startswith("."):
        raise RefusedFile(f"{shown}: a name may not start with a dot")
    if len(name) > MAX_NAME_LENGTH:
        raise RefusedFile(f"{shown}: names are limited to {MAX_NAME_LENGTH} characters")


@dataclass
class Wanted:
    name: str
    path: str  # relative to the run directory
    kind: str


@dataclass
class FileResult:
    """One file brought home (``ok``), or the message why it was not."""

    name: str
    kind: str
    size: int = 0
    sha256: str = ""
    content_type: str = ""
    stored_path: str = ""  # relative to the store root
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.message is None

    def record_fields(self) -> dict:
        return {
            "size": self.size,
            "sha256": self.sha256,
            "content_type": self.content_type,
            "stored_path": self.stored_path,
        }


def registered(
    source: RunDirSource, run_dir: str, *, max_files: int = 0
) -> tuple[list[tuple[str, str]], int, str]:
    """The outputs the task registered, name -> path in order of registration,
    the first ``max_files`` names when that is not 0; how many registrations
    of other names were over that limit, and the first of those names.

    The event stream is the task's and may be any size: it is read a bounded
    piece at a time (at most the longest line there may be), never whole."""
    outputs: dict[str, str] = {}
    over, first_over = 0, ""
    offset = 0
    while True:
        piece = source.read_from(run_dir, EVENTS_FILE, offset, MAX_LINE_BYTES)
        if not piece:
            break
        events, _, new_offset = read_new_events(piece, offset, max_chars=200)
        for name, path in outputs_in(events):
            if name in outputs or not max_files or len(outputs) < max_files:
                outputs[name] = path
            else:
                over += 1
                first_over = first_over or name
        if new_offset == offset:
            break  # an unfinished last line: the task is still writing it
        offset = new_offset
    return list(outputs.items()), over, first_over


# Never brought home by a pattern: the scheduler's own files of the run directory.
RESERVED = {
    "run.json",
    "events.jsonl",
    "exit.json",
    "launched",
    "cancelled",
    "scheduler_client.py",
    STDOUT_FILE,
    STDERR_FILE,
}


def pattern_name(relpath: str) -> str:
    """The stored name of a file found by a pattern: its path, with each '/'
    written as '__' (results/a.csv -> results__a.csv), since stored names are flat."""
    return relpath.replace("/", "__")


def by_patterns(
    source: RunDirSource,
    run_dir: str,
    patterns: list[str],
    *,
    program: str = "",
    taken: set[str],
    limit: int,
) -> list[Wanted]:
    """The files of the run directory that match the definition's output patterns
    (scheduler.needs.pattern_matches) and are not registered under that name
    already, nor the scheduler's own files or the program."""
    from scheduler.needs import pattern_matches

    if not patterns or limit <= 0:
        return []
    depth = max(p.count("/") for p in patterns) + 1
    found = []
    for relpath in source.list_files(run_dir, depth=depth, limit=limit * 4 + 100):
        if relpath in RESERVED or relpath == program or relpath.startswith("inputs/"):
            continue
        if not pattern_matches(patterns, relpath):
            continue
        name = pattern_name(relpath)
        if name in taken:
            continue
        taken.add(name)
        found.append(Wanted(name, relpath, KIND_OUTPUT))
        if len(found) >= limit:
            break
    return found


def wanted_files(
    source: RunDirSource,
    run_dir: str,
    *,
    max_files: int = 0,
    patterns: list[str] | None = None,
    program: str = "",
) -> tuple[list[Wanted], list[FileResult]]:
    """The files to bring home (stdout, stderr, and the registered outputs, the
    first ``max_files`` of them when that is not 0; then the files matching the
    definition's ``patterns``, up to the same limit) and the refused names."""
    wanted = [
        Wanted(STDOUT_FILE, STDOUT_FILE, KIND_STDOUT),
        Wanted(STDERR_FILE, STDERR_FILE, KIND_STDERR),
    ]
    refused: list[FileResult] = []
    try:
        outputs, over, first_over = registered(source, run_dir, max_files=max_files)
    except RefusedFile as exc:
        return wanted, [
            FileResult(EVENTS_FILE, KIND_OUTPUT, message=refusal_text(EVENTS_FILE, exc))
        ]
    if over:
        refused.append(
            FileResult(
                "",
                KIND_OUTPUT,
                message=f"{over:,} output files refused: a run brings home at most "
                f"{max_files:,} (SCHEDULER_MAX_FILES), the first registered; "
                f"the first refused was {ascii(first_over[:80])}.",
            )
        )
    for name, path in outputs:
        try:
            check_name(name)
        except RefusedFile as exc:
            refused.append(FileResult(name, KIND_OUTPUT, message=f"Output file refused: {exc}."))
            continue
        wanted.append(Wanted(name, path, KIND_OUTPUT))
    if patterns:
        outputs_now = [w for w in wanted if w.kind == KIND_OUTPUT]
        room = (max_files or 10**9) - len(outputs_now)
        try:
            wanted += by_patterns(
                source,
                run_dir,
                patterns,
                program=program,
                taken={w.name for w in outputs_now},
                limit=room,
            )
        except RefusedFile as exc:
            refused.append(
                FileResult("", KIND_OUTPUT, message=f"Output patterns not applied: {exc}.")
            )
    return wanted, refused


def content_type_for(name: str, kind: str) -> str:
    guessed = mimetypes.guess_type(name)[0]
    if guessed:
        return guessed
    return "text/plain" if kind in (KIND_STDOUT, KIND_STDERR) else "application/octet-stream"


def copy_one(
    source: RunDirSource,
    run_dir: str,
    item: Wanted,
    *,
    store_root: Path,
    folder: Path,
    max_file: int,
    max_run: int,
    room: int,
    made: set[Path] | None = None,
) -> FileResult:
    """Copy one file into ``folder`` through a temporary name; never raises for the task's doing.

    ``room`` is what is left of the per-run limit ``max_run``; ``made``: the
    folders made (or found) so far in this pass.
    """
    label = f"Output file {item.name!r}"
    try:
        opened = source.open_regular(run_dir, item.path)
    except FileNotFoundError:
        return FileResult(item.name, item.kind, message=f"{label} was registered but is not there.")
    except RefusedFile as exc:
        return FileResult(item.name, item.kind, message=f"{label} refused: {exc}.")
    with opened:
        size = opened.size
        if size > max_file:
            return FileResult(
                item.name,
                item.kind,
                size=size,
                message=f"{label} is {size} bytes, over the per-file limit of {max_file} bytes "
                "(SCHEDULER_MAX_FILE_BYTES); not brought home.",
            )
        if size > room:
            return FileResult(
                item.name,
                item.kind,
                size=size,
                message=f"{label} ({size} bytes) would pass the per-run limit of {max_run} bytes "
                "(SCHEDULER_MAX_RUN_BYTES); not brought home.",
            )
        _make_folder(folder, made if made is not None else set())
        target = folder / item.name
        limit = min(max_file, room)
        digest = hashlib.sha256()
        copied = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            # A name nothing holds yet is written in place: no row names the
            # file before this copy is recorded, so a half copy is never served
            # (a crash leaves one without a row; the next copy replaces it).
            # A name that is there (an earlier copy of this run, whose row may
            # be served now) is replaced through a temporary name and a rename;
            # a leading dot is never a valid stored name. This saved a rename
            # a file on the busy path (bench/dispatch.py).
            tmp, fd = target, os.open(target, flags, 0o666)
        except FileExistsError:
            tmp = folder / f".{item.name[:50]}.{uuid.uuid4().hex}.part"
            fd = os.open(tmp, flags, 0o666)
        try:
            with open(fd, "wb") as out:
                # From the descriptor that was checked, never by its path again.
                for chunk in opened.chunks(limit + 1):
                    copied += len(chunk)
                    if copied > limit:
                        which = "per-file" if limit == max_file else "per-run"
                        raise RefusedFile(f"it grew past the {which} limit while it was copied")
                    digest.update(chunk)
                    out.write(chunk)
            if tmp != target:
                os.replace(tmp, target)
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            return FileResult(
                item.name, item.kind, message=f"{label} vanished before it could be copied."
            )
        except RefusedFile as exc:
            tmp.unlink(missing_ok=True)
            return FileResult(item.name, item.kind, message=f"{label} refused: {exc}.")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return FileResult(
        item.name,
        item.kind,
        size=copied,
        sha256=digest.hexdigest(),
        content_type=content_type_for(item.name, item.kind),
        stored_path=str(target.relative_to(store_root)),
    )


def _make_folder(folder: Path, made: set[Path]) -> None:
    """``folder`` and its parents, once a pass (three folders a run; pathlib's
    mkdir(parents=True) took a tenth of a busy poller's tick)."""
    if folder in made:
        return
    try:
        os.mkdir(folder, 0o750)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(folder, 0o750, exist_ok=True)
    made.add(folder)


def collect_files(
    source: RunDirSource,
    run_dir: str,
    *,
    store_root: Path,
    run_key: str,
    max_file: int,
    max_run: int,
    max_files: int = 0,
    patterns: list[str] | None = None,
    program: str = "",
) -> list[FileResult]:
    """Bring every wanted file of ``run_dir`` into ``store_root/run_key/<kind>/``.

    Returns a result for each file: a record to store, or a message. Calling it
    again copies the files again over the same names (the per-run limit counts
    one pass, so a repeated sync does not use it up).
    """
    wanted, results = wanted_files(
        source, run_dir, max_files=max_files, patterns=patterns, program=program
    )
    store_root = Path(store_root)
    total = 0
    made: set[Path] = set()
    if wanted:
        # The run's folder first: each kind's folder is then one mkdir.
        _make_folder(store_root / run_key, made)
    for item in wanted:
        result = copy_one(
            source,
            run_dir,
            item,
            store_root=store_root,
            folder=store_root / run_key / item.kind,
            max_file=max_file,
            max_run=max_run,
            room=max_run - total,
            made=made,
        )
        if result.ok:
            total += result.size
        elif item.kind != KIND_OUTPUT and result.message.endswith("is not there."):
            continue  # a program that printed nothing may leave no stdout/stderr file
        results.append(result)
    return results


def bring_files_home(run, rundir) -> list:
    """Copy the run's files into the store and record them (OutputFile rows, warnings).

    Safe to call again (a sync event, then the end): rows are updated, never
    duplicated, and a warning already on the run is not repeated.
    """
    from scheduler import services

    if not run.run_directory:
        return []
    return services.run_record_files(run=run, results=copy_files_home(run, rundir))


def copy_files_home(run, rundir) -> list[FileResult]:
    """The copying half of bring_files_home, without the database: the results
    to record (services.runs_record_files records a pass's runs together)."""
    from django.conf import settings

    if not run.run_directory:
        return []
    return collect_files(
        rundir,
        run.run_directory,
        store_root=Path(settings.SCHEDULER_FILE_ROOT),
        run_key=str(run.pk),
        max_file=settings.SCHEDULER_MAX_FILE_BYTES,
        max_run=settings.SCHEDULER_MAX_RUN_BYTES,
        max_files=settings.SCHEDULER_MAX_FILES,
        patterns=(run.needs or {}).get("output_patterns", run.definition.output_patterns) or None,
        program=os.path.basename(run.definition.program),
    )
