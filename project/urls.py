from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from scheduler.views.icon import favicon

urlpatterns = [
    path("favicon.ico", favicon, name="favicon"),
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("scheduler/", include("scheduler.urls")),
    path("api/v1/", include("scheduler.http.urls")),
    path("admin/", admin.site.urls),
]
