"""URLs of the HTTP API, mounted at /api/v1/ (namespace "api")."""

from django.urls import path

from scheduler.http import views

app_name = "api"

urlpatterns = [
    path("openapi.json", views.openapi, name="openapi"),
    path("definitions/", views.definitions, name="definitions"),
    path("runs/", views.runs, name="runs"),
    path("runs/<int:run_id>/", views.run, name="run"),
    path("runs/<int:run_id>/cancel/", views.cancel, name="cancel"),
    path("runs/<int:run_id>/files/", views.files, name="files"),
    path(
        "runs/<int:run_id>/files/<int:file_id>/download/",
        views.file_download,
        name="file-download",
    ),
    # Anything else under /api/v1/ (a negative id, a typo) is a JSON 404 too.
    path("<path:rest>", views.not_found, name="not-found"),
]
