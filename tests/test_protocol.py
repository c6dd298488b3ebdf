"""The event protocol, tested from both sides with one set of expectations."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    (
        "client.status('m' * 5000)",
        {"type": "status", "message": "m" * 3970 + " [cut: 5000 chars, limit 4000]"},
    ),
    ("client.fail('the end')", {"type": "fail", "message": "the end", "level": "error"}),
]


def _oldest_and_newest() -> list[str]:
    found = sorted(
        Path("/root/.pyenv/versions").glob("3.*/bin/python"),
        key=lambda p: tuple(int(x) for x in p.parent.parent.name.split(".")[:2]),
    )
    found = [str(p) for p in found if p.parent.parent.name.split(".")[1] in {"8", "13"}]
    return found or [sys.executable]


@pytest.mark.parametrize("python", _oldest_and_newest(), ids=lambda p: p.split("/")[-3])
def test_what_the_client_writes_the_poller_reads_back_the_same(python, tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    shutil.copy(CLIENT, d)
    (d / "run.json").write_text(json.dumps({"v": 1, "run_id": 3, "parameters": {}}))
    program = "import scheduler_client as client\n" + "\n".join(code for code, _ in CONTRACT)
    (d / "task.py").write_text(program)
    result = subprocess.run(
        [python, "scheduler_client.py", "run", "task.py"],
        cwd=d,
        env={"SCHEDULER_RUN_DIR": str(d)},
        timeout=60,
    )
    assert result.returncode == 1  # the contract ends with fail()
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


def test_a_cut_message_with_its_note_stays_within_the_limit():
    big = "y" * 10_000
    events, _, _ = read_new_events(_line(seq=1, message=big), 0, max_chars=4000)
    assert len(events[0].message) == 4000
    assert events[0].message.startswith("yyyy")
    assert events[0].message.endswith(" [cut: 10000 chars, limit 4000]")


def test_a_long_traceback_keeps_its_last_line_and_the_whole_stays_within_the_limit():
    frames = "".join(f'  File "t.py", line {i}, in f\n    f()\n' for i in range(5000))
    tb = "Traceback (most recent call last):\n" + frames + "RecursionError: too deep\n"
    line = (
        json.dumps(
            {
                "v": 1,
                "seq": 1,
                "type": "fail",
                "message": "RecursionError: too deep",
                "traceback": tb,
            }
        )
        + "\n"
    ).encode()
    events, malformed, _ = read_new_events(line, 0, max_chars=4000)
    assert malformed == []
    message = events[0].message
    assert len(message) <= 4000
    assert message.startswith("RecursionError: too deep\n[cut: ")
    assert message.endswith("RecursionError: too deep\n")
    assert events[0].traceback.endswith("RecursionError: too deep\n")


def test_an_endless_line_is_given_up_instead_of_stalling_the_stream():
    endless = b'{"v": 1, "seq": 1, "type": "status", "message": "' + b"z" * 5000
    events, malformed, offset = read_new_events(_line(seq=1) + endless, 0, max_line_bytes=4096)
    assert [e.seq for e in events] == [1]
    assert offset == len(_line(seq=1)) + len(endless)  # the reader moves on
    assert "over 4096 bytes without an end; skipped" in malformed[0].reason
    # The rest of that line, when it comes, is one malformed line; then all is normal.
    events, malformed, _ = read_new_events(b'zzz"}\n' + _line(seq=2), offset)
    assert [e.seq for e in events] == [2] and len(malformed) == 1


def test_a_short_unfinished_line_is_still_waited_for():
    partial = b'{"v": 1, "seq": 1, "type": "status", "message": "' + b"z" * 100
    events, malformed, offset = read_new_events(partial, 50, max_line_bytes=4096)
    assert (events, malformed, offset) == ([], [], 50)


def test_output_events_need_a_name_and_a_path():
    data = b'{"v": 1, "seq": 1, "type": "output", "name": "a.txt"}\n'
    events, malformed, _ = read_new_events(data, 0)
    assert events == [] and "needs a name and a path" in malformed[0].reason
