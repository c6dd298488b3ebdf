"""The client library and launcher under every Python 3.8-3.13 found on this machine.

Each test starts the real launcher in a subprocess, in a temporary run directory
with a run.json, once per interpreter under /root/.pyenv/versions (or the
suite's own Python where none is installed), and reads the event stream back
with the poller's own parser.
"""

from __future__ import annotations

import json
import os
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


INTERPRETERS = _interpreters()
each_python = pytest.mark.parametrize(
    "python", INTERPRETERS, ids=lambda p: "py" + p.split("/")[-3] if "pyenv" in p else "suite"
)


def test_every_interpreter_from_3_8_to_3_13_here_is_covered():
    if not Path("/root/.pyenv/versions").is_dir():
        pytest.skip("no pyenv interpreters on this machine; the suite's Python stands in")
    minors = {
        subprocess.run(
            [p, "-c", "import sys; print(sys.version_info[1])"], capture_output=True, text=True
        ).stdout.strip()
        for p in INTERPRETERS
    }
    assert minors == {"8", "9", "10", "11", "12", "13"}


PROGRAM = """
import sys
import scheduler_client as client
assert client.run_id() == 7, client.run_id()
assert client.args() == ["a b", "c"] and sys.argv[1:] in (["a b", "c"], ["raise"], ["fail"])
client.status("starting " + client.parameters()["word"], progress=10)
client.log("a debug line", level="debug")
with open(client.output_path("out.txt"), "w") as fh:
    fh.write("x")
with open("made-here.dat", "w") as fh:
    fh.write("y")
client.register_output("made-here.dat", name="made.dat")
try:
    client.output_path("../escape")
except ValueError as exc:
    client.log("refused: " + str(exc)[:20], level="warning")
try:
    client.register_output("/etc/passwd")
except ValueError as exc:
    client.log("outside: " + str(exc)[-30:], level="warning")
if sys.argv[1:] == ["raise"]:
    def inner():
        raise KeyError("missing thing")
    inner()
if sys.argv[1:] == ["fail"]:
    try:
        client.fail("told to fail")
    except Exception:
        client.log("swallowed: fail() must not be an Exception")
client.status("done", progress=100)
"""


def _run_dir(tmp_path: Path, program: str = PROGRAM) -> Path:
    d = tmp_path / "run"
    (d / "outputs").mkdir(parents=True)
    shutil.copy(CLIENT, d)
    (d / "task.py").write_text(program)
    info = {"v": 1, "run_id": 7, "parameters": {"word": "hi"}, "args": ["a b", "c"]}
    (d / "run.json").write_text(json.dumps(info))
    return d


def _env(d: Path) -> dict:
    return {"SCHEDULER_RUN_DIR": str(d), "PATH": "/usr/bin:/bin"}


