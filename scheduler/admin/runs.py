"""Runs: the list, the live run page, cancel and run again."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from import_export.admin import ExportActionMixin

from scheduler import access, display, services
from scheduler.admin.common import (
    NativeJSONExportMixin,
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
ERROR_LINES = 20  # an error longer than this shows its last lines, the rest folded


def time_column(field: str, label: str, *, sortable: bool = True):
    """A read-only field (and list column) showing one of a run's times."""

    @admin.display(description=label, ordering=field if sortable else None)
    def show(self, run: Run) -> str:
        return display.when(getattr(run, field))

    show.__name__ = field.removesuffix("_at")
    return show


def first_line(text: str) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


def error_block(text: str):
    """A run's error once, monospaced, in full: the last ERROR_LINES lines in
    sight (a traceback's end names the error), the earlier ones folded."""
    text = (text or "").rstrip()
    if not text:
        return ""
    lines = text.splitlines()
    if len(lines) <= ERROR_LINES:
        return format_html('<pre class="run-error" id="run-error">{}</pre>', text)
    head, tail = lines[:-ERROR_LINES], lines[-ERROR_LINES:]
    return format_html(
        '<div class="run-error" id="run-error"><details><summary>{} earlier line{}</summary>'
        "<pre>{}</pre></details><pre>{}</pre></div>",
        len(head),
        "" if len(head) == 1 else "s",
        "\n".join(head),
        "\n".join(tail),
    )


def message_rows(run: Run, messages) -> list[tuple]:
    """(message, text to show, folded) per message: a message whose traceback the
    run's error holds shows its first line, with a pointer to the error."""
    rows = []
    for m in messages:
        lines = m.text.splitlines()
        folded = (
            len(lines) > 1
            and bool(run.error)
            and m.level == "error"
            and lines[-1].strip() != ""
            and lines[-1].strip() in run.error
        )
        rows.append((m, lines[0] if folded else m.text, folded))
    return rows


