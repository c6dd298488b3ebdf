"""Recurrence admin: readable descriptions, a preview of the next occurrences in
local time and UTC (marking those a DST change moved), pause/resume/skip-next."""

from __future__ import annotations

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from import_export.admin import ImportExportModelAdmin

from scheduler import access
from scheduler import recurrence as maths
from scheduler.admin_audit import AuditedAdminMixin
from scheduler.import_export_resources import RecurrenceResource
from scheduler.models import Recurrence


@admin.register(Recurrence)
class RecurrenceAdmin(AuditedAdminMixin, ImportExportModelAdmin):
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
        ("What", {"fields": ["parameters", "resource"]}),
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
        return maths.describe(rec)

    @admin.display(description="next ten occurrences")
    def preview(self, rec: Recurrence) -> str:
        if not rec.pk:
            return "Save to see a preview."
        rows = maths.preview(rec, timezone.now(), n=10)
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
        obj.next_due_at = maths.next_due_on_enable(obj, timezone.now()) if obj.enabled else None
        obj.last_error = ""
        super().save_model(request, obj, form, change)

    @admin.action(description="Pause the selected recurrences", permissions=["change"])
    def pause(self, request, queryset):
        paused = list(queryset.filter(enabled=True))
        n = queryset.update(enabled=False)
        for rec in paused:
            self.audit_action(request, "pause", rec)
        self.message_user(request, f"{n} paused.")

    @admin.action(
        description="Resume the selected recurrences (from now on)", permissions=["change"]
    )
    def resume(self, request, queryset):
        now = timezone.now()
        n = 0
        for rec in queryset:
            rec.enabled = True
            rec.next_due_at = maths.next_due_on_enable(rec, now)
            rec.save(update_fields=["enabled", "next_due_at"])
            self.audit_action(request, "resume", rec, next_due=str(rec.next_due_at))
            n += 1
        self.message_user(request, f"{n} resumed; none fires a missed occurrence.")

    @admin.action(description="Skip the next occurrence", permissions=["change"])
    def skip_next(self, request, queryset):
        n = 0
        for rec in queryset.filter(next_due_at__isnull=False):
            skipped = rec.next_due_at
            rec.next_due_at = maths.next_after(rec, rec.next_due_at)
            rec.save(update_fields=["next_due_at"])
            self.audit_action(
                request, "skip", rec, skipped=str(skipped), next_due=str(rec.next_due_at)
            )
            n += 1
        self.message_user(request, f"Skipped the next occurrence of {n}.")
