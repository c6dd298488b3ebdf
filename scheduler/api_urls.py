"""URLs of the HTTP API, mounted at /api/v1/ (namespace "api")."""

from django.urls import path

from scheduler.views import http_api

app_name = "api"

urlpatterns = [
    path("openapi.json", http_api.openapi, name="openapi"),
    path("definitions/", http_api.definitions, name="definitions"),
    path("runs/", http_api.runs, name="runs"),
    path("runs/<int:run_id>/", http_api.run, name="run"),
    path("runs/<int:run_id>/cancel/", http_api.cancel, name="cancel"),
    path("runs/<int:run_id>/files/", http_api.files, name="files"),
    path(
        "runs/<int:run_id>/files/<int:file_id>/download/",
        http_api.file_download,
        name="file-download",
    ),
    # Anything else under /api/v1/ (a negative id, a typo) is a JSON 404 too.
    path("<path:rest>", http_api.not_found, name="not-found"),
]
