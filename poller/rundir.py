"""Run directories on a resource: make them, stage files, read what the task wrote.

The local kind uses plain file calls (the fast path for fork://localhost); the
remote kind goes through the SAGA filesystem (poller.saga_executor.RemoteFiles).
Both answer the same small set of questions, so the loop does not care where a
run lives.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from scheduler.models import ExecutionResource

# The names of the files in a run directory. The client library
# (task_programs/scheduler_client.py) writes them under the same names, and
# tests/test_security_rundirs.py checks that the two agree.
RUN_FILE = "run.json"
EVENTS_FILE = "events.jsonl"
EXIT_FILE = "exit.json"
LAUNCHED_FILE = "launched"
CANCELLED_FILE = "cancelled"
STDOUT_FILE = "stdout.txt"
STDERR_FILE = "stderr.txt"
OUTPUT_DIR = "outputs"
INPUT_DIR = "inputs"
RUN_DIR_NAMES = {
    "RUN_FILE": RUN_FILE,
    "EVENTS_FILE": EVENTS_FILE,
    "EXIT_FILE": EXIT_FILE,
    "LAUNCHED_FILE": LAUNCHED_FILE,
    "CANCELLED_FILE": CANCELLED_FILE,
    "STDOUT_FILE": STDOUT_FILE,
    "STDERR_FILE": STDERR_FILE,
    "OUTPUT_DIR": OUTPUT_DIR,
}

# Byte bounds of every read: a small record (exit.json, launched) and one
# piece of the event stream (poller.loop reads at most this much a run a tick).
RECORD_BYTES = 64 * 1024
EVENTS_READ_BYTES = 256 * 1024

# What every run of a resource gets alike (the client, a definition's program)
# is a hard link in the run directory to one read-only copy in this folder of
# the run root, named by its content: writing 45 KB of client into every run
# was 0.5 ms of a staged run's 0.8 (bench/dispatch.py's disk). A copy no run
# links to any more is removed after SHARED_KEEP_SECONDS (prune_shared).
SHARED_DIR = ".shared"
SHARED_KEEP_SECONDS = 3600


class RefusedFile(Exception):
    """A file of the run directory that is not read; the message says why, for the operator."""


def split_relative(relpath: str) -> list[str]:
    parts = relpath.replace("\\", "/").split("/")
    if relpath.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise RefusedFile(f"the path {relpath[:100]!r} leaves the run directory")
    return parts


def refusal_text(name: str, exc: RefusedFile) -> str:
    """The warning put on a run for a file of its directory that was not read."""
    return f"{name} in the run directory was not read: {exc}."


def check_stat(st: os.stat_result, expected_uid: int | None) -> None:
    """Raise RefusedFile unless ``st`` is a regular file with one link, owned by
    the run's account: a hard link (st_nlink > 1) may be another name of the
    site's secret key or of another run's file."""
    if stat.S_ISLNK(st.st_mode):
        raise RefusedFile("it is a symbolic link; links are never followed")
    if not stat.S_ISREG(st.st_mode):
        raise RefusedFile("it is not a regular file")
    if st.st_nlink != 1:
        raise RefusedFile(
            f"it has {st.st_nlink} hard links; a file with more than one is never read"
        )
    if expected_uid is not None and st.st_uid != expected_uid:
        raise RefusedFile(
            f"it belongs to uid {st.st_uid}, not to the account the run runs as (uid {expected_uid})"
        )


class OpenedFile:
    """A run-directory file opened once and checked; read only through this
    descriptor, so nothing swapped in after the check is ever read."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.size = os.fstat(fd).st_size

    def chunks(self, limit: int) -> Iterator[bytes]:
        """The bytes, at most ``limit`` of them."""
        return self._chunks_of(self.fd, limit)

    @staticmethod
    def _chunks_of(fd: int, limit: int) -> Iterator[bytes]:
        read = 0
        while read < limit:
            chunk = os.read(fd, min(1024 * 1024, limit - read))
            if not chunk:
                return
            read += len(chunk)
            yield chunk

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> OpenedFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RunDirs:
    """The one reader of run directories, for the poller and the site.

    Everything in a run directory is written by the task program and is
    untrusted: each read goes through ``_read`` of a transport (LocalRunDirs
    here, poller.saga_executor.RemoteRunDirs over the SAGA shell), which never
    follows a link, reads only a regular file with one link owned by the
    run's account, and reads at most the bytes asked for. A file that fails a
    check raises RefusedFile; a missing one reads as empty."""

    def _read(self, run_dir: str, name: str, *, offset: int, limit: int, tail: bool) -> bytes:
        raise NotImplementedError

    def holding(self):
        """Within, a run directory's reads may share what they open
        (LocalRunDirs.holding); elsewhere nothing changes."""
        return contextlib.nullcontext(self)

    def read_from(
        self, run_dir: str, name: str, offset: int, limit: int = EVENTS_READ_BYTES
    ) -> bytes:
        """At most ``limit`` bytes of ``name`` from ``offset`` on; b"" at the end or if absent."""
        return self._read(run_dir, name, offset=offset, limit=limit, tail=False)

    def read_tail(self, run_dir: str, name: str, nbytes: int) -> bytes:
        """The last ``nbytes`` bytes of ``name``; b"" if absent."""
        return self._read(run_dir, name, offset=0, limit=nbytes, tail=True)

    def read_json(self, run_dir: str, name: str) -> dict | None:
        """A small JSON record (exit.json, launched), None if absent or not a
        whole JSON object; RefusedFile as for every read."""
        data = self._read(run_dir, name, offset=0, limit=RECORD_BYTES, tail=False)
        if not data:
            return None
        try:
            value = json.loads(data)
        except ValueError:
            return None  # half written: the writer renames into place, so only on odd filesystems
        return value if isinstance(value, dict) else None


