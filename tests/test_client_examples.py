"""The example task programs under the launcher, on the oldest and newest Python here.

The poller runs them end to end in tests/test_examples.py (on the site's
Python); here each runs straight under the launcher on Python 3.8 and 3.13,
because a remote resource may have either, and the outputs are checked byte
by byte (the PNG is decoded).
"""

from __future__ import annotations

import json
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from poller.events import read_new_events

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "task_programs"


def _oldest_and_newest() -> list[str]:
    found = {}
    for path in Path("/root/.pyenv/versions").glob("3.*/bin/python"):
        minor = int(path.parent.parent.name.split(".")[1])
        if 8 <= minor <= 13:
            found[minor] = str(path)
    if not found:
        return [sys.executable]
    return sorted({found[min(found)], found[max(found)]})


each_python = pytest.mark.parametrize(
    "python", _oldest_and_newest(), ids=lambda p: p.split("/")[-3] if "pyenv" in p else "suite"
)


def _run_dir(tmp_path: Path, program: str, parameters: dict) -> Path:
    d = tmp_path / "run"
    (d / "outputs").mkdir(parents=True)
    shutil.copy(PROGRAMS / "scheduler_client.py", d)
    shutil.copy(PROGRAMS / program, d)
    (d / "run.json").write_text(
        json.dumps({"v": 1, "run_id": 5, "parameters": parameters, "args": []})
    )
    return d


def _launch(python, d, program, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "scheduler_client.py", "run", program],
        cwd=d,
        env={"SCHEDULER_RUN_DIR": str(d), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _events(d: Path):
    events, malformed, _ = read_new_events((d / "events.jsonl").read_bytes(), 0)
    assert malformed == []
    return events


def _exit(d: Path) -> dict:
    return json.loads((d / "exit.json").read_text())


def _decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """A minimal PNG reader for 8-bit RGB without filters: width, height, rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, kind
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2) and b"IEND" in chunks
    raw = zlib.decompress(chunks[b"IDAT"])
    stride = 1 + 3 * width
    assert len(raw) == stride * height
    rows = [raw[i * stride : (i + 1) * stride] for i in range(height)]
    assert all(row[0] == 0 for row in rows)
    return width, height, [row[1:] for row in rows]


@each_python
def test_hello_greets_and_registers_its_file(python, tmp_path):
    d = _run_dir(tmp_path, "hello.py", {"name": "Ada"})
    result = _launch(python, d, "hello.py")
    assert result.returncode == 0, result.stderr
    assert (d / "outputs" / "greeting.txt").read_text() == "Hello, Ada!\n"
    assert "said hello to Ada" in result.stdout
    assert [(e.type, e.message or e.name) for e in _events(d)] == [
        ("status", "Hello, Ada!"),
        ("output", "greeting.txt"),
        ("status", "Done"),
    ]


@each_python
def test_the_long_job_counts_its_steps_and_syncs_half_way(python, tmp_path):
    d = _run_dir(tmp_path, "long_job.py", {"steps": 4, "sleep": 0.01})
    assert _launch(python, d, "long_job.py").returncode == 0
    events = _events(d)
    assert [e.progress for e in events if e.progress is not None] == [25, 50, 75, 100]
    kinds = [e.type for e in events]
    assert kinds.index("sync") == kinds.index("output") + 1  # partial.txt, then the sync
    assert (d / "outputs" / "partial.txt").read_text() == "2 of 4 steps done\n"
    assert (d / "outputs" / "summary.txt").read_text() == "4 steps of 0.01 s\n"


@each_python
def test_the_report_writer_makes_a_csv_and_a_decodable_png_bar_chart(python, tmp_path):
    d = _run_dir(tmp_path, "report_writer.py", {"rows": 6, "title": "T"})
    result = _launch(python, d, "report_writer.py")
    assert result.returncode == 0, result.stderr
    lines = (d / "outputs" / "report.csv").read_text().splitlines()
    assert lines[0] == "label,value" and len(lines) == 7
    values = [int(line.split(",")[1]) for line in lines[1:]]
    width, height, rows = _decode_png((d / "outputs" / "chart.png").read_bytes())
    assert (width, height) == (20 * 6 + 20, 120)
    bar_colour = bytes((49, 112, 143))
    for i, value in enumerate(values):  # each bar as high as its value
        x = 10 + 20 * i + 8
        column = [row[3 * x : 3 * x + 3] for row in rows]
        assert sum(1 for px in column if px == bar_colour) == value
    assert _events(d)[-1].message == f"T: 6 rows, total {sum(values)}"


@each_python
def test_the_shell_wrapper_runs_without_a_shell(python, tmp_path):
    d = _run_dir(tmp_path, "shell_wrapper.py", {"command": "echo 'a b' ; touch hacked"})
    assert _launch(python, d, "shell_wrapper.py").returncode == 0
    assert not (d / "hacked").exists()
    assert [e.message for e in _events(d) if e.type == "log"] == ["a b ; touch hacked"]


@pytest.mark.parametrize(
    ("command", "error"),
    [
        ("", "the command is empty"),
        ("echo 'unclosed", "cannot split the command: No closing quotation"),
        ("/no/such/program", "cannot run /no/such/program: No such file or directory"),
        ("false", "false exited with status 1"),
    ],
)
def test_the_shell_wrapper_fails_with_a_reason(command, error, tmp_path):
    d = _run_dir(tmp_path, "shell_wrapper.py", {"command": command})
    assert _launch(sys.executable, d, "shell_wrapper.py").returncode == 1
    assert _exit(d)["error"] == error


@each_python
@pytest.mark.parametrize(
    ("mode", "code", "error"),
    [
        ("exception", 1, "ValueError: this task fails on purpose"),
        ("exit", 2, "exited with status 2"),
        ("fail", 1, "the input was not acceptable"),
    ],
)
def test_fail_on_purpose_fails_in_each_way(python, mode, code, error, tmp_path):
    d = _run_dir(tmp_path, "fail_on_purpose.py", {"mode": mode})
    assert _launch(python, d, "fail_on_purpose.py").returncode == code
    record = _exit(d)
    assert record["failed"] and record["error"] == error


@each_python
def test_the_sleeper_stops_cleanly_on_sigterm(python, tmp_path):
    d = _run_dir(tmp_path, "sleep_until_cancelled.py", {})
    proc = subprocess.Popen(
        [python, "scheduler_client.py", "run", "sleep_until_cancelled.py"],
        cwd=d,
        env={"SCHEDULER_RUN_DIR": str(d), "PATH": "/usr/bin:/bin"},
    )
    deadline = time.monotonic() + 20
    while not (d / "events.jsonl").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    messages = [e.message for e in _events(d)]
    assert (
        messages[0].startswith("Still sleeping") and messages[-1] == "Cancelled: stopping cleanly"
    )
    assert _exit(d)["failed"] is False
