"""Recurrence admin: readable descriptions, a preview of the next occurrences in
local time and UTC (marking those a DST change moved), pause/resume/skip-next."""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from import_export.admin import ImportExportModelAdmin

from scheduler import access, services
from scheduler.admin.audit import AuditedAdminMixin
from scheduler.admin.common import NativeJSONExportMixin
from scheduler.import_export_resources import RecurrenceResource
from scheduler.models import Recurrence


@admin.register(Recurrence)
class RecurrenceAdmin(AuditedAdminMixin, NativeJSONExportMixin, ImportExportModelAdmin):
    resource_classes = [RecurrenceResource]
    list_display = ["name", "definition", "description", "enabled", "next_due_at", "last_error"]
    list_filter = ["enabled", "kind", "timezone", "misfire_policy", "overlap_policy"]
    search_fields = ["name", "definition__name", "cron_expression"]
    list_select_related = ["definition"]
    actions = ["pause", "resume", "skip_next"]
    readonly_fields = [
        "description",
        "preview",
        "next_due_at",
        "last_due_at",
        "runs_created",
        "last_error",
    ]
    fieldsets = [
        (None, {"fields": ["definition", "name", "enabled", "description", "preview"]}),
        (
            "When",
            {
                "fields": [
                    "kind",
                    "timezone",
                    "start_at",
                    "end_at",
                    "max_runs",
                    ("interval_every", "interval_unit"),
                    "cron_expression",
                    "rrule",
                    "exdates",
                ]
            },
        ),
        ("What", {"fields": ["parameters", "resource", "needs"]}),
        (
            "Missed runs and overlaps",
            {
                "fields": [
                    "misfire_policy",
                    "misfire_grace_seconds",
                    "misfire_max_runs",
                    "overlap_policy",
                ]
            },
        ),
        ("State", {"fields": ["next_due_at", "last_due_at", "runs_created", "last_error"]}),
    ]

    def get_object(self, request, object_id, from_field=None):
        from django.http import Http404

        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404("No such recurrence.")
        return obj

    def get_queryset(self, request):
        return access.visible_recurrences(request.user, super().get_queryset(request))

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "definition":
            kwargs["queryset"] = access.visible_definitions(request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="schedule")
    def description(self, rec: Recurrence) -> str:
        if not rec.pk:
            return ""
        return rec.describe()

    @admin.display(description="next ten occurrences")
    def preview(self, rec: Recurrence) -> str:
        if not rec.pk:
            return "Save to see a preview."
        rows = rec.preview(timezone.now(), n=10)
        if not rows:
            return "No further occurrences."
        return format_html(
            "<table><tr><th>{}</th><th>UTC</th><th></th></tr>{}</table>",
            rec.timezone,
            format_html_join(
                "",
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                (
                    (
                        local.strftime("%a %Y-%m-%d %H:%M %Z"),
                        utc.strftime("%Y-%m-%d %H:%M"),
                        "moved by a DST change" if moved else "",
                    )
                    for local, utc, moved in rows
                ),
            ),
        )

    def save_model(self, request, obj, form, change):
        # The next due time follows from the (possibly edited) rule, from now on:
        # an edit or a re-enable never fires the past.
        services.recurrence_edited(rec=obj, now=timezone.now())
        super().save_model(request, obj, form, change)

    @admin.action(description="Pause the selected recurrences", permissions=["change"])
    def pause(self, request, queryset):
        paused = services.recurrence_pause(recurrences=queryset)
        for rec in paused:
            self.audit_action(request, "pause", rec)
        self.message_user(request, f"{len(paused)} paused.")

    @admin.action(
        description="Resume the selected recurrences (from now on)", permissions=["change"]
    )
    def resume(self, request, queryset):
        now = timezone.now()
        n = 0
        for rec in queryset:
            services.recurrence_resume(rec=rec, now=now)
            self.audit_action(request, "resume", rec, next_due=str(rec.next_due_at))
            n += 1
        self.message_user(request, f"{n} resumed; none fires a missed occurrence.")

    @admin.action(description="Skip the next occurrence", permissions=["change"])
    def skip_next(self, request, queryset):
        n = 0
        for rec in queryset.filter(next_due_at__isnull=False):
            skipped = services.recurrence_skip_next(rec=rec)
            self.audit_action(
                request, "skip", rec, skipped=str(skipped), next_due=str(rec.next_due_at)
            )
            n += 1
        self.message_user(request, f"Skipped the next occurrence of {n}.")
