"""What the admin pages share: state badges, the definition filter, 404 for
what a user may not see, read-only pages."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.utils.html import format_html

from scheduler import access
from scheduler.models import (
    Run,
)

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


# ---------------------------------------------------------- read-only rows
class NativeJSONExportMixin:
    """A JSON export keeps JSON's types: numbers, booleans, lists and objects, not
    their text (django-import-export renders every value as text except for its
    binary formats). CSV stays text; XLSX was native already."""

    def get_export_data(self, file_format, request, queryset, **kwargs):
        from import_export.formats.base_formats import JSON

        if not isinstance(file_format, JSON):
            return super().get_export_data(file_format, request, queryset, **kwargs)
        if not self.has_export_permission(request):
            raise PermissionDenied
        from scheduler.import_export_resources import JSON_NATIVE

        data = self.get_data_for_export(
            request, queryset, force_native_type=True, **{JSON_NATIVE: True}, **kwargs
        )
        export_data = file_format.export_data(data)
        encoding = kwargs.get("encoding")
        if encoding:
            export_data = export_data.encode(encoding)
        return export_data


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
