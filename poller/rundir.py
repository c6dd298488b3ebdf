"""Run directories on a resource: make them, stage files, read what the task wrote.

The local kind uses plain file calls (the fast path for fork://localhost); the
remote kind goes through the SAGA filesystem (poller.saga_executor.RemoteFiles).
Both answer the same small set of questions, so the loop does not care where a
run lives.
"""

from __future__ import annotations

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
        self.root = Path(resource.working_root or settings.SCHEDULER_RUN_ROOT)

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

        radical.saga's cancel kills the job's process group, and local jobs have
        none of their own (poller/local_shell.sh), so a local cancel ends the
        launcher here. The ``cancelled`` mark goes first: a launcher that has not
        claimed the directory yet starts nothing (see scheduler_client.launch).
        The process is known by the pid in ``launched`` and checked by its command
        line and environment, so a reused pid is never signalled."""
        import socket

        import psutil

        path = Path(run_dir)
        try:
            (path / "cancelled").touch()
        except OSError:
            pass  # the directory is gone: nothing will start there
        record = self.read_json(run_dir, "launched")
        if not record or not isinstance(record.get("pid"), int):
            return False
        if record.get("host") not in (None, socket.gethostname()):
            return False
        try:
            launcher = psutil.Process(record["pid"])
            if not _is_launcher_of(launcher, run_dir):
                return False
            children = launcher.children(recursive=True)
            launcher.terminate()
        except psutil.Error:
            return False
        _, alive = psutil.wait_procs([launcher], timeout=grace)
        if alive:
            children += _children_quietly(launcher)
        for proc in [*alive, *children]:
            try:
                proc.kill()  # psutil checks the process is still the one it knew
            except psutil.Error:
                pass
        return True

    def read_json(self, run_dir: str, name: str) -> dict | None:
        data = self.read_from(run_dir, name, 0)
        if not data:
            return None
        try:
            value = json.loads(data)
        except ValueError:
            return None  # half written: the writer renames into place, so only on odd filesystems
        return value if isinstance(value, dict) else None


def _is_launcher_of(proc, run_dir: str) -> bool:
    import psutil

    try:
        return any(part.endswith("scheduler_client.py") for part in proc.cmdline()) and (
            proc.environ().get("SCHEDULER_RUN_DIR") == run_dir
        )
    except psutil.Error:
        return False


def _children_quietly(proc) -> list:
    import psutil

    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def for_resource(resource: ExecutionResource):
    if resource.on_this_host():
        return LocalRunDirs(resource)
    from poller.saga_executor import RemoteRunDirs

    return RemoteRunDirs.for_resource(resource)
