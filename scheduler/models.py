"""The scheduler's data model.

Rows answer questions about themselves (a run knows whether it is final, a
resource knows its file service URL); work that changes several rows or has side
effects lives in scheduler/services.py.
"""

from __future__ import annotations

import os
import re
import zoneinfo
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.timezone import now as utc_now


def validate_timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(
            f"{value!r} is not a known IANA time zone (e.g. Europe/Amsterdam, UTC)."
        ) from None


def email_list(text: str) -> list[str]:
    """The addresses in a comma-, semicolon- or newline-separated list, blanks dropped."""
    return [part.strip() for part in re.split(r"[,;\n]", text or "") if part.strip()]


def validate_email_list(text: str) -> None:
    from django.core.validators import validate_email

    bad = []
    for address in email_list(text):
        try:
            validate_email(address)
        except ValidationError:
            bad.append(address)
    if bad:
        raise ValidationError(
            "Not an e-mail address: %(bad)s. Separate addresses with commas or new lines, "
            "e.g. ops@example.org, lab@example.org.",
            params={"bad": ", ".join(repr(b) for b in bad)},
        )


def resolve_program(program: str) -> Path:
    """Return the absolute path of a program inside the configured program dirs.

    The path is resolved (links and ``..`` followed) before the containment check,
    so neither can escape the directories. Raises ValidationError otherwise.
    """
    if not program or "\x00" in program:
        raise ValidationError("Give the program as a path inside the program directories.")
    if Path(program).is_absolute():
        raise ValidationError(
            f"{program!r} is absolute; give a path relative to a program directory."
        )
    dirs = [Path(d).resolve() for d in settings.SCHEDULER_PROGRAM_DIRS]
    for base in dirs:
        raw = base / program
        candidate = raw.resolve()
        if not candidate.is_relative_to(base):
            if raw.exists() or ".." in Path(program).parts:
                raise ValidationError(
                    f"{program!r} resolves to {candidate}, outside the program directories "
                    f"({', '.join(str(d) for d in dirs)})."
                )
            continue
        if candidate.is_file():
            return candidate
    raise ValidationError(
        f"No program {program!r} in the program directories ({', '.join(str(d) for d in dirs)})."
    )


PROGRAM_LIST_MAX = 500
NOT_PROGRAMS = {"scheduler_client.py", "__init__.py", "conftest.py"}


def available_programs(limit: int = PROGRAM_LIST_MAX) -> list[str]:
    """The programs in the program directories, as a definition names them
    (``report_writer.py``, ``tools/convert``): Python files and executables, in
    each directory and one folder down, no hidden names, no links that leave the
    directory; the definition page offers them as choices (free text stays
    allowed). At most ``limit``, sorted."""
    found: set[str] = set()
    for base in (Path(d) for d in settings.SCHEDULER_PROGRAM_DIRS):
        try:
            base = base.resolve()
            entries = sorted(base.iterdir())
        except OSError:
            continue
        for entry in entries:
            children = []
            if entry.name.startswith((".", "_")):
                continue
            if entry.is_dir() and not entry.is_symlink():
                try:
                    children = sorted(entry.iterdir())
                except OSError:
                    continue
            for path in children or [entry]:
                if path.name.startswith((".", "_")) or path.name in NOT_PROGRAMS:
                    continue
                try:
                    if not path.is_file() or not path.resolve().is_relative_to(base):
                        continue
                except OSError:
                    continue
                if path.suffix == ".py" or os.access(path, os.X_OK):
                    found.add(path.relative_to(base).as_posix())
                if len(found) >= limit:
                    return sorted(found)
    return sorted(found)


