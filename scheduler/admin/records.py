"""Read-only records: status messages, output files, pollers, the audit trail; API tokens."""

from __future__ import annotations

from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html
from import_export.admin import ExportActionMixin

from scheduler import access
from scheduler.admin.audit import AuditedAdminMixin
from scheduler.admin.common import (
    NativeJSONExportMixin,
    NotFoundForInvisibleMixin,
    ReadOnlyAdmin,
)
from scheduler.models import (
    ApiToken,
    AuditEvent,
    OutputFile,
    PollerHeartbeat,
    StatusMessage,
)
from scheduler.paginator import CappedCountPaginator


@admin.register(StatusMessage)
class StatusMessageAdmin(NotFoundForInvisibleMixin, ReadOnlyAdmin):
    list_display = ["created_at", "run", "level", "text_short", "progress"]
    list_filter = ["level"]
    search_fields = ["text", "=run__id"]
    list_select_related = ["run", "run__definition"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    ordering = ["-id"]

    def get_queryset(self, request):
        return access.visible_messages(request.user, super().get_queryset(request))

    @admin.display(description="text")
    def text_short(self, message: StatusMessage) -> str:
        return message.text[:150]


@admin.register(OutputFile)
class OutputFileAdmin(NotFoundForInvisibleMixin, ReadOnlyAdmin):
    list_display = ["name", "run", "kind", "size", "content_type", "created_at", "download"]
    list_filter = ["kind", "content_type"]
    search_fields = ["name", "sha256", "=run__id"]
    list_select_related = ["run", "run__definition"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    ordering = ["-id"]

    def get_queryset(self, request):
        return access.visible_files(request.user, super().get_queryset(request))

    @admin.display(description="download")
    def download(self, f: OutputFile) -> str:
        url = reverse("scheduler:file-download", args=[f.run_id, f.pk])
        return format_html('<a href="{}">download</a>', url)


@admin.register(PollerHeartbeat)
class PollerHeartbeatAdmin(ReadOnlyAdmin):
    list_display = ["ident", "host", "pid", "version", "started_at", "last_seen_at", "alive"]
    search_fields = ["ident", "host"]

    @admin.display(description="alive", boolean=True)
    def alive(self, beat: PollerHeartbeat) -> bool:
        return beat.is_alive()


@admin.register(AuditEvent)
class AuditEventAdmin(
    NotFoundForInvisibleMixin, NativeJSONExportMixin, ExportActionMixin, ReadOnlyAdmin
):
    list_display = ["created_at", "username", "ip", "action", "object_type", "object_id"]
    list_filter = ["action", "object_type", "created_at"]
    search_fields = ["username", "object_id", "ip"]
    date_hierarchy = "created_at"
    show_full_result_count = False
    paginator = CappedCountPaginator

    def get_queryset(self, request):
        # The list, the detail page (404 outside) and the export alike.
        return access.visible_audit_events(request.user, super().get_queryset(request))


@admin.register(ApiToken)
class ApiTokenAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at"]
    list_select_related = ["user"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]
    fields = ["user", "name", "prefix", "created_at", "last_used_at"]

    def has_change_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        from scheduler.http.tokens import token_issue

        key = token_issue(token=obj)
        # Monospaced (O and 0, l and I differ) with a copy button (copy.js): the
        # key is shown this once; only its SHA-256 is kept.
        self.message_user(
            request,
            format_html(
                "Token created. Copy its key now; it is not shown again: "
                '<code class="token-key" id="new-token-key">{}</code> '
                '<button type="button" class="token-copy" data-copy="#new-token-key">Copy</button>',
                key,
            ),
            messages.WARNING,
        )
