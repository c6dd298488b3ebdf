"""A backend for Django's Tasks framework: ``@task`` functions enqueue as runs.

Django 6.x ships the framework as ``django.tasks``; on Django 5.2 the pinned
``django-tasks`` backport (``django_tasks``) provides the same API. Settings::

    TASKS = {"default": {"BACKEND": "scheduler.tasks_backend.SchedulerBackend"}}

How a task becomes a run (docs/django_tasks.md):

- Each task function is a task definition of its own, named by its import path
  (``demo.tasks.add_numbers``), made at its first enqueue (or at the periodic
  sync). It runs ``task_programs/django_task.py``, which sets Django up with the
  site's settings, imports the function and calls it. So every task has its own
  runs list, statistics, access groups, retries, timeout and schedules in the
  admin.
- The arguments travel as JSON (Django's rules: what ``normalize_json`` takes) in
  the run's ``call`` parameter; the return value comes home as the output file
  ``return_value.json``; an exception fails the run with its traceback, and its
  class as ``task_error.json``.
- ``queue_name`` names the execution resource (``"default"``: the definition's
  default resource, which is the resource named ``local`` until an operator
  changes it); ``run_after`` is the due time; ``priority`` orders the claims
  among the due runs; ``takes_context`` gives the function a ``TaskContext``.
- The result id is the run id. A retry is a new run; the result follows the
  chain to the newest attempt.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils.module_loading import import_string

try:  # Django 6.x
    from django.tasks import TaskContext, TaskResult, TaskResultStatus
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.base import Task, TaskError
    from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
    from django.tasks.signals import task_enqueued
    from django.utils.json import normalize_json
except ImportError:  # Django 5.2 with the django-tasks backport
    from django_tasks import TaskContext, TaskResult, TaskResultStatus
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import Task, TaskError
    from django_tasks.exceptions import InvalidTaskError as InvalidTask
    from django_tasks.exceptions import TaskResultDoesNotExist
    from django_tasks.signals import task_enqueued
    from django_tasks.utils import normalize_json

__all__ = [
    "InvalidTask",
    "PeriodicTask",
    "SchedulerBackend",
    "TaskContext",
    "TaskResultDoesNotExist",
]

PROGRAM = "django_task.py"  # in task_programs/
RETURN_FILE = "return_value.json"
# A task's return value, as JSON, may be this big; a bigger one fails the run
# with the reason (task_programs/django_task.py): it is read whole into the
# result. Large results belong in output files.
RETURN_LIMIT_BYTES = 10 * 1024 * 1024
ERROR_FILE = "task_error.json"
CLASS_PATH = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*){1,20}")
MAX_CALL_CHARS = 10_000  # the run parameter that carries the arguments (a string parameter)

STATUS = {
    "QUEUED": TaskResultStatus.READY,
    "SUBMITTED": TaskResultStatus.READY,
    "RUNNING": TaskResultStatus.RUNNING,
    "SUCCEEDED": TaskResultStatus.SUCCESSFUL,
    "FAILED": TaskResultStatus.FAILED,
    "TIMED_OUT": TaskResultStatus.FAILED,
    "LOST": TaskResultStatus.FAILED,
    "CANCELLED": TaskResultStatus.FAILED,
}


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class PeriodicTask(Task):
    """A task that may also declare a schedule in code:

        @task(schedule="30 3 * * 1-5", timezone="Europe/Amsterdam")
        def nightly_report(): ...

    ``@task`` hands its extra keyword arguments to the backend's task class (Django
    6.1 and the backport alike). ``scheduler.periodic.sync`` turns the declared
    schedules into schedules operators see in the admin."""

    schedule: str = ""  # a five-field cron expression; "" for none
    timezone: str = "UTC"

    def __post_init__(self):
        super(PeriodicTask, self).__post_init__()
        if self.schedule:
            from scheduler import periodic

            periodic.declare(self)


class SchedulerBackend(BaseTaskBackend):
    task_class = PeriodicTask
    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias, params):
        super().__init__(alias, params)
        # Queues are execution resources, looked up at enqueue (validate_task):
        # the base class's fixed list would refuse every resource made later.
        self.queues = set()

    # ------------------------------------------------------------- enqueue
    def validate_task(self, task) -> None:
        super().validate_task(task)
        if getattr(task, "schedule", ""):
            from scheduler import periodic

            problems = periodic.schedule_problems(task.schedule, task.timezone)
            if problems:
                raise InvalidTask(f"{task.module_path}: bad schedule: {' '.join(problems)}")

    def enqueue(self, task, args, kwargs):
        self.validate_task(task)
        _importable(task)
        resource = resource_for(task.queue_name)  # InvalidTask for an unknown queue
        call = encode_call(args, kwargs)  # TypeError/ValueError as Django's own backends
        if len(call) > MAX_CALL_CHARS:
            raise InvalidTask(
                f"The arguments of {task.module_path} take {len(call):,} characters as JSON; "
                f"at most {MAX_CALL_CHARS:,} travel with a run (pass a file or a key instead)."
            )
        from scheduler import services

        with transaction.atomic():
            definition = definition_for(task)
            _runs_django_here(resource or services.default_resource_for(definition), task)
            run = services.run_enqueue(
                definition=definition,
                parameters={"call": call},
                resource=resource,
                due_at=task.run_after,
                priority=task.priority,
            )
        result = self._result(task, run, attempts=[run])  # a new run has no retries yet
        task_enqueued.send(type(self), task_result=result)
        return result

    # ------------------------------------------------------------- results
    def get_result(self, result_id):
        from scheduler.models import Run

        try:
            pk = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(result_id) from None
        run = Run.objects.select_related("definition").filter(pk=pk).first()
        if run is None or run.definition.program != PROGRAM:
            raise TaskResultDoesNotExist(result_id)
        try:
            task = import_string(run.definition.name)
        except ImportError:
            raise TaskResultDoesNotExist(
                f"{result_id}: its task {run.definition.name} is not in the code any more"
            ) from None
        return self._result(task, run)

    def _result(self, task, run, attempts=None) -> TaskResult:
        """The TaskResult of ``run`` (the first attempt), from its newest attempt."""
        from scheduler.models import Run

        first = run.retry_of or run
        if attempts is None:
            attempts = list(
                Run.objects.filter(Q(pk=first.pk) | Q(retry_of=first)).order_by("attempt", "pk")
            )
        last = attempts[-1] if attempts else run
        call = decode_call(last.parameters.get("call"))
        status = STATUS[last.state]
        started = [a for a in attempts if a.started_at]
        tried = [a for a in attempts if a.state != "QUEUED"]  # taken by a poller
        errors = [self._error(a) for a in attempts if STATUS[a.state] == TaskResultStatus.FAILED]
        result = TaskResult(
            task=task,
            id=str(first.pk),
            status=status,
            enqueued_at=first.queued_at,
            started_at=started[0].started_at if started else None,
            finished_at=last.finished_at if last.is_final else None,
            last_attempted_at=started[-1].started_at if started else None,
            args=call["args"],
            kwargs=call["kwargs"],
            backend=self.alias,
            errors=errors,
            worker_ids=[f"{a.poller or 'poller'}:run-{a.pk}" for a in tried],
        )
        if status == TaskResultStatus.SUCCESSFUL:
            object.__setattr__(result, "_return_value", _stored_json(last, RETURN_FILE))
        return result

    @staticmethod
    def _error(run) -> TaskError:
        # Written by the task program, so read as the task's word: the class path
        # must look like one (TaskError imports it when asked), else it is ignored.
        found = _stored_json(run, ERROR_FILE)
        if isinstance(found, dict) and CLASS_PATH.fullmatch(str(found.get("exception_class_path"))):
            return TaskError(
                exception_class_path=found["exception_class_path"],
                traceback=str(found.get("traceback") or run.error),
            )
        # Ended without reaching the function's end: cancelled, timed out, lost,
        # killed, or the program could not start.
        kind = {
            "CANCELLED": "scheduler.tasks_backend.TaskCancelled",
            "TIMED_OUT": "builtins.TimeoutError",
        }.get(run.state, "builtins.RuntimeError")
        return TaskError(exception_class_path=kind, traceback=run.error or run.state.lower())


class TaskCancelled(Exception):
    """The error of a task run an operator cancelled."""


# --------------------------------------------------------------------- helpers
def encode_call(args, kwargs) -> str:
    """The arguments as the run carries them; Django's JSON rules (normalize_json
    raises for what JSON cannot hold, as Django's own backends do)."""
    return json.dumps(
        {"args": normalize_json(list(args)), "kwargs": normalize_json(dict(kwargs))},
        sort_keys=True,
        allow_nan=False,
    )