def _launch(python: str, d: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "scheduler_client.py", "run", *args],
        cwd=d,
        env=_env(d),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _start(python: str, d: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [python, "scheduler_client.py", "run", *args],
        cwd=d,
        env=_env(d),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


def _events(d: Path):
    events, malformed, _ = read_new_events((d / "events.jsonl").read_bytes(), 0)
    assert malformed == []
    return events


def _exit(d: Path) -> dict:
    assert not (d / "exit.json.tmp").exists()
    return json.loads((d / "exit.json").read_text())


@each_python
def test_a_python_task_reports_status_logs_and_outputs(python, tmp_path):
    d = _run_dir(tmp_path)
    result = _launch(python, d, "task.py", "a b", "c")
    assert result.returncode == 0, result.stderr
    events = _events(d)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert all(e.time for e in events)
    assert [(e.message, e.progress) for e in events if e.type == "status"] == [
        ("starting hi", 10),
        ("done", 100),
    ]
    assert [(e.name, e.path) for e in events if e.type == "output"] == [
        ("out.txt", "outputs/out.txt"),
        ("made.dat", "made-here.dat"),
    ]
    assert (d / "outputs" / "out.txt").read_text() == "x"
    warnings = [e.message for e in events if e.level == "warning"]
    assert warnings[0].startswith("refused: bad output file")
    assert warnings[1].endswith("outside the run directory")
    record = _exit(d)
    assert record["v"] == 1 and record["exit_code"] == 0 and record["failed"] is False
    assert record["signal"] is None and record["error"] is None
    assert record["started_at"] <= record["finished_at"]


@each_python
def test_a_second_launch_of_the_same_run_directory_is_refused(python, tmp_path):
    d = _run_dir(tmp_path)
    assert _launch(python, d, "task.py", "a b", "c").returncode == 0
    count = len(_events(d))
    again = _launch(python, d, "task.py", "a b", "c")
    assert again.returncode == 75 and "launched before" in again.stderr
    assert len(_events(d)) == count


@each_python
def test_an_uncaught_exception_becomes_a_failure_with_its_traceback(python, tmp_path):
    d = _run_dir(tmp_path)
    result = _launch(python, d, "task.py", "raise")
    assert result.returncode == 1
    fail = [e for e in _events(d) if e.type == "fail"]
    assert len(fail) == 1 and fail[0].level == "error"
    assert fail[0].traceback.startswith("Traceback (most recent call last):\n  File ")
    assert 'task.py", line' in fail[0].traceback and "in inner" in fail[0].traceback
    assert fail[0].traceback.endswith("KeyError: 'missing thing'\n")
    assert "runpy" not in fail[0].traceback  # the launcher's own frames are left out
    assert "KeyError: 'missing thing'" in result.stderr  # and the operator sees it in stderr
    record = _exit(d)
    assert record["failed"] and record["exit_code"] == 1
    assert record["error"] == "KeyError: 'missing thing'"


@each_python
def test_fail_ends_the_task_even_inside_except_exception(python, tmp_path):
    d = _run_dir(tmp_path)
    assert _launch(python, d, "task.py", "fail").returncode == 1
    events = _events(d)
    assert [(e.type, e.message) for e in events if e.type == "fail"] == [("fail", "told to fail")]
    assert not any("swallowed" in (e.message or "") for e in events)
    assert not any(e.message == "done" for e in events)
    assert _exit(d)["error"] == "told to fail"


@each_python
def test_sys_exit_with_a_status_is_recorded(python, tmp_path):
    d = _run_dir(tmp_path, "import sys\nsys.exit(3)\n")
    assert _launch(python, d, "task.py").returncode == 3
    record = _exit(d)
    assert (record["exit_code"], record["failed"]) == (3, True)
    assert record["error"] == "exited with status 3"


@each_python
def test_numbering_continues_when_the_events_file_already_has_lines(python, tmp_path):
    d = _run_dir(tmp_path, "import scheduler_client as c\nc.status('next')\nc.log('then')\n")
    (d / "events.jsonl").write_text(
        '{"v":1,"seq":41,"type":"log","message":"old"}\n{"v":1,"seq":7,"type":"sync"}\n'
    )
    _launch(python, d, "task.py")
    assert [e.seq for e in _events(d)] == [41, 7, 42, 43]


CONCURRENT = """
import subprocess, sys
import scheduler_client as client
if sys.argv[1:] == ["child"]:
    for i in range(150):
        client.log("child %d" % i)
else:
    client.status("parent starts")
    child = subprocess.Popen([sys.executable, __file__, "child"])
    for i in range(150):
        client.log("parent %d" % i)
    assert child.wait() == 0
"""


@each_python
def test_a_task_and_its_child_process_number_their_events_without_clashes(python, tmp_path):
    d = _run_dir(tmp_path, CONCURRENT)
    result = _launch(python, d, "task.py")
    assert result.returncode == 0, result.stderr
    events = _events(d)
    assert len(events) == 301
    assert [e.seq for e in events] == list(range(1, 302))  # in file order, none repeated
    assert sum(1 for e in events if e.message.startswith("child")) == 150


@each_python
def test_a_non_python_program_runs_as_a_child_with_its_exit_status(python, tmp_path):
    d = _run_dir(tmp_path)
    script = d / "job.sh"
    script.write_text('#!/bin/sh\necho from shell "$1"\nexit 4\n')
    script.chmod(0o755)
    result = _launch(python, d, "job.sh", "a b")  # found in the run dir, not on PATH
    assert result.returncode == 4 and "from shell a b" in result.stdout
    record = _exit(d)
    assert record["exit_code"] == 4 and record["failed"]
    assert record["error"] == "job.sh exited with status 4"


@each_python
def test_a_program_that_cannot_start_is_a_failure_with_the_reason(python, tmp_path):
    d = _run_dir(tmp_path)
    (d / "not-executable.sh").write_text("#!/bin/sh\necho never\n")
    result = _launch(python, d, "not-executable.sh")
    assert result.returncode == 126
    record = _exit(d)
    assert record["failed"] and "cannot start" in record["error"]
    assert "Permission denied" in record["error"]
    assert [e.type for e in _events(d)] == ["fail"]


@each_python
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signals_are_passed_on_to_a_child_program(python, signum, tmp_path):
    d = _run_dir(tmp_path)
    script = d / "wait.sh"
    script.write_text(
        "#!/bin/sh\n"
        "trap 'echo got TERM; exit 9' TERM\n"
        "trap 'echo got INT; exit 10' INT\n"
        "trap 'echo got HUP; exit 11' HUP\n"
        "touch ready\n"
        "while true; do sleep 0.05; done\n"
    )
    script.chmod(0o755)
    proc = _start(python, d, "./wait.sh")
    _wait_for(d / "ready")
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=30)
    name = signal.Signals(signum).name[3:]
    assert f"got {name}" in out
    expected = {signal.SIGTERM: 9, signal.SIGINT: 10, signal.SIGHUP: 11}[signum]
    assert proc.returncode == expected
    assert _exit(d)["exit_code"] == expected


