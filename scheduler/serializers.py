"""One shape per model, for every way out: the Python API, the HTTP API, the
live status JSON and the CLI.

Values are Python values (datetimes stay datetimes); ``as_json`` turns times into
ISO 8601 for the JSON answers. Each way out adds only what is its own (a URL,
a path on this host), never a second spelling of a field.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from scheduler.models import OutputFile, Run, RunInput, StatusMessage


def run_data(run: Run) -> dict[str, Any]:
    """A run's state, progress, latest message, exit code and times."""
    return {
        "run_id": run.pk,
        "definition": run.definition.name,
        "state": run.state,
        "progress": run.progress,
        "message": run.status_message,
        "exit_code": run.exit_code,
        "error": run.error,
        "attempt": run.attempt,
        "due_at": run.due_at,
        "queued_at": run.queued_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "needs": run.needs or {},
        "core_hours": run.core_hours,
        "cost": float(run.cost) if run.cost is not None else None,
    }


def input_data(i: RunInput) -> dict[str, Any]:
    """An input file of a run, as staged into inputs/."""
    return {
        "id": i.pk,
        "name": i.name,
        "size": i.size,
        "sha256": i.sha256,
        "from_run": i.source_run_id,
        "from_file": i.source_file_id,
    }


def file_data(f: OutputFile) -> dict[str, Any]:
    """An output file (or a run's stdout/stderr) as stored."""
    return {
        "id": f.pk,
        "name": f.name,
        "kind": f.kind,
        "size": f.size,
        "sha256": f.sha256,
        "content_type": f.content_type,
        "created_at": f.created_at,
    }


def message_data(m: StatusMessage) -> dict[str, Any]:
    """A status message of a run."""
    return {
        "id": m.pk,
        "time": m.created_at,
        "level": m.level,
        "text": m.text,
        "progress": m.progress,
    }


def as_json(data: dict[str, Any]) -> dict[str, Any]:
    """The same data with its times as ISO 8601 strings."""
    return {k: (v.isoformat() if isinstance(v, dt.datetime) else v) for k, v in data.items()}
