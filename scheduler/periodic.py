"""Periodic tasks declared in code, synced into schedules operators manage.

    @task(schedule="30 3 * * 1-5", timezone="Europe/Amsterdam")
    def nightly_report(): ...

or, for a task whose decorator you do not own, the setting::

    SCHEDULER_PERIODIC_TASKS = {"demo.tasks.tidy": {"schedule": "0 * * * *"}}

``sync()`` runs after ``migrate`` and when a poller starts. Each declared task
gets one schedule named ``DECLARED`` on its definition (scheduler.tasks_backend):

- new: made enabled, due from now on;
- changed in code (expression or zone): updated, its next due time recomputed;
  an operator's pause stays (``enabled`` is the operator's, never touched);
- gone from the code (the task or its schedule): disabled with a note in its
  last error, never deleted, so its runs and history stay.
"""

from __future__ import annotations

import logging
import zoneinfo

from django.conf import settings
from django.utils import timezone
from django.utils.module_loading import autodiscover_modules, import_string

logger = logging.getLogger(__name__)

DECLARED = "declared in code"
GONE = "Not declared in code any more"  # starts the note on a schedule the sync disabled
_declared: dict[str, object] = {}


def declare(task) -> None:
    """Called by PeriodicTask for each task with a schedule, at import."""
    _declared[task.module_path] = task


def schedule_problems(expression: str, zone: str) -> list[str]:
    from scheduler import recurrence as maths

    problems = []
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        problems.append(f"time zone {zone!r} is not an IANA zone, e.g. Europe/Amsterdam.")
    error = maths._cron_error(expression.strip()) if expression.strip() else "no expression."
    if error:
        problems.append(error)
    return problems


def declared() -> dict[str, tuple[str, str]]:
    """import path -> (cron expression, time zone), from the code and the setting.
    Imports each installed app's ``tasks`` module first, so decorators have run."""
    autodiscover_modules("tasks")
    found = {
        path: (task.schedule, task.timezone) for path, task in _declared.items() if task.schedule
    }
    for path, spec in (getattr(settings, "SCHEDULER_PERIODIC_TASKS", None) or {}).items():
        found[path] = (spec.get("schedule", ""), spec.get("timezone", "UTC"))
    return found


def sync(now=None) -> dict[str, list[str]]:
    """Bring the declared schedules into the database; answers what changed, by
    kind: {"added": [...], "changed": [...], "disabled": [...], "refused": [...]}."""
    from scheduler import services
    from scheduler.models import Recurrence
    from scheduler.tasks_backend import definition_for

    now = now or timezone.now()
    report: dict[str, list[str]] = {"added": [], "changed": [], "disabled": [], "refused": []}
    wanted = declared()
    for path, (expression, zone) in sorted(wanted.items()):
        problems = schedule_problems(expression, zone)
        try:
            task = import_string(path)
        except ImportError as exc:
            problems.append(f"cannot import {path}: {exc}")
        if problems:
            report["refused"].append(path)
            logger.warning("periodic task %s: %s", path, " ".join(problems))
            continue
        definition = definition_for(task)
        outcome = services.recurrence_declare(
            definition=definition,
            name=DECLARED,
            expression=expression,
            zone=zone,
            now=now,
            gone_mark=GONE,
        )
        if outcome:
            report[outcome].append(path)
    for rec in Recurrence.objects.filter(name=DECLARED).select_related("definition"):
        if rec.definition.name in wanted or rec.last_error.startswith(GONE):
            continue
        services.recurrence_undeclare(
            rec=rec,
            now=now,
            note=f"{GONE} on {now:%Y-%m-%d %H:%M} UTC: {rec.definition.name} declares no "
            "schedule any more (or is gone from the code). Disabled, not deleted; delete it "
            "by hand if it is not coming back.",
        )
        report["disabled"].append(rec.definition.name)
    if any(report.values()):
        logger.info(
            "periodic tasks: %s",
            "; ".join(f"{kind} {', '.join(paths)}" for kind, paths in report.items() if paths),
        )
    return report
