"""Output-file pages: every request checks login, role and the definition's groups."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse

from scheduler import access
from scheduler.services import audit_record, client_ip


def _visible_run(request, run_id: int):
    if not (request.user.is_staff and request.user.has_perm("scheduler.view_run")):
        raise Http404("No such run.")
    return get_object_or_404(access.visible_runs(request.user), pk=run_id)


@login_required
def run_files(request, run_id: int):
    run = _visible_run(request, run_id)
    return TemplateResponse(
        request,
        "scheduler/run_files.html",
        {"run": run, "files": run.files.all(), "title": f"Files of run {run.pk}"},
    )


@login_required
def download(request, run_id: int, file_id: int):
    run = _visible_run(request, run_id)
    if not request.user.has_perm("scheduler.download_outputfile"):
        raise Http404("No such file.")
    output = get_object_or_404(run.files, pk=file_id)
    path = output.absolute_path()
    if not path.is_file():
        raise Http404("The file is no longer in the store.")
    audit_record(
        action="download",
        user=request.user,
        ip=client_ip(request),
        obj=output,
        detail={"run": run.pk, "name": output.name},
    )
    response = FileResponse(path.open("rb"), as_attachment=True, filename=output.name)
    response["Content-Type"] = output.content_type or "application/octet-stream"
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response
