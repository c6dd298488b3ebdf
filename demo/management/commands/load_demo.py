"""Load the demo: definitions of the example programs, their schedules, a few runs.

Safe to run again: everything is matched by name, and runs are only queued when
the demo has none yet, so a second start does not pile up runs.
"""

from __future__ import annotations

import datetime as dt

from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from demo.models import Measurement
from scheduler import services
from scheduler.models import ExecutionResource, Recurrence, Run, TaskDefinition, TaskParameter

# (name, program, description, [(param, type, default, required, help, choices)])
DEFINITIONS = [
    (
        "Hello world",
        "hello.py",
        "Greets, reports one status and writes greeting.txt.",
        [("name", "string", "world", False, "Who to greet", [])],
    ),
    (
        "Long job",
        "long_job.py",
        "Reports progress step by step.",
        [
            ("steps", "integer", "10", True, "How many steps", []),
            ("sleep", "float", "1.0", False, "Seconds per step", []),
        ],
    ),
    (
        "Report writer",
        "report_writer.py",
        "Writes a CSV table and a PNG bar chart.",
        [
            ("rows", "integer", "12", True, "Rows in the report", []),
            ("title", "string", "Monthly figures", False, "Chart title", []),
        ],
    ),
    (
        "ORM demo",
        "orm_demo.py",
        "Reads the demo measurements through the ORM, writes a summary.",
        [],
    ),
    (
        "Shell wrapper",
        "shell_wrapper.py",
        "Runs a command (no shell) and reports its output.",
        [("command", "string", "uname -a", True, "Command line, split like a shell would", [])],
    ),
    (
        "Fails on purpose",
        "fail_on_purpose.py",
        "Shows what a failure looks like.",
        [("mode", "choice", "exception", True, "How to fail", ["exception", "exit", "fail"])],
    ),
    (
        "Sleep until cancelled",
        "sleep_until_cancelled.py",
        "Sleeps until an operator cancels it.",
        [],
    ),
]

# (definition, recurrence name, kind, fields)
RECURRENCES = [
    (
        "Hello world",
        "Every 2 minutes",
        "interval",
        {"interval_every": 2, "interval_unit": "minutes"},
    ),
    (
        "Report writer",
        "Weekday mornings",
        "cron",
        {"cron_expression": "30 7 * * MON-FRI", "timezone": "Europe/Amsterdam"},
    ),
    ("ORM demo", "Hourly", "cron", {"cron_expression": "0 * * * *"}),
    (
        "Long job",
        "First Monday of the month",
        "rrule",
        {"rrule": "FREQ=MONTHLY;BYDAY=1MO;BYHOUR=9;BYMINUTE=0", "timezone": "America/New_York"},
    ),
]


class Command(BaseCommand):
    help = "Load the demo task definitions, schedules and a few first runs."

    @transaction.atomic
    def handle(self, *args, **options) -> None:
        local = ExecutionResource.objects.get(name="local")
        definitions = {}
        for name, program, description, params in DEFINITIONS:
            definition, _ = TaskDefinition.objects.update_or_create(
                name=name,
                defaults={
                    "program": program,
                    "description": description,
                    "default_resource": local,
                    "timeout_seconds": 3600,
                },
            )
            for pos, (pname, ptype, default, required, help_text, choices) in enumerate(params):
                TaskParameter.objects.update_or_create(
                    definition=definition,
                    name=pname,
                    defaults={
                        "type": ptype,
                        "default": default,
                        "required": required,
                        "help_text": help_text,
                        "choices": choices,
                        "position": pos,
                    },
                )
            definitions[name] = definition
        now = timezone.now()
        for def_name, rec_name, kind, fields in RECURRENCES:
            Recurrence.objects.get_or_create(
                definition=definitions[def_name],
                name=rec_name,
                defaults={"kind": kind, "start_at": now, **fields},
            )
        if not Measurement.objects.exists():
            Measurement.objects.bulk_create(
                Measurement(name=n, value=v, created_at=now - dt.timedelta(hours=i))
                for i, (n, v) in enumerate(
                    [
                        ("temperature", 21.5),
                        ("temperature", 22.1),
                        ("humidity", 48.0),
                        ("humidity", 51.5),
                        ("temperature", 20.9),
                    ]
                )
            )
        queued = 0
        if not Run.objects.filter(definition__in=definitions.values()).exists():
            for name, params in [
                ("Hello world", {}),
                ("Report writer", {"rows": 8}),
                ("ORM demo", {}),
                ("Long job", {"steps": 20, "sleep": 1.5}),
                ("Fails on purpose", {}),
                ("Shell wrapper", {"command": "ls -l"}),
            ]:
                services.run_enqueue(definition=definitions[name], parameters=params)
                queued += 1
        self.stdout.write(
            f"Demo loaded: {len(definitions)} definitions, {len(RECURRENCES)} schedules, "
            f"{queued} runs queued."
        )
