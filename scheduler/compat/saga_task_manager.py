"""Seed 000's API (Django Simple SAGA Task Manager, ``simple_saga_task_manager.api``)
on top of ours, so its callers change one import line (docs/migrating.md):

    from scheduler.compat.saga_task_manager import submit_task, get_task_status, ...

The five functions keep their signatures, argument meanings and return shapes:

- ``submit_task(task_name, remote, arguments, input_files, environment,
  expected_output_files, wallclock_limit, project, nprocs)`` -> the run id.
  ``task_name`` names a task definition, or a program in SCHEDULER_PROGRAM_DIRS
  (a definition of that name is made for it, once); never an arbitrary path.
  ``remote=True`` runs on the resource SCHEDULER_COMPAT_REMOTE_RESOURCE names,
  ``False`` on the definition's default. ``input_files`` are open files (or
  paths), staged into ``inputs/`` of the run directory; their base names are
  kept. ``expected_output_files`` are names (or patterns) relative to the run
  directory, brought home at the end. ``wallclock_limit`` is in seconds (0: none),
  ``nprocs`` the cores.
- ``get_task_status(task_id)`` -> "QU", "RU", "FR", "FL", "FA" or "CO".
- ``get_task_statuses(task_name)`` -> ``[{"id": N, "status": "CO"}, ...]``,
  oldest first.
- ``get_task_results(task_id)`` -> ``{"stdout": file, "stderr": file,
  "output_files": [file, ...]}`` of open files (binary, read-only), stdout and
  stderr only where they exist.
- ``get_task_cost(task_id)`` -> the cost as a float: core-hours times the
  resource's price per core-hour, or the core-hours where it has no price.

Errors are scheduler.exceptions.SchedulerError with a readable message (seed
000 printed some and returned 0).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from scheduler import api, services
from scheduler.exceptions import InvalidRequest, NotFound
from scheduler.models import ExecutionResource, OutputFile, Run, TaskDefinition

# Seed 000's status codes.
QUEUED, RUNNING, FINISHED_RUNNING, FAILED_RUNNING, FAILED, COMPLETE = (
    "QU",
    "RU",
    "FR",
    "FL",
    "FA",
    "CO",
)


def status_code(run: Run) -> str:
    """Our state as seed 000's code. A run that ended badly after it started
    "failed while running" (FL); one that never started, or was cancelled, FA.
    Our runs end only after their files are home, so FR (finished, files not
    yet home) is what a run is between its program's end and that: RUNNING here."""
    state = run.state
    if state in (Run.State.QUEUED, Run.State.SUBMITTED):
        return QUEUED
    if state == Run.State.RUNNING:
        return RUNNING
    if state == Run.State.SUCCEEDED:
        return COMPLETE
    if state == Run.State.CANCELLED or run.started_at is None:
        return FAILED
    return FAILED_RUNNING


def _definition(task_name: str) -> TaskDefinition:
    if not isinstance(task_name, str) or not task_name.strip():
        raise InvalidRequest("task_name must name a task definition or a program.")
    found = TaskDefinition.objects.filter(name=task_name).first()
    if found is not None:
        return found
    from scheduler.models import resolve_program

    try:
        resolve_program(task_name)  # inside SCHEDULER_PROGRAM_DIRS, or refused
    except Exception as exc:  # noqa: BLE001 - ValidationError: its message
        text = "; ".join(getattr(exc, "messages", [str(exc)]))
        raise NotFound(f"No task definition or program {task_name!r}: {text}") from None
    definition, _ = TaskDefinition.objects.get_or_create(
        name=task_name,
        defaults={
            "program": task_name,
            "description": "Made for seed 000's submit_task (scheduler.compat).",
        },
    )
    return definition


def _remote_resource() -> ExecutionResource:
    name = settings.SCHEDULER_COMPAT_REMOTE_RESOURCE
    if not name:
        raise InvalidRequest(
            "remote=True needs the setting SCHEDULER_COMPAT_REMOTE_RESOURCE (the name of "
            "an execution resource)."
        )
    try:
        return ExecutionResource.objects.get(name=name)
    except ExecutionResource.DoesNotExist:
        raise InvalidRequest(
            f"SCHEDULER_COMPAT_REMOTE_RESOURCE names {name!r}, which is not a resource."
        ) from None


def submit_task(
    task_name,
    remote=False,
    arguments=(),
    input_files=(),
    environment=None,
    expected_output_files=(),
    wallclock_limit=0,
    project="",
    nprocs=1,
) -> int:
    definition = _definition(task_name)
    resource = _remote_resource() if remote else None
    if isinstance(arguments, str) or not all(
        isinstance(a, (str, int, float)) for a in arguments or ()
    ):
        raise InvalidRequest("arguments must be a list of strings, e.g. ['--help'].")
    needs: dict[str, Any] = {"cores": nprocs or 1}
    if environment:
        needs["environment"] = dict(environment)
    if wallclock_limit:
        needs["wall_time_seconds"] = wallclock_limit
    if project:
        needs["project"] = project
    if expected_output_files:
        # Seed 000 said per task which files come home: the run's output patterns.
        needs["output_patterns"] = list(expected_output_files)
    run_id = api.submit_task(
        definition,
        resource=resource,
        needs=needs,
        inputs=list(input_files or []) or None,
        args=[str(a) for a in arguments] if arguments else None,
    )
    run = Run.objects.get(pk=run_id)
    services.audit_record(
        action="queue", obj=run, detail={"definition": definition.name, "via": "compat-000"}
    )
    return run_id


def _run(task_id) -> Run:
    try:
        return Run.objects.select_related("resource").get(pk=int(task_id))
    except (Run.DoesNotExist, ValueError, TypeError):
        raise NotFound(f"Unknown task {task_id!r}.") from None


def get_task_status(task_id) -> str:
    return status_code(_run(task_id))


def get_task_statuses(task_name) -> list[dict[str, Any]]:
    definition = TaskDefinition.objects.filter(name=task_name).first()
    if definition is None:
        return []
    runs = Run.objects.filter(definition=definition).order_by("queued_at", "id")
    return [{"id": run.pk, "status": status_code(run)} for run in runs]


def get_task_results(task_id) -> dict[str, Any]:
    run = _run(task_id)
    results: dict[str, Any] = {}
    outputs = []
    for f in run.files.order_by("kind", "name", "id"):
        try:
            handle = open(f.absolute_path(), "rb")  # noqa: SIM115 - the caller closes it
        except OSError:
            continue
        if f.kind == OutputFile.Kind.STDOUT:
            results["stdout"] = handle
        elif f.kind == OutputFile.Kind.STDERR:
            results["stderr"] = handle
        else:
            outputs.append(handle)
    results["output_files"] = outputs
    return results


def get_task_cost(task_id) -> float:
    cost = api.get_task_cost(_run(task_id).pk)
    if cost["cost"] is not None:
        return cost["cost"]
    return cost["core_hours"] or 0.0


__all__ = [
    "submit_task",
    "get_task_status",
    "get_task_statuses",
    "get_task_results",
    "get_task_cost",
    "status_code",
]