class ExecutionResource(models.Model):
    """Where runs execute: a SAGA job service plus a file service and a working root."""

    name = models.SlugField(
        "name", max_length=100, unique=True, help_text="Short unique name, e.g. 'local', 'cluster'."
    )
    job_service_url = models.CharField(
        "job service URL",
        max_length=500,
        default="fork://localhost",
        help_text="SAGA job service, e.g. fork://localhost, ssh://alice@login:22, "
        "slurm://localhost, slurm+ssh://alice@login.cluster.org.",
    )
    file_service_url = models.CharField(
        "file service URL",
        max_length=500,
        blank=True,
        help_text="SAGA file service, e.g. sftp://alice@login:22/. Blank: derived from the "
        "job service (file://localhost/ for local, sftp:// for ssh hosts).",
    )
    working_root = models.CharField(
        "working root",
        max_length=500,
        blank=True,
        help_text="Directory on the resource under which run directories are made, e.g. "
        "/scratch/alice/scheduler. Blank for local: the site's SCHEDULER_RUN_ROOT.",
    )
    python = models.CharField(
        "Python interpreter",
        max_length=500,
        blank=True,
        help_text="Interpreter on the resource, e.g. /usr/bin/python3. Blank for local: the "
        "site's own interpreter; blank for remote: python3.",
    )
    ssh_user = models.CharField(
        "SSH user", max_length=100, blank=True, help_text="User for ssh/sftp, e.g. alice."
    )
    ssh_key_path = models.CharField(
        "SSH key path",
        max_length=500,
        blank=True,
        help_text="Path of the private key ON THE POLLER HOST, e.g. /etc/scheduler/id_ed25519. "
        "Key material is never stored in the database.",
    )
    run_as = models.CharField(
        "run programs as",
        max_length=32,
        blank=True,
        help_text="Local account the programs run as, e.g. scheduler-run: their run "
        "directories are that account's alone and the site's files are out of their reach "
        "(docs/deploy.md). Blank: the poller's own account. Remote resources run as the SSH user.",
    )
    queue = models.CharField(
        "default queue", max_length=100, blank=True, help_text="Batch queue/partition, e.g. debug."
    )
    project = models.CharField(
        "project/account", max_length=100, blank=True, help_text="Batch account, e.g. proj123."
    )
    wall_time_minutes = models.PositiveIntegerField(
        "default wall time (minutes)",
        null=True,
        blank=True,
        help_text="Batch wall time in minutes, e.g. 60. Blank: the batch system's default.",
    )
    max_concurrent_runs = models.PositiveIntegerField(
        "concurrent run limit",
        default=8,
        help_text="How many runs may be submitted or running here at once, e.g. 8.",
    )
    queues = models.CharField(
        "other queues",
        max_length=500,
        blank=True,
        help_text="Batch queues a run may ask for besides the default, separated by commas, "
        "e.g. long, gpu. A run asking for another queue is refused.",
    )
    max_cores = models.PositiveIntegerField(
        "cores a run may ask for",
        null=True,
        blank=True,
        help_text="The most cores one run may take here, e.g. 64. Blank: this host's cores "
        "for a local resource; unchecked elsewhere (the batch system answers).",
    )
    max_memory_mb = models.PositiveIntegerField(
        "memory a run may ask for (MB)",
        null=True,
        blank=True,
        help_text="The most memory one run may ask for, in MB, e.g. 256000. Blank: this "
        "host's memory for a local resource; unchecked elsewhere.",
    )
    max_gpus = models.PositiveIntegerField(
        "GPUs a run may ask for",
        null=True,
        blank=True,
        help_text="The most GPUs one run may ask for here, e.g. 4. Only batch systems "
        "place GPUs; blank or 0: runs here take none.",
    )
    pilot = models.BooleanField(
        "start runs through a pilot",
        default=True,
        help_text="A standing launcher (started through SAGA like a job: a fork job, an SSH "
        "job, a batch job holding as many cores as runs may go at once; left running between "
        "runs, ending itself when idle) starts each one-core run at once, without a SAGA job "
        "per run. Off: runs go by SAGA jobs (bundles, or one batch job a run) as before. A "
        "resource that runs programs as another account uses no pilot.",
    )
    mpi_starter = models.CharField(
        "MPI starter",
        max_length=200,
        blank=True,
        help_text="The command an MPI run's program is started under, {cores} its cores, "
        "e.g. mpirun -n {cores}. Blank: srun on Slurm, mpirun -n {cores} elsewhere.",
    )
    price_per_core_hour = models.DecimalField(
        "price per core-hour",
        max_digits=12,
        decimal_places=4,
        null=True,
        blank=True,
        help_text="What a core-hour here costs, in your currency, e.g. 0.05. Blank: runs "
        "record core-hours only.",
    )
    enabled = models.BooleanField("enabled", default=True)
    last_error = models.TextField("last error", blank=True, editable=False)
    last_error_at = models.DateTimeField("last error at", null=True, blank=True, editable=False)
    last_ok_at = models.DateTimeField("last success at", null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "execution resource"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def scheme(self) -> str:
        return urlsplit(self.job_service_url).scheme.lower()

    def mpi_starter_for(self, cores: int) -> list[str]:
        """The command (argv) an MPI run of ``cores`` cores is started under."""
        import shlex

        text = self.mpi_starter or (
            "srun" if self.scheme.startswith("slurm") else "mpirun -n {cores}"
        )
        return [part.replace("{cores}", str(int(cores))) for part in shlex.split(text)]

    def allowed_queues(self) -> list[str]:
        """The default queue, then the others an operator listed."""
        names = [self.queue] + [q.strip() for q in self.queues.split(",")]
        return list(dict.fromkeys(n for n in names if n))

    def is_local(self) -> bool:
        parts = urlsplit(self.job_service_url)
        return parts.scheme in {"fork", "local"} and parts.hostname in {None, "", "localhost"}

    def is_batch(self) -> bool:
        base = self.scheme.split("+")[0]
        return base in {"slurm", "pbs", "pbspro", "torque", "sge", "lsf", "loadl", "condor"}

    def on_this_host(self) -> bool:
        """Run directories are on this machine's filesystem: fork://localhost, or a
        batch system on this host (slurm://localhost), whose file service is local."""
        return self.is_local() or self.effective_file_service_url().startswith("file://localhost")

    def effective_file_service_url(self) -> str:
        if self.file_service_url:
            return self.file_service_url
        parts = urlsplit(self.job_service_url)
        if self.is_local() or (
            parts.hostname in {None, "", "localhost"}
            and "+" not in parts.scheme
            and parts.scheme != "ssh"
        ):
            return "file://localhost/"
        netloc = parts.netloc
        if self.ssh_user and "@" not in netloc:
            netloc = f"{self.ssh_user}@{netloc}"
        return urlunsplit(("sftp", netloc, "/", "", ""))

    def clean(self) -> None:
        parts = urlsplit(self.job_service_url)
        if not parts.scheme:
            raise ValidationError(
                {"job_service_url": "Give a URL with a scheme, e.g. fork://localhost."}
            )
        if self.ssh_key_path and not Path(self.ssh_key_path).is_absolute():
            raise ValidationError(
                {
                    "ssh_key_path": "Give an absolute path on the poller host, e.g. /etc/scheduler/id_ed25519."
                }
            )
        if (
            self.is_batch()
            and self.working_root
            and not re.match(r"^[A-Za-z0-9_./~+-]+$", self.working_root)
        ):
            raise ValidationError(
                {"working_root": "Batch systems take only letters, digits and _ . / ~ + - here."}
            )
        if self.is_batch() and not self.queue:
            raise ValidationError({"queue": "Batch systems need a default queue, e.g. debug."})
        if self.queues and not self.is_batch():
            raise ValidationError({"queues": "Only batch systems have queues."})
        if self.mpi_starter:
            import shlex

            try:
                words = shlex.split(self.mpi_starter)
            except ValueError as exc:
                raise ValidationError(
                    {"mpi_starter": f"Cannot read it as a command: {exc}."}
                ) from None
            if not words:
                raise ValidationError({"mpi_starter": "Give a command, e.g. mpirun -n {cores}."})
        if self.max_gpus and not self.is_batch():
            raise ValidationError(
                {"max_gpus": "Only batch systems place GPUs; leave 0 for this resource."}
            )
        if self.run_as:
            if not re.match(r"^[a-z_][a-z0-9_-]*$", self.run_as):
                raise ValidationError({"run_as": "Give an account name, e.g. scheduler-run."})
            if not self.is_local():
                raise ValidationError(
                    {
                        "run_as": "Only local resources run as another account; remote ones run "
                        "as their SSH user."
                    }
                )
            import pwd

            try:
                pwd.getpwnam(self.run_as)
            except KeyError:
                raise ValidationError(
                    {"run_as": f"There is no account {self.run_as!r} on this host."}
                ) from None
            root = Path(self.working_root or settings.SCHEDULER_RUN_ROOT).expanduser().absolute()
            var = Path(settings.VAR_DIR).expanduser().absolute()
            if root == var or var in root.parents:
                raise ValidationError(
                    {
                        "working_root": f"Programs run as {self.run_as!r} need a working root "
                        f"outside the site's {var} (its secret key and database), e.g. "
                        "/srv/scheduler-runs (docs/deploy.md)."
                    }
                )


class TaskDefinition(models.Model):
    """A Python program (or other executable) that operators can run and schedule."""

    name = models.CharField("name", max_length=200, unique=True, help_text="e.g. Nightly report")
    description = models.TextField("description", blank=True)
    program = models.CharField(
        "program",
        max_length=500,
        help_text="Path inside the program directories, e.g. report_writer.py.",
    )
    default_args = models.JSONField(
        "default arguments",
        default=list,
        blank=True,
        help_text='Command-line arguments as a JSON list, e.g. ["--verbose", "input 1.csv"].',
    )
    default_resource = models.ForeignKey(
        ExecutionResource,
        verbose_name="default resource",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Where runs go unless a run says otherwise. Blank: the resource named 'local'.",
    )
    timeout_seconds = models.PositiveIntegerField(
        "timeout (seconds)",
        null=True,
        blank=True,
        help_text="A run still going after this long is cancelled as TIMED_OUT, e.g. 3600.",
    )
    cores = models.PositiveIntegerField(
        "cores", default=1, help_text="Cores a run takes (SAGA's total CPU count), e.g. 16."
    )
    processes_per_host = models.PositiveIntegerField(
        "processes per host",
        null=True,
        blank=True,
        help_text="For MPI runs over several nodes, e.g. 32. Blank: the batch system decides.",
    )
    memory_mb = models.PositiveIntegerField(
        "memory (MB)", null=True, blank=True, help_text="Memory a run asks for, e.g. 64000."
    )
    gpus = models.PositiveIntegerField(
        "GPUs", default=0, help_text="GPUs a run asks for (batch systems only), e.g. 1."
    )
    mpi = models.BooleanField(
        "MPI",
        default=False,
        help_text="Start the program's ranks, one a core, under the resource's MPI starter "
        "(srun on Slurm; batch systems only).",
    )
    queue = models.CharField(
        "queue", max_length=100, blank=True, help_text="Batch queue. Blank: the resource's default."
    )
    project = models.CharField(
        "project/account",
        max_length=100,
        blank=True,
        help_text="Batch account to charge. Blank: the resource's.",
    )
    environment = models.JSONField(
        "environment variables",
        default=dict,
        blank=True,
        help_text='Set for the program, as a JSON object, e.g. {"OMP_NUM_THREADS": "16"}.',
    )
    output_patterns = models.JSONField(
        "output file patterns",
        default=list,
        blank=True,
        help_text="Files brought home at the end even if the program did not register them, "
        'as a JSON list of patterns relative to the run directory, e.g. ["results/*.csv", "*.log"].',
    )
    max_retries = models.PositiveIntegerField(
        "retries", default=0, help_text="How many times a failed run is tried again, e.g. 2."
    )
    retry_backoff_seconds = models.PositiveIntegerField(
        "retry backoff (seconds)",
        default=60,
        help_text="Wait before the first retry; doubled for each later one, e.g. 60.",
    )
    max_concurrent_runs = models.PositiveIntegerField(
        "concurrent run limit",
        null=True,
        blank=True,
        help_text="How many runs of this task may be in flight at once, e.g. 1. Blank: no limit.",
    )
    enabled = models.BooleanField("enabled", default=True)
    allowed_groups = models.ManyToManyField(
        Group,
        verbose_name="allowed groups",
        blank=True,
        related_name="allowed_task_definitions",
        help_text="If any are chosen, only members of these groups (and superusers) see and "
        "run this task and its runs.",
    )
    subscribers = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        verbose_name="subscribers",
        blank=True,
        related_name="subscribed_task_definitions",
        help_text="Users mailed when a run fails.",
    )
    notify_on_success = models.BooleanField(
        "mail on success too", default=False, help_text="Also mail subscribers when a run succeeds."
    )
    notify_emails = models.TextField(
        "more addresses to mail",
        blank=True,
        default="",
        validators=[validate_email_list],
        help_text="Addresses mailed like subscribers, e.g. a team list; separated by commas "
        "or new lines, e.g. ops@example.org, lab@example.org.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "task definition"
        ordering = ["name"]
        permissions = [("run_taskdefinition", "Can queue runs of a task")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        try:
            resolve_program(self.program)
        except ValidationError as exc:
            raise ValidationError({"program": exc.messages}) from None
        if not isinstance(self.default_args, list) or not all(
            isinstance(a, (str, int, float)) for a in self.default_args
        ):
            raise ValidationError(
                {"default_args": 'Give a JSON list of strings, e.g. ["--verbose", "a b"].'}
            )
        from scheduler import needs

        try:
            needs.check_environment(self.environment)
        except needs.NeedsError as exc:
            raise ValidationError({"environment": str(exc)}) from None
        try:
            self.output_patterns = needs.check_patterns(self.output_patterns)
        except needs.NeedsError as exc:
            raise ValidationError({"output_patterns": str(exc)}) from None
        if self.default_resource_id:
            try:
                needs.resolve(self, self.default_resource, None)
            except needs.NeedsError as exc:
                raise ValidationError(str(exc)) from None

    def program_path(self) -> Path:
        return resolve_program(self.program)


class TaskParameter(models.Model):
    """A typed parameter of a task definition, turned into a form field on "Run now"."""

    class Type(models.TextChoices):
        STRING = "string", "string"
        INTEGER = "integer", "integer"
        FLOAT = "float", "float"
        BOOLEAN = "boolean", "boolean"
        CHOICE = "choice", "choice"
        DATE = "date", "date"

    definition = models.ForeignKey(
        TaskDefinition, on_delete=models.CASCADE, related_name="parameters"
    )
    name = models.CharField(
        "name",
        max_length=100,
        help_text="Identifier the program reads, e.g. steps.",
        validators=[
            RegexValidator(
                r"^[A-Za-z_][A-Za-z0-9_]*$", "Use letters, digits and _ (not first), e.g. max_rows."
            )
        ],
    )
    type = models.CharField("type", max_length=10, choices=Type.choices, default=Type.STRING)
    default = models.CharField(
        "default", max_length=500, blank=True, help_text="Default value as text, e.g. 10."
    )
    required = models.BooleanField("required", default=False)
    help_text = models.CharField("help", max_length=500, blank=True)
    choices = models.JSONField(
        "choices",
        default=list,
        blank=True,
        help_text='For type choice: a JSON list, e.g. ["csv", "xlsx"].',
    )
    position = models.PositiveIntegerField("position", default=0)

    class Meta:
        verbose_name = "parameter"
        ordering = ["position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["definition", "name"], name="taskparameter_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.type})"

    def clean(self) -> None:
        from scheduler.parameters import ParameterError, coerce_value

        if self.type == self.Type.CHOICE:
            if not isinstance(self.choices, list) or not self.choices:
                raise ValidationError(
                    {"choices": 'A choice parameter needs choices, e.g. ["a", "b"].'}
                )
        if self.default != "":
            try:
                coerce_value(self, self.default)
            except ParameterError as exc:
                raise ValidationError({"default": str(exc)}) from None


class Recurrence(models.Model):
    """A schedule: when a definition should run. The maths lives in scheduler/recurrence.py."""

    class Kind(models.TextChoices):
        ONCE = "once", "once at a time"
        INTERVAL = "interval", "every N units"
        CRON = "cron", "cron expression"
        RRULE = "rrule", "RFC 5545 rule"

    class Unit(models.TextChoices):
        MINUTES = "minutes", "minutes"
        HOURS = "hours", "hours"
        DAYS = "days", "days"
        WEEKS = "weeks", "weeks"
        MONTHS = "months", "months"

    class Misfire(models.TextChoices):
        SKIP = "skip", "skip missed occurrences"
        RUN_ONCE = "run_once", "run once for all missed"
        RUN_EACH = "run_each", "run each missed (capped)"

    class Overlap(models.TextChoices):
        ALLOW = "allow", "allow overlapping runs"
        SKIP = "skip", "skip if the previous run is still going"
        QUEUE = "queue", "queue after the previous run"

    definition = models.ForeignKey(
        TaskDefinition, on_delete=models.CASCADE, related_name="recurrences"
    )
    name = models.CharField("name", max_length=200, help_text="e.g. Weekday mornings")
    kind = models.CharField("kind", max_length=10, choices=Kind.choices, default=Kind.CRON)
    timezone = models.CharField(
        "time zone",
        max_length=64,
        default="UTC",
        validators=[validate_timezone],
        help_text="IANA zone the schedule is read in, e.g. Europe/Amsterdam.",
    )
    start_at = models.DateTimeField(
        "start",
        default=utc_now,
        help_text="For 'once': the time to run. Otherwise: the anchor and earliest time.",
    )
    end_at = models.DateTimeField("end", null=True, blank=True, help_text="No runs after this.")
    interval_every = models.PositiveIntegerField(
        "every", null=True, blank=True, help_text="For intervals: how many units, e.g. 15."
    )
    interval_unit = models.CharField(
        "unit", max_length=10, choices=Unit.choices, blank=True, help_text="e.g. minutes"
    )
    cron_expression = models.CharField(
        "cron expression",
        max_length=200,
        blank=True,
        help_text="Five fields: minute hour day-of-month month day-of-week, e.g. 30 7 * * MON-FRI.",
    )
    rrule = models.TextField(
        "RFC 5545 rule",
        blank=True,
        help_text="e.g. FREQ=MONTHLY;BYDAY=MO;BYSETPOS=1;BYHOUR=9;BYMINUTE=0",
    )
    exdates = models.JSONField(
        "excluded dates",
        default=list,
        blank=True,
        help_text='Local date-times to leave out, as a JSON list, e.g. ["2026-12-25T09:00"].',
    )
    max_runs = models.PositiveIntegerField(
        "maximum runs", null=True, blank=True, help_text="Stop after this many runs, e.g. 10."
    )
    runs_created = models.PositiveIntegerField("runs created", default=0, editable=False)
    parameters = models.JSONField(
        "parameter values",
        default=dict,
        blank=True,
        help_text='Values for the definition\'s parameters, e.g. {"steps": 10}.',
    )
    resource = models.ForeignKey(
        ExecutionResource,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Blank: the definition's default resource.",
    )
    needs = models.JSONField(
        "what each run needs",
        default=dict,
        blank=True,
        help_text="Overrides of the definition's cores, memory, wall time etc., e.g. "
        '{"cores": 8, "wall_time_seconds": 7200}.',
    )
    enabled = models.BooleanField("enabled", default=True)
    next_due_at = models.DateTimeField("next due", null=True, blank=True, editable=False)
    last_due_at = models.DateTimeField("last due", null=True, blank=True, editable=False)
    misfire_policy = models.CharField(
        "missed runs", max_length=10, choices=Misfire.choices, default=Misfire.RUN_ONCE
    )
    misfire_grace_seconds = models.PositiveIntegerField(
        "grace period (seconds)",
        default=300,
        help_text="An occurrence missed by less than this still runs, e.g. 300.",
    )
    misfire_max_runs = models.PositiveIntegerField(
        "catch-up cap", default=10, help_text="With 'run each': at most this many catch-up runs."
    )
    overlap_policy = models.CharField(
        "overlap", max_length=10, choices=Overlap.choices, default=Overlap.ALLOW
    )
    last_error = models.TextField("last error", blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "recurrence"
        ordering = ["definition__name", "name"]
        indexes = [
            # Schedule tick: Recurrence.objects.filter(enabled=True, next_due_at__lte=now)
            # -- its cost follows the number due, not the number that exist.
            models.Index(
                fields=["next_due_at"],
                condition=Q(enabled=True),
                name="recurrence_due_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.definition.name}: {self.name}"

    # The schedule answers questions about itself (healthchecks' Check does the
    # same); the maths stays pure in scheduler.recurrence.
    def describe(self) -> str:
        """The schedule as a sentence, e.g. "At 09:30 on Monday to Friday (Europe/Amsterdam)"."""
        from scheduler import recurrence as maths

        return maths.describe(self)

    def next_after(self, after, *, count_limit: bool = True):
        """The first occurrence (UTC) after ``after``, or None."""
        from scheduler import recurrence as maths

        return maths.next_after(self, after, count_limit=count_limit)

    def next_due_on_enable(self, now):
        """The next due time when the schedule is (re)enabled at ``now``: no
        missed occurrence fires."""
        from scheduler import recurrence as maths

        return maths.next_due_on_enable(self, now)

    def preview(self, after, n: int = 10):
        """(local time, UTC time, moved by DST) of the next ``n`` occurrences."""
        from scheduler import recurrence as maths

        return maths.preview(self, after, n=n)

    def clean(self) -> None:
        from scheduler import recurrence as maths

        errors = maths.validate_by_field(self)
        if not errors and self.definition_id:
            from scheduler import needs

            resource = self.resource or self.definition.default_resource
            try:
                if resource is not None:
                    needs.resolve(self.definition, resource, self.needs)
                else:
                    needs.clean_override(self.needs)
            except needs.NeedsError as exc:
                errors = {"needs": [str(exc)]}
        if errors:
            raise ValidationError(errors)


class Run(models.Model):
    """One execution of a definition, from QUEUED to a final state."""

    class State(models.TextChoices):
        QUEUED = "QUEUED", "queued"
        SUBMITTED = "SUBMITTED", "submitted"
        RUNNING = "RUNNING", "running"
        SUCCEEDED = "SUCCEEDED", "succeeded"
        FAILED = "FAILED", "failed"
        CANCELLED = "CANCELLED", "cancelled"
        TIMED_OUT = "TIMED_OUT", "timed out"
        LOST = "LOST", "lost"

    FINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "LOST")
    ACTIVE_STATES = ("SUBMITTED", "RUNNING")

    definition = models.ForeignKey(TaskDefinition, on_delete=models.PROTECT, related_name="runs")
    resource = models.ForeignKey(ExecutionResource, on_delete=models.PROTECT, related_name="runs")
    recurrence = models.ForeignKey(
        Recurrence, on_delete=models.SET_NULL, null=True, blank=True, related_name="runs"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    due_at = models.DateTimeField("due", default=timezone.now)
    parameters = models.JSONField("parameters", default=dict, blank=True)
    args = models.JSONField("arguments", default=list, blank=True)
    state = models.CharField("state", max_length=10, choices=State.choices, default=State.QUEUED)
    attempt = models.PositiveIntegerField("attempt", default=1)
    priority = models.SmallIntegerField(
        "priority",
        default=0,
        help_text="-100 to 100; among due runs, higher goes first (Django Tasks' priority).",
    )
    retry_of = models.ForeignKey(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="retries",
        help_text="The first run of this chain of retries.",
    )
    needs = models.JSONField(
        "what it needs",
        default=dict,
        blank=True,
        help_text="Cores, memory, GPUs, MPI, wall time, queue, project and environment, "
        "as resolved when it was queued (scheduler.needs).",
    )
    timeout_seconds = models.PositiveIntegerField(
        "wall time (seconds)",
        null=True,
        blank=True,
        help_text="Cancelled as TIMED_OUT after running this long. Blank: the definition's.",
    )
    core_hours = models.FloatField("core-hours", null=True, blank=True)
    cost = models.DecimalField("cost", max_digits=18, decimal_places=6, null=True, blank=True)
    saga_job_id = models.CharField("SAGA job id", max_length=500, blank=True)
    run_directory = models.CharField("run directory", max_length=1000, blank=True)
    progress = models.PositiveSmallIntegerField("progress %", default=0)
    status_message = models.CharField("status", max_length=1000, blank=True)
    exit_code = models.IntegerField("exit code", null=True, blank=True)
    error = models.TextField("error", blank=True)
    queued_at = models.DateTimeField("queued", default=timezone.now)
    submitted_at = models.DateTimeField("submitted", null=True, blank=True)
    started_at = models.DateTimeField("started", null=True, blank=True)
    finished_at = models.DateTimeField("finished", null=True, blank=True)
    cancel_requested_at = models.DateTimeField("cancel requested", null=True, blank=True)
    poller = models.CharField("poller", max_length=200, blank=True)
    lease_expires_at = models.DateTimeField("lease expires", null=True, blank=True)
    events_offset = models.BigIntegerField("events read up to (bytes)", default=0)
    events_seq = models.BigIntegerField("last event applied", default=0)
    messages_dropped = models.PositiveIntegerField(
        "messages dropped",
        default=0,
        help_text="The task's oldest status messages dropped to keep the newest "
        "SCHEDULER_MAX_MESSAGES, e.g. 90000.",
    )

    class Meta:
        verbose_name = "run"
        ordering = ["-queued_at", "-id"]
        permissions = [
            ("cancel_run", "Can cancel runs"),
            ("rerun_run", "Can run a task again"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["recurrence", "due_at"],
                condition=Q(recurrence__isnull=False),
                name="run_one_per_occurrence",
            ),
            models.CheckConstraint(
                condition=Q(progress__gte=0) & Q(progress__lte=100),
                name="run_progress_0_100",
            ),
            models.CheckConstraint(
                condition=~Q(state__in=["SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "LOST"])
                | Q(finished_at__isnull=False),
                name="run_final_has_finish_time",
            ),
        ]
        indexes = [
            # Admin run list default ordering: ORDER BY queued_at DESC, id DESC LIMIT 100.
            models.Index(fields=["-queued_at", "-id"], name="run_list_order_idx"),
            # The poller's next due time: state='QUEUED' AND due_at > now ORDER BY due_at.
            # Poller tracking: state IN ('SUBMITTED','RUNNING'); dashboard counts per state.
            models.Index(fields=["state", "due_at"], name="run_state_due_idx"),
            # Poller claim order: state='QUEUED' AND due_at <= now ORDER BY priority
            # DESC, due_at, id (a higher priority goes first among the due runs).
            models.Index(fields=["state", "-priority", "due_at", "id"], name="run_claim_idx"),
            # Definition page / per-definition statistics: runs of one definition, newest first.
            models.Index(fields=["definition", "-queued_at"], name="run_definition_idx"),
            # Dashboard "recent failures" and timeline: finished runs by finish time.
            models.Index(fields=["finished_at"], name="run_finished_idx"),
            # Overlap policy: is a run of this recurrence still in flight?
            models.Index(fields=["recurrence", "state"], name="run_recurrence_state_idx"),
            # Run list filtered by state, newest first: WHERE state = %s ORDER BY
            # queued_at DESC, id DESC LIMIT 100; and the dashboard's capped per-state
            # counts (SELECT 1 WHERE state = %s LIMIT 10001). bench/admin_scale.py.
            models.Index(fields=["state", "-queued_at", "-id"], name="run_state_list_idx"),
        ]

    def __str__(self) -> str:
        return (
            f"Run {self.pk} of {self.definition.name}" if self.definition_id else f"Run {self.pk}"
        )

    @property
    def is_final(self) -> bool:
        return self.state in self.FINAL_STATES

    @property
    def effective_timeout(self) -> int | None:
        return self.timeout_seconds or self.definition.timeout_seconds

    @property
    def cores(self) -> int:
        return int((self.needs or {}).get("cores") or 1)

    @property
    def duration(self):
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        if self.started_at:
            return timezone.now() - self.started_at
        return None


class StatusMessage(models.Model):
    class Level(models.TextChoices):
        DEBUG = "debug", "debug"
        INFO = "info", "info"
        WARNING = "warning", "warning"
        ERROR = "error", "error"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="messages")
    created_at = models.DateTimeField("time", default=timezone.now)
    level = models.CharField("level", max_length=10, choices=Level.choices, default=Level.INFO)
    text = models.TextField("text")
    progress = models.PositiveSmallIntegerField("progress %", null=True, blank=True)
    seq = models.BigIntegerField("event number", null=True, blank=True)

    class Meta:
        verbose_name = "status message"
        ordering = ["created_at", "id"]
        indexes = [
            # Run page and live view: a run's messages, newest last (and "newer than id N").
            models.Index(fields=["run", "id"], name="message_run_idx"),
        ]
        constraints = [
            # An event is applied once, even when the poller re-reads events.jsonl.
            models.UniqueConstraint(
                fields=["run", "seq"], condition=Q(seq__isnull=False), name="message_once_per_event"
            ),
        ]

    def __str__(self) -> str:
        return self.text[:80]


class OutputFile(models.Model):
    class Kind(models.TextChoices):
        OUTPUT = "output", "output"
        STDOUT = "stdout", "stdout"
        STDERR = "stderr", "stderr"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="files")
    name = models.CharField("name", max_length=200)
    size = models.BigIntegerField("size (bytes)", default=0)
    sha256 = models.CharField("SHA-256", max_length=64, blank=True)
    content_type = models.CharField("content type", max_length=200, blank=True)
    stored_path = models.CharField(
        "stored path", max_length=500, help_text="Relative to SCHEDULER_FILE_ROOT."
    )
    kind = models.CharField("kind", max_length=10, choices=Kind.choices, default=Kind.OUTPUT)
    created_at = models.DateTimeField("brought home", default=timezone.now)

    class Meta:
        verbose_name = "output file"
        ordering = ["kind", "name"]
        permissions = [("download_outputfile", "Can download output files")]
        constraints = [
            models.UniqueConstraint(fields=["run", "kind", "name"], name="outputfile_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name

    def absolute_path(self) -> Path:
        return Path(settings.SCHEDULER_FILE_ROOT) / self.stored_path


class PollerHeartbeat(models.Model):
    ident = models.CharField("identity", max_length=200, unique=True)
    host = models.CharField("host", max_length=200)
    pid = models.PositiveIntegerField("pid")
    started_at = models.DateTimeField("started")
    last_seen_at = models.DateTimeField("last seen")
    version = models.CharField("version", max_length=50, blank=True)
    cron = models.BooleanField(
        "from cron",
        default=False,
        help_text="A poller that ticks once a minute from cron (run_poller --once), "
        "not a long-lived service: it counts as alive for longer between beats.",
    )
    stopped_at = models.DateTimeField("stopped", null=True, blank=True)

    class Meta:
        verbose_name = "poller heartbeat"
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return self.ident

    def is_alive(self, now=None) -> bool:
        now = now or timezone.now()
        if self.stopped_at:
            return False
        limit = max(30.0, settings.SCHEDULER_POLL_INTERVAL * 10)
        if self.cron:
            limit = 150.0  # one tick a minute from cron, with room for a slow tick
        return (now - self.last_seen_at).total_seconds() < limit


class AuditEvent(models.Model):
    created_at = models.DateTimeField("time", default=timezone.now, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    username = models.CharField("user name", max_length=150, blank=True)
    ip = models.GenericIPAddressField("address", null=True, blank=True)
    action = models.CharField("action", max_length=50, db_index=True)
    object_type = models.CharField("object type", max_length=50, blank=True)
    object_id = models.CharField("object id", max_length=50, blank=True)
    # The definition the event is about (itself, or the definition of a run, file,
    # schedule or parameter): a plain id, kept after the definition is deleted, so
    # the audit trail can be narrowed like everything else (scheduler.access).
    definition_id = models.IntegerField("definition", null=True, blank=True, db_index=True)
    detail = models.JSONField("detail", default=dict, blank=True)

    class Meta:
        verbose_name = "audit event"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.username} {self.action}"


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    name = models.CharField("name", max_length=100, help_text="What the token is for, e.g. CI.")
    key_hash = models.CharField("key hash", max_length=64, unique=True, editable=False)
    prefix = models.CharField("prefix", max_length=8, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class RunInput(models.Model):
    """A file a run gets in ``inputs/`` of its run directory: uploaded with the
    run, or copied from an earlier run's output file (``source_file_id``). The bytes are
    the site's own copy, kept under SCHEDULER_FILE_ROOT until the run is removed."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="inputs")
    name = models.CharField("name", max_length=200)
    size = models.BigIntegerField("size (bytes)", default=0)
    sha256 = models.CharField("SHA-256", max_length=64)
    stored_path = models.CharField(
        "stored path", max_length=500, help_text="Relative to SCHEDULER_FILE_ROOT."
    )
    # Plain ids, not keys: the source run may be pruned before this one.
    source_file_id = models.IntegerField("from output file", null=True, blank=True)
    source_run_id = models.IntegerField("from run", null=True, blank=True)
    created_at = models.DateTimeField("added", default=timezone.now)

    class Meta:
        verbose_name = "input file"
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["run", "name"], name="runinput_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name

    def absolute_path(self) -> Path:
        return Path(settings.SCHEDULER_FILE_ROOT) / self.stored_path
