"""Every change of a run's state goes through here.

Views, admin actions, the API, management commands and the poller are thin entry
points that call these keyword-only functions. Each writes only the fields it
owns (``update()`` with a state condition, or ``save(update_fields=...)``), so an
operator's edit is never overwritten and two pollers never both win a transition.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from scheduler import needs as needs_of
from scheduler import wake
from scheduler.exceptions import InvalidRequest
from scheduler.models import (
    AuditEvent,
    ExecutionResource,
    OutputFile,
    PollerHeartbeat,
    Recurrence,
    Run,
    RunInput,
    StatusMessage,
    TaskDefinition,
)
from scheduler.parameters import ParameterError, clean_parameters

logger = logging.getLogger(__name__)

FINAL = Run.FINAL_STATES


def default_resource_for(definition: TaskDefinition) -> ExecutionResource:
    if definition.default_resource_id:
        return definition.default_resource
    resource = ExecutionResource.objects.filter(name="local").first()
    if resource is None:
        raise InvalidRequest(
            f"Definition {definition.name!r} has no default resource and no resource named "
            "'local' exists."
        )
    return resource


def run_target(
    *,
    definition: TaskDefinition,
    parameters: dict[str, Any] | None,
    resource: ExecutionResource | None = None,
    enabled_resources: set[int] | None = None,
    json_types: bool = False,
) -> tuple[dict[str, Any], ExecutionResource]:
    """The checks every queued run passes, by hand or from a schedule: the
    definition is enabled, the parameters are clean, the resource (given, or the
    definition's default) is enabled. Answers the cleaned parameters and the
    resource; SchedulerError with the reason otherwise. ``enabled_resources``
    (ids) spares a query per run when a caller checks many at once; ``json_types``:
    the parameters came as JSON and must have their JSON types (the HTTP API)."""
    if not definition.enabled:
        raise InvalidRequest(f"Definition {definition.name!r} is disabled.")
    try:
        cleaned = clean_parameters(definition, parameters, json_types=json_types)
    except ParameterError as exc:
        raise InvalidRequest(f"Bad parameters for {definition.name!r}: {exc}") from None
    if enabled_resources is not None:
        resource = resource or default_resource_for(definition)
        enabled = resource.pk in enabled_resources
    else:
        # Read afresh, in one question: the caller's resource object (or the
        # definition's cached one) may be stale, and "enabled" is its row's.
        pk = resource.pk if resource is not None else definition.default_resource_id
        fresh = (
            ExecutionResource.objects.filter(pk=pk).first()
            if pk
            else ExecutionResource.objects.filter(name="local").first()
        )
        if fresh is None:
            if resource is not None or pk:
                raise InvalidRequest("The resource does not exist any more.")
            default_resource_for(definition)  # raises with the reason
        resource, enabled = fresh, fresh.enabled
    if not enabled:
        raise InvalidRequest(f"Resource {resource.name!r} is disabled.")
    return cleaned, resource


def run_needs(
    *,
    definition: TaskDefinition,
    resource: ExecutionResource,
    override: dict[str, Any] | None = None,
    json_types: bool = False,
) -> dict[str, Any]:
    """What a run needs (cores, memory, wall time, ...: scheduler.needs), the
    definition's with ``override`` applied, checked against ``resource``."""
    try:
        return needs_of.resolve(definition, resource, override, json_types=json_types)
    except needs_of.NeedsError as exc:
        raise InvalidRequest(
            f"Cannot run {definition.name!r} on {resource.name!r}: {exc}"
        ) from None


def run_enqueue(
    *,
    definition: TaskDefinition,
    parameters: dict[str, Any] | None = None,
    resource: ExecutionResource | None = None,
    due_at: dt.datetime | None = None,
    requested_by=None,
    recurrence: Recurrence | None = None,
    attempt: int = 1,
    retry_of: Run | None = None,
    json_types: bool = False,
    priority: int = 0,
    needs: dict[str, Any] | None = None,
    inputs: list | None = None,
    args: list[str] | None = None,
) -> Run:
    """Queue a run of ``definition``; parameters are checked against its typed
    parameters (``json_types``: strictly, as JSON values; see run_target), what it
    needs against the resource (``needs`` overrides the definition's), and its
    input files (``inputs``: scheduler.inputs.Upload or .FromOutput) are stored
    with it, all or nothing."""
    cleaned, resource = run_target(
        definition=definition, parameters=parameters, resource=resource, json_types=json_types
    )
    resolved = run_needs(
        definition=definition, resource=resource, override=needs, json_types=json_types
    )
    if args is not None:
        if not isinstance(args, (list, tuple)) or not all(
            isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in args
        ):
            raise InvalidRequest("arguments must be a list of strings, e.g. ['--help'].")
        if sum(len(str(a)) for a in args) > 100_000 or any("\x00" in str(a) for a in args):
            raise InvalidRequest("arguments must be under 100,000 characters, without NUL.")
    now = timezone.now()
    with transaction.atomic():
        run = Run.objects.create(
            definition=definition,
            resource=resource,
            parameters=cleaned,
            args=[str(a) for a in args]
            if args is not None
            else list(definition.default_args or []),
            due_at=due_at or now,
            queued_at=now,
            requested_by=requested_by,
            recurrence=recurrence,
            attempt=attempt,
            retry_of=retry_of,
            priority=priority,
            needs=resolved,
            timeout_seconds=resolved.get("wall_time_seconds"),
        )
        if inputs:
            from scheduler import inputs as run_inputs

            run_inputs.attach(run=run, inputs=inputs, user=requested_by)
        wake.nudge()  # the pollers look at once (at commit), not at their next poll
    return run


def runs_enqueue_occurrences(*, runs: list[Run], batch_size: int = 500) -> None:
    """Queue the runs of schedule occurrences (built by scheduler.scheduling,
    checked by run_target) in one INSERT. A (recurrence, due_at) pair that exists
    already is left alone by the unique constraint: a second poller, or this one
    before a restart, made it."""
    Run.objects.bulk_create(runs, batch_size=batch_size, ignore_conflicts=True)


def run_again(*, run: Run, requested_by=None) -> Run:
    """A new run like ``run``: its parameters, resource and needs, checked again."""
    return run_enqueue(
        definition=run.definition,
        parameters=run.parameters,
        resource=run.resource,
        requested_by=requested_by,
        needs=run.needs or None,
    )


def run_make_due_now(*, run: Run, now: dt.datetime | None = None) -> bool:
    """A run queued for later becomes due now ("Run now" on a queued run). False
    when it is not waiting any more (taken, cancelled, or due already)."""
    now = now or timezone.now()
    changed = Run.objects.filter(pk=run.pk, state=Run.State.QUEUED, due_at__gt=now).update(
        due_at=now
    )
    if changed:
        run.due_at = now
        wake.nudge()
    return changed == 1


def run_delete_final(*, run: Run) -> None:
    """Delete one final run with its messages, file rows and stored files (an
    administrator's delete; retention prunes by age through the same steps)."""
    if not Run.objects.filter(pk=run.pk, state__in=FINAL).exists():
        raise InvalidRequest(f"Run {run.pk} has not ended: cancel it first, then delete it.")
    with transaction.atomic():
        runs_delete(ids=[run.pk])
    runs_remove_stored(ids=[run.pk])


def runs_claim_due(
    *, poller: str, resources: list[ExecutionResource], now: dt.datetime | None = None
) -> list[Run]:
    """Claim for ``poller`` the due QUEUED runs of ``resources`` that the limits
    allow, best first (priority, then due time): each resource's
    max_concurrent_runs, each definition's max_concurrent_runs, and a schedule
    whose overlap policy is QUEUE has one run in flight at a time. The limits
    count the runs of every poller; the claim is conditional (runs_claim), so
    two pollers never take one run, though together they may pass a limit by
    the runs they claimed in the same moment."""
    now = now or timezone.now()
    if not resources:
        return []
    # The due runs first: most ticks find none, and then this is the only question.
    # Plain tuples, not model instances: a busy tick asked for up to ``most`` of
    # them to claim a few (with their definition, resource and schedule, that
    # was the biggest part of a claim); the runs claimed are read whole after.
    most = max(50, 2 * sum(max(r.max_concurrent_runs, 0) for r in resources))
    candidates = list(
        Run.objects.filter(
            state=Run.State.QUEUED, due_at__lte=now, resource_id__in=[r.pk for r in resources]
        )
        .order_by("-priority", "due_at", "id")
        .values_list(
            "pk",
            "resource_id",
            "definition_id",
            "definition__max_concurrent_runs",
            "recurrence_id",
            "recurrence__overlap_policy",
        )[:most]
    )
    if not candidates:
        return []
    # One pass over the runs in flight counts what all three limits need. Not a
    # GROUP BY: SQLite answers one by walking the whole table along the grouped
    # column's index (0.2 s with a million runs), the plain SELECT uses the state index.
    per_resource: Counter = Counter()
    per_definition: Counter = Counter()
    busy_recurrences: set[int] = set()
    for resource_id, definition_id, recurrence_id, overlap in (
        Run.objects.filter(state__in=Run.ACTIVE_STATES)
        .order_by()
        .values_list("resource_id", "definition_id", "recurrence_id", "recurrence__overlap_policy")
    ):
        per_resource[resource_id] += 1
        per_definition[definition_id] += 1
        if recurrence_id and overlap == Recurrence.Overlap.QUEUE:
            busy_recurrences.add(recurrence_id)
    room = {r.pk: r.max_concurrent_runs - per_resource[r.pk] for r in resources}
    if not any(v > 0 for v in room.values()):
        return []
    chosen: list[int] = []
    for pk, resource_id, definition_id, limit, recurrence_id, overlap in candidates:
        if room.get(resource_id, 0) <= 0:
            continue
        if limit is not None and per_definition[definition_id] >= limit:
            continue
        queue_policy = recurrence_id and overlap == Recurrence.Overlap.QUEUE
        if queue_policy and recurrence_id in busy_recurrences:
            continue
        room[resource_id] -= 1
        per_definition[definition_id] += 1
        if queue_policy:
            busy_recurrences.add(recurrence_id)
        chosen.append(pk)
    # One conditional write for all: a run another poller took first is left out
    # (its room is not handed on this pass; the next one fills it).
    taken = runs_claim(run_ids=chosen, poller=poller, now=now)
    if not taken:
        return []
    claimed = Run.objects.filter(pk__in=taken).select_related(
        "definition", "resource", "recurrence"
    )
    order = {pk: i for i, pk in enumerate(chosen)}
    return sorted(claimed, key=lambda run: order[run.pk])


def run_claim(*, run_id: int, poller: str, now: dt.datetime | None = None) -> bool:
    """Take a due QUEUED run for ``poller``. False if another poller took it first."""
    return run_id in runs_claim(run_ids=[run_id], poller=poller, now=now)


def runs_claim(*, run_ids: list[int], poller: str, now: dt.datetime | None = None) -> set[int]:
    """Take for ``poller`` those of ``run_ids`` that are due and still QUEUED, in
    one transaction; answer their ids. On PostgreSQL the rows are locked first
    (a row another poller is claiming is skipped, never waited for); SQLite
    writes one transaction at a time."""
    if not run_ids:
        return set()
    now = now or timezone.now()
    with transaction.atomic():
        free = list(
            Run.objects.select_for_update(skip_locked=True)
            .filter(pk__in=run_ids, state=Run.State.QUEUED, due_at__lte=now)
            .values_list("pk", flat=True)
        )
        if free:
            Run.objects.filter(pk__in=free, state=Run.State.QUEUED).update(
                state=Run.State.SUBMITTED,
                poller=poller,
                lease_expires_at=now + dt.timedelta(seconds=settings.SCHEDULER_LEASE_SECONDS),
                submitted_at=now,
            )
    return set(free)


def run_mark_submitted(*, run: Run, job_id: str, run_directory: str) -> bool:
    changed = Run.objects.filter(pk=run.pk, state=Run.State.SUBMITTED).update(
        saga_job_id=job_id, run_directory=run_directory
    )
    run.saga_job_id, run.run_directory = job_id, run_directory
    return changed == 1


def run_mark_running(*, run: Run, started_at: dt.datetime | None = None) -> bool:
    started_at = started_at or timezone.now()
    changed = Run.objects.filter(pk=run.pk, state=Run.State.SUBMITTED).update(
        state=Run.State.RUNNING, started_at=started_at
    )
    if changed:
        run.state, run.started_at = Run.State.RUNNING, started_at
    return changed == 1


def run_requeue_unlaunched(*, run: Run) -> bool:
    """A claimed run that could not be launched (its resource is unreachable)
    waits in the queue again, for any poller; only if no job was started."""
    return bool(
        Run.objects.filter(pk=run.pk, state=Run.State.SUBMITTED, saga_job_id="").update(
            state=Run.State.QUEUED, poller="", lease_expires_at=None
        )
    )


def run_requeue_from_pilot(*, run: Run) -> bool:
    """A run handed to a pilot that could not start (and taken back from its
    inbox before any launcher took it) waits in the queue again, for any poller."""
    return bool(
        Run.objects.filter(
            pk=run.pk, state=Run.State.SUBMITTED, saga_job_id__startswith="pilot:"
        ).update(state=Run.State.QUEUED, saga_job_id="", poller="", lease_expires_at=None)
    )


def run_renew_leases(*, poller: str, now: dt.datetime | None = None) -> int:
    now = now or timezone.now()
    return Run.objects.filter(poller=poller, state__in=Run.ACTIVE_STATES).update(
        lease_expires_at=now + dt.timedelta(seconds=settings.SCHEDULER_LEASE_SECONDS)
    )


def run_take_over(*, run_id: int, poller: str, now: dt.datetime | None = None) -> bool:
    """Adopt an in-flight run whose owner's lease expired (owner died or was replaced)."""
    now = now or timezone.now()
    changed = (
        Run.objects.filter(pk=run_id, state__in=Run.ACTIVE_STATES)
        .filter(Q(lease_expires_at__lt=now) | Q(lease_expires_at__isnull=True) | Q(poller=poller))
        .update(
            poller=poller,
            lease_expires_at=now + dt.timedelta(seconds=settings.SCHEDULER_LEASE_SECONDS),
        )
    )
    return changed == 1


def run_finish(
    *,
    run: Run,
    state: str,
    exit_code: int | None = None,
    error: str = "",
    started_at: dt.datetime | None = None,
    finished_at: dt.datetime | None = None,
) -> bool:
    """Move a run to a final state, once. False if it was final already."""
    if state not in FINAL:
        raise ValueError(f"{state} is not a final state")
    finished_at = finished_at or timezone.now()
    fields: dict[str, Any] = {
        "state": state,
        "exit_code": exit_code,
        "error": error[-10_000:],
        "finished_at": finished_at,
        "lease_expires_at": None,
    }
    if state == Run.State.SUCCEEDED:
        fields["progress"] = 100
    if started_at is not None:
        fields["started_at"] = started_at
    fields.update(_run_cost(run, started_at or run.started_at, finished_at))
    changed = Run.objects.filter(pk=run.pk).exclude(state__in=FINAL).update(**fields)
    if not changed:
        return False
    for key, value in fields.items():
        setattr(run, key, value)
    retry = None
    if state in (Run.State.FAILED, Run.State.TIMED_OUT, Run.State.LOST):
        retry = run_retry_if_needed(run=run)
    from scheduler.notifications import notify_when_committed

    notify_when_committed(run, retried=retry is not None)
    return True


def _run_cost(run: Run, started: dt.datetime | None, finished: dt.datetime) -> dict[str, Any]:
    """Core-hours (the run's cores x the time from its start to its end) and,
    where the resource has a price, the cost. A run that never started used none."""
    if started is None:
        return {"core_hours": 0.0, "cost": None}
    from decimal import Decimal

    seconds = max(0.0, (finished - started).total_seconds())
    core_hours = run.cores * seconds / 3600
    price = run.resource.price_per_core_hour  # the poller's runs carry their resource
    cost = None
    if price is not None:
        cost = (Decimal(repr(core_hours)) * price).quantize(Decimal("0.000001"))
    return {"core_hours": core_hours, "cost": cost}


def run_retry_if_needed(*, run: Run, now: dt.datetime | None = None) -> Run | None:
    definition = run.definition
    if run.attempt > definition.max_retries or not definition.enabled:
        return None
    if run.cancel_requested_at:
        return None
    now = now or timezone.now()
    backoff = definition.retry_backoff_seconds * (2 ** (run.attempt - 1))
    first = run.retry_of or run
    if Run.objects.filter(retry_of=first, attempt=run.attempt + 1).exists():
        return None
    retry = Run.objects.create(
        definition=definition,
        resource=run.resource,
        parameters=run.parameters,
        args=run.args,
        due_at=now + dt.timedelta(seconds=backoff),
        queued_at=now,
        requested_by=run.requested_by,
        attempt=run.attempt + 1,
        retry_of=first,
        priority=run.priority,
        needs=run.needs,
        timeout_seconds=run.timeout_seconds,
    )
    if run.pk:
        from scheduler import inputs as run_inputs

        run_inputs.copy_to(source=run, target=retry)
    run_add_message(
        run=run,
        text=f"Retry {retry.attempt - 1} of {definition.max_retries} queued as run {retry.pk}, "
        f"due in {backoff} s.",
    )
    return retry


def run_request_cancel(*, run: Run, user=None) -> str:
    """Cancel a run: at once if still queued, else ask the poller to end the job.

    Returns what happened: "cancelled", "requested" or "final" (nothing to do).
    """
    now = timezone.now()
    if Run.objects.filter(pk=run.pk, state=Run.State.QUEUED).update(
        state=Run.State.CANCELLED, cancel_requested_at=now, finished_at=now
    ):
        run.refresh_from_db()
        run_add_message(run=run, text=f"Cancelled while queued{_by(user)}.", level="warning")
        return "cancelled"
    if Run.objects.filter(
        pk=run.pk, state__in=Run.ACTIVE_STATES, cancel_requested_at__isnull=True
    ).update(cancel_requested_at=now):
        run.refresh_from_db()
        run_add_message(run=run, text=f"Cancel requested{_by(user)}.", level="warning")
        wake.nudge()  # its poller ends the job at once
        return "requested"
    run.refresh_from_db()
    return "requested" if not run.is_final else "final"


def _by(user) -> str:
    return f" by {user.get_username()}" if user is not None and user.is_authenticated else ""


def run_add_message(
    *,
    run: Run,
    text: str,
    level: str = "info",
    progress: int | None = None,
    seq: int | None = None,
    created_at: dt.datetime | None = None,
    once: bool = False,
) -> StatusMessage | None:
    """Store a status message; keep the latest text and progress on the run.

    With ``seq`` the message comes from the task's event stream and is stored
    once, however often the stream is re-read. With ``once`` a message with the
    same text already on the run is not repeated (the poller's warnings about a
    file it refuses, found again on every tick).
    """
    limit = settings.SCHEDULER_MESSAGE_MAX_CHARS
    if once and StatusMessage.objects.filter(run_id=run.pk, text=text).exists():
        return None
    if len(text) > limit:
        text = text[:limit] + f" [cut: {len(text)} chars, limit {limit}]"
    if progress is not None:
        progress = max(0, min(100, int(progress)))
    try:
        with transaction.atomic():
            message = StatusMessage.objects.create(
                run=run,
                text=text,
                level=level,
                progress=progress,
                seq=seq,
                created_at=created_at or timezone.now(),
            )
    except IntegrityError:
        return None
    fields: dict[str, Any] = {}
    if level in ("info", "warning", "error"):
        fields["status_message"] = text[:1000]
    if progress is not None:
        fields["progress"] = progress
    if fields:
        Run.objects.filter(pk=run.pk).update(**fields)
        for key, value in fields.items():
            setattr(run, key, value)
    return message


def run_record_events(
    *,
    run: Run,
    messages: list[dict[str, Any]],
    offset: int | None = None,
    seq: int | None = None,
) -> int:
    """Store a batch of the task's status messages (dicts of StatusMessage
    fields, each with its ``seq``) and where the event stream was read up to.

    One insert for the batch, one update of the run: a task that writes 100,000
    messages costs the poller a few hundred statements, not 100,000. A run keeps
    the newest SCHEDULER_MAX_MESSAGES of the task's messages; the older ones are
    deleted and counted in ``messages_dropped`` (the poller's own messages are
    always kept). Returns how many were dropped now."""
    limit = settings.SCHEDULER_MESSAGE_MAX_CHARS
    rows = []
    fields: dict[str, Any] = {}
    for m in messages:
        text = m.get("text") or ""
        if len(text) > limit:
            text = text[:limit] + f" [cut: {len(text)} chars, limit {limit}]"
        progress = m.get("progress")
        if progress is not None:
            progress = max(0, min(100, int(progress)))
            fields["progress"] = progress
        level = m.get("level") or "info"
        if level in ("info", "warning", "error"):
            fields["status_message"] = text[:1000]
        rows.append(
            StatusMessage(
                run_id=run.pk,
                text=text,
                level=level,
                progress=progress,
                seq=m["seq"],
                created_at=m.get("created_at") or timezone.now(),
            )
        )
    if offset is not None:
        fields["events_offset"] = offset
    if seq is not None:
        fields["events_seq"] = seq
    dropped = 0
    with transaction.atomic():
        # ignore_conflicts: an event stored before (a re-read) is stored once.
        StatusMessage.objects.bulk_create(rows, batch_size=500, ignore_conflicts=True)
        keep = settings.SCHEDULER_MAX_MESSAGES
        # Event numbers are unique on a run and start at 1: while the highest
        # applied is within the limit, so is the number of messages (no query).
        if rows and keep and max(m["seq"] for m in messages) > keep:
            task_messages = StatusMessage.objects.filter(run_id=run.pk, seq__isnull=False)
            found = list(
                task_messages.order_by("-seq").values_list("seq", flat=True)[keep - 1 : keep]
            )
            if found:
                dropped, _ = task_messages.filter(seq__lt=found[0]).delete()
        if dropped:
            fields["messages_dropped"] = F("messages_dropped") + dropped
        if fields:
            Run.objects.filter(pk=run.pk).update(**fields)
    for key, value in fields.items():
        if key != "messages_dropped":
            setattr(run, key, value)
    run.messages_dropped += dropped
    return dropped


def run_record_files(*, run: Run, results: list) -> list[OutputFile]:
    """Record the files brought home for ``run`` (poller.files_home results:
    a record to store, or a message why not). One row per run, kind and name:
    recording again updates, never duplicates; a warning already on the run is
    not repeated."""
    return runs_record_files(brought=[(run, results)])[run.pk]


def runs_record_files(*, brought: list[tuple[Run, list]]) -> dict[int, list[OutputFile]]:
    """run_record_files for several runs at once (the runs a poller's pass
    found ended): one question for their rows and one insert for the new ones.
    Answers the stored rows by run id."""
    existing = {
        (f.run_id, f.kind, f.name): f
        for f in OutputFile.objects.filter(run_id__in=[run.pk for run, _ in brought])
    }
    stored: dict[int, list[OutputFile]] = {}
    new_rows: list[OutputFile] = []
    for run, results in brought:
        rows = stored.setdefault(run.pk, [])
        for result in results:
            if not result.ok:
                continue
            fields = result.record_fields()
            row = existing.get((run.pk, result.kind, result.name))
            if row is None:
                row = OutputFile(run=run, kind=result.kind, name=result.name, **fields)
                new_rows.append(row)
            elif any(getattr(row, k) != v for k, v in fields.items()):
                for key, value in fields.items():
                    setattr(row, key, value)
                row.save(update_fields=list(fields))
            rows.append(row)
    # ignore_conflicts: a bring-home running twice at once (sync, then the end)
    # keeps one row per (run, kind, name) through the unique constraint.
    OutputFile.objects.bulk_create(new_rows, ignore_conflicts=True)
    for run, results in brought:
        problems = [r.message for r in results if not r.ok]
        if not problems:
            continue
        # The poller's own warnings (no event number), not the task's messages.
        known = set(
            run.messages.filter(level="warning", seq__isnull=True).values_list("text", flat=True)
        )
        for text in problems:
            if text not in known:  # a second bring-home (sync, then the end) says it once
                run_add_message(run=run, text=text, level="warning")
                known.add(text)
    return stored


def runs_delete(*, ids: list[int]) -> int:
    """Delete runs with their messages and file rows (retention); answers how
    many messages went. Plain DELETEs by id: the ORM's delete() would first load
    every run (retry_of is SET_NULL), which made a prune 7x slower than the bare
    SQL. Nothing else points at a run (no signals), and retries of a deleted run
    are unlinked here. The caller keeps ``ids`` to a few hundred (SQLite builds
    before 3.32 take 999 parameters a statement) and removes the stored files."""
    from django.db import connection

    messages = 0
    marks = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        Run.objects.filter(retry_of_id__in=ids).update(retry_of=None)
        cursor.execute(f"DELETE FROM {StatusMessage._meta.db_table} WHERE run_id IN ({marks})", ids)
        messages = cursor.rowcount
        cursor.execute(f"DELETE FROM {OutputFile._meta.db_table} WHERE run_id IN ({marks})", ids)
        cursor.execute(f"DELETE FROM {RunInput._meta.db_table} WHERE run_id IN ({marks})", ids)
        cursor.execute(f"DELETE FROM {Run._meta.db_table} WHERE id IN ({marks})", ids)
    return messages


def runs_remove_stored(*, ids: list[int]) -> int:
    """Remove the stored files of deleted runs (their rows are gone); answers how
    many runs had no folder. A run id is a number, so root/<id> is always a direct
    child of the store; a link there is not followed."""
    root = Path(settings.SCHEDULER_FILE_ROOT)
    missing = 0
    for run_id in ids:
        folder = root / str(int(run_id))
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)
        else:
            missing += 1
    return missing


