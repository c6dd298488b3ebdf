"""Read the task's event stream (events.jsonl): only complete lines, never fatal.

The poller keeps, per run, the byte offset up to which it has applied events and
the last sequence number. ``read_new_events`` parses what was appended since the
offset: a half-written last line stays for the next read (the offset stops
before it), a malformed line becomes a report instead of an exception, and an
over-long message is cut to a stated limit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

PROTOCOL_VERSIONS = {1}
EVENT_TYPES = {"status", "log", "output", "fail", "sync"}
LEVELS = {"debug", "info", "warning", "error"}
# The poller reads events in chunks of this size (poller.rundir.read_from).
MAX_LINE_BYTES = 4 * 1024 * 1024


@dataclass
class Event:
    seq: int
    type: str
    time: str | None = None
    message: str | None = None
    level: str | None = None
    progress: int | None = None
    name: str | None = None
    path: str | None = None
    traceback: str | None = None


@dataclass
class Malformed:
    offset: int
    reason: str


def cut(text: Any, limit: int) -> str:
    """``text`` as at most ``limit`` characters, saying so when it was cut."""
    text = str(text)
    if len(text) <= limit:
        return text
    suffix = f" [cut: {len(text)} chars, limit {limit}]"
    return text[: max(0, limit - len(suffix))] + suffix


def cut_keeping_end(text: str, limit: int) -> str:
    """Like cut(), but keeps the end (a traceback's last line names the error)."""
    if len(text) <= limit:
        return text
    prefix = f"[cut: {len(text)} chars, limit {limit}] …"
    return prefix + text[len(text) - max(0, limit - len(prefix)) :]


def parse_line(line: bytes, *, max_chars: int) -> Event:
    """One complete line to an Event; ValueError with a readable reason otherwise."""
    try:
        data = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    except ValueError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("v") not in PROTOCOL_VERSIONS:
        raise ValueError(f"unknown protocol version {data.get('v')!r}")
    seq = data.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise ValueError(f"bad sequence number {seq!r}")
    kind = data.get("type")
    if kind not in EVENT_TYPES:
        raise ValueError(f"unknown event type {kind!r}")
    event = Event(
        seq=seq, type=kind, time=data.get("time") if isinstance(data.get("time"), str) else None
    )
    if kind in ("status", "log", "fail"):
        message = data.get("message", "")
        event.message = cut(message if isinstance(message, str) else json.dumps(message), max_chars)
        level = data.get("level")
        event.level = level if level in LEVELS else None
        if isinstance(data.get("traceback"), str) and data["traceback"]:
            # The stored message is the summary and then as much of the traceback's
            # end as fits: the whole text stays within the limit.
            event.traceback = cut_keeping_end(data["traceback"], max_chars)
            room = max_chars - len(event.message) - 1
            if room > 0:
                event.message += "\n" + cut_keeping_end(data["traceback"], room)
    if kind == "status" and data.get("progress") is not None:
        progress = data["progress"]
        if not isinstance(progress, (int, float)) or isinstance(progress, bool):
            raise ValueError(f"bad progress {progress!r}")
        event.progress = max(0, min(100, int(progress)))
    if kind == "output":
        name, path = data.get("name"), data.get("path")
        if not isinstance(name, str) or not isinstance(path, str):
            raise ValueError("an output event needs a name and a path")
        if len(name) > 1000 or len(path) > 4000:
            raise ValueError("an output name or path that long is not a file")
        event.name, event.path = name, path
    return event


def read_new_events(
    data: bytes,
    start_offset: int,
    *,
    max_chars: int = 4000,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> tuple[list[Event], list[Malformed], int]:
    """Parse ``data`` (the file's bytes from ``start_offset`` on).

    Returns the events of complete lines, the malformed lines, and the offset
    just after the last complete line. Messages are cut to ``max_chars``. An
    unfinished line of ``max_line_bytes`` or more is given up (reported and
    skipped) rather than waited for: a reader that takes that many bytes at a
    time would otherwise never see its end, and the run's events would stall.
    Never raises on bad input.
    """
    events: list[Event] = []
    malformed: list[Malformed] = []
    position = 0
    while True:
        end = data.find(b"\n", position)
        if end < 0:
            if len(data) - position >= max_line_bytes:
                malformed.append(
                    Malformed(
                        offset=start_offset + position,
                        reason=f"line at byte {start_offset + position}: over "
                        f"{max_line_bytes} bytes without an end; skipped",
                    )
                )
                position = len(data)
            break  # no newline yet: a line still being written stays for later
        line = data[position:end].strip()
        if line:
            try:
                events.append(parse_line(line, max_chars=max_chars))
            except ValueError as exc:
                malformed.append(
                    Malformed(
                        offset=start_offset + position,
                        reason=f"line at byte {start_offset + position}: {exc}",
                    )
                )
        position = end + 1
    return events, malformed, start_offset + position


def outputs_in(events: list[Event]) -> list[tuple[str, str]]:
    """(name, path) of each output registration among ``events``, in order.
    Empty names stay in, so that the caller refuses them with a message."""
    return [(e.name, e.path) for e in events if e.type == "output" and e.name is not None]


def registered_outputs(data: bytes) -> dict[str, str]:
    """name -> path of every output the task registered (the whole stream)."""
    events, _, _ = read_new_events(data, 0, max_chars=200)
    return dict(outputs_in(events))
