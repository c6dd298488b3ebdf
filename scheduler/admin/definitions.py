"""Task definitions: parameters, schedules, Run now, statistics, import and export."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from import_export.admin import ImportExportModelAdmin

from scheduler import access, services
from scheduler.admin.audit import AuditedAdminMixin
from scheduler.admin.common import (
    NativeJSONExportMixin,
    NotFoundForInvisibleMixin,
)
from scheduler.exceptions import SchedulerError
from scheduler.forms import run_now_form_class
from scheduler.import_export_resources import (
    TaskDefinitionResource,
)
from scheduler.models import (
    Recurrence,
    TaskDefinition,
    TaskParameter,
)


# ------------------------------------------------------------ definitions
class ProgramInput(forms.TextInput):
    """Free text with the programs found in the program directories offered as
    choices (an HTML datalist): pick one, or type a path they do not list."""

    def __init__(self, attrs=None):
        super().__init__(
            {"list": "program-choices", "size": 40, "autocomplete": "off", **(attrs or {})}
        )

    def render(self, name, value, attrs=None, renderer=None):
        from django.utils.html import format_html_join

        from scheduler.models import available_programs

        field = super().render(name, value, attrs, renderer)
        options = format_html_join("", '<option value="{}">', ((p,) for p in available_programs()))
        return format_html('{}<datalist id="program-choices">{}</datalist>', field, options)


class TaskParameterForm(forms.ModelForm):
    """One row of the parameter table, narrow enough for a 1366 px window: the
    choices a one-line JSON list, the position hidden (the table's order is the
    position: param_rows.js writes it from the rows' places, arrows move them)."""

    place = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)

    class Meta:
        model = TaskParameter
        fields = ["name", "type", "default", "required", "choices", "help_text"]
        widgets = {
            "name": forms.TextInput(attrs={"size": 12}),
            "default": forms.TextInput(attrs={"size": 10}),
            "choices": forms.TextInput(attrs={"size": 18, "placeholder": '["csv", "xlsx"]'}),
            "help_text": forms.TextInput(attrs={"size": 22}),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["place"].initial = self.instance.position


class TaskParameterFormSet(forms.BaseInlineFormSet):
    def save(self, commit=True):
        """Positions follow the table: rows sorted by the position the page gave
        them (their place), rows without one (a browser without scripts) after
        the rest in the order they stand in the form, then numbered 0, 1, 2 ..."""
        kept = [
            (form.cleaned_data.get("place"), index, form)
            for index, form in enumerate(self.forms)
            if form.has_changed() or form.instance.pk
            if not (self.can_delete and self._should_delete_form(form))
            if form.cleaned_data
        ]
        kept.sort(key=lambda item: (item[0] is None, item[0] or 0, item[1]))
        for place, (_, _, form) in enumerate(kept):
            form.instance.position = place
        saved = super().save(commit)
        if commit:
            # A row that only moved (or moved up because one above it went) has
            # no other change, and the formset saves only changed rows.
            for place, (_, _, form) in enumerate(kept):
                if form.instance.pk:
                    TaskParameter.objects.filter(pk=form.instance.pk).exclude(
                        position=place
                    ).update(position=place)
        return saved


class TaskParameterInline(admin.TabularInline):
    model = TaskParameter
    form = TaskParameterForm
    formset = TaskParameterFormSet
    extra = 0
    fields = ["place", "name", "type", "default", "required", "choices", "help_text"]
    verbose_name_plural = (
        "Parameters: the values an operator gives a run. Run now builds its form from them, "
        "in this order (move a row with its arrows); the program reads them by name"
    )


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
class TaskDefinitionAdmin(
    NotFoundForInvisibleMixin, AuditedAdminMixin, NativeJSONExportMixin, ImportExportModelAdmin
):
    resource_classes = [TaskDefinitionResource]
    list_display = ["name", "program", "default_resource", "enabled", "next_due", "runs_link"]
    list_filter = ["enabled", "default_resource"]
    search_fields = ["name", "description", "program"]
    list_select_related = ["default_resource"]
    filter_horizontal = ["allowed_groups", "subscribers"]
    inlines = [TaskParameterInline, RecurrenceInline]
    change_form_template = "admin/scheduler/taskdefinition/change_form.html"
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "name",
                    "description",
                    "program",
                    "default_args",
                    "default_resource",
                    "enabled",
                ]
            },
        ),
        (
            "What a run needs (each run may override it: Run now, Advanced; the APIs; a schedule)",
            {
                "fields": [
                    ("cores", "memory_mb", "gpus"),
                    ("mpi", "processes_per_host"),
                    "timeout_seconds",
                    ("queue", "project"),
                    "environment",
                ]
            },
        ),
        ("Files", {"fields": ["output_patterns"]}),
        (
            "Retries and limits",
            {"fields": ["max_retries", "retry_backoff_seconds", "max_concurrent_runs"]},
        ),
        (
            "Access and mail",
            {
                "fields": [
                    "allowed_groups",
                    "subscribers",
                    "notify_on_success",
                    "notify_emails",
                ]
            },
        ),
    ]

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if db_field.name == "program":
            kwargs["widget"] = ProgramInput()
        return super().formfield_for_dbfield(db_field, request, **kwargs)

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
        form = form_class(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                run = services.run_enqueue(
                    definition=definition,
                    parameters=form.cleaned_data["parameters"],
                    resource=form.cleaned_data.get("resource"),
                    due_at=form.cleaned_data.get("run_at"),
                    requested_by=request.user,
                    needs=form.cleaned_data["needs"],
                    inputs=form.cleaned_data["inputs"],
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
            # Open when something in it was given or refused, so the operator sees it.
            "advanced_open": request.method == "POST"
            and any(
                k.startswith("adv_") and (v not in ("", None))
                for k, v in {**request.POST.dict(), **{k: 1 for k in request.FILES}}.items()
            ),
            "opts": self.opts,
            "original": definition,
            "has_view_permission": True,
        }
        return TemplateResponse(request, "admin/scheduler/taskdefinition/run_now.html", context)
