"""Run directories on a resource: make them, stage files, read what the task wrote.

The local kind uses plain file calls (the fast path for fork://localhost); the
remote kind goes through the SAGA filesystem (poller.saga_executor.RemoteFiles).
Both answer the same small set of questions, so the loop does not care where a
run lives.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from django.conf import settings

from scheduler.models import ExecutionResource


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

    def read_json(self, run_dir: str, name: str) -> dict | None:
        data = self.read_from(run_dir, name, 0)
        if not data:
            return None
        try:
            value = json.loads(data)
        except ValueError:
            return None  # half written: the writer renames into place, so only on odd filesystems
        return value if isinstance(value, dict) else None


def for_resource(resource: ExecutionResource):
    if resource.is_local():
        return LocalRunDirs(resource)
    from poller.saga_executor import RemoteRunDirs

    return RemoteRunDirs.for_resource(resource)
