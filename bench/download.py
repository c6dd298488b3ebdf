"""Download a large output file through the real Django view and watch the server's memory.

    .venv/bin/python bench/download.py            # 2 GiB of real bytes
    .venv/bin/python bench/download.py --size-mb 500 --sparse

A throw-away site (own SQLite database, var dir and file store in a temporary
directory) is migrated, a superuser, a run and an output file of the given size
are made, and `manage.py runserver --noreload` serves it on 127.0.0.1. The file is
downloaded over HTTP (streamed to nowhere, 1 MiB reads) while a thread samples the
server's RSS with psutil; then `cat file > /dev/null` reads the same file. Prints
throughput of both and the server's RSS growth. Target: growth < 50 MB.

tests/test_downloads.py uses measure() with a 50 MB file as a non-timed check.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
MiB = 1024 * 1024

SETUP = """
import hashlib, sys
from pathlib import Path
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.utils import timezone
from scheduler.models import ExecutionResource, OutputFile, Run, TaskDefinition

user = User.objects.create_superuser("bench", "bench@example.org", "x" * 20)
resource, _ = ExecutionResource.objects.get_or_create(name="local")
definition = TaskDefinition.objects.create(name="Big output", program="hello.py")
now = timezone.now()
run = Run.objects.create(definition=definition, resource=resource, state="SUCCEEDED",
                         started_at=now, finished_at=now)
path = Path(settings.SCHEDULER_FILE_ROOT) / "big" / "big.bin"
f = OutputFile.objects.create(run=run, name="big.bin", size=path.stat().st_size,
                              sha256="", content_type="application/octet-stream",
                              stored_path="big/big.bin")
session = SessionStore()
session[SESSION_KEY] = str(user.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.create()
print(session.session_key, f"/scheduler/runs/{run.pk}/files/{f.pk}/download/")
"""


@dataclass
class Result:
    size: int
    seconds: float
    rss_before: int
    rss_peak: int
    rss_after: int
    sha256_ok: bool | None

    @property
    def growth(self) -> int:
        return self.rss_peak - self.rss_before

    @property
    def mb_per_s(self) -> float:
        return self.size / MiB / self.seconds


def write_file(path: Path, size: int, *, sparse: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        if sparse:
            fh.truncate(size)
            return
        block = os.urandom(8 * MiB)
        left = size
        while left > 0:
            fh.write(block[: min(len(block), left)])
            left -= len(block)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def site_env(var: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEDULER_", "SQLITE_"))}
    env.update(
        SCHEDULER_VAR_DIR=str(var),
        SECRET_KEY=secrets.token_urlsafe(50),
        DJANGO_SETTINGS_MODULE="project.settings",
        DEBUG="0",
        ALLOWED_HOSTS="127.0.0.1",
        SCHEDULER_SENDFILE="django",
        LOG_LEVEL="WARNING",
    )
    env.pop("DATABASE_URL", None)
    return env


def _rss_tree(proc: psutil.Process) -> int:
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def prepare_site(var: Path, size: int, *, sparse: bool = False, **env_extra: str):
    """Migrate a fresh site under ``var`` with one ``size``-byte output file.

    Returns (env, session cookie value, download URL path, file path).
    """
    env = site_env(var)
    env.update(env_extra)
    big = var / "files" / "big" / "big.bin"
    write_file(big, size, sparse=sparse)
    subprocess.run([PY, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    out = subprocess.run(
        [PY, "manage.py", "shell", "-c", SETUP],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return env, out[-2], out[-1], big


@contextlib.contextmanager
def serving(env: dict[str, str], *, server: str = "runserver") -> Iterator[tuple[int, int]]:
    """Run the site on a free 127.0.0.1 port; yields (port, server pid)."""
    port = free_port()
    if server == "gunicorn":
        command = [
            str(Path(PY).parent / "gunicorn"),
            "project.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
        ]
    else:
        command = [PY, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, proc)
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} did not come up on port {port}") from None
            time.sleep(0.2)


def measure(
    var: Path,
    size: int,
    *,
    sparse: bool = False,
    check_hash: bool = False,
    server: str = "runserver",
) -> Result:
    """Serve a ``size``-byte file from a fresh site under ``var``; download it; measure."""
    env, session_key, url, big = prepare_site(var, size, sparse=sparse)
    with serving(env, server=server) as (port, pid):
        proc = psutil.Process(pid)
        # A first small ranged request warms the server (imports, DB connection) so
        # the figure is the download's own growth, not start-up cost.
        _get(port, url, session_key, headers={"Range": "bytes=0-0"})
        rss_before = _rss_tree(proc)
        peak = [rss_before]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _rss_tree(proc))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        received, digest = _get(port, url, session_key, hash_it=check_hash)
        seconds = time.perf_counter() - started
        done.set()
        sampler.join()
        rss_after = _rss_tree(proc)
    if received != size:
        raise RuntimeError(f"received {received} bytes of {size}")
    sha_ok = digest == _file_sha256(big) if check_hash else None
    return Result(size, seconds, rss_before, max(peak[0], rss_after), rss_after, sha_ok)


def _get(port, url, session_key, *, headers=None, hash_it=False) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", url, headers={"Cookie": f"sessionid={session_key}", **(headers or {})})
    response = conn.getresponse()
    if response.status not in (200, 206):
        raise RuntimeError(f"GET {url}: {response.status} {response.read(500)!r}")
    h = hashlib.sha256() if hash_it else None
    received = 0
    while True:
        block = response.read(MiB)
        if not block:
            break
        received += len(block)
        if h:
            h.update(block)
    conn.close()
    return received, h.hexdigest() if h else ""


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(MiB):
            h.update(block)
    return h.hexdigest()


def cat_seconds(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(f"cat {shlex_quote(str(path))} > /dev/null", shell=True, check=True)
    return time.perf_counter() - started


def shlex_quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=2048, help="file size in MiB (2048)")
    parser.add_argument("--sparse", action="store_true", help="a sparse file (no disk writes)")
    parser.add_argument("--check-hash", action="store_true", help="SHA-256 both ends")
    parser.add_argument(
        "--server", choices=["runserver", "gunicorn"], default="runserver", help="WSGI server"
    )
    args = parser.parse_args()
    var = Path(tempfile.mkdtemp(prefix="scheduler-bench-download-"))
    try:
        size = args.size_mb * MiB
        print(f"file: {size / MiB:.0f} MiB ({'sparse' if args.sparse else 'real bytes'}) in {var}")
        result = measure(
            var, size, sparse=args.sparse, check_hash=args.check_hash, server=args.server
        )
        cat = cat_seconds(var / "files" / "big" / "big.bin")
        print(
            f"django view over HTTP ({args.server}): {result.seconds:.2f} s, "
            f"{result.mb_per_s:.0f} MiB/s"
        )
        print(f"cat file > /dev/null:              {cat:.2f} s, {size / MiB / cat:.0f} MiB/s")
        print(f"ratio view/cat throughput: {result.mb_per_s / (size / MiB / cat):.2f}")
        print(
            f"server RSS: before {result.rss_before / MiB:.1f} MiB, peak "
            f"{result.rss_peak / MiB:.1f} MiB, after {result.rss_after / MiB:.1f} MiB; "
            f"growth {result.growth / MiB:.1f} MiB (target < 50 MB): "
            f"{'OK' if result.growth < 50 * 1000 * 1000 else 'TOO MUCH'}"
        )
        if result.sha256_ok is not None:
            print(f"SHA-256 of the download matches the file: {result.sha256_ok}")
    finally:
        shutil.rmtree(var, ignore_errors=True)


if __name__ == "__main__":
    main()
