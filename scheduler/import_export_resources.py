"""Import and export of resources, definitions and recurrences, matched by name.

Rows are matched by name (never by primary key), so an export from one site
imports into another. An unchanged row is skipped, every row is validated with
full_clean and errors are reported row by row; an import with any bad row saves
nothing (transactions).
"""

from __future__ import annotations

import json

from django.contrib.auth.models import Group
from import_export import fields, resources, widgets

from scheduler.models import ExecutionResource, Recurrence, Run, TaskDefinition, TaskParameter

PARAMETER_FIELDS = ["name", "type", "default", "required", "help_text", "choices"]
# Export option (admin.common.NativeJSONExportMixin): the JSON columns render as
# lists and objects. Not django-import-export's force_native_type, which its
# admin also sets for XLSX, where a list cell would be written as Python's repr.
JSON_NATIVE = "json_native"


class ExecutionResourceResource(resources.ModelResource):
    class Meta:
        model = ExecutionResource
        import_id_fields = ["name"]
        fields = [
            "name",
            "job_service_url",
            "file_service_url",
            "working_root",
            "python",
            "ssh_user",
            "ssh_key_path",
            "queue",
            "project",
            "wall_time_minutes",
            "max_concurrent_runs",
            "enabled",
        ]
        skip_unchanged = True
        report_skipped = True
        clean_model_instances = True


class ParametersWidget(widgets.Widget):
    """The definition's typed parameters as one JSON column."""

    def clean(self, value, row=None, **kwargs):
        if value in (None, ""):
            return []
        try:
            data = json.loads(value) if isinstance(value, str) else value
        except ValueError as exc:
            raise ValueError(f"parameters: not JSON ({exc})") from None
        if not isinstance(data, list) or not all(isinstance(p, dict) for p in data):
            raise ValueError("parameters: expected a JSON list of objects")
        for p in data:
            unknown = set(p) - set(PARAMETER_FIELDS)
            if unknown or "name" not in p:
                raise ValueError(f"parameters: bad entry {p!r}")
        return data

    def render(self, value, obj=None, **kwargs):
        if kwargs.get(JSON_NATIVE):
            return list(value or [])  # a JSON export keeps the list itself
        return json.dumps(value or [], sort_keys=True)


class JSONValueWidget(widgets.Widget):
    """JSON in a cell; an empty cell is the field's empty value ([] or {})."""

    def __init__(self, empty):
        super().__init__()
        self.empty = empty

    def clean(self, value, row=None, **kwargs):
        if value in (None, ""):
            return type(self.empty)()
        if not isinstance(value, str):
            return value
        try:
            data = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(data, type(self.empty)):
            raise ValueError(f"expected a JSON {type(self.empty).__name__}")
        return data

    def render(self, value, obj=None, **kwargs):
        value = value if value is not None else self.empty
        if kwargs.get(JSON_NATIVE):
            return value
        return json.dumps(value, sort_keys=True)


def parameter_rows(definition) -> list[dict]:
    """A definition's parameters in their order, as the parameters column holds them."""
    if not definition.pk:
        return []
    return [{f: getattr(p, f) for f in PARAMETER_FIELDS} for p in definition.parameters.all()]


class ParametersField(fields.Field):
    """The parameters column: read from the definition's parameter rows. Every way
    out goes through here: the export, and the import preview's diff (which calls
    Field.export, not the resource's dehydrate methods, so a dehydrate method left
    the preview showing [] whatever the file held)."""

    def get_value(self, obj):
        return parameter_rows(obj)

    def save(self, instance, row, is_m2m=False, **kwargs):
        pass  # saved by TaskDefinitionResource.after_save_instance, in the row's order


