"""scheduler_client.py bundle: several runs launched by one process, each as if
`scheduler_client.py run` had started it on its own (the poller's local jobs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tests.test_client_interpreters import INTERPRETERS

CLIENT = Path(settings.BASE_DIR) / "task_programs" / "scheduler_client.py"

REPORTER = """
import json, os, sys
import scheduler_client as client
print("stdout of run", client.run_id())
print("stderr of run", client.run_id(), file=sys.stderr)
others = [p for p in sys.path if "run-" in p and os.path.abspath(p) != client.run_dir()]
with open(client.output_path("facts.json"), "w") as fh:
    json.dump({
        "pid": os.getpid(), "pgid": os.getpgid(0), "cwd": os.getcwd(),
        "env_dir": os.environ.get("SCHEDULER_RUN_DIR"), "env_id": os.environ.get("SCHEDULER_RUN_ID"),
        "argv": sys.argv[1:], "client_file": client.__file__, "other_run_dirs_on_path": others,
        "parameters": client.parameters(), "main": __name__,
    }, fh)
client.status("reported", progress=100)
"""


def _run_dir(root: Path, run_id: int, source: str, args=(), program: str = "task.py") -> Path:
    d = root / f"run-{run_id}"
    (d / "outputs").mkdir(parents=True)
    (d / "scheduler_client.py").write_bytes(CLIENT.read_bytes())
    (d / program).write_text(source)
    (d / "run.json").write_text(
        json.dumps(
            {
                "v": 1,
                "run_id": run_id,
                "parameters": {"n": run_id},
                "args": list(args),
                "program": program,
            }
        )
    )
    return d


def _bundle(*dirs: Path, timeout: float = 60, python: str = sys.executable):
    """Start the bundle as the poller's job does: in the first run's directory."""
    return subprocess.run(
        [python, "scheduler_client.py", "bundle", *map(str, dirs)],
        cwd=dirs[0],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _exit(d: Path) -> dict:
    return json.loads((d / "exit.json").read_text())


def test_each_run_of_a_bundle_has_its_own_process_group_directory_files_and_environment(
    tmp_path,
):
    dirs = [_run_dir(tmp_path, i, REPORTER, args=[f"--n={i}", "two words"]) for i in (1, 2, 3)]
    done = _bundle(*dirs)
    assert done.returncode == 0, done.stderr
    pids = set()
    for i, d in zip((1, 2, 3), dirs, strict=True):
        facts = json.loads((d / "outputs" / "facts.json").read_text())
        assert facts["pgid"] == facts["pid"], "a process group of its own"
        assert facts["cwd"] == facts["env_dir"] == str(d)
        assert facts["env_id"] == str(i)
        assert facts["argv"] == [f"--n={i}", "two words"]
        assert facts["client_file"] == str(d / "scheduler_client.py")
        assert facts["other_run_dirs_on_path"] == []
        assert facts["parameters"] == {"n": i}
        assert facts["main"] == "__main__"
        assert (d / "stdout.txt").read_text() == f"stdout of run {i}\n"
        assert (d / "stderr.txt").read_text() == f"stderr of run {i}\n"
        launched = json.loads((d / "launched").read_text())
        assert launched["pid"] == facts["pid"]
        pids.add(facts["pid"])
        record = _exit(d)
        assert record["exit_code"] == 0 and not record["failed"]
    assert len(pids) == 3


def test_a_run_killed_by_a_signal_gets_its_exit_record_from_the_bundle(tmp_path):
    killed = _run_dir(tmp_path, 1, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    failing = _run_dir(tmp_path, 2, "import sys\nsys.exit(3)\n")
    fine = _run_dir(tmp_path, 3, "print('fine')\n")
    done = _bundle(killed, failing, fine)
    assert done.returncode == 0, done.stderr
    record = _exit(killed)
    assert record["failed"] and record["signal"] == 9 and record["exit_code"] == 137
    assert "before it could write its exit record" in record["error"]
    assert _exit(failing)["exit_code"] == 3 and _exit(failing)["failed"]
    assert _exit(fine)["exit_code"] == 0 and (fine / "stdout.txt").read_text() == "fine\n"


def test_a_bundled_run_ends_like_a_process_atexit_handlers_and_open_files(tmp_path):
    source = (
        "import atexit\n"
        "late = open('late.txt', 'w')\n"
        "late.write('buffered and never closed')\n"
        "atexit.register(lambda: open('atexit.txt', 'w').write('ran'))\n"
    )
    d = _run_dir(tmp_path, 1, source)
    sibling = _run_dir(tmp_path, 2, "pass\n")
    assert _bundle(d, sibling).returncode == 0
    assert (d / "late.txt").read_text() == "buffered and never closed"
    assert (d / "atexit.txt").read_text() == "ran"
    assert not (sibling / "atexit.txt").exists(), "a run's handlers are its own"


def test_a_run_launched_before_is_left_to_its_launcher(tmp_path):
    """A bundle submitted again after a poller crash: the launched run is not
    started again, and its stdout is not touched."""
    started = _run_dir(tmp_path, 1, "open('started-again', 'w')\n")
    (started / "launched").write_text('{"pid": 1}')
    (started / "stdout.txt").write_text("the first launcher's output\n")
    fresh = _run_dir(tmp_path, 2, "print('fresh')\n")
    assert _bundle(started, fresh).returncode == 0
    assert not (started / "started-again").exists()
    assert not (started / "exit.json").exists(), "the first launcher writes it"
    assert (started / "stdout.txt").read_text() == "the first launcher's output\n"
    assert _exit(fresh)["exit_code"] == 0


def test_an_unreadable_run_json_fails_that_run_with_the_reason(tmp_path):
    broken = _run_dir(tmp_path, 1, "pass\n")
    (broken / "run.json").write_text("{not json")
    fine = _run_dir(tmp_path, 2, "pass\n")
    assert _bundle(broken, fine).returncode == 0
    record = _exit(broken)
    assert record["failed"] and "could not read run.json" in record["error"]
    assert _exit(fine)["exit_code"] == 0


def test_a_cancelled_run_in_a_bundle_does_not_start(tmp_path):
    cancelled = _run_dir(tmp_path, 1, "open('started', 'w')\n")
    (cancelled / "cancelled").touch()
    assert _bundle(cancelled).returncode == 0
    assert not (cancelled / "started").exists()
    assert _exit(cancelled)["exit_code"] == 143


@pytest.mark.parametrize("python", INTERPRETERS, ids=lambda p: p.split("/")[-3])
def test_bundles_work_under_every_interpreter(tmp_path, python):
    dirs = [_run_dir(tmp_path, i, REPORTER, args=[str(i)]) for i in (1, 2)]
    killed = _run_dir(tmp_path, 3, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    done = _bundle(*dirs, killed, python=python)
    assert done.returncode == 0, done.stderr
    for i, d in enumerate(dirs, 1):
        facts = json.loads((d / "outputs" / "facts.json").read_text())
        assert facts["argv"] == [str(i)] and facts["pgid"] == facts["pid"]
        assert _exit(d)["exit_code"] == 0
    assert _exit(killed)["signal"] == 9