@each_python
def test_a_child_killed_by_a_signal_is_recorded_with_it(python, tmp_path):
    d = _run_dir(tmp_path)
    script = d / "die.sh"
    script.write_text("#!/bin/sh\nkill -KILL $$\n")
    script.chmod(0o755)
    assert _launch(python, d, "./die.sh").returncode == 128 + signal.SIGKILL
    record = _exit(d)
    assert record["signal"] == signal.SIGKILL and record["failed"]


@each_python
def test_sigterm_to_a_python_task_records_the_signal(python, tmp_path):
    d = _run_dir(
        tmp_path, "import time\nopen('ready', 'w').close()\nwhile True: time.sleep(0.02)\n"
    )
    proc = _start(python, d, "task.py")
    _wait_for(d / "ready")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    record = _exit(d)
    assert record["signal"] == signal.SIGTERM and record["failed"]
    assert record["error"] == "stopped by signal 15"
    assert [(e.level, e.message) for e in _events(d)] == [("warning", "Stopped by signal 15")]


@each_python
def test_a_task_with_its_own_sigterm_handler_ends_cleanly(python, tmp_path):
    program = (
        "import signal, sys, time\n"
        "import scheduler_client as client\n"
        "def stop(signum, frame):\n"
        "    client.status('cancelled cleanly')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "open('ready', 'w').close()\n"
        "while True: time.sleep(0.02)\n"
    )
    d = _run_dir(tmp_path, program)
    proc = _start(python, d, "task.py")
    _wait_for(d / "ready")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert [e.message for e in _events(d)] == ["cancelled cleanly"]
    assert _exit(d)["failed"] is False


@each_python
def test_the_exit_record_waits_for_the_tasks_threads(python, tmp_path):
    program = (
        "import threading, time\n"
        "import scheduler_client as client\n"
        "def late():\n"
        "    time.sleep(0.5)\n"
        "    client.status('from a thread', progress=100)\n"
        "threading.Thread(target=late).start()\n"
    )
    d = _run_dir(tmp_path, program)
    assert _launch(python, d, "task.py").returncode == 0
    (event,) = _events(d)
    assert event.message == "from a thread"
    assert _exit(d)["finished_at"] >= event.time


@each_python
def test_the_task_survives_an_unwritable_events_file(python, tmp_path):
    d = _run_dir(tmp_path, "import scheduler_client as c\nc.status('lost')\nprint('still alive')\n")
    (d / "events.jsonl").mkdir()  # a directory: open() fails
    result = _launch(python, d, "task.py")
    assert result.returncode == 0 and "still alive" in result.stdout
    assert "could not record status event" in result.stderr and "lost" in result.stderr
    assert _exit(d)["failed"] is False


@each_python
def test_odd_progress_values_never_crash_the_task(python, tmp_path):
    program = (
        "import scheduler_client as c\n"
        "c.status('a', progress=-5)\n"
        "c.status('b', progress=33.7)\n"
        "c.status('c', progress='lots')\n"
        "c.status('d', progress=float('nan'))\n"
        "c.status('e\\udcff', progress='42')\n"
    )
    d = _run_dir(tmp_path, program)
    result = _launch(python, d, "task.py")
    assert result.returncode == 0, result.stderr
    assert [(e.message, e.progress) for e in _events(d)] == [
        ("a", 0),
        ("b", 33),
        ("c", None),
        ("d", None),
        ("e?", 42),
    ]
    assert "progress 'lots' is not a number" in result.stderr


