"""Is a local run's launcher still running? (poller.rundir.LocalRunDirs.launcher_alive)

Asked of every run found with an exit record: an ended launcher (no process
under its pid, or a zombie its parent has not reaped yet) is told from one read
of /proc; only a process that runs is checked whole (command line, parent,
start time), so a reused pid is never taken for the launcher."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from poller import rundir


@pytest.fixture
def files(monkeypatch) -> rundir.LocalRunDirs:
    files = rundir.LocalRunDirs(SimpleNamespace(working_root="/nonexistent-not-used"))
    monkeypatch.setattr(rundir, "_LAUNCHERS_SEEN", {})
    checked = []
    real = rundir.LocalRunDirs._launcher
    monkeypatch.setattr(
        rundir.LocalRunDirs,
        "_launcher",
        lambda self, run_dir, record=None: (
            checked.append(record["pid"]),
            real(self, run_dir, record),
        )[1],
    )
    files.checked = checked
    return files


def _record(pid: int) -> dict:
    return {"pid": pid, "started_at": "2026-01-01T00:00:00+00:00"}


def test_a_zombie_launcher_has_ended_without_the_whole_check(files):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while rundir._proc_state(child.pid) != rundir._ENDED and time.monotonic() < deadline:
            time.sleep(0.01)  # not reaped: a zombie once it exits
        assert files.launcher_alive("/run-dir", _record(child.pid)) is False
        assert files.checked == []
    finally:
        child.wait()


def test_a_pid_no_process_has_is_ended_without_the_whole_check(files):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert files.launcher_alive("/run-dir", _record(child.pid)) is False
    assert files.checked == []


def test_a_running_process_is_checked_whole_and_a_reused_pid_is_not_the_launcher(files):
    # This test's own process runs: it is not a launcher of /run-dir.
    assert files.launcher_alive("/run-dir", _record(os.getpid())) is False
    assert files.launcher_alive("/run-dir", _record(os.getpid())) is False
    assert files.checked == [os.getpid(), os.getpid()]


def test_a_launcher_found_once_is_known_by_its_start_time_until_its_pid_is_reused(
    files, monkeypatch
):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        monkeypatch.setattr(rundir, "_is_launcher_of", lambda proc, run_dir, started_at=None: True)
        assert files.launcher_alive("/run-dir", _record(child.pid)) is True
        assert files.launcher_alive("/run-dir", _record(child.pid)) is True
        assert files.checked == [child.pid]  # the second time, one read of /proc
        # Another run's directory: that one is checked whole.
        assert files.launcher_alive("/other-run", _record(child.pid)) is True
        assert files.checked == [child.pid, child.pid]
        # The same pid with another start time is another process: checked whole.
        rundir._LAUNCHERS_SEEN[(child.pid, "/run-dir")] = b"1"
        monkeypatch.setattr(rundir, "_is_launcher_of", lambda proc, run_dir, started_at=None: False)
        assert files.launcher_alive("/run-dir", _record(child.pid)) is False
        assert files.checked == [child.pid] * 3
    finally:
        child.kill()
        child.wait()
    assert files.launcher_alive("/run-dir", _record(child.pid)) is False
    assert files.checked == [child.pid] * 3


@pytest.mark.parametrize("pid", [None, "12", True, 0, -1])
def test_proc_cannot_tell_of_a_pid_that_is_not_one_and_psutil_decides(pid):
    assert rundir._proc_state(pid) is None