class TaskDefinitionResource(resources.ModelResource):
    default_resource = fields.Field(
        attribute="default_resource",
        column_name="default_resource",
        widget=widgets.ForeignKeyWidget(ExecutionResource, field="name"),
    )
    allowed_groups = fields.Field(
        attribute="allowed_groups",
        column_name="allowed_groups",
        widget=widgets.ManyToManyWidget(Group, field="name", separator="|"),
    )
    parameters = ParametersField(column_name="parameters", widget=ParametersWidget())
    default_args = fields.Field(
        attribute="default_args", column_name="default_args", widget=JSONValueWidget([])
    )
    environment = fields.Field(
        attribute="environment", column_name="environment", widget=JSONValueWidget({})
    )
    output_patterns = fields.Field(
        attribute="output_patterns", column_name="output_patterns", widget=JSONValueWidget([])
    )

    class Meta:
        model = TaskDefinition
        import_id_fields = ["name"]
        fields = [
            "name",
            "description",
            "program",
            "default_args",
            "default_resource",
            "timeout_seconds",
            "cores",
            "processes_per_host",
            "memory_mb",
            "gpus",
            "mpi",
            "queue",
            "project",
            "environment",
            "output_patterns",
            "max_retries",
            "retry_backoff_seconds",
            "max_concurrent_runs",
            "enabled",
            "allowed_groups",
            "notify_on_success",
            "notify_emails",
            "parameters",
        ]
        skip_unchanged = True
        report_skipped = True
        clean_model_instances = True

    def import_row(self, row, instance_loader, **kwargs):
        self._row_parameters = ParametersWidget().clean(row.get("parameters"))
        return super().import_row(row, instance_loader, **kwargs)

    def skip_row(self, instance, original, row, import_validation_errors=None):
        skip = super().skip_row(instance, original, row, import_validation_errors)
        if skip and original is not None and original.pk:
            # The parameters column is not a model field: compare it too.
            current = parameter_rows(original)
            wanted = ParametersWidget().clean(row.get("parameters"))
            return sorted(current, key=lambda p: p["name"]) == sorted(
                [{f: p.get(f, _default(f)) for f in PARAMETER_FIELDS} for p in wanted],
                key=lambda p: p["name"],
            )
        return skip

    def after_save_instance(self, instance, row, **kwargs):
        if kwargs.get("dry_run") and not instance.pk:
            return
        wanted = self._row_parameters
        keep = []
        for position, p in enumerate(wanted):
            param, _ = TaskParameter.objects.update_or_create(
                definition=instance,
                name=p["name"],
                defaults={
                    **{f: p.get(f, _default(f)) for f in PARAMETER_FIELDS if f != "name"},
                    "position": position,
                },
            )
            param.full_clean()
            keep.append(param.pk)
        instance.parameters.exclude(pk__in=keep).delete()


def _default(field: str):
    return {
        "name": "",
        "type": "string",
        "default": "",
        "required": False,
        "help_text": "",
        "choices": [],
    }[field]


class ExactDateTimeWidget(widgets.DateTimeWidget):
    """ISO 8601 with microseconds and offset, so an export re-imports unchanged."""

    def render(self, value, obj=None, **kwargs):
        return value.isoformat() if value else ""

    def clean(self, value, row=None, **kwargs):
        if value in (None, ""):
            return None
        if hasattr(value, "isoformat"):
            return value
        from django.utils.dateparse import parse_datetime

        parsed = parse_datetime(str(value).strip())
        if parsed is None:
            return super().clean(value, row, **kwargs)
        if parsed.tzinfo is None:
            from django.utils import timezone

            parsed = timezone.make_aware(parsed)
        return parsed


class RecurrenceResource(resources.ModelResource):
    start_at = fields.Field(
        attribute="start_at", column_name="start_at", widget=ExactDateTimeWidget()
    )
    end_at = fields.Field(attribute="end_at", column_name="end_at", widget=ExactDateTimeWidget())
    exdates = fields.Field(attribute="exdates", column_name="exdates", widget=JSONValueWidget([]))
    parameters = fields.Field(
        attribute="parameters", column_name="parameters", widget=JSONValueWidget({})
    )
    definition = fields.Field(
        attribute="definition",
        column_name="definition",
        widget=widgets.ForeignKeyWidget(TaskDefinition, field="name"),
    )
    resource = fields.Field(
        attribute="resource",
        column_name="resource",
        widget=widgets.ForeignKeyWidget(ExecutionResource, field="name"),
    )

    class Meta:
        model = Recurrence
        import_id_fields = ["definition", "name"]
        fields = [
            "definition",
            "name",
            "kind",
            "timezone",
            "start_at",
            "end_at",
            "interval_every",
            "interval_unit",
            "cron_expression",
            "rrule",
            "exdates",
            "max_runs",
            "parameters",
            "resource",
            "enabled",
            "misfire_policy",
            "misfire_grace_seconds",
            "misfire_max_runs",
            "overlap_policy",
        ]
        skip_unchanged = True
        report_skipped = True
        clean_model_instances = True


class RunExportResource(resources.ModelResource):
    definition = fields.Field(attribute="definition__name", column_name="definition")
    resource = fields.Field(attribute="resource__name", column_name="resource")
    requested_by = fields.Field(attribute="requested_by__username", column_name="requested_by")

    class Meta:
        model = Run
        fields = [
            "id",
            "definition",
            "resource",
            "state",
            "attempt",
            "due_at",
            "queued_at",
            "submitted_at",
            "started_at",
            "finished_at",
            "exit_code",
            "progress",
            "status_message",
            "error",
            "requested_by",
            "recurrence",
            "saga_job_id",
        ]
        export_order = fields
