"""The poller owns the shells radical.saga starts for its local job services.

radical.saga runs each local job service (fork://, slurm://localhost) in a
shell: here ``setsid -w /bin/sh -i`` (poller/local_shell.sh), so the shell is
a session and process group of its own, with its wrapper script, a ``tail -f``
of the notifications file, one monitor per job and a local run's bundle in
that group. Closing a service kills only the ``setsid`` before the shell; the
shell, or when it ends its wrapper (with its idle ``sleep``), lived on, as they
did when the poller was killed (measured: 12-16 processes left per start of a
poller, stopped or killed; issue 14).

A process of ours is known by its environment: radical.saga's shells and
everything they start carry RADICAL_BASE, the site's SCHEDULER_SAGA_BASE
(saga_executor.radical_base). A SAGA group is a process group holding such a
process that is the shell (``sh -i``), its wrapper or its ``tail`` of the
notifications. While its poller lives, the shell's parent is the ``setsid -w``
its poller's PTY started.

- ``service_shells`` / ``end_groups``: a job service pool notes the group of
  each shell of the services it opens, and ends those groups when it has
  closed the services (a clean stop, a broken service dropped);
- ``end_stale``: at start, the poller ends the SAGA groups of its base whose
  shell is gone or whose ``setsid`` parent's poller is gone (a killed
  predecessor's), and leaves alone those of another live poller of that base.

A group is ended with SIGKILL to the group. A run's launcher is never in one: a
launcher makes a process group of its own (scheduler_client._start_in), so a
running program and its launcher go on, and the next poller adopts them.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import defaultdict

logger = logging.getLogger(__name__)


def _is_shell(cmdline: list[str]) -> bool:
    return len(cmdline) == 2 and cmdline[1] == "-i" and os.path.basename(cmdline[0]).endswith("sh")


def _is_saga_helper(cmdline: list[str], base: str) -> bool:
    """The shell, its wrapper script or its tail of the notifications file."""
    if _is_shell(cmdline):
        return True
    text = " ".join(cmdline)
    return base in text and ("wrapper.sh" in text or text.startswith("tail -f"))


def _groups(base: str) -> dict[int, list]:
    """The process groups with a SAGA helper of ``base``: pgid -> its helpers."""
    import psutil

    groups: dict[int, list] = defaultdict(list)
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            if not _is_saga_helper(cmdline, base):
                continue
            if proc.environ().get("RADICAL_BASE") != base:
                continue
            groups[os.getpgid(proc.pid)].append(proc)
        except (psutil.Error, OSError):
            continue
    return groups


def _owner_alive(pgid: int) -> bool:
    """Is the group's shell alive under a ``setsid`` whose parent (a poller) lives?"""
    import psutil

    try:
        shell = psutil.Process(pgid)
        if not _is_shell(shell.cmdline()):
            return False
        parent = shell.parent()
        if parent is None or parent.name() != "setsid":
            return False
        return parent.ppid() not in (0, 1) and psutil.pid_exists(parent.ppid())
    except (psutil.Error, OSError):
        return False


def _kill(pgids, why: str) -> int:
    ended = 0
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
            ended += 1
        except ProcessLookupError:
            continue
        except PermissionError:
            logger.warning("could not end SAGA process group %s (%s): not ours", pgid, why)
    return ended


def service_shells(service) -> list[int]:
    """The process groups of the local shells of one radical.saga job service:
    the session-leading child of the ``setsid`` each of its PTY shells
    (``shell``, and the monitor's ``channel``) runs. An ssh service has none here."""
    import psutil

    pgids = []
    adaptor = getattr(service, "_adaptor", None)
    for name in ("shell", "channel"):
        process = getattr(getattr(getattr(adaptor, name, None), "pty_shell", None), "child", None)
        if not isinstance(process, int):
            continue
        try:
            for child in psutil.Process(process).children():
                if _is_shell(child.cmdline()) and os.getsid(child.pid) == child.pid:
                    pgids.append(child.pid)
        except (psutil.Error, OSError):
            continue
    return pgids


def end_groups(pgids: list[int], base: str) -> int:
    """End these groups, each only if it still holds a SAGA helper of ``base``
    (a group id is a pid and may be reused)."""
    present = _groups(base)
    return _kill([g for g in pgids if g in present], "own")


def end_stale(base: str) -> int:
    """End the SAGA groups of ``base`` whose poller is gone; answers how many."""
    stale = [pgid for pgid in _groups(base) if not _owner_alive(pgid)]
    ended = _kill(stale, "stale")
    if ended:
        logger.info(
            "ended %s SAGA shell group%s a stopped poller left (base %s)",
            ended,
            "" if ended == 1 else "s",
            base,
        )
    return ended
