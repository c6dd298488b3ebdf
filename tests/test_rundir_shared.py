"""What every run of a resource gets alike, the client and a definition's
program, is a hard link to one read-only copy in the run root's .shared folder
(poller.rundir.LocalRunDirs.stage): writing 45 KB of client into each run was
most of a staged run's file-system time. Where a link cannot be made, each run
gets its own copy as before."""

from __future__ import annotations

import errno
import os
import stat
import time
from types import SimpleNamespace

import pytest

from poller import rundir

CLIENT = b"# the client\n" * 100
PROGRAM = b"#!/bin/sh\necho hi\n"


@pytest.fixture
def files(tmp_path) -> rundir.LocalRunDirs:
    return rundir.LocalRunDirs(SimpleNamespace(working_root=str(tmp_path / "runs")))


def _stage(files: rundir.LocalRunDirs, run_id: int, program: bytes = PROGRAM) -> str:
    run_dir = files.run_dir(run_id)
    files.stage(
        run_dir,
        {"scheduler_client.py": CLIENT, "task.sh": program, "run.json": b'{"run_id": %d}' % run_id},
        executable=frozenset(["task.sh"]),
        shared=frozenset(["scheduler_client.py", "task.sh"]),
    )
    return run_dir


def test_runs_share_one_read_only_copy_of_the_client_and_program(files):
    one, two = _stage(files, 1), _stage(files, 2)
    for name, mode in (("scheduler_client.py", 0o444), ("task.sh", 0o555)):
        a, b = os.stat(os.path.join(one, name)), os.stat(os.path.join(two, name))
        assert (a.st_ino, a.st_nlink) == (b.st_ino, 3), name  # the two runs and the copy
        assert stat.S_IMODE(a.st_mode) == mode, oct(a.st_mode)
    assert open(os.path.join(two, "task.sh"), "rb").read() == PROGRAM
    # run.json is each run's own.
    assert os.stat(os.path.join(one, "run.json")).st_nlink == 1
    assert open(os.path.join(two, "run.json"), "rb").read() == b'{"run_id": 2}'
    shared = files.root / rundir.SHARED_DIR
    assert stat.S_IMODE(shared.stat().st_mode) == 0o700
    assert len(os.listdir(shared)) == 2
    # Another program is another copy.
    three = _stage(files, 3, program=b"#!/bin/sh\necho other\n")
    assert (
        os.stat(os.path.join(three, "task.sh")).st_ino
        != os.stat(os.path.join(one, "task.sh")).st_ino
    )
    assert len(os.listdir(shared)) == 3


def test_a_name_a_program_left_in_the_run_directory_is_replaced_by_a_copy(files, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    run_dir = files.run_dir(1)
    os.makedirs(run_dir)
    os.symlink(victim, os.path.join(run_dir, "scheduler_client.py"))
    _stage(files, 1)
    client = os.path.join(run_dir, "scheduler_client.py")
    assert not os.path.islink(client) and open(client, "rb").read() == CLIENT
    assert victim.read_text() == "untouched"


def test_at_the_link_limit_a_new_copy_takes_the_name(files, monkeypatch):
    first = _stage(files, 1)
    real = os.link
    full = []

    def link(src, dst, **kwargs):
        if not full and str(dst).endswith("scheduler_client.py"):
            full.append(src)
            raise OSError(errno.EMLINK, "Too many links")
        return real(src, dst, **kwargs)

    monkeypatch.setattr(rundir.os, "link", link)
    second = _stage(files, 2)
    assert full, "the link limit was never met"
    a = os.stat(os.path.join(first, "scheduler_client.py"))
    b = os.stat(os.path.join(second, "scheduler_client.py"))
    assert a.st_ino != b.st_ino and (a.st_nlink, b.st_nlink) == (1, 2)
    assert open(os.path.join(second, "scheduler_client.py"), "rb").read() == CLIENT


def test_where_no_link_can_be_made_each_run_gets_its_own_copy(files, monkeypatch):
    def no_links(src, dst, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(rundir.os, "link", no_links)
    run_dir = _stage(files, 1)
    client = os.stat(os.path.join(run_dir, "scheduler_client.py"))
    program = os.stat(os.path.join(run_dir, "task.sh"))
    assert (client.st_nlink, stat.S_IMODE(client.st_mode)) == (1, 0o644)
    assert (program.st_nlink, stat.S_IMODE(program.st_mode)) == (1, 0o755)


def test_copies_no_run_links_to_are_pruned_after_an_hour(files):
    import shutil

    kept, gone = _stage(files, 1), _stage(files, 2, program=b"#!/bin/sh\necho old\n")
    shutil.rmtree(gone)  # retention removed the old run: its program's copy is alone
    shared = files.root / rundir.SHARED_DIR
    assert files.prune_shared() == 0, "a copy made a moment ago stays (a run may be staging)"
    later = time.time() + rundir.SHARED_KEEP_SECONDS + 1
    assert files.prune_shared(now=later) == 1
    assert len(os.listdir(shared)) == 2
    assert open(os.path.join(kept, "task.sh"), "rb").read() == PROGRAM
    _stage(files, 3, program=b"#!/bin/sh\necho old\n")  # made again when needed
    assert len(os.listdir(shared)) == 3
