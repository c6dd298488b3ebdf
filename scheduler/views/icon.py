"""/favicon.ico: browsers ask for it on every page that names no icon (the API's
JSON, a download, a 404). The admin's pages name the same image in their head
(templates/admin/base_site.html)."""

from __future__ import annotations

from functools import lru_cache

from django.contrib.staticfiles import finders
from django.http import HttpResponse
from django.views.decorators.cache import cache_control
from django.views.decorators.http import require_safe

ICON = "scheduler/favicon.png"


@lru_cache(maxsize=1)
def _icon_bytes() -> bytes:
    found = finders.find(ICON)
    with open(found, "rb") as fh:
        return fh.read()


@require_safe
@cache_control(public=True, max_age=86400)
def favicon(request):
    return HttpResponse(_icon_bytes(), content_type="image/png")
