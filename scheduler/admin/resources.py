"""Execution resources."""

from __future__ import annotations

from django.contrib import admin
from import_export.admin import ImportExportModelAdmin

from scheduler.admin.audit import AuditedAdminMixin
from scheduler.admin.common import NativeJSONExportMixin
from scheduler.import_export_resources import (
    ExecutionResourceResource,
)
from scheduler.models import (
    ExecutionResource,
)


# -------------------------------------------------------------- resources
@admin.register(ExecutionResource)
class ExecutionResourceAdmin(AuditedAdminMixin, NativeJSONExportMixin, ImportExportModelAdmin):
    resource_classes = [ExecutionResourceResource]
    list_display = [
        "name",
        "job_service_url",
        "enabled",
        "max_concurrent_runs",
        "last_ok_at",
        "last_error_short",
    ]
    list_filter = ["enabled"]
    search_fields = ["name", "job_service_url"]
    readonly_fields = ["last_error", "last_error_at", "last_ok_at"]

    @admin.display(description="last error")
    def last_error_short(self, resource: ExecutionResource) -> str:
        return (resource.last_error or "")[:120]
