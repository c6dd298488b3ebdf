"""The public Python API: queue runs, read their state, fetch results.

Every function raises :class:`scheduler.exceptions.SchedulerError` (re-exported
here) with a readable message for an unknown definition, resource or run, bad
parameter values, or a run the given user may not see. Its kinds say which:
``NotFound`` (unknown, or invisible to the user), ``Forbidden`` (the user's role
may not), ``InvalidRequest`` (bad input); the HTTP API answers 404, 403 and 400.

    >>> from scheduler.api import submit_task, get_task_status, get_task_results
    >>> run_id = submit_task("Nightly report", parameters={"rows": 100})
    >>> get_task_status(run_id)["state"]
    'QUEUED'

With ``user=`` a call acts for that user: it sees and touches only what the user's
role and the definitions' groups allow. Without it, the caller is trusted code.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.urls import reverse

from scheduler import access, serializers, services
from scheduler.exceptions import Forbidden, InvalidRequest, NotFound, SchedulerError
from scheduler.models import ExecutionResource, Run, TaskDefinition

__all__ = [
    "SchedulerError",
    "NotFound",
    "Forbidden",
    "InvalidRequest",
    "submit_task",
    "get_task_status",
    "get_task_statuses",
    "get_task_results",
    "cancel_task",
    "list_runs",
    "get_task_cost",
]


def _definition(definition: TaskDefinition | str | int, user=None) -> TaskDefinition:
    qs = TaskDefinition.objects.all() if user is None else access.visible_definitions(user)
    if isinstance(definition, TaskDefinition):
        if qs.filter(pk=definition.pk).exists():
            return definition
        raise NotFound(f"Unknown task definition {definition.name!r}.")
    lookup = {"pk": definition} if isinstance(definition, int) else {"name": definition}
    try:
        return qs.get(**lookup)
    except TaskDefinition.DoesNotExist:
        raise NotFound(f"Unknown task definition {definition!r}.") from None


def _resource(resource: ExecutionResource | str | None) -> ExecutionResource | None:
    if resource is None or isinstance(resource, ExecutionResource):
        return resource
    try:
        return ExecutionResource.objects.get(name=resource)
    except ExecutionResource.DoesNotExist:
        raise InvalidRequest(f"Unknown execution resource {resource!r}.") from None


def _run(run_id: int, user=None) -> Run:
    qs = Run.objects.select_related("definition", "resource")
    if user is not None:
        qs = access.visible_runs(user, qs)
    try:
        return qs.get(pk=int(run_id))
    except (Run.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"Unknown run {run_id!r}.") from None


def _utc(value: dt.datetime | None, name: str) -> dt.datetime | None:
    """An aware datetime in UTC. Python allows offsets up to 24 h and PostgreSQL
    only about 16, so every time goes to the database as UTC (found by fuzzing)."""
    if value is None:
        return None
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidRequest(f"{name} must be an aware datetime (with a time zone).")
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise InvalidRequest(f"{name} {value.isoformat()} is out of range.") from None


def _status(run: Run) -> dict[str, Any]:
    return serializers.run_data(run)


def submit_task(
    definition: TaskDefinition | str | int,
    *,
    parameters: dict[str, Any] | None = None,
    resource: ExecutionResource | str | None = None,
    run_at: dt.datetime | None = None,
    user=None,
    json_types: bool = False,
    needs: dict[str, Any] | None = None,
    inputs: list | None = None,
    args: list[str] | None = None,
) -> int:
    """Queue a run of ``definition`` (instance, name or id); return the run id.

    ``json_types``: the parameters came as JSON (the HTTP API), so a number must be
    a number: ``"10"`` for an integer parameter is refused, not read.
    ``needs``: overrides of what the definition's runs need (scheduler.needs:
    cores, processes_per_host, memory_mb, gpus, mpi, wall_time_seconds, queue,
    project, environment), checked against the resource.
    ``inputs``: files for ``inputs/`` of the run directory, each an
    ``inputs.Upload(name, file)``, an ``inputs.FromOutput(file_id, name)`` (an
    earlier run's output file the user may see), or a path on this host.
    ``args``: command-line arguments instead of the definition's default ones."""
    if user is not None and not user.has_perm("scheduler.run_taskdefinition"):
        raise Forbidden("You may not queue runs.")
    run_at = _utc(run_at, "run_at")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidRequest("parameters must be a dict of name: value.")
    run = services.run_enqueue(
        definition=_definition(definition, user),
        parameters=parameters,
        resource=_resource(resource),
        due_at=run_at,
        requested_by=user,
        json_types=json_types,
        needs=needs,
        inputs=_inputs(inputs),
        args=args,
    )
    return run.pk


def _inputs(inputs: list | None) -> list | None:
    """Input files as scheduler.inputs items; a path becomes an Upload of that file."""
    from pathlib import Path

    from scheduler import inputs as run_inputs

    if not inputs:
        return None
    if not isinstance(inputs, (list, tuple)):
        raise InvalidRequest("inputs must be a list of input files.")
    items = []
    for item in inputs:
        if isinstance(item, (run_inputs.Upload, run_inputs.FromOutput)):
            items.append(item)
        elif isinstance(item, (str, Path)):
            path = Path(item)
            try:
                items.append(run_inputs.Upload(path.name, path.open("rb"), path.stat().st_size))
            except OSError as exc:
                raise InvalidRequest(
                    f"Cannot read input file {str(item)!r}: {exc.strerror}."
                ) from None
        elif hasattr(item, "read"):
            name = Path(getattr(item, "name", "") or "").name
            if not name:
                raise InvalidRequest("An input file object needs a name (open it from a path).")
            items.append(run_inputs.Upload(name, item))
        else:
            raise InvalidRequest(f"Not an input file: {item!r}.")
    return items


def get_task_cost(run_id: int, *, user=None) -> dict[str, Any]:
    """What a run used: its cores, core-hours (cores x time from start to end)
    and cost (core-hours x the resource's price per core-hour; None without a
    price). Core-hours are None until the run has ended."""
    run = _run(run_id, user)
    return {
        "run_id": run.pk,
        "cores": run.cores,
        "core_hours": run.core_hours,
        "cost": float(run.cost) if run.cost is not None else None,
        "price_per_core_hour": (
            float(run.resource.price_per_core_hour)
            if run.resource.price_per_core_hour is not None
            else None
        ),
    }


def get_task_status(run_id: int, *, user=None) -> dict[str, Any]:
    """State, progress, latest message, exit code and times of one run."""
    return _status(_run(run_id, user))


def get_task_statuses(
    definition: TaskDefinition | str | int, *, user=None, limit: int = 100
) -> list[dict[str, Any]]:
    """Statuses of a definition's runs, newest first (at most ``limit``)."""
    definition = _definition(definition, user)
    runs = definition.runs.select_related("definition").order_by("-queued_at", "-id")[:limit]
    return [_status(run) for run in runs]


def list_runs(
    *,
    user=None,
    state: str | None = None,
    definition: TaskDefinition | str | int | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Statuses of runs, newest first, filtered by state, definition and queue time
    (since <= queued < until). Walks the run list's index; never counts the table."""
    if state is not None and state not in Run.State.values:
        raise InvalidRequest(f"Unknown state {state!r}; one of {', '.join(Run.State.values)}.")
    since, until = _utc(since, "since"), _utc(until, "until")
    if not 1 <= limit <= 1000 or offset < 0:
        raise InvalidRequest("limit must be 1-1000 and offset 0 or more.")
    runs = Run.objects.select_related("definition")
    if user is not None:
        runs = access.visible_runs(user, runs)
    if state:
        runs = runs.filter(state=state)
    if definition is not None:
        runs = runs.filter(definition=_definition(definition, user))
    if since is not None:
        runs = runs.filter(queued_at__gte=since)
    if until is not None:
        runs = runs.filter(queued_at__lt=until)
    return [_status(run) for run in runs.order_by("-queued_at", "-id")[offset : offset + limit]]


def get_task_results(run_id: int, *, user=None) -> dict[str, Any]:
    """Status plus every message and every output file with its download URL."""
    run = _run(run_id, user)
    result = _status(run)
    result["messages"] = [serializers.message_data(m) for m in run.messages.all()]
    result["inputs"] = [serializers.input_data(i) for i in run.inputs.all()]
    result["files"] = [
        {
            **serializers.file_data(f),
            "path": str(f.absolute_path()),
            "download_url": reverse("scheduler:file-download", args=[run.pk, f.pk]),
        }
        for f in run.files.all()
    ]
    return result


def cancel_task(run_id: int, *, user=None) -> str:
    """Cancel a run: "cancelled" (was queued), "requested" (the poller ends it) or "final"."""
    run = _run(run_id, user)
    if user is not None and not user.has_perm("scheduler.cancel_run"):
        raise Forbidden("You may not cancel runs.")
    return services.run_request_cancel(run=run, user=user)
