"""Run directories on a resource: make them, stage files, read what the task wrote.

The local kind uses plain file calls (the fast path for fork://localhost); the
remote kind goes through the SAGA filesystem (poller.saga_executor.RemoteFiles).
Both answer the same small set of questions, so the loop does not care where a
run lives.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from scheduler.models import ExecutionResource


class RefusedFile(Exception):
    """A file that is not brought home; the message says why, for the operator."""


def split_relative(relpath: str) -> list[str]:
    parts = relpath.replace("\\", "/").split("/")
    if relpath.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise RefusedFile(f"the path {relpath[:100]!r} leaves the run directory")
    return parts


class LocalRunDirs:
    def __init__(self, resource: ExecutionResource) -> None:
        # Absolute: a run's directory is handed to processes with other working
        # directories (the bundle of several runs, scheduler_client.bundle).
        self.root = Path(resource.working_root or settings.SCHEDULER_RUN_ROOT).expanduser().absolute()

    def run_dir(self, run_id: int) -> str:
        return str(self.root / f"run-{run_id}")

    def stage(self, run_dir: str, files: dict[str, bytes]) -> None:
        path = Path(run_dir)
        (path / "outputs").mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            tmp = path / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, path / name)

    def _path(self, run_dir: str, name: str) -> Path:
        return Path(run_dir) / name

    def exists(self, run_dir: str, name: str) -> bool:
        return os.path.lexists(self._path(run_dir, name))

    def read_from(self, run_dir: str, name: str, offset: int) -> bytes:
        try:
            with open(self._path(run_dir, name), "rb") as fh:
                if os.fstat(fh.fileno()).st_size <= offset:
                    return b""
                fh.seek(offset)
                return fh.read(4 * 1024 * 1024)
        except FileNotFoundError:
            return b""

    def read_tail(self, run_dir: str, name: str, nbytes: int) -> bytes:
        try:
            with open(self._path(run_dir, name), "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                fh.seek(max(0, size - nbytes))
                return fh.read()
        except FileNotFoundError:
            return b""

    def _open_no_links(self, run_dir: str, relpath: str) -> int:
        """Open a file below run_dir without following a link anywhere on the way."""
        parts = split_relative(relpath)
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in parts[:-1]:
                child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = child
            file_fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                raise RefusedFile("it is a symbolic link; links are never followed") from None
            if exc.errno == errno.ENOENT:
                raise FileNotFoundError(relpath) from None
            raise
        finally:
            os.close(fd)
        if not stat.S_ISREG(os.fstat(file_fd).st_mode):
            os.close(file_fd)
            raise RefusedFile("it is not a regular file")
        return file_fd

    def regular_file_size(self, run_dir: str, relpath: str) -> int:
        fd = self._open_no_links(run_dir, relpath)
        try:
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def read_chunks(self, run_dir: str, relpath: str, limit: int) -> Iterator[bytes]:
        fd = self._open_no_links(run_dir, relpath)
        with os.fdopen(fd, "rb") as fh:
            read = 0
            while read < limit:
                chunk = fh.read(min(1024 * 1024, limit - read))
                if not chunk:
                    return
                read += len(chunk)
                yield chunk

    def end_launcher(self, run_dir: str, *, grace: float = 5.0) -> bool:
        """End a local run's launcher, and through it the program: SIGTERM (the
        launcher hands it on and writes its exit record), SIGKILL to whatever is
        left after ``grace`` seconds. True if a launcher was found.

        A local job is a bundle of several runs (scheduler_client.bundle), each
        run's launcher in a process group of its own, so a local cancel ends the
        launcher here, never the job. The ``cancelled`` mark goes first: a
        launcher that has not claimed the directory yet starts nothing (see
        scheduler_client.launch). The process is found by _launcher, so a reused
        pid is never signalled."""
        import psutil

        path = Path(run_dir)
        try:
            (path / "cancelled").touch()
        except OSError:
            pass  # the directory is gone: nothing will start there
        launcher = self._launcher(run_dir)
        if launcher is None:
            return False
        try:
            children = _descendants(launcher)
            launcher.terminate()
        except psutil.Error:
            return False
        _, alive = psutil.wait_procs([launcher], timeout=grace)
        if alive:
            children += _descendants(launcher)
        for proc in [*alive, *children]:
            try:
                proc.kill()  # psutil checks the process is still the one it knew
            except psutil.Error:
                pass
        return True

    def _launched(self, run_dir: str) -> dict | None:
        """The ``launched`` record of a launcher on this host, with its pid."""
        import socket

        record = self.read_json(run_dir, "launched")
        if not record or not isinstance(record.get("pid"), int):
            return None
        if record.get("host") not in (None, socket.gethostname()):
            return None
        return record

    def _launcher(self, run_dir: str):
        """The run's launcher process (the pid in ``launched``), or None if it is
        not running. Checked by its command line, environment and start time, so
        a reused pid is never taken for it."""
        import psutil

        record = self._launched(run_dir)
        if record is None:
            return None
        try:
            proc = psutil.Process(record["pid"])
            if proc.status() != psutil.STATUS_ZOMBIE and _is_launcher_of(
                proc, run_dir, record.get("started_at")
            ):
                return proc
        except psutil.Error:
            pass
        return None

    def launcher_alive(self, run_dir: str) -> bool:
        return self._launcher(run_dir) is not None

    def launcher_gone(self, run_dir: str) -> bool:
        """The cheap check of every tick: the launcher's pid is gone and it left
        no exit record (killed). A reused pid only delays this until SAGA's
        periodic check."""
        record = self._launched(run_dir)
        if record is None:
            return False
        try:
            os.kill(record["pid"], 0)
        except ProcessLookupError:
            return not self.exists(run_dir, "exit.json")
        except PermissionError:
            return False
        return False

    def read_json(self, run_dir: str, name: str) -> dict | None:
        data = self.read_from(run_dir, name, 0)
        if not data:
            return None
        try:
            value = json.loads(data)
        except ValueError:
            return None  # half written: the writer renames into place, so only on odd filesystems
        return value if isinstance(value, dict) else None


def _is_launcher_of(proc, run_dir: str, started_at: str | None = None) -> bool:
    """Whether ``proc`` is the launcher of the run in ``run_dir``: started as
    ``scheduler_client.py run`` with the run's SCHEDULER_RUN_DIR, or forked by
    ``scheduler_client.py bundle`` that names the run directory; and not created
    after the launcher wrote ``started_at`` (a reused pid is younger)."""
    import psutil

    try:
        cmdline = proc.cmdline()
        if not any(part.endswith("scheduler_client.py") for part in cmdline):
            return False
        if started_at:
            from django.utils.dateparse import parse_datetime

            when = parse_datetime(started_at)
            if when is not None and proc.create_time() > when.timestamp() + 1.0:
                return False
        if "bundle" in cmdline and run_dir in cmdline:
            return True
        return proc.environ().get("SCHEDULER_RUN_DIR") == run_dir
    except (psutil.Error, ValueError):
        return False


def _descendants(proc) -> list:
    """The processes below ``proc``, through /proc/PID/task/TID/children.

    psutil's children() reads the stat file of every process on the machine
    to find them: with 400 runs in flight, that was 87 % of the cancels'
    samples in py-spy."""
    import psutil

    if not os.path.exists(f"/proc/{proc.pid}/task/{proc.pid}/children"):
        try:  # not Linux, a kernel without CONFIG_PROC_CHILDREN, or proc is gone
            return proc.children(recursive=True)
        except psutil.Error:
            return []
    found: list = []
    todo = [proc.pid]
    while todo:
        pid = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # it ended meanwhile
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    pids = [int(child) for child in fh.read().split()]
            except OSError:
                continue
            for child in pids:
                with contextlib.suppress(psutil.Error):
                    found.append(psutil.Process(child))
                    todo.append(child)
    return found


def for_resource(resource: ExecutionResource):
    if resource.on_this_host():
        return LocalRunDirs(resource)
    from poller.saga_executor import RemoteRunDirs

    return RemoteRunDirs.for_resource(resource)