def recurrence_pause(*, recurrences) -> list[Recurrence]:
    """Pause schedules (a queryset); answers those that were running."""
    paused = list(recurrences.filter(enabled=True))
    Recurrence.objects.filter(pk__in=[r.pk for r in paused]).update(enabled=False)
    for rec in paused:
        rec.enabled = False
    return paused


def recurrence_edited(*, rec: Recurrence, now: dt.datetime) -> None:
    """A schedule saved from a form (the admin saves it): its next due time
    follows from the possibly edited rule, from now on, so an edit or a
    re-enable never fires the past; an old error is forgotten."""
    rec.next_due_at = rec.next_due_on_enable(now) if rec.enabled else None
    rec.last_error = ""


def recurrence_declare(
    *,
    definition: TaskDefinition,
    name: str,
    expression: str,
    zone: str,
    now: dt.datetime,
    gone_mark: str,
) -> str | None:
    """A schedule declared in code (scheduler.periodic): made ("added") enabled,
    or brought to the code's expression and zone ("changed"), keeping the
    operator's enabled flag; None when it already matches."""
    rec = Recurrence.objects.filter(definition=definition, name=name).first()
    if rec is None:
        rec = Recurrence(
            definition=definition,
            name=name,
            kind=Recurrence.Kind.CRON,
            cron_expression=expression,
            timezone=zone,
            start_at=now,
            enabled=True,
        )
        recurrence_edited(rec=rec, now=now)
        rec.save()
        return "added"
    same = (rec.kind, rec.cron_expression, rec.timezone) == (Recurrence.Kind.CRON, expression, zone)
    came_back = rec.last_error.startswith(gone_mark)
    if same and not came_back:
        return None
    if came_back:  # disabled by the sync when it left the code, not by an operator
        rec.enabled = True
    rec.kind, rec.cron_expression, rec.timezone = Recurrence.Kind.CRON, expression, zone
    recurrence_edited(rec=rec, now=now)
    rec.save()
    return "changed"


