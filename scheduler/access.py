"""Who may see what: the one place that narrows querysets to what a user may see.

Staff users in a role group see definitions that have no ``allowed_groups`` or
share a group with them; superusers see all. Everything hanging off a definition
(runs, messages, files, recurrences) follows its definition. Views answer 404,
not 403, for what a user may not see, so a URL leaks nothing.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet

from scheduler.models import AuditEvent, OutputFile, Recurrence, Run, StatusMessage, TaskDefinition


def _is_scheduler_user(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


def visible_definitions(user) -> QuerySet[TaskDefinition]:
    qs = TaskDefinition.objects.all()
    if user is not None and user.is_authenticated and user.is_active and user.is_superuser:
        return qs
    if not _is_scheduler_user(user):
        return qs.none()
    return qs.filter(
        Q(allowed_groups__isnull=True) | Q(allowed_groups__in=user.groups.all())
    ).distinct()


def visible_definition_ids(user) -> list[int] | None:
    """Ids of visible definitions, or None meaning "all" (superusers)."""
    if user is not None and user.is_authenticated and user.is_active and user.is_superuser:
        return None
    return list(visible_definitions(user).values_list("pk", flat=True))


def _narrow(qs: QuerySet, user, path: str) -> QuerySet:
    ids = visible_definition_ids(user)
    if ids is None:
        return qs
    return qs.filter(**{f"{path}__in": ids})


def visible_runs(user, qs: QuerySet[Run] | None = None) -> QuerySet[Run]:
    return _narrow(Run.objects.all() if qs is None else qs, user, "definition_id")


def visible_recurrences(user, qs: QuerySet[Recurrence] | None = None) -> QuerySet[Recurrence]:
    return _narrow(Recurrence.objects.all() if qs is None else qs, user, "definition_id")


def visible_messages(user, qs: QuerySet[StatusMessage] | None = None) -> QuerySet[StatusMessage]:
    return _narrow(StatusMessage.objects.all() if qs is None else qs, user, "run__definition_id")


def visible_files(user, qs: QuerySet[OutputFile] | None = None) -> QuerySet[OutputFile]:
    return _narrow(OutputFile.objects.all() if qs is None else qs, user, "run__definition_id")


def visible_audit_events(user, qs: QuerySet[AuditEvent] | None = None) -> QuerySet[AuditEvent]:
    """Events about no definition, or about one the user may see. An event about a
    definition deleted since is shown to superusers only: its groups are gone."""
    qs = AuditEvent.objects.all() if qs is None else qs
    ids = visible_definition_ids(user)
    if ids is None:
        return qs
    return qs.filter(Q(definition_id__isnull=True) | Q(definition_id__in=ids))


def can_see_definition(user, definition: TaskDefinition) -> bool:
    ids = visible_definition_ids(user)
    return ids is None or definition.pk in ids
