"""The one module that talks to radical.saga: job services, submit, state, cancel,
and run directories on remote resources.

Measured facts this is built on (shared/DESIGN.md): creating a job service costs
1.3-2.2 s, one submit or state query 0.1-0.2 s, services in parallel scale
almost linearly. So a resource gets a pool of long-lived services used from
several threads, each service by one thread at a time. The shell adaptor does
not quote arguments: every argument is shlex-quoted here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import shlex
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from poller.rundir import OpenedFile, RefusedFile, RunDirs, split_relative
from poller.saga_workarounds import (  # noqa: F401 - also read from here
    _batch_monitors_not_started,
    _bound_monitor_events,
    _BoundedEvents,
    _idle_reads_less_often,
    _memoise_apitype,
    _shells_keep_no_descriptors,
    _ssh_masters_per_port,
    local_job_base,
    purge_dead_ssh_masters,
    tidy_local_job_state,
)
from scheduler.models import ExecutionResource

logger = logging.getLogger(__name__)

_env_lock = threading.Lock()
SAFE_BATCH_PATH = re.compile(r"^[A-Za-z0-9_./~+-]+$")


class ExecutorError(Exception):
    """SAGA could not do what was asked; the message names the resource."""


@dataclass
class JobSpec:
    run_id: int
    executable: str
    arguments: list[str]
    working_directory: str
    environment: dict[str, str] = field(default_factory=dict)
    output: str = "stdout.txt"
    error: str = "stderr.txt"
    queue: str = ""
    project: str = ""
    wall_time_minutes: int | None = None
    cores: int = 1
    processes_per_host: int | None = None
    memory_mb: int | None = None
    gpus: int = 0
    mpi: bool = False


LOCAL_SHELL = str(Path(__file__).with_name("local_shell.sh"))


def radical_saga():
    # radical.saga runs local shells as "$SHELL -i", and an interactive bash reads
    # ~/.bashrc: a slow or stuck line there (pyenv's rehash waiting on a lock left
    # by a killed shell, seen here) makes every fork:// service fail with "Could
    # not detect shell prompt". A plain POSIX sh reads no rc file, and ours runs
    # without a controlling terminal (local_shell.sh says why).
    os.environ["SHELL"] = os.environ.get("SCHEDULER_LOCAL_SHELL", LOCAL_SHELL)
    import radical.saga as rs

    _shells_keep_no_descriptors()
    _ssh_masters_per_port()
    _idle_reads_less_often()
    _batch_monitors_not_started()
    return rs


def _session(resource: ExecutionResource):
    rs = radical_saga()
    session = rs.Session(default=False)
    if resource.ssh_user or resource.ssh_key_path:
        ctx = rs.Context("ssh")
        if resource.ssh_user:
            ctx.user_id = resource.ssh_user
        if resource.ssh_key_path:
            ctx.user_key = resource.ssh_key_path
        session.add_context(ctx)
    return session


@contextlib.contextmanager
def radical_base(resource: ExecutionResource) -> Iterator[None]:
    """Local job state lives under the site's SCHEDULER_SAGA_BASE; remote shells
    keep theirs under the remote $HOME, not our local path."""
    from django.conf import settings

    base = str(settings.SCHEDULER_SAGA_BASE) if resource.on_this_host() else "$HOME"
    with _env_lock:
        old = os.environ.get("RADICAL_BASE")
        os.environ["RADICAL_BASE"] = base
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("RADICAL_BASE", None)
            else:
                os.environ["RADICAL_BASE"] = old


def _service_url(resource: ExecutionResource) -> str:
    return resource.job_service_url


def _error(resource: ExecutionResource, what: str, exc: Exception) -> ExecutorError:
    text = str(exc).strip().splitlines()
    short = text[0] if text else type(exc).__name__
    return ExecutorError(
        f"{what} on resource {resource.name!r} ({resource.job_service_url}): {short}"
    )


def _batch_shape(jd, spec: JobSpec) -> None:
    """Cores, processes, memory and GPUs in the terms radical.saga's batch
    adaptors read them (measured on its Slurm adaptor, slurm_job.py):

    - A plain run is one process with ``cores`` CPUs: number_of_processes 1,
      processes_per_host 1, total_cpu_count cores, which it writes as
      ``--ntasks=1 --cpus-per-task=cores``.
    - An MPI run is one task per core (``--ntasks=cores``), processes per
      host, when given, sets ``--ntasks-per-node``; the launcher starts the
      program's ranks under the MPI starter (srun, mpirun).
    - It divides total_physical_memory by the number of nodes it works out as
      ceil(total_cpu_count / processes_per_host), and writes that as
      ``--mem`` (per node). The run's memory is meant per node, so it is
      multiplied by that number first.
    - GPUs go as total_gpu_count (``--gpus=N``)."""
    import math

    cores = max(1, int(spec.cores or 1))
    jd.total_cpu_count = cores
    if spec.mpi:
        # A task a core (--ntasks=cores --ntasks-per-node=ppn), but not SAGA's
        # spmd_variation: that puts "mpirun -n N" before our launcher, and N
        # launchers would race for one run. The launcher starts the program
        # under the resource's MPI starter instead (run.json "mpi_starter").
        jd.number_of_processes = cores
        ppn = spec.processes_per_host or cores
    else:
        jd.number_of_processes = 1
        ppn = 1
    jd.processes_per_host = ppn
    if spec.memory_mb:
        jd.total_physical_memory = int(spec.memory_mb) * math.ceil(cores / ppn)
    if spec.gpus:
        jd.total_gpu_count = int(spec.gpus)


class JobServicePool:
    """Several reusable SAGA job services for one resource, one thread each at a time."""

    def __init__(self, resource: ExecutionResource, *, size: int = 4) -> None:
        self.resource = resource
        self.size = max(1, size)
        self._free: queue.Queue = queue.Queue()
        self._created = 0
        self._lock = threading.Lock()
        self._all: list[Any] = []
        self._shells: dict[int, list[int]] = {}  # id(service) -> its shells' process groups

    def _new_service(self):
        rs = radical_saga()
        try:
            with radical_base(self.resource):
                service = rs.job.Service(
                    _service_url(self.resource), session=_session(self.resource)
                )
        except Exception as exc:  # noqa: BLE001
            purge_dead_ssh_masters()  # the next attempt connects afresh
            raise _error(self.resource, "Could not open the job service", exc) from None
        _bound_monitor_events(service)
        from poller import saga_shells

        shells = saga_shells.service_shells(service)
        with self._lock:
            self._all.append(service)
            self._shells[id(service)] = shells
        return service

    def _end_shells_of(self, services: list, threads: list[threading.Thread], timeout: float):
        """After ``threads`` closed ``services`` (or ``timeout``), end their
        shells' process groups: radical.saga's close kills only the ``setsid``
        before each shell, and the shell, its wrapper, tail and monitors lived on
        (poller.saga_shells)."""
        from poller import saga_shells

        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        from django.conf import settings

        with self._lock:
            pgids = [pgid for svc in services for pgid in self._shells.pop(id(svc), [])]
        if not pgids:
            return 0
        return saga_shells.end_groups(pgids, str(settings.SCHEDULER_SAGA_BASE))

    def _close_in_background(self, svc) -> None:
        """Close one dropped service and end its shells, never in the caller's thread."""
        thread = close_quietly(svc.close)
        threading.Thread(
            target=self._end_shells_of,
            args=([svc], [thread], 10.0),
            name="saga-shells",
            daemon=True,
        ).start()

    def forget(self, job_id: str) -> None:
        """Drop an ended job from the services' memory. radical.saga keeps every
        job a service ran one at a time (its ``jobs``) for the service's life: a
        long-lived poller would hold them all."""
        with self._lock:
            services = list(self._all)
        for svc in services:
            with contextlib.suppress(Exception):
                svc._adaptor.jobs.pop(job_id, None)

    def warm_one(self) -> None:
        """Open one more job service ahead of the first runs (~1.4 s each)."""
        with self._lock:
            if self._created >= self.size:
                return
            self._created += 1
        try:
            self._free.put(self._new_service())
        except Exception:
            with self._lock:
                self._created -= 1
            raise

    @contextlib.contextmanager
    def service(self) -> Iterator[Any]:
        try:
            svc = self._free.get_nowait()
        except queue.Empty:
            with self._lock:
                may_create = self._created < self.size
                if may_create:
                    self._created += 1
            if may_create:
                try:
                    svc = self._new_service()
                except Exception:
                    with self._lock:
                        self._created -= 1
                    raise
            else:
                svc = self._free.get()
        broken = False
        try:
            yield svc
        except ExecutorError:
            raise
        except Exception:
            broken = True
            raise
        finally:
            if broken:
                # A service whose shell died is replaced by a new one next time.
                # Closing it may block on its dead connection: never in this thread.
                with self._lock:
                    self._created -= 1
                    if svc in self._all:
                        self._all.remove(svc)
                self._close_in_background(svc)
            else:
                self._free.put(svc)

    def discard_idle(self) -> int:
        """Close the services no thread holds, for new ones on next use: after
        the resource could not be reached, a service whose connection died may
        not raise but wait for ever on its next command (radical.saga's shell
        reads for a prompt without a time limit). Closing happens in the
        background. Answers how many were discarded."""
        discarded = 0
        while True:
            try:
                svc = self._free.get_nowait()
            except queue.Empty:
                return discarded
            with self._lock:
                self._created -= 1
                if svc in self._all:
                    self._all.remove(svc)
            self._close_in_background(svc)
            discarded += 1

    def _description(self, spec: JobSpec):
        rs = radical_saga()
        jd = rs.job.Description()
        jd.executable = shlex.quote(spec.executable)
        jd.arguments = [shlex.quote(str(a)) for a in spec.arguments]
        jd.environment = {k: str(v) for k, v in spec.environment.items()}
        if self.resource.is_batch():
            # The batch adaptors write `mkdir -p DIR` and `#SBATCH -D "DIR"`: no
            # quoting fits both, so such a path is refused instead.
            if not SAFE_BATCH_PATH.match(spec.working_directory):
                raise ExecutorError(
                    f"The run directory {spec.working_directory!r} on {self.resource.name!r} "
                    "has characters a batch system cannot take; use letters, digits and "
                    "_ . / ~ + - in the working root."
                )
            jd.working_directory = spec.working_directory
        else:
            # The shell adaptor runs `mkdir -p DIR` and `cd DIR` unquoted.
            jd.working_directory = shlex.quote(spec.working_directory)
        jd.output = spec.output
        jd.error = spec.error
        jd.name = f"scheduler-run-{spec.run_id}"
        if self.resource.is_batch():
            jd.queue = spec.queue or "debug"
            _batch_shape(jd, spec)
            if spec.project:
                jd.project = spec.project
            if spec.wall_time_minutes:
                jd.wall_time_limit = int(spec.wall_time_minutes)  # minutes for batch adaptors
        return jd

    def submit(self, spec: JobSpec) -> str:
        jd = self._description(spec)
        try:
            with self.service() as svc:
                job = svc.create_job(jd)
                _memoise_apitype(job)
                job.run()
                job_id = job.id
        except ExecutorError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _error(self.resource, "Submitting failed", exc) from None
        if not job_id:
            raise ExecutorError(f"Resource {self.resource.name!r} returned no job id.")
        return job_id

    @property
    def submits_in_bulk(self) -> bool:
        """Local runs go many to one job (the loop's bundles). Batch jobs are one
        run each, and a remote shell is left as radical.saga knows it best: one
        job a run."""
        return self.resource.is_local()

    def submit_quietly(self, spec: JobSpec) -> str | ExecutorError:
        """``submit``, with the error as the answer instead of raised."""
        try:
            return self.submit(spec)
        except ExecutorError as exc:
            return exc

    def state(self, job_id: str) -> tuple[str, int | None]:
        """SAGA's state name (Pending, Running, Done, Failed, Canceled, Unknown) and exit code."""
        try:
            with self.service() as svc:
                job = svc.get_job(job_id)
                state = str(job.state)
                exit_code = None
                if state in ("Done", "Failed"):
                    with contextlib.suppress(Exception):
                        value = job.exit_code
                        exit_code = int(value) if value is not None else None
                return state, exit_code
        except ExecutorError:
            raise
        except Exception as exc:  # noqa: BLE001
            text = str(exc)
            if "does not exist" in text or "unknown" in text.lower() or "BadParameter" in text:
                return "Unknown", None
            raise _error(self.resource, "Asking for the job state failed", exc) from None

    def cancel(self, job_id: str) -> None:
        try:
            with self.service() as svc:
                job = svc.get_job(job_id)
                if str(job.state) not in ("Done", "Failed", "Canceled"):
                    job.cancel()
        except ExecutorError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _error(self.resource, "Cancelling the job failed", exc) from None

    def close(self, timeout: float = 10.0) -> None:
        """Close every service, waiting at most ``timeout`` in all: a service whose
        host went away can block in close (radical.saga holds its shell lock while
        a keep-alive PING waits on the dead connection); such a one is abandoned.
        Then their local shells end, with everything in their process groups."""
        with self._lock:
            services, self._all = self._all, []
        threads = [close_quietly(svc.close) for svc in services]
        self._end_shells_of(services, threads, timeout)