@admin.register(Run)
class RunAdmin(
    NotFoundForInvisibleMixin, NativeJSONExportMixin, ExportActionMixin, admin.ModelAdmin
):
    resource_classes = [RunExportResource]
    list_display = [
        "id",
        "definition",
        "state_display",
        "progress_display",
        "resource",
        "due",
        "started",
        "duration_display",
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
        "status_display",
        "parameters",
        "args",
        "priority",
        "due",
        "queued",
        "submitted",
        "started",
        "finished",
        "wait_display",
        "duration_display",
        "needs_display",
        "cost_display",
        "exit_code",
        "error_display",
        "attempt",
        "retry_of",
        "cancel_requested_at",
        "saga_job_id",
        "run_directory",
        "poller",
        "lease_expires_at",
    ]
    fieldsets = [
        (None, {"fields": ["definition", "state_display", "progress_display", "status_display"]}),
        (
            "Request",
            {
                "fields": [
                    "parameters",
                    "args",
                    "resource",
                    "needs_display",
                    "priority",
                    "requested_by",
                    "recurrence",
                ]
            },
        ),
        (
            "Times",
            {
                "fields": [
                    "due",
                    "queued",
                    "submitted",
                    "started",
                    "finished",
                    "wait_display",
                    "duration_display",
                    "cost_display",
                ]
            },
        ),
        (
            "Outcome",
            {
                "fields": [
                    "exit_code",
                    "error_display",
                    "attempt",
                    "retry_of",
                    "cancel_requested_at",
                ]
            },
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

    @admin.display(description="status")
    def status_display(self, run: Run) -> str:
        """The latest message's first line: a failure's traceback is shown once,
        under Error, not here as well."""
        return first_line(run.status_message)

    # A run's moments, to the second in the site's zone (scheduler.display.when).
    due = time_column("due_at", "due")
    queued = time_column("queued_at", "queued")
    submitted = time_column("submitted_at", "submitted", sortable=False)
    started = time_column("started_at", "started")
    finished = time_column("finished_at", "finished")

    @admin.display(description="wait to start")
    def wait_display(self, run: Run) -> str:
        return display.wait(run)

    @admin.display(description="duration")
    def duration_display(self, run: Run) -> str:
        return display.duration(run)

    @admin.display(description="needs")
    def needs_display(self, run: Run) -> str:
        from scheduler.needs import summary

        return summary(run.needs) or "1 core (queued before runs said what they need)"

    @admin.display(description="core-hours and cost")
    def cost_display(self, run: Run) -> str:
        if run.core_hours is None:
            return "when it has ended"
        text = f"{run.core_hours:,.4f} core-hours ({run.cores} × {display.duration(run)})"
        if run.cost is not None:
            text += f", cost {run.cost:,.6f} at {run.resource.price_per_core_hour} a core-hour"
        return text

    @admin.display(description="error")
    def error_display(self, run: Run) -> str:
        return error_block(run.error)

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
            path(
                "<int:run_id>/due-now/",
                self.admin_site.admin_view(self.due_now_view),
                name="scheduler_run_due_now",
            ),
            path(
                "<int:run_id>/delete-final/",
                self.admin_site.admin_view(self.delete_final_view),
                name="scheduler_run_delete_final",
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
            if run.is_final:
                self.message_user(request, f"Run {run.pk} has already ended.", messages.INFO)
                return HttpResponseRedirect(reverse("admin:scheduler_run_change", args=[run.pk]))
            return self._confirm(
                request,
                run,
                title=f"Cancel run {run.pk}?",
                question=(
                    f"Cancel run {run.pk} of {run.definition.name!r} "
                    f"({run.get_state_display().lower()})? "
                    + (
                        "It has not started: it will not run."
                        if run.state == Run.State.QUEUED
                        else "The poller ends its job; the program gets SIGTERM, then SIGKILL."
                    )
                ),
                action=reverse("admin:scheduler_run_cancel", args=[run.pk]),
                yes="Yes, cancel this run",
                no="No, let it run",
                yes_id="run-cancel-confirm",
            )
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

    def _confirm(self, request, run, *, title, question, action, yes, no, yes_id):
        """A page that asks before a step that cannot be undone (a danger button)."""
        from django.template.response import TemplateResponse

        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "run": run,
            "title": title,
            "question": question,
            "action": action,
            "yes": yes,
            "no": no,
            "yes_id": yes_id,
        }
        return TemplateResponse(request, "admin/scheduler/run/confirm.html", context)

    def due_now_view(self, request, run_id: int):
        """A run queued for later is made due now; the poller takes it at its next tick."""
        run = self._visible_run(request, run_id)
        if not request.user.has_perm("scheduler.run_taskdefinition"):
            raise PermissionDenied
        back = HttpResponseRedirect(reverse("admin:scheduler_run_change", args=[run.pk]))
        if request.method != "POST":
            return back
        if services.run_make_due_now(run=run):
            services.audit_record(
                action="run_now",
                user=request.user,
                ip=services.client_ip(request),
                obj=run,
                detail={"of": "queued run"},
            )
            self.message_user(request, f"Run {run.pk} is due now.", messages.SUCCESS)
        else:
            self.message_user(
                request, f"Run {run.pk} is not waiting for a later time any more.", messages.INFO
            )
        return back

    def delete_final_view(self, request, run_id: int):
        """An administrator deletes one ended run (messages, file rows, stored files)."""
        run = self._visible_run(request, run_id)
        if not request.user.has_perm("scheduler.delete_run"):
            raise PermissionDenied
        if not run.is_final:
            self.message_user(
                request, f"Run {run.pk} has not ended: cancel it first.", messages.ERROR
            )
            return HttpResponseRedirect(reverse("admin:scheduler_run_change", args=[run.pk]))
        if request.method != "POST":
            return self._confirm(
                request,
                run,
                title=f"Delete run {run.pk}?",
                question=(
                    f"Delete run {run.pk} of {run.definition.name!r} "
                    f"({run.get_state_display().lower()}) with its "
                    f"{run.messages.count()} messages and {run.files.count()} files? "
                    "This cannot be undone; the audit trail keeps that you did it."
                ),
                action=reverse("admin:scheduler_run_delete_final", args=[run.pk]),
                yes="Yes, delete this run",
                no="No, keep it",
                yes_id="run-delete-confirm",
            )
        try:
            services.run_delete_final(run=run)
        except SchedulerError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(reverse("admin:scheduler_run_change", args=[run.pk]))
        services.audit_record(
            action="delete",
            user=request.user,
            ip=services.client_ip(request),
            obj=run,
            detail={"definition": run.definition.name, "state": run.state},
        )
        self.message_user(request, f"Run {run_id} was deleted.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:scheduler_run_changelist"))

    def get_fieldsets(self, request, obj=None):
        # The Times section says once which zone its times are in.
        return [
            (name, {**opts, "description": display.zone_note()} if name == "Times" else opts)
            for name, opts in super().get_fieldsets(request, obj)
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        run = self.get_object(request, object_id)
        extra_context = {
            **(extra_context or {}),
            "run": run,
            "run_messages": message_rows(run, list(run.messages.order_by("-id")[:200])[::-1]),
            "zone_note": display.zone_note(),
            "message_count": run.messages.count(),
            "run_files": list(run.files.order_by("kind", "name", "id")[:RUN_PAGE_FILES]),
            "run_inputs": list(run.inputs.all()) if run else [],
            "file_count": run.files.count(),
            "can_cancel": not run.is_final and request.user.has_perm("scheduler.cancel_run"),
            "can_run_now": run.state == Run.State.QUEUED
            and run.due_at > timezone.now()
            and request.user.has_perm("scheduler.run_taskdefinition"),
            "can_delete_final": run.is_final and request.user.has_perm("scheduler.delete_run"),
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
