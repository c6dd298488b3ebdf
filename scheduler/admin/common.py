"""What the admin pages share: state badges, the definition filter, 404 for
what a user may not see, read-only pages."""

from __future__ import annotations

from django.contrib import admin
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
class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