class LocalRunDirs(RunDirs):
    def __init__(self, resource: ExecutionResource) -> None:
        # Absolute: a run's directory is handed to processes with other working
        # directories (the bundle of several runs, scheduler_client.bundle).
        self.root = (
            Path(resource.working_root or settings.SCHEDULER_RUN_ROOT).expanduser().absolute()
        )
        self.run_as = getattr(resource, "run_as", "") or ""
        self._uid: int | None = None
        # Run directory -> its descriptor, while holding() (see there).
        self._held: dict[str, int] | None = None

    @contextlib.contextmanager
    def holding(self):
        """Within, each run directory is opened once, the first time a read
        needs it, and that descriptor serves the other reads: a tracking pass
        reads a run's events, its exit record and its launch record, and
        opening the root and the directory for each was two thirds of the
        opens of a busy poller. A directory swapped meanwhile is not followed
        any more than before: the one read from is the one first opened."""
        if self._held is not None:
            yield self
            return
        self._held = {}
        try:
            yield self
        finally:
            held, self._held = self._held, None
            for fd in held.values():
                os.close(fd)

    @property
    def expected_uid(self) -> int:
        """The account whose files a run directory holds: ``run_as`` or ours."""
        if self._uid is None:
            self._uid = account_ids(self.run_as)[0] if self.run_as else os.geteuid()
        return self._uid

    def run_dir(self, run_id: int) -> str:
        return str(self.root / f"run-{run_id}")

    def stage(
        self,
        run_dir: str,
        files: dict[str, bytes],
        *,
        executable: frozenset[str] = frozenset(),
        copies: list[tuple[str, Path]] = (),
        shared: frozenset[str] = frozenset(),
    ) -> None:
        """Write ``files`` (name -> bytes; those in ``executable`` mode 0755,
        the rest 0644) and ``copies`` (inputs/NAME -> a stored file) into the
        run directory. Each is made where its name is free, else under a new
        random name opened without following links and then renamed over its
        place, so nothing a program left there (a link named like an input) is
        written through. Those named in ``shared`` are hard links to the run
        root's read-only copy of their bytes (SHARED_DIR), where they can be."""
        path = Path(run_dir)
        path.mkdir(parents=True, exist_ok=True)
        if self.run_as:
            _hand_over(path, self.run_as)
        folders = [OUTPUT_DIR] + ([INPUT_DIR] if copies else [])
        for folder in folders:
            _mkdir_no_link(path / folder)
            if self.run_as:
                _hand_over(path / folder, self.run_as)
        for name, data in files.items():
            mode = 0o755 if name in executable else 0o644
            if name in shared and self._link_shared(path, name, data, mode):
                continue
            _write_new(path, name, [data], mode=mode)
        for relpath, stored in copies:
            folder, _, name = relpath.rpartition("/")
            with open(stored, "rb") as source:
                _write_new(path / folder, name, iter(lambda: source.read(1024 * 1024), b""))

    def _link_shared(self, folder: Path, name: str, data: bytes, mode: int) -> bool:
        """``folder/name`` made a hard link to the run root's copy of ``data``,
        read-only (0444, or 0555 for a program that runs as itself: no program
        writes through it into the runs after it, not even by mistake, and
        under run_as it is not the run account's to change). False if the link
        cannot be made (a name already there, a file system without hard
        links, ...): the caller writes a copy of its own."""
        import hashlib

        mode &= 0o555
        master = self.root / SHARED_DIR / f"{hashlib.sha256(data).hexdigest()}-{mode:o}"
        try:
            os.link(master, folder / name, follow_symlinks=False)
            return True
        except OSError as exc:
            # No copy yet (or pruned), or as many links as the file system
            # allows (65,000 on ext4): a new copy takes the name. Anything
            # else (a name already there among it): a copy of the run's own.
            if exc.errno not in (errno.ENOENT, errno.EMLINK):
                return False
        try:
            _make_shared(master, data, mode)
            os.link(master, folder / name, follow_symlinks=False)
        except OSError:
            return False
        return True

    def prune_shared(self, now: float | None = None) -> int:
        """Remove the shared copies no run directory links to any more, made
        over SHARED_KEEP_SECONDS ago; how many."""
        import time

        now = time.time() if now is None else now
        removed = 0
        try:
            scan = os.scandir(self.root / SHARED_DIR)
        except OSError:
            return 0
        with scan:
            for entry in scan:
                try:
                    info = entry.stat(follow_symlinks=False)
                    if info.st_nlink == 1 and now - info.st_mtime > SHARED_KEEP_SECONDS:
                        os.unlink(entry.path)
                        removed += 1
                except OSError:
                    continue
        return removed

    def exists(self, run_dir: str, name: str) -> bool:
        return os.path.lexists(Path(run_dir) / name)

    def list_files(self, run_dir: str, *, depth: int, limit: int) -> list[str]:
        """Regular files (not links) at most ``depth`` steps down, ``limit`` at most."""
        found: list[str] = []
        root_fd = self._open_dir(run_dir)
        try:
            pending: list[tuple[str, int]] = [("", 1)]
            while pending and len(found) < limit:
                prefix, level = pending.pop()
                path = f"/proc/self/fd/{root_fd}/{prefix}" if prefix else f"/proc/self/fd/{root_fd}"
                try:
                    # A folder the program flooded is read only as far as needed.
                    with os.scandir(path) as scan:
                        entries = list(itertools.islice(scan, limit))
                except OSError:
                    continue
                for entry in sorted(entries, key=lambda e: e.name):
                    rel = f"{prefix}{entry.name}"
                    if entry.is_symlink():
                        continue
                    if entry.is_file(follow_symlinks=False):
                        found.append(rel)
                        if len(found) >= limit:
                            break
                    elif entry.is_dir(follow_symlinks=False) and level < depth:
                        pending.append((rel + "/", level + 1))
        finally:
            os.close(root_fd)
        return found

    def _open_dir(self, run_dir: str) -> int:
        """The run directory itself, never through a link in its last step (a
        program may replace its own directory; the root is the site's). The
        caller closes the descriptor."""
        if self._held is None:
            return self._open_dir_now(run_dir)
        fd = self._held.get(run_dir)
        if fd is None:
            fd = self._held[run_dir] = self._open_dir_now(run_dir)
        return os.dup(fd)

    def _open_dir_now(self, run_dir: str) -> int:
        head, tail = os.path.split(run_dir.rstrip("/"))
        parent = os.open(head or "/", os.O_RDONLY | os.O_DIRECTORY)
        try:
            return os.open(tail, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise RefusedFile("the run directory is a symbolic link") from None
            raise
        finally:
            os.close(parent)

    def _open_no_links(self, run_dir: str, relpath: str) -> int:
        """Open a file below run_dir without following a link anywhere on the
        way, and check it (check_stat); the descriptor of the checked file."""
        parts = split_relative(relpath)
        try:
            fd = self._open_dir(run_dir)
        except FileNotFoundError:
            raise FileNotFoundError(relpath) from None
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
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise RefusedFile("it may not be read (permission denied)") from None
            raise
        finally:
            os.close(fd)
        try:
            check_stat(os.fstat(file_fd), self.expected_uid)
        except BaseException:
            os.close(file_fd)
            raise
        return file_fd

    def open_regular(self, run_dir: str, relpath: str) -> OpenedFile:
        """The checked file, opened once: FileNotFoundError if absent, RefusedFile
        for a link anywhere on the path, a hard link, another owner, or anything
        but a regular file."""
        return OpenedFile(self._open_no_links(run_dir, relpath))

    def _read(self, run_dir: str, name: str, *, offset: int, limit: int, tail: bool) -> bytes:
        try:
            fd = self._open_no_links(run_dir, name)
        except FileNotFoundError:
            return b""
        try:
            size = os.fstat(fd).st_size
            start = max(0, size - limit) if tail else offset
            if size <= start:
                return b""
            return os.pread(fd, limit, start)
        finally:
            os.close(fd)

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
            (path / CANCELLED_FILE).touch()
        except OSError:
            pass  # the directory is gone: nothing will start there
        launcher = self._launcher(run_dir)
        if launcher is None:
            return False
        try:
            children = _descendants(launcher)
            launcher.terminate()
        except psutil.AccessDenied:
            # Run as another account by a poller that is not root: signal the
            # launcher's process group as that account (sudo -n, docs/deploy.md).
            return self._signal_as_run_account(launcher, grace)
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

    def _signal_as_run_account(self, launcher, grace: float) -> bool:
        import subprocess

        import psutil

        if not self.run_as:
            return False
        for signame in ("TERM", "KILL"):
            subprocess.run(
                [*run_as_prefix(self.run_as), "kill", "-s", signame, "--", f"-{launcher.pid}"],
                capture_output=True,
                timeout=30,
                check=False,
            )
            _, alive = psutil.wait_procs([launcher], timeout=grace)
            if not alive:
                break
        return True

    def launched_record(self, run_dir: str) -> dict | None:
        """The ``launched`` record of a launcher on this host, with its pid."""
        import socket

        try:
            record = self.read_json(run_dir, LAUNCHED_FILE)
        except RefusedFile:
            return None  # the loop says so on the run when it reads the record itself
        if not record or not isinstance(record.get("pid"), int):
            return None
        if record.get("host") not in (None, socket.gethostname()):
            return None
        return record

    def _launcher(self, run_dir: str, record: dict | None = None):
        """The run's launcher process (the pid in ``launched``, or in ``record``
        as the poller first read it), or None if it is not running. Checked by
        its command line, environment and start time, so a reused pid is never
        taken for it."""
        import psutil

        record = record or self.launched_record(run_dir)
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

    def launcher_alive(self, run_dir: str, record: dict | None = None) -> bool:
        record = record or self.launched_record(run_dir)
        if record is None:
            return False
        pid = record.get("pid")
        seen = _proc_state(pid)
        if seen is _ENDED:
            # Gone or a zombie: ended, whoever had the pid. Asked of every run
            # found with an exit record, this is the usual answer: one read of
            # /proc, not psutil's five or six (command line, parent, start time).
            return False
        key = (pid, run_dir)
        if seen is not None and _LAUNCHERS_SEEN.get(key) == seen:
            return True  # the very process found to be this run's launcher before
        alive = self._launcher(run_dir, record) is not None
        if alive and seen is not None:
            if len(_LAUNCHERS_SEEN) >= 10_000:
                _LAUNCHERS_SEEN.clear()
            _LAUNCHERS_SEEN[key] = seen
        return alive

    def launcher_gone(self, run_dir: str, record: dict | None = None) -> bool:
        """The cheap check of every tick: the launcher's pid (in ``record`` as the
        poller first read it, else in ``launched``) is gone and it left no exit
        record (killed). A reused pid only delays this until SAGA's periodic
        check."""
        record = record or self.launched_record(run_dir)
        if record is None:
            return False
        try:
            os.kill(record["pid"], 0)
        except ProcessLookupError:
            return not self.exists(run_dir, EXIT_FILE)
        except PermissionError:
            return False
        return False


_HAVE_PROC = os.path.exists("/proc/self/stat")
_ENDED = b"ended"
# (pid, run directory) -> the start time (/proc/PID/stat) of a process found to
# be that run's launcher: while that pid has that start time, it is that same
# process (a reused pid starts later), and the whole check is not asked again.
_LAUNCHERS_SEEN: dict[tuple[int, str], bytes] = {}


def _proc_state(pid) -> bytes | None:
    """What /proc says of process ``pid``: _ENDED when there is none or it is a
    zombie, else its start time (clock ticks since boot, as bytes); None when
    it cannot be told (no /proc, not a pid): psutil decides then."""
    if not _HAVE_PROC or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read(4096)
    except FileNotFoundError:
        return _ENDED
    except OSError:
        return None
    # "pid (command) S ...": the command may hold anything; the fields after
    # its last ")" are the state (field 3) ... the start time (field 22).
    fields = stat[stat.rfind(b")") + 2 :].split()
    if len(fields) < 20:
        return None
    return _ENDED if fields[0] == b"Z" else fields[19]


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
        if "pilot" in cmdline:
            return _forked_by_pilot_of(proc, cmdline, run_dir)
        return proc.environ().get("SCHEDULER_RUN_DIR") == run_dir
    except (psutil.Error, ValueError):
        return False


def _forked_by_pilot_of(proc, cmdline: list[str], run_dir: str) -> bool:
    """A launcher a pilot forked carries the pilot's command line (a fork, no
    new interpreter), and its environment as /proc shows it is the pilot's
    (what the launcher set after the fork is not there): it is known by its
    parent, the running pilot whose home is beside ``run_dir`` (the run
    root's ``.pilot``). Which run it launched is the ``launched`` record's
    word, read when the poller first saw the run (tracking's flight), so a
    program can only misname its own run's launcher."""
    try:
        home = cmdline[cmdline.index("pilot") + 1]
        parent = proc.parent()
        if parent is None or parent.cmdline() != cmdline:
            return False
    except (ValueError, IndexError):
        return False
    return os.path.dirname(os.path.normpath(home)) == os.path.dirname(os.path.normpath(run_dir))


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


def account_ids(account: str) -> tuple[int, int]:
    """uid and primary gid of a local account (a resource's ``run_as``)."""
    import pwd

    try:
        entry = pwd.getpwnam(account)
    except KeyError:
        raise RefusedFile(f"there is no account {account!r} on this host") from None
    return entry.pw_uid, entry.pw_gid


def _hand_over(path: Path, account: str) -> None:
    """Make a run directory the run account's and nobody else's.

    As root (tests, a poller started as root): owned by the account, 0700. As
    the site's own account (docs/deploy.md): owned by the site's account, group
    the run account's primary group, 0770, so the program and the poller share
    it and no other account (another run account, another site) can look in;
    the site's account must be a member of that group (the directory is
    setgid, 2770)."""
    uid, gid = account_ids(account)
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
        os.chmod(path, 0o700)
    else:
        os.chown(path, -1, gid)
        # setgid: what the poller stages there gets the run group, so the
        # program can read it.
        os.chmod(path, 0o2770)


def run_as_prefix(account: str) -> list[str]:
    """The command that starts a local program as ``account``: runuser as root,
    else sudo without a password prompt (docs/deploy.md has the sudoers line)."""
    import shutil

    if os.geteuid() == 0:
        return [shutil.which("runuser") or "/usr/sbin/runuser", "-u", account, "--"]
    return [shutil.which("sudo") or "/usr/bin/sudo", "-n", "-u", account, "--"]


def _mkdir_no_link(path: Path) -> None:
    try:
        path.mkdir()
    except FileExistsError:
        if path.is_symlink() or not path.is_dir():
            raise RefusedFile(f"{path.name} in the run directory is not a folder") from None


def _make_shared(master: Path, data: bytes, mode: int) -> None:
    """Write the shared copy ``master`` (SHARED_DIR): under a random name,
    then renamed into place, so a copy is whole whenever it is linked to."""
    import secrets

    folder = master.parent
    try:
        # The site's alone: a link needs no way through its folder, and the
        # names would tell one run account which programs another one runs.
        os.mkdir(folder, 0o700)
    except FileExistsError:
        if folder.is_symlink() or not folder.is_dir():
            raise NotADirectoryError(f"{folder} is not a folder") from None
    tmp = folder / f".new-{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            os.fchmod(out.fileno(), mode)
        os.replace(tmp, master)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_new(folder: Path, name: str, chunks, *, mode: int = 0o644) -> None:
    """Write ``chunks`` to ``folder/name``: created there if the name is free,
    else through a fresh random name (O_EXCL, O_NOFOLLOW) renamed into place,
    so whatever a program left under the name is replaced, never written through."""
    import secrets

    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    target = folder / name
    try:
        # The usual case, a name nothing holds yet: made here, written in place.
        # O_EXCL never opens what is there (a file, a link, a FIFO).
        path, fd = target, os.open(target, flags, mode)
    except FileExistsError:
        path = folder / f".stage-{secrets.token_hex(8)}"
        fd = os.open(path, flags, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
            if os.fstat(out.fileno()).st_mode & 0o7777 != mode:
                # The umask took bits away. Only then: a chmod is one more
                # metadata write, three a staged run (bench/dispatch.py).
                os.fchmod(out.fileno(), mode)
        if path != target:
            os.replace(path, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise


def for_resource(resource: ExecutionResource):
    if resource.on_this_host():
        return LocalRunDirs(resource)
    from poller.saga_executor import RemoteRunDirs

    return RemoteRunDirs.for_resource(resource)
