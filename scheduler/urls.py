from django.urls import path

from scheduler.views import files, status

app_name = "scheduler"

urlpatterns = [
    path("runs/<int:run_id>/status.json", status.run_status, name="run-status"),
    path("runs/<int:run_id>/files/", files.run_files, name="run-files"),
    path("runs/<int:run_id>/files/<int:file_id>/", files.file_preview, name="file-preview"),
    path(
        "runs/<int:run_id>/files/<int:file_id>/download/",
        files.download,
        name="file-download",
    ),
    path(
        "runs/<int:run_id>/files/<int:file_id>/inline/",
        files.inline_image,
        name="file-inline",
    ),
]
