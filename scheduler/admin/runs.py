"""Runs: the list, the live run page, cancel and run again."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html
from import_export.admin import ExportActionMixin

from scheduler import access, services
from scheduler.admin.common import (
    NotFoundForInvisibleMixin,
    VisibleDefinitionFilter,
    state_badge,
)
from scheduler.exceptions import SchedulerError
from scheduler.import_export_resources import (
    RunExportResource,
)
from scheduler.models import (
    Run,
)
from scheduler.paginator import CappedCountPaginator

# --------------------------------------------------------------------- runs
RUN_PAGE_FILES = 50  # the files page (scheduler.views.files) has them all, a page at a time


@admin.register(Run)
class RunAdmin(NotFoundForInvisibleMixin, ExportActionMixin, admin.ModelAdmin):
    resource_classes = [RunExportResource]
    list_display = [
        "id",
        "definition",
        "state_display",
        "progress_display",
        "resource",
        "due_at",
        "started_at",
        "finished_at",
        "attempt",
    ]
    list_display_links = ["id", "definition"]
    list_filter = ["state", "resource", ("definition", VisibleDefinitionFilter)]
    search_fields = ["=id", "definition__name", "status_message"]
    list_select_related = ["definition", "resource"]
    show_full_result_count = False
    paginator = CappedCountPaginator
    list_per_page = 50
    date_hierarchy = None
    ordering = ["-queued_at", "-id"]
    actions = ["cancel_runs"]
    change_form_template = "admin/scheduler/run/change_form.html"
    readonly_fields = [
        "definition",
        "resource",
        "recurrence",
        "requested_by",
        "state_display",
        "progress_display",
        "status_message",
        "parameters",
        "args",
        "due_at",
        "queued_at",
        "submitted_at",
        "started_at",
        "finished_at",
        "duration_display",
        "exit_code",
        "error",
        "attempt",
        "retry_of",
        "cancel_requested_at",
        "saga_job_id",
        "run_directory",
        "poller",
        "lease_expires_at",
    ]
    fieldsets = [
        (None, {"fields": ["definition", "state_display", "progress_display", "status_message"]}),
        ("Request", {"fields": ["parameters", "args", "resource", "requested_by", "recurrence"]}),
        (
            "Times",
            {
                "fields": [
                    "due_at",
                    "queued_at",
                    "submitted_at",
                    "started_at",
                    "finished_at",
                    "duration_display",
                ]
            },
        ),
        (
            "Outcome",
            {"fields": ["exit_code", "error", "attempt", "retry_of", "cancel_requested_at"]},
        ),
        (
            "Execution",
            {
                "classes": ["collapse"],
                "fields": ["saga_job_id", "run_directory", "poller", "lease_expires_at"],
            },
        ),
    ]

    def get_queryset(self, request):
        return access.visible_runs(request.user, super().get_queryset(request))

    def has_add_permission(self, request):
        return False  # runs are queued from a definition's "Run now" page or the APIs

    def has_change_permission(self, request, obj=None):
        return False  # runs change only through scheduler.services

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="state", ordering="state")
    def state_display(self, run: Run) -> str:
        return state_badge(run)

    @admin.display(description="progress")
    def progress_display(self, run: Run) -> str:
        return format_html(
            '<progress max="100" value="{}" title="{}%"></progress> {}%',
            run.progress,
            run.progress,
            run.progress,
        )

    @admin.display(description="duration")
    def duration_display(self, run: Run) -> str:
        d = run.duration
        return "" if d is None else str(d).split(".")[0]

    def get_urls(self):
        return [
            path(
                "<int:run_id>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name="scheduler_run_cancel",
            ),
            path(
                "<int:run_id>/rerun/",
                self.admin_site.admin_view(self.rerun_view),
                name="scheduler_run_rerun",
            ),
            *super().get_urls(),
        ]

    def _visible_run(self, request, run_id: int) -> Run:
        if not self.has_view_permission(request):
            raise PermissionDenied
        run = self.get_queryset(request).filter(pk=run_id).first()
        if run is None:
            raise Http404("No such run.")
        return run

    def cancel_view(self, request, run_id: int):
        run = self._visible_run(request, run_id)
        if not request.user.has_perm("scheduler.cancel_run"):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:scheduler_run_change", args=[run.pk]))
        outcome = services.run_request_cancel(run=run, user=request.user)
        services.audit_record(
            action="cancel",
            user=request.user,
            ip=services.client_ip(request),
            obj=run,
            detail={"outcome": outcome},
        )
        text = {
            "cancelled": "Run %s was cancelled before it started.",
            "requested": "Cancel of run %s requested; the poller ends the job.",
            "final": "Run %s had already ended.",
        }[outcome]
        self.message_user(request, text % run.pk, messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:scheduler_run_change", args=[run.pk]))

    def rerun_view(self, request, run_id: int):
        run = self._visible_run(request, run_id)
        if not request.user.has_perm("scheduler.rerun_run"):
            raise PermissionDenied
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:scheduler_run_change", args=[run.pk]))
        try:
            new = services.run_again(run=run, requested_by=request.user)
        except SchedulerError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:scheduler_run_change", args=[run.pk]))
        services.audit_record(
            action="rerun",
            user=request.user,
            ip=services.client_ip(request),
            obj=new,
            detail={"of": run.pk},
        )
        self.message_user(request, f"Run {new.pk} queued again from run {run.pk}.")
        return HttpResponseRedirect(reverse("admin:scheduler_run_change", args=[new.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        extra_context = {
            **(extra_context or {}),
            "run": run,
            "run_messages": list(run.messages.order_by("-id")[:200])[::-1],
            "message_count": run.messages.count(),
            "run_files": list(run.files.order_by("kind", "name", "id")[:RUN_PAGE_FILES]),
            "file_count": run.files.count(),
            "can_cancel": not run.is_final and request.user.has_perm("scheduler.cancel_run"),
            "can_rerun": request.user.has_perm("scheduler.rerun_run"),
            "can_download": request.user.has_perm("scheduler.download_outputfile"),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    @admin.action(description="Cancel the selected runs", permissions=["cancel"])
    def cancel_runs(self, request, queryset):
        outcomes = [services.run_request_cancel(run=run, user=request.user) for run in queryset]
        for run in queryset:
            services.audit_record(
                action="cancel", user=request.user, ip=services.client_ip(request), obj=run
            )
        self.message_user(
            request,
            f"{outcomes.count('cancelled')} cancelled, {outcomes.count('requested')} asked to "
            f"stop, {outcomes.count('final')} had already ended.",
        )

    def has_cancel_permission(self, request):
        return request.user.has_perm("scheduler.cancel_run")