def close_quietly(close) -> threading.Thread:
    """Call ``close`` in a daemon thread (it may block on a dead connection)."""

    def run():
        with contextlib.suppress(Exception):
            close()

    thread = threading.Thread(target=run, name="saga-close", daemon=True)
    thread.start()
    return thread


class RemoteRunDirs(RunDirs):
    """Run directories on a remote resource, through SAGA's shell layer over ssh/sftp.

    One PTY shell per resource (the same machinery the SAGA shell filesystem
    adaptor uses) runs small commands: reading a file from an offset with
    ``tail -c``, testing for links with ``test -L``; files move with sftp staging.
    """

    _shells: dict[tuple, Any] = {}
    _shells_lock = threading.Lock()

    def __init__(self, resource: ExecutionResource) -> None:
        self.resource = resource
        self.root = resource.working_root or "scheduler-runs"
        self._lock = threading.Lock()

    @classmethod
    def for_resource(cls, resource: ExecutionResource) -> RemoteRunDirs:
        return cls(resource)

    def _shell_url(self) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(self.resource.effective_file_service_url())
        netloc = parts.netloc
        if self.resource.ssh_user and "@" not in netloc:
            netloc = f"{self.resource.ssh_user}@{netloc}"
        return f"ssh://{netloc}/"

    def _shell(self):
        key = (self._shell_url(), self.resource.ssh_user, self.resource.ssh_key_path)
        with self._shells_lock:
            shell = self._shells.get(key)
            if shell is not None and shell.alive(recover=True):
                return shell
            from radical.saga.utils.pty_shell import PTYShell

            try:
                with radical_base(self.resource):
                    shell = PTYShell(self._shell_url(), session=_session(self.resource))
            except Exception as exc:  # noqa: BLE001
                purge_dead_ssh_masters()  # the next attempt connects afresh
                raise _error(self.resource, "Could not open a shell", exc) from None
            self._shells[key] = shell
            return shell

    def _run(self, command: str) -> tuple[int, str]:
        shell = self._shell()
        try:
            with self._lock:
                ret, out, _ = shell.run_sync(command)
        except Exception as exc:  # noqa: BLE001
            # The connection may be gone: the next command opens a new shell.
            self._forget(shell)
            raise _error(self.resource, "A remote command failed", exc) from None
        return ret, out

    def _forget(self, shell) -> None:
        with self._shells_lock:
            for key, cached in list(self._shells.items()):
                if cached is shell:
                    del self._shells[key]
        close_quietly(shell.finalize)

    def run_dir(self, run_id: int) -> str:
        return f"{self.root.rstrip('/')}/run-{run_id}"

    def _q(self, run_dir: str, name: str = "") -> str:
        from poller.rundir import split_relative

        if name:
            split_relative(name)
        path = f"{run_dir}/{name}" if name else run_dir
        return shlex.quote(path)

    def stage(
        self,
        run_dir: str,
        files: dict[str, bytes],
        *,
        executable: frozenset[str] = frozenset(),
        copies: list[tuple[str, Path]] = (),
        shared: frozenset[str] = frozenset(),
    ) -> None:
        """As LocalRunDirs.stage, over the resource's shell: text files by the
        shell, binary ones and the input copies over sftp; then the modes.
        Each run gets copies of its own (``shared`` is not linked here)."""
        folders = [self._q(run_dir, "outputs")] + ([self._q(run_dir, "inputs")] if copies else [])
        ret, out = self._run(f"mkdir -p {' '.join(folders)}")
        if ret:
            raise ExecutorError(f"Could not make {run_dir} on {self.resource.name!r}: {out}")
        shell = self._shell()
        for name, data in files.items():
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            try:
                with self._lock:
                    if text is not None:
                        shell.write_to_remote(text, f"{run_dir}/{name}")
                    else:
                        self._put_bytes(shell, run_dir, data, name)
            except ExecutorError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise _error(self.resource, f"Staging {name} failed", exc) from None
        for relpath, stored in copies:
            try:
                with self._lock:
                    self._put_file(shell, run_dir, Path(stored), relpath)
            except ExecutorError:
                raise
            except Exception as exc:  # noqa: BLE001
                raise _error(self.resource, f"Staging {relpath} failed", exc) from None
        modes = [
            f"chmod {755 if name in executable else 644} {self._q(run_dir, name)}" for name in files
        ]
        ret, out = self._run(" && ".join(modes) or "true")
        if ret:
            raise ExecutorError(
                f"Could not set modes in {run_dir} on {self.resource.name!r}: {out}"
            )

    def _put_bytes(self, shell, run_dir: str, data: bytes, relpath: str) -> None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="scheduler-stage-") as tmp:
            local = Path(tmp, "data")
            local.write_bytes(data)
            self._put_file(shell, run_dir, local, relpath)

    def _put_file(self, shell, run_dir: str, local: Path, relpath: str) -> None:
        """Copy ``local`` to ``run_dir/relpath`` over sftp. sftp's ``mput``
        takes its names in double quotes and expands wildcards, so a name with
        a quote, a ``*`` or a ``?`` would copy something else: the copy goes
        through names of our own making (a link here, a random name there) and
        a quoted ``mv`` puts it in place."""
        import secrets
        import tempfile

        with tempfile.TemporaryDirectory(prefix="scheduler-stage-") as tmp:
            source = Path(tmp, "file")
            source.symlink_to(local.absolute())  # sftp reads through the link
            folder = relpath.rpartition("/")[0]
            remote_tmp = f"{folder + '/' if folder else ''}.stage-{secrets.token_hex(8)}"
            shell.stage_to_remote(str(source), f"{run_dir}/{remote_tmp}")
        ret, out = self._run_unlocked(
            shell, f"mv -f -- {self._q(run_dir, remote_tmp)} {self._q(run_dir, relpath)}"
        )
        if ret:
            raise ExecutorError(
                f"Could not put {relpath} in place on {self.resource.name!r}: {out.strip()[:200]}"
            )

    @staticmethod
    def _run_unlocked(shell, command: str) -> tuple[int, str]:
        ret, out, _ = shell.run_sync(command)
        return ret, out

    def list_files(self, run_dir: str, *, depth: int, limit: int) -> list[str]:
        """As LocalRunDirs.list_files, by find on the resource (-type f: no links)."""
        ret, out = self._run(
            f"cd {shlex.quote(run_dir)} && find . -mindepth 1 -maxdepth {int(depth)} -type f "
            f"| head -n {int(limit)}"
        )
        if ret:
            return []
        return [line[2:] for line in out.splitlines() if line.startswith("./")]

    def exists(self, run_dir: str, name: str) -> bool:
        ret, _ = self._run(f"test -e {self._q(run_dir, name)} -o -L {self._q(run_dir, name)}")
        return ret == 0

    def _checked(self, run_dir: str, relpath: str) -> str:
        """A shell snippet that prints one verdict line about ``relpath``: the
        checks of poller.rundir.check_stat made on the remote side (no link on
        any step of the path, a regular file, one link, owned by the SSH
        user), then ``OK SIZE``."""
        parts = split_relative(relpath)
        steps = [self._q(run_dir, "/".join(parts[:i])) for i in range(1, len(parts) + 1)]
        links = " || ".join(f"test -L {step}" for step in [shlex.quote(run_dir), *steps])
        path = steps[-1]
        return (
            f"if {links}; then echo LINK; "
            f"elif ! test -e {path}; then echo MISSING; "
            f"elif ! test -f {path}; then echo NOTREG; "
            f"else set -- $(stat -c '%h %u %s' {path}); "
            f'if test "$1" != 1; then echo "NLINK $1"; '
            f'elif test "$2" != "$(id -u)"; then echo "OWNER $2"; '
            f'else echo "OK $3"; fi; fi'
        )

    @staticmethod
    def _verdict(line: str, relpath: str) -> int:
        """The size from a verdict line of _checked; the refusal as RefusedFile."""
        word, _, rest = line.strip().partition(" ")
        if word == "OK":
            return int(rest)
        if word == "MISSING":
            raise FileNotFoundError(relpath)
        if word == "LINK":
            raise RefusedFile("it is a symbolic link; links are never followed")
        if word == "NOTREG":
            raise RefusedFile("it is not a regular file")
        if word == "NLINK":
            raise RefusedFile(f"it has {rest} hard links; a file with more than one is never read")
        if word == "OWNER":
            raise RefusedFile(f"it belongs to uid {rest}, not to the account the run runs as")
        raise RefusedFile(f"the remote check answered {line[:80]!r}")

    def _read(self, run_dir: str, name: str, *, offset: int, limit: int, tail: bool) -> bytes:
        import base64

        path = self._q(run_dir, name)
        take = (
            f"tail -c {int(limit)} {path}"
            if tail
            else (f"tail -c +{int(offset) + 1} {path} | head -c {int(limit)}")
        )
        # The verdict, then the bytes in base64, in one round trip. Checked and
        # read by path: on the remote side the check and the read are two steps
        # (docs/protocol.md says so); the local transport reads what it checked.
        ret, out = self._run(
            f'v=$({self._checked(run_dir, name)}); echo "$v"; '
            f'case "$v" in OK*) {take} | base64 ;; esac'
        )
        verdict, _, body = out.lstrip().partition("\n")
        try:
            self._verdict(verdict, name)
        except FileNotFoundError:
            return b""
        return base64.b64decode(body.strip().encode() or b"")

    def open_regular(self, run_dir: str, relpath: str) -> _RemoteFile:
        """Check the file on the remote side; its bytes come over sftp only when
        read (``chunks``), so a file over a size limit is refused by its checked
        size without being copied."""
        _, out = self._run(f"( {self._checked(run_dir, relpath)} )")  # its own `set --`
        size = self._verdict(out.strip().splitlines()[-1] if out.strip() else "", relpath)
        return _RemoteFile(self, f"{run_dir}/{relpath}", relpath, size)

    def _fetch(self, remote: str, relpath: str, local: str) -> None:
        shell = self._shell()
        try:
            with self._lock:
                shell.stage_from_remote(remote, local)
        except Exception as exc:  # noqa: BLE001
            if "No such file" in str(exc):
                raise FileNotFoundError(relpath) from None
            raise _error(self.resource, f"Copying {relpath} home failed", exc) from None
        if not os.path.exists(local):
            raise FileNotFoundError(relpath)


class _RemoteFile(OpenedFile):
    """A remote run-directory file that passed the checks of _checked, with the
    size they saw; copied here over sftp when read. The check and the copy are
    two steps on the remote side (docs/protocol.md, "The trust boundary")."""

    def __init__(self, dirs: RemoteRunDirs, remote: str, relpath: str, size: int) -> None:
        self.dirs, self.remote, self.relpath, self.size = dirs, remote, relpath, size

    def chunks(self, limit: int) -> Iterator[bytes]:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="scheduler-fetch-") as tmp:
            local = os.path.join(tmp, "file")
            self.dirs._fetch(self.remote, self.relpath, local)
            fd = os.open(local, os.O_RDONLY)
            try:
                yield from OpenedFile._chunks_of(fd, limit)
            finally:
                os.close(fd)

    def close(self) -> None:
        pass
