"""Output-file pages: every request checks login, staff, role and the definition's groups.

Anything a user may not see answers 404, never 403, so a URL leaks nothing about
runs of restricted definitions. Bytes leave through scheduler/downloads.py.
"""

from __future__ import annotations

import csv

from django.conf import settings
from django.contrib import admin
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.views.decorators.http import require_safe

from scheduler import access, downloads
from scheduler.models import OutputFile, Run
from scheduler.services import audit_record, client_ip

FILES_PER_PAGE = 100
PREVIEW_LINES = 50
PREVIEW_BYTES = 64 * 1024


def _visible_run(request, run_id: int, *perms: str) -> Run:
    user = request.user
    needed = ("scheduler.view_run", *perms)
    if not (user.is_active and user.is_staff and user.has_perms(needed)):
        raise Http404("No such run.")
    return get_object_or_404(access.visible_runs(user).select_related("definition"), pk=run_id)


def _visible_file(request, run_id: int, file_id: int) -> tuple[Run, OutputFile]:
    run = _visible_run(request, run_id, "scheduler.download_outputfile")
    # Looked up through the run: another run's file id with this run's id is a 404.
    return run, get_object_or_404(run.files, pk=file_id)


def _context(request, **extra):
    return {**admin.site.each_context(request), **extra}


@require_safe
@login_required
def run_files(request, run_id: int):
    run = _visible_run(request, run_id, "scheduler.view_outputfile")
    page = Paginator(run.files.order_by("kind", "name", "id"), FILES_PER_PAGE).get_page(
        request.GET.get("page")
    )
    files = list(page.object_list)
    for f in files:
        f.previewable = downloads.is_text_preview(f) or downloads.is_inline_image(f)
        f.is_image = downloads.is_inline_image(f)
    return TemplateResponse(
        request,
        "scheduler/run_files.html",
        _context(request, run=run, files=files, page=page, title=f"Files of run {run.pk}"),
    )


@require_safe
@login_required
def file_preview(request, run_id: int, file_id: int):
    """A file's details and, for text, CSV and the four image types, a safe preview."""
    run, output = _visible_file(request, run_id, file_id)
    path = downloads.contained_path(output)
    preview: dict = {"kind": "none"}
    if downloads.is_inline_image(output):
        if downloads.magic_matches(path, output.content_type):
            preview = {"kind": "image"}
        else:
            preview = {"kind": "mismatch"}
    elif downloads.is_text_preview(output):
        lines, truncated = downloads.read_text_head(
            path, max_lines=PREVIEW_LINES, max_bytes=PREVIEW_BYTES
        )
        if downloads.is_csv(output):
            rows = list(csv.reader(lines))
            preview = {
                "kind": "csv",
                "header": rows[0] if rows else [],
                "rows": rows[1:],
                "truncated": truncated,
            }
        else:
            preview = {"kind": "text", "text": "\n".join(lines), "truncated": truncated}
    audit_record(
        action="preview",
        user=request.user,
        ip=client_ip(request),
        obj=output,
        detail={"run": run.pk, "name": output.name},
    )
    return TemplateResponse(
        request,
        "scheduler/file_preview.html",
        _context(
            request,
            run=run,
            file=output,
            preview=preview,
            preview_lines=PREVIEW_LINES,
            title=f"{output.name} (run {run.pk})",
        ),
    )


@require_safe
@login_required
def download(request, run_id: int, file_id: int):
    run, output = _visible_file(request, run_id, file_id)
    path = downloads.contained_path(output)
    if request.method == "GET":  # a HEAD transfers nothing
        audit_record(
            action="download",
            user=request.user,
            ip=client_ip(request),
            obj=output,
            detail={
                "run": run.pk,
                "name": output.name,
                "range": request.headers.get("Range", ""),
                "sendfile": settings.SCHEDULER_SENDFILE,
            },
        )
    return downloads.serve(request, output, disposition="attachment", path=path)


@require_safe
@login_required
def inline_image(request, run_id: int, file_id: int):
    """Only PNG/JPEG/GIF/WebP, typed from the stored row after re-checking the magic bytes."""
    _run, output = _visible_file(request, run_id, file_id)
    if not downloads.is_inline_image(output):
        raise Http404("Only images are shown inline.")
    path = downloads.contained_path(output)
    if not downloads.magic_matches(path, output.content_type):
        raise Http404("The file is not the image its type says.")
    return downloads.serve(
        request,
        output,
        disposition="inline",
        content_type=downloads.base_type(output.content_type),
        path=path,
    )
