"""The operator's admin: every model, narrowed by scheduler.access, with the
custom pages (Run now, cancel, run again) built the way Django's UserAdmin
builds its password page: routes in get_urls(), admin_view, object permission
checked inside, TemplateResponse, messages + log + redirect after a POST.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from import_export.admin import ExportActionMixin, ImportExportModelAdmin

from scheduler import access, services
from scheduler.admin.audit import AuditedAdminMixin
from scheduler.admin.recurrences import RecurrenceAdmin  # noqa: F401 - registers it
from scheduler.exceptions import SchedulerError
from scheduler.forms import run_now_form_class
from scheduler.import_export_resources import (
    ExecutionResourceResource,
    RunExportResource,
    TaskDefinitionResource,
)
from scheduler.models import (
    ApiToken,
    AuditEvent,
    ExecutionResource,
    OutputFile,
    PollerHeartbeat,
    Recurrence,
    Run,
    StatusMessage,
    TaskDefinition,
    TaskParameter,
)
from scheduler.paginator import CappedCountPaginator

STATE_COLOURS = {
    "QUEUED": "#777",
    "SUBMITTED": "#8a6d3b",
    "RUNNING": "#31708f",
    "SUCCEEDED": "#3c763d",
    "FAILED": "#a94442",
    "CANCELLED": "#555",
    "TIMED_OUT": "#a94442",
    "LOST": "#a94442",
}


def state_badge(run: Run) -> str:
    return format_html(
        '<span class="run-state run-state-{}" style="color:{};font-weight:bold">{}</span>',
        run.state.lower(),
        STATE_COLOURS.get(run.state, "#000"),
        run.get_state_display(),
    )


class VisibleDefinitionFilter(admin.RelatedFieldListFilter):
    """The definition filter offers only definitions the user may see (names leak otherwise)."""

    def field_choices(self, field, request, model_admin):
        return [(d.pk, str(d)) for d in access.visible_definitions(request.user).order_by("name")]


class NotFoundForInvisibleMixin:
    """Objects a user may not see answer 404, not the admin's redirect with a message."""

    def get_object(self, request, object_id, from_field=None):
        obj = super().get_object(request, object_id, from_field)
        if obj is None:
            raise Http404("No such object.")
        return obj


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


# ------------------------------------------------------------ definitions
class TaskParameterInline(admin.TabularInline):
    model = TaskParameter
    extra = 0
    fields = ["position", "name", "type", "default", "required", "choices", "help_text"]


class RecurrenceInline(admin.TabularInline):
    model = Recurrence
    extra = 0
    fields = ["name", "kind", "timezone", "enabled", "next_due_at"]
    readonly_fields = fields
    show_change_link = True
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(TaskDefinition)
class TaskDefinitionAdmin(NotFoundForInvisibleMixin, AuditedAdminMixin, ImportExportModelAdmin):
    resource_classes = [TaskDefinitionResource]
    list_display = ["name", "program", "default_resource", "enabled", "next_due", "runs_link"]
    list_filter = ["enabled", "default_resource"]
    search_fields = ["name", "description", "program"]
    list_select_related = ["default_resource"]
    filter_horizontal = ["allowed_groups", "subscribers"]
    inlines = [TaskParameterInline, RecurrenceInline]
    change_form_template = "admin/scheduler/taskdefinition/change_form.html"
    fieldsets = [
        (None, {"fields": ["name", "description", "program", "default_args", "enabled"]}),
        (
            "Execution",
            {
                "fields": [
                    "default_resource",
                    "timeout_seconds",
                    "max_retries",
                    "retry_backoff_seconds",
                    "max_concurrent_runs",
                ]
            },
        ),
        (
            "Access and notifications",
            {"fields": ["allowed_groups", "subscribers", "notify_emails", "notify_on_success"]},
        ),
    ]

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        ids = access.visible_definition_ids(request.user)
        return qs if ids is None else qs.filter(pk__in=ids)

    @admin.display(description="next due")
    def next_due(self, definition: TaskDefinition):
        return (
            definition.recurrences.filter(enabled=True, next_due_at__isnull=False)
            .order_by("next_due_at")
            .values_list("next_due_at", flat=True)
            .first()
        )

    @admin.display(description="runs")
    def runs_link(self, definition: TaskDefinition) -> str:
        url = reverse("admin:scheduler_run_changelist") + f"?definition__id__exact={definition.pk}"
        return format_html('<a href="{}">runs</a>', url)

    def get_urls(self):
        return [
            path(
                "<int:definition_id>/run/",
                self.admin_site.admin_view(self.run_now_view),
                name="scheduler_taskdefinition_run",
            ),
            path(
                "<int:definition_id>/stats/",
                self.admin_site.admin_view(self.stats_view),
                name="scheduler_taskdefinition_stats",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        extra_context = {
            **(extra_context or {}),
            "can_run": request.user.has_perm("scheduler.run_taskdefinition"),
        }
        return super().change_view(request, object_id, form_url, extra_context)

    def stats_view(self, request, definition_id: int):
        """Success rate and durations over 30 days, as charts, with the last failures."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        definition = self.get_queryset(request).filter(pk=definition_id).first()
        if definition is None:
            raise Http404("No such task definition.")
        from scheduler.stats import definition_stats

        context = {
            **self.admin_site.each_context(request),
            "title": f"{definition.name}: statistics",
            "definition": definition,
            "stats": definition_stats(definition),
            "opts": self.opts,
            "original": definition,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/scheduler/taskdefinition/stats.html", context)

    def run_now_view(self, request, definition_id: int):
        definition = self.get_queryset(request).filter(pk=definition_id).first()
        if definition is None:
            raise Http404("No such task definition.")
        if not request.user.has_perm("scheduler.run_taskdefinition"):
            raise PermissionDenied
        form_class = run_now_form_class(definition)
        form = form_class(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                run = services.run_enqueue(
                    definition=definition,
                    parameters=form.cleaned_data["parameters"],
                    resource=form.cleaned_data.get("resource"),
                    due_at=form.cleaned_data.get("run_at"),
                    requested_by=request.user,
                )
            except SchedulerError as exc:
                form.add_error(None, str(exc))
            else:
                services.audit_record(
                    action="queue",
                    user=request.user,
                    ip=services.client_ip(request),
                    obj=run,
                    detail={"definition": definition.name, "parameters": run.parameters},
                )
                self.log_addition(request, run, f"Queued from Run now: {run.parameters}")
                self.message_user(request, f"Run {run.pk} of {definition.name} queued.")
                return HttpResponseRedirect(reverse("admin:scheduler_run_change", args=[run.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Run {definition.name} now",
            "definition": definition,
            "form": form,
            "opts": self.opts,
            "original": definition,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/scheduler/taskdefinition/run_now.html", context)


# -------------------------------------------------------------- resources
@admin.register(ExecutionResource)
class ExecutionResourceAdmin(AuditedAdminMixin, ImportExportModelAdmin):
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


# ---------------------------------------------------------- read-only rows
class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


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
class AuditEventAdmin(NotFoundForInvisibleMixin, ExportActionMixin, ReadOnlyAdmin):
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
        self.message_user(
            request,
            f"Token created. Its key, shown only now: {key}",
            messages.WARNING,
        )