def decode_call(text) -> dict[str, Any]:
    try:
        data = json.loads(text or "{}")
    except ValueError:
        data = {}
    return {"args": list(data.get("args") or []), "kwargs": dict(data.get("kwargs") or {})}


def _importable(task) -> None:
    """The poller's program imports the task by its path: it must find this task
    there (not a plain function, not another object)."""
    path = task.module_path
    try:
        found = import_string(path)
    except ImportError:
        found = None
    if getattr(found, "func", None) is not task.func:
        raise InvalidTask(
            f"{path} cannot be imported by its path as this task, so the poller could not "
            "run it: decorate a module-level function with @task and keep its name."
        )


def _runs_django_here(resource, task) -> None:
    """The task program sets Django up with this site's code, settings and
    database, which it finds on resources of this host (fork://localhost, a
    batch system here such as slurm://localhost) that run programs as the site's
    own account; elsewhere it could not start."""
    if not resource.on_this_host() or resource.run_as:
        why = "runs programs as another account" if resource.run_as else "is not on this host"
        raise InvalidTask(
            f"Queue {resource.name!r} cannot run {task.module_path}: the resource {why}, and a "
            "Django task needs the site's code, settings and database (a resource of this host "
            "that runs programs as the site's account)."
        )


def resource_for(queue_name: str):
    """``default``: None (the definition's default resource); else the enabled
    execution resource of that name."""
    from scheduler.models import ExecutionResource

    if queue_name == "default":
        return None
    resource = ExecutionResource.objects.filter(name=queue_name).first()
    if resource is None:
        known = ", ".join(ExecutionResource.objects.order_by("name").values_list("name", flat=True))
        raise InvalidTask(
            f"Queue {queue_name!r} is not valid for backend: no execution resource of that "
            f"name (there are: default, {known})."
        )
    if not resource.enabled:
        raise InvalidTask(f"Queue {queue_name!r}: the execution resource is disabled.")
    return resource


def definition_for(task):
    """The task's own definition, made on first use: named by its import path,
    running django_task.py with the path as its ``task`` parameter's default."""
    from scheduler.models import TaskDefinition, TaskParameter

    path = task.module_path
    definition, made = TaskDefinition.objects.get_or_create(
        name=path,
        defaults={
            "program": PROGRAM,
            "description": (
                f"Django task {path} (@task). Its runs are queued by .enqueue() and by "
                "its schedules; the arguments are the run's 'call' parameter."
            ),
        },
    )
    if made:
        TaskParameter.objects.create(
            definition=definition,
            name="task",
            default=path,
            position=0,
            help_text="The task's import path.",
        )
        TaskParameter.objects.create(
            definition=definition,
            name="call",
            default='{"args": [], "kwargs": {}}',
            position=1,
            help_text="The arguments, as JSON.",
        )
    return definition


def _stored_json(run, name: str):
    stored = run.files.filter(name=name).first()
    if stored is None:
        return None
    try:
        with open(stored.absolute_path(), "rb") as fh:
            return json.loads(fh.read(RETURN_LIMIT_BYTES))
    except (OSError, ValueError):
        return None
