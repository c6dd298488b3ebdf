"""The event protocol, tested from both sides with one set of expectations."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from poller.events import read_new_events, registered_outputs

CLIENT = Path(__file__).resolve().parent.parent / "task_programs" / "scheduler_client.py"

# What the task does, and what the poller must read back: the shared contract.
CONTRACT = [
    (
        "client.status('reading', progress=5)",
        {"type": "status", "message": "reading", "progress": 5},
    ),
    (
        "client.status('clamped', progress=250)",
        {"type": "status", "message": "clamped", "progress": 100},
    ),
    ("client.log('detail', level='debug')", {"type": "log", "message": "detail", "level": "debug"}),
    (
        "client.log('odd level', level='loud')",
        {"type": "log", "message": "odd level", "level": "info"},
    ),
    (
        "client.output_path('report.csv')",
        {"type": "output", "name": "report.csv", "path": "outputs/report.csv"},
    ),
    (
        "client.register_output('work/chart.png')",
        {"type": "output", "name": "chart.png", "path": "work/chart.png"},
    ),
    ("client.request_sync()", {"type": "sync"}),
    (
        "client.status('ünïcode ✓ \\n two lines')",
        {"type": "status", "message": "ünïcode ✓ \n two lines"},
    ),
]


def test_what_the_client_writes_the_poller_reads_back_the_same(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    shutil.copy(CLIENT, d)
    (d / "run.json").write_text(json.dumps({"v": 1, "run_id": 3, "parameters": {}}))
    program = "import scheduler_client as client\n" + "\n".join(code for code, _ in CONTRACT)
    (d / "task.py").write_text(program)
    subprocess.run(
        [sys.executable, "scheduler_client.py", "run", "task.py"],
        cwd=d,
        env={"SCHEDULER_RUN_DIR": str(d)},
        check=True,
        timeout=60,
    )
    data = (d / "events.jsonl").read_bytes()
    events, malformed, offset = read_new_events(data, 0)
    assert malformed == [] and offset == len(data)
    assert len(events) == len(CONTRACT)
    for event, (_, expected) in zip(events, CONTRACT, strict=True):
        for key, value in expected.items():
            assert getattr(event, key) == value, (key, event)
    assert [e.seq for e in events] == list(range(1, len(CONTRACT) + 1))
    assert registered_outputs(data) == {
        "report.csv": "outputs/report.csv",
        "chart.png": "work/chart.png",
    }


def _line(**fields) -> bytes:
    return (json.dumps({"v": 1, "type": "status", "message": "m", **fields}) + "\n").encode()


def test_a_half_written_last_line_is_left_for_the_next_read():
    data = _line(seq=1) + b'{"v": 1, "seq": 2, "type": "sta'
    events, malformed, offset = read_new_events(data, 100)
    assert [e.seq for e in events] == [1] and malformed == []
    assert offset == 100 + len(_line(seq=1))
    rest = data[offset - 100 :] + b'tus", "message": "m"}\n'
    events, _, offset2 = read_new_events(rest, offset)
    assert [e.seq for e in events] == [2] and offset2 == offset + len(rest)


def test_malformed_lines_are_reported_and_the_rest_is_read():
    data = (
        _line(seq=1)
        + b"this is not json\n"
        + b'{"v": 9, "seq": 2, "type": "status"}\n'
        + b'{"v": 1, "seq": "x", "type": "status"}\n'
        + b'{"v": 1, "seq": 3, "type": "explode"}\n'
        + b"\xff\xfe\n"
        + _line(seq=4, progress="lots")
        + _line(seq=5)
    )
    events, malformed, offset = read_new_events(data, 0)
    assert [e.seq for e in events] == [1, 5]
    reasons = [m.reason for m in malformed]
    assert len(reasons) == 6
    assert "not JSON" in reasons[0] and "unknown protocol version 9" in reasons[1]
    assert "bad sequence number" in reasons[2] and "unknown event type" in reasons[3]
    assert "not UTF-8" in reasons[4] and "bad progress" in reasons[5]
    assert offset == len(data)


def test_a_message_of_a_megabyte_is_cut_to_the_stated_limit():
    big = "x" * 1_048_576
    events, _, _ = read_new_events(_line(seq=1, message=big), 0, max_chars=4000)
    assert len(events[0].message) < 4100
    assert events[0].message.endswith("[cut: 1048576 chars, limit 4000]")