@each_python
def test_the_library_works_outside_the_launcher_too(python, tmp_path):
    d = _run_dir(tmp_path, "import scheduler_client as c\nc.status('direct')\nc.fail('no luck')\n")
    result = subprocess.run(
        [python, "task.py"], cwd=d, env=_env(d), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1 and "task failed: no luck" in result.stderr
    assert [(e.type, e.message) for e in _events(d)] == [("status", "direct"), ("fail", "no luck")]
    assert not (d / "exit.json").exists()


def test_setup_django_refuses_a_run_without_the_site(tmp_path):
    d = _run_dir(
        tmp_path,
        "import scheduler_client as c\n"
        "try:\n    c.setup_django()\nexcept RuntimeError as exc:\n    c.log(str(exc))\n",
    )
    assert _launch(sys.executable, d, "task.py").returncode == 0
    assert "only for runs on the site's own host" in _events(d)[0].message


def test_setup_django_gives_the_task_the_sites_models(tmp_path):
    site = Path(__file__).resolve().parent.parent
    d = _run_dir(
        tmp_path,
        "import scheduler_client as c\n"
        "c.setup_django()\n"
        "from django.apps import apps\n"
        "c.log(','.join(sorted(a.label for a in apps.get_app_configs())))\n",
    )
    info = json.loads((d / "run.json").read_text())
    info.update(site_dir=str(site), settings_module="project.settings")
    (d / "run.json").write_text(json.dumps(info))
    env = {**_env(d), "SECRET_KEY": os.environ["SECRET_KEY"]}
    result = subprocess.run(
        [sys.executable, "scheduler_client.py", "run", "task.py"],
        cwd=d,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    labels = _events(d)[0].message.split(",")
    assert "scheduler" in labels and "demo" in labels


@each_python
def test_a_syntax_error_in_the_program_is_a_failure_that_names_the_line(python, tmp_path):
    d = _run_dir(tmp_path, "x = 1\nif x\n    pass\n")
    assert _launch(python, d, "task.py").returncode == 1
    (fail,) = _events(d)
    assert fail.type == "fail" and fail.message.startswith("SyntaxError")
    assert "line 2" in fail.traceback
    assert _exit(d)["error"].startswith("SyntaxError")


@each_python
def test_fail_in_a_thread_still_fails_the_run(python, tmp_path):
    program = (
        "import threading\n"
        "import scheduler_client as client\n"
        "t = threading.Thread(target=client.fail, args=('worker gave up',))\n"
        "t.start(); t.join()\n"
        "client.status('main thread carried on')\n"
    )
    d = _run_dir(tmp_path, program)
    assert _launch(python, d, "task.py").returncode == 1
    record = _exit(d)
    assert (record["failed"], record["error"]) == (True, "worker gave up")


def test_a_run_directory_that_cannot_be_written_is_a_plain_failure(tmp_path):
    d = _run_dir(tmp_path)
    result = subprocess.run(
        [sys.executable, "scheduler_client.py", "run", "task.py"],
        cwd=d,
        env={"SCHEDULER_RUN_DIR": str(d / "gone"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "cannot write in the run directory" in result.stderr
    assert not (d / "events.jsonl").exists()  # the task did not start


@each_python
def test_a_python_task_runs_as_main_with_its_own_module(python, tmp_path):
    program = (
        "from __future__ import annotations\n"
        "import dataclasses, pickle, sys, typing\n"
        "import scheduler_client as client\n"
        "@dataclasses.dataclass\n"
        "class Point:\n"
        "    x: int\n"
        "    y: typing.ClassVar[int] = 0\n"
        "if __name__ == '__main__':\n"
        "    p = pickle.loads(pickle.dumps(Point(3)))\n"
        "    assert sys.modules['__main__'].Point is Point\n"
        "    assert [f.name for f in dataclasses.fields(Point)] == ['x']\n"
        "    assert __file__ == 'task.py' and sys.argv == ['task.py', 'arg']\n"
        "    client.status('point %d' % p.x)\n"
    )
    d = _run_dir(tmp_path, program)
    result = _launch(python, d, "task.py", "arg")
    assert result.returncode == 0, result.stderr
    assert [e.message for e in _events(d)] == ["point 3"]
