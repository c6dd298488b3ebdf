"""The operator's admin: every model, narrowed by scheduler.access, with the
custom pages (Run now, cancel, run again) built the way Django's UserAdmin
builds its password page: routes in get_urls(), admin_view, object permission
checked inside, TemplateResponse, messages + log + redirect after a POST.
"""

from scheduler.admin import (  # noqa: F401 - each module registers its pages
    definitions,
    records,
    recurrences,
    resources,
    runs,
)