def recurrence_undeclare(*, rec: Recurrence, now: dt.datetime, note: str) -> None:
    """A schedule whose declaration left the code: disabled with ``note``, kept."""
    rec.enabled = False
    recurrence_edited(rec=rec, now=now)
    rec.last_error = note
    rec.save(update_fields=["enabled", "next_due_at", "last_error"])


def recurrence_resume(*, rec: Recurrence, now: dt.datetime | None = None) -> Recurrence:
    """Resume a schedule from now on: no missed occurrence fires."""
    rec.enabled = True
    rec.next_due_at = rec.next_due_on_enable(now or timezone.now())
    rec.save(update_fields=["enabled", "next_due_at"])
    return rec


def recurrence_skip_next(*, rec: Recurrence) -> dt.datetime | None:
    """Skip the next occurrence; answers the skipped time (None if none was due)."""
    skipped = rec.next_due_at
    if skipped is None:
        return None
    rec.next_due_at = rec.next_after(skipped)
    rec.save(update_fields=["next_due_at"])
    return skipped


def heartbeat_beat(
    *, ident: str, host: str, pid: int, started_at: dt.datetime, version: str, cron: bool = False
) -> PollerHeartbeat:
    now = timezone.now()
    beat, _ = PollerHeartbeat.objects.update_or_create(
        ident=ident,
        defaults={
            "host": host,
            "pid": pid,
            "started_at": started_at,
            "last_seen_at": now,
            "version": version,
            "cron": cron,
            "stopped_at": None,
        },
    )
    return beat


