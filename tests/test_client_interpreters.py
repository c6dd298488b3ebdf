"""The client library and launcher under every Python 3.8-3.13 found on this machine."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from poller.events import read_new_events

CLIENT = Path(__file__).resolve().parent.parent / "task_programs" / "scheduler_client.py"


def _interpreters() -> list[str]:
    found = {}
    for path in sorted(Path("/root/.pyenv/versions").glob("3.*/bin/python")):
        match = re.match(r"3\.(\d+)\.", path.parent.parent.name)
        if match and 8 <= int(match.group(1)) <= 13:
            found[int(match.group(1))] = str(path)
    return [found[k] for k in sorted(found)] or [sys.executable]


PROGRAM = """
import sys
import scheduler_client as client
client.status("starting " + client.parameters()["word"], progress=10)
client.log("a debug line", level="debug")
with open(client.output_path("out.txt"), "w") as fh:
    fh.write("x")
try:
    client.output_path("../escape")
except ValueError as exc:
    client.log("refused: " + str(exc)[:20], level="warning")
if sys.argv[1:] == ["raise"]:
    raise KeyError("missing thing")
if sys.argv[1:] == ["fail"]:
    client.fail("told to fail")
client.status("done", progress=100)
"""


def _run_dir(tmp_path: Path, program: str = PROGRAM) -> Path:
    d = tmp_path / "run"
    (d / "outputs").mkdir(parents=True)
    shutil.copy(CLIENT, d)
    (d / "task.py").write_text(program)
    (d / "run.json").write_text(json.dumps({"v": 1, "run_id": 7, "parameters": {"word": "hi"}}))
    return d


def _launch(python: str, d: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "scheduler_client.py", "run", *args],
        cwd=d,
        env={"SCHEDULER_RUN_DIR": str(d), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    )


def _events(d: Path):
    events, malformed, _ = read_new_events((d / "events.jsonl").read_bytes(), 0)
    assert malformed == []
    return events


@pytest.mark.parametrize("python", _interpreters(), ids=lambda p: p.split("/")[-3])
def test_the_launcher_and_library_work_on_each_interpreter(python, tmp_path):
    d = _run_dir(tmp_path)
    result = _launch(python, d, "task.py")
    assert result.returncode == 0, result.stderr
    events = _events(d)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [(e.type, e.message) for e in events if e.type == "status"] == [
        ("status", "starting hi"),
        ("status", "done"),
    ]
    assert [(e.name, e.path) for e in events if e.type == "output"] == [
        ("out.txt", "outputs/out.txt")
    ]
    assert any(e.level == "warning" and e.message.startswith("refused") for e in events)
    record = json.loads((d / "exit.json").read_text())
    assert record["exit_code"] == 0 and record["failed"] is False
    assert record["started_at"] <= record["finished_at"]
    # A second launch of the same run directory is refused: no task runs twice.
    again = _launch(python, d, "task.py")
    assert again.returncode == 75 and "launched before" in again.stderr
    assert len(_events(d)) == len(events)


@pytest.mark.parametrize("python", _interpreters()[:1] + _interpreters()[-1:])
def test_an_uncaught_exception_becomes_a_failure_with_its_traceback(python, tmp_path):
    d = _run_dir(tmp_path)
    result = _launch(python, d, "task.py", "raise")
    assert result.returncode == 1
    fail = [e for e in _events(d) if e.type == "fail"][0]
    assert "KeyError: 'missing thing'" in fail.message and "Traceback" in fail.message
    record = json.loads((d / "exit.json").read_text())
    assert record["failed"] and "KeyError" in record["error"]


def test_fail_ends_the_task_as_failed_with_the_message(tmp_path):
    d = _run_dir(tmp_path)
    assert _launch(sys.executable, d, "task.py", "fail").returncode == 1
    assert json.loads((d / "exit.json").read_text())["error"] == "told to fail"


def test_numbering_continues_when_the_events_file_already_has_lines(tmp_path):
    d = _run_dir(tmp_path, "import scheduler_client as c\nc.status('next')\n")
    (d / "events.jsonl").write_text('{"v":1,"seq":41,"type":"log","message":"old"}\n')
    _launch(sys.executable, d, "task.py")
    assert [e.seq for e in _events(d)] == [41, 42]


def test_a_non_python_program_runs_as_a_child_with_its_exit_status(tmp_path):
    d = _run_dir(tmp_path)
    script = d / "job.sh"
    script.write_text('#!/bin/sh\necho from shell "$1"\nexit 4\n')
    script.chmod(0o755)
    result = _launch(sys.executable, d, "./job.sh", "a b")
    assert result.returncode == 4 and "from shell a b" in result.stdout
    record = json.loads((d / "exit.json").read_text())
    assert record["exit_code"] == 4 and record["failed"]


def test_sigterm_is_passed_on_to_a_child_and_recorded(tmp_path):
    d = _run_dir(tmp_path)
    script = d / "wait.sh"
    script.write_text(
        "#!/bin/sh\ntrap 'echo got TERM; exit 9' TERM\nwhile true; do sleep 0.1; done\n"
    )
    script.chmod(0o755)
    proc = subprocess.Popen(
        [sys.executable, "scheduler_client.py", "run", "./wait.sh"],
        cwd=d,
        env={"SCHEDULER_RUN_DIR": str(d), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert "got TERM" in out
    assert json.loads((d / "exit.json").read_text())["exit_code"] == 9


def test_sigterm_to_a_python_task_records_the_signal(tmp_path):
    d = _run_dir(tmp_path, "import time\nwhile True: time.sleep(0.05)\n")
    proc = subprocess.Popen(
        [sys.executable, "scheduler_client.py", "run", "task.py"],
        cwd=d,
        env={"SCHEDULER_RUN_DIR": str(d), "PATH": "/usr/bin:/bin"},
    )
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    record = json.loads((d / "exit.json").read_text())
    assert record["signal"] == signal.SIGTERM and record["failed"]


def test_the_task_survives_an_unwritable_events_file(tmp_path):
    d = _run_dir(tmp_path, "import scheduler_client as c\nc.status('lost')\nprint('still alive')\n")
    (d / "events.jsonl").mkdir()  # a directory: open() fails
    result = _launch(sys.executable, d, "task.py")
    assert result.returncode == 0 and "still alive" in result.stdout
    assert "could not record status event" in result.stderr
