"""Every add, change and delete made through the admin lands in the audit trail.

Django's admin already calls ``log_addition``, ``log_change`` and
``log_deletions`` for each of them (inlines included: a changed parameter shows
in its definition's change message); this mixin records an AuditEvent beside the
admin's own LogEntry, with who, from where, what and which fields.
"""

from __future__ import annotations

from scheduler import services


class AuditedAdminMixin:
    def _audit(self, request, action: str, obj, message) -> None:
        services.audit_record(
            action=action,
            user=request.user,
            ip=services.client_ip(request),
            obj=obj,
            detail={"object": str(obj)[:200], "change": _plain(message)},
        )

    def log_addition(self, request, obj, message):
        entry = super().log_addition(request, obj, message)
        self._audit(request, "add", obj, message)
        return entry

    def log_change(self, request, obj, message):
        entry = super().log_change(request, obj, message)
        self._audit(request, "change", obj, message)
        return entry

    def log_deletions(self, request, queryset):
        # Called before the rows go, with every object to be deleted.
        objects = list(queryset)
        result = super().log_deletions(request, queryset)
        for obj in objects:
            self._audit(request, "delete", obj, "")
        return result

    def generate_log_entries(self, result, request):
        """django-import-export's import: one audit event with the row counts."""
        super().generate_log_entries(result, request)
        services.audit_record(
            action="import",
            user=request.user,
            ip=services.client_ip(request),
            detail={"model": self.model._meta.model_name, "rows": dict(result.totals)},
        )

    def audit_action(self, request, action: str, obj, **detail) -> None:
        """For admin actions (pause, resume, skip next ...) that change rows."""
        services.audit_record(
            action=action,
            user=request.user,
            ip=services.client_ip(request),
            obj=obj,
            detail={"object": str(obj)[:200], **detail},
        )


def _plain(message) -> object:
    """The admin's change message (a list of dicts or a string) as JSON-able data."""
    if isinstance(message, list | dict | str):
        return message
    return str(message)