def heartbeat_stop(*, ident: str) -> None:
    PollerHeartbeat.objects.filter(ident=ident).update(stopped_at=timezone.now())


def resource_record_error(*, resource: ExecutionResource, error: str) -> None:
    now = timezone.now()
    ExecutionResource.objects.filter(pk=resource.pk).update(
        last_error=error[-4000:], last_error_at=now
    )
    resource.last_error, resource.last_error_at = error[-4000:], now


def resource_record_ok(*, resource: ExecutionResource) -> None:
    now = timezone.now()
    ExecutionResource.objects.filter(pk=resource.pk).update(last_ok_at=now)
    resource.last_ok_at = now


def audit_record(
    *,
    action: str,
    user=None,
    ip: str | None = None,
    obj: Any = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    return AuditEvent.objects.create(
        action=action,
        user=user if user is not None and user.is_authenticated else None,
        username=user.get_username() if user is not None and user.is_authenticated else "",
        ip=ip,
        object_type=obj._meta.model_name if obj is not None else "",
        object_id=str(obj.pk) if obj is not None else "",
        definition_id=_definition_id_of(obj),
        detail=detail or {},
    )


def _definition_id_of(obj: Any) -> int | None:
    """The definition an audited object belongs to (scheduler.access narrows by it)."""
    if obj is None:
        return None
    if isinstance(obj, TaskDefinition):
        return obj.pk
    if isinstance(obj, OutputFile):
        return Run.objects.filter(pk=obj.run_id).values_list("definition_id", flat=True).first()
    return getattr(obj, "definition_id", None)


def client_ip(request) -> str | None:
    """The client's address; behind the proxy the one it put last in X-Forwarded-For."""
    if getattr(settings, "SCHEDULER_BEHIND_PROXY", False):
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")[-1].strip()
        if forwarded:
            return forwarded
    return request.META.get("REMOTE_ADDR") or None
