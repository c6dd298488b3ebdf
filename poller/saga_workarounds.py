"""radical.saga, mended where the poller met its faults: each function here is
one workaround, with what was seen and measured (shared/DESIGN.md has the
facts). Applied once by poller.saga_executor.radical_saga(), before any
service is made, or called on the objects radical.saga hands back. The
shells' process groups, which radical.saga's close leaves running, have a
module of their own: poller.saga_shells.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path

FINAL_SAGA_STATES = {"DONE", "FAILED", "CANCELED"}
JOB_DIR = re.compile(r"^\d+\.\d+$")  # radical.saga's job directories: <pid>.<n>
NOTIFICATIONS_LIMIT = 4 * 1024 * 1024
IDLE_POLL_SECONDS = 0.1


def local_job_base() -> Path:
    """radical.saga's state folder of the local shell job services."""
    from django.conf import settings

    return Path(settings.SCHEDULER_SAGA_BASE) / ".radical" / "saga" / "adaptors" / "shell_job"


def tidy_local_job_state(*, older_than: float = 600.0, truncate_at: int = NOTIFICATIONS_LIMIT):
    """Remove radical.saga's folders of local jobs that ended ``older_than``
    seconds ago, and empty its notifications file once it passes ``truncate_at``
    bytes. Returns (folders removed, truncated).

    radical.saga keeps a folder for every job and one notifications file that
    every job service reads from its start (`tail -f -n +1`) and never shortens:
    left alone, each new service replays the whole history and the folder
    listing a reattach asks for grows without end. Its own PURGE keeps a day. A
    reader of the notifications file goes on after a truncation (tail notices),
    and the poller takes no job's state from it."""
    import shutil

    base = local_job_base()
    removed = 0
    truncated = False
    now = time.time()
    try:
        entries = list(os.scandir(base))
    except FileNotFoundError:
        return 0, False
    for entry in entries:
        if not JOB_DIR.match(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        state_file = Path(entry.path, "state")
        try:
            if now - state_file.stat().st_mtime < older_than:
                continue
            lines = state_file.read_text(errors="replace").split()
        except OSError:
            continue
        if lines and lines[-1] in FINAL_SAGA_STATES:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    notifications = base / "notifications"
    with contextlib.suppress(OSError):
        if notifications.stat().st_size > truncate_at:
            os.truncate(notifications, 0)
            truncated = True
    return removed, truncated


def _idle_reads_less_often() -> None:
    """radical.saga reads its shells in select() loops that wake every 10 ms
    (pty_process._POLLDELAY) even with nothing to read: each job service's
    monitor thread, for ever. With four services that was most of an idle
    poller's CPU (measured with py-spy: 3.5 % of a core). A read still returns
    as soon as data comes (select wakes on it); only the idle wake-ups become
    ten a second. Its flush before each command waits its own 0.1 s, unchanged."""
    from radical.saga.utils import pty_process

    pty_process._POLLDELAY = max(pty_process._POLLDELAY, IDLE_POLL_SECONDS)


# radical.saga's batch adaptors whose job services start a state monitor thread.
BATCH_ADAPTORS = (
    "slurm.slurm_job",
    "pbs.pbsjob",
    "pbspro.pbsprojob",
    "torque.torquejob",
    "lsf.lsfjob",
    "cobalt.cobaltjob",
)


def _batch_monitors_not_started() -> None:
    """Each batch job service of radical.saga (Slurm, PBS, LSF ...) starts a
    thread that asks the batch system about every job it submitted
    (``scontrol show job`` a job, every 3 s, over the service's one shell, which
    the poller's own submits and questions then wait for) only to fire state
    callbacks, which the poller never sets: it asks for a state when it needs
    one (JobServicePool.state). On Slurm the thread died at a job's first change
    of state, with a traceback on the poller's stderr (the job object it fires
    on is gone: ``'NoneType' object has no attribute '_attributes_i_set'``). It
    is no longer started."""
    import importlib

    for name in BATCH_ADAPTORS:
        try:
            module = importlib.import_module(f"radical.saga.adaptors.{name}")
        except Exception:  # noqa: BLE001,S112 - an adaptor that does not load is not used
            continue
        monitor = getattr(module, "_job_state_monitor", None)
        if monitor is not None and not getattr(monitor, "scheduler_idle", False):
            monitor.start = lambda self: None
            monitor.scheduler_idle = True


def _shells_keep_no_descriptors() -> None:
    """radical.saga starts every shell (a job service's, an ssh master's) with
    pty.fork() and exec, and the new shell inherited every descriptor the poller
    had open, the terminals of the other services among them; its wrapper and
    job monitors inherit them in turn. A monitor lives as long as its job, so a
    closed service's terminal stayed open, its shell never read an end of file,
    and every poller restart left its shells behind (hundreds after a test run).
    The child now closes all but its terminal before it execs."""
    from radical.saga.utils import pty_process

    if getattr(pty_process.pty, "scheduler_wrapped", False):
        return
    import pty
    import types

    def fork():
        pid, fd = pty.fork()
        if pid == 0:
            os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        return pid, fd

    pty_process.pty = types.SimpleNamespace(fork=fork, scheduler_wrapped=True)


def _ssh_masters_per_port() -> None:
    """radical.saga's shell factory keeps one ssh master connection per user,
    host and shell type, and not per port: a resource on ssh://host:2222 then
    ran its commands through the master of an earlier one on ssh://host:22,
    another sshd (found when a slurm+ssh:// login node on 127.0.0.1 got the
    sessions of the test sshd, without its SLURM_CONF). Each port now has its
    masters of its own; the factory's lock covers the swap, and initialize is
    the only reader of its registry."""
    from radical.saga.utils.pty_shell_factory import PTYShellFactory

    original = PTYShellFactory.initialize
    if getattr(original, "scheduler_wrapped", False):
        return

    def initialize(self, url, *args, **kwargs):
        import radical.utils as ru

        port = getattr(url, "port", None) if not isinstance(url, str) else ru.Url(url).port
        with self.rlock:
            shared = self.registry
            by_port = self.__dict__.setdefault("scheduler_registries", {None: shared})
            self.registry = by_port.setdefault(port, {})
            try:
                return original(self, url, *args, **kwargs)
            finally:
                self.registry = shared

    initialize.scheduler_wrapped = True
    PTYShellFactory.initialize = initialize


def purge_dead_ssh_masters() -> int:
    """Forget radical.saga's ssh master connections whose process has died.

    radical.saga keeps one master connection per host and user, and after three
    failed attempts to revive a dead one (a host that went away for a while) it
    answers "Lost shell connection" forever. Dropping the dead entry makes the
    next attempt connect afresh. Returns how many were dropped."""
    try:
        from radical.saga.utils.pty_shell_factory import PTYShellFactory
    except ImportError:  # pragma: no cover - radical.saga is a requirement
        return 0
    factory = PTYShellFactory()
    dropped = 0
    with factory.rlock:
        for users in factory.registry.values():
            for kinds in users.values():
                for kind, info in list(kinds.items()):
                    pty = info.get("pty")
                    try:
                        alive = pty is not None and pty.alive(recover=False)
                    except Exception:  # noqa: BLE001
                        alive = False
                    if not alive:
                        del kinds[kind]
                        dropped += 1
    return dropped


def _memoise_apitype(job) -> None:
    """radical.saga works out a job's API type name for every Job it makes, first
    by asking for a missing attribute (an exception that formats the whole stack)
    and then by walking its module: 1.7 of the 3.4 ms a create_job costs here.
    The name is the same for every job of a class, so the class keeps it."""
    cls = type(job)
    if "_apitype" not in cls.__dict__:
        with contextlib.suppress(Exception):
            cls._apitype = job._apitype


class _BoundedEvents(dict):
    """Keeps the newest LIMIT entries: radical.saga's job monitor holds the state
    changes of jobs it does not know (those of the other services and of earlier
    pollers) in such a dict for ever: by my estimate (not measured) some
    hundreds of bytes a job in each service's monitor.
    Only the monitor thread writes; a key is dropped only when a newer one comes."""

    LIMIT = 4096

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        while len(self) > self.LIMIT:
            del self[next(iter(self))]


def _bound_monitor_events(service) -> None:
    with contextlib.suppress(Exception):
        monitor = service._adaptor.monitor
        if not isinstance(monitor.events, _BoundedEvents):
            bounded = _BoundedEvents()
            bounded.update(monitor.events)
            monitor.events = bounded
