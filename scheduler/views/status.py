"""JSON status of one run, for the live run page (polled every few seconds)."""

from __future__ import annotations

import os
from pathlib import Path

from django.http import Http404, JsonResponse
from django.views.decorators.http import require_GET

from scheduler import access, display, serializers
from scheduler.models import OutputFile, Run

TAIL_BYTES = 4096


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            fh.seek(max(0, size - TAIL_BYTES))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _log_tail(run: Run, kind: str) -> str:
    stored = run.files.filter(kind=kind).first()
    if stored is not None:
        return _tail(stored.absolute_path())
    if run.resource.on_this_host() and run.run_directory:
        # The run directory is the program's: read through the one reader of run
        # directories (no link followed, one hard link, the run account's file),
        # and only for a directory where this resource keeps its runs, since the
        # path comes from the database.
        from poller.rundir import LocalRunDirs, RefusedFile

        files = LocalRunDirs(run.resource)
        if Path(run.run_directory).parent != files.root or not Path(
            run.run_directory
        ).name.startswith("run-"):
            return ""
        name = f"{kind}.txt"
        try:
            data = files.read_tail(run.run_directory, name, TAIL_BYTES)
        except RefusedFile as exc:
            return f"({name} is not shown: {exc}.)"
        except OSError:
            return ""
        return data.decode("utf-8", "replace")
    return ""


@require_GET
def run_status(request, run_id: int):
    user = request.user
    if not (user.is_authenticated and user.is_staff and user.has_perm("scheduler.view_run")):
        raise Http404("No such run.")
    run = (
        access.visible_runs(user).select_related("resource", "definition").filter(pk=run_id).first()
    )
    if run is None:
        raise Http404("No such run.")
    try:
        after = int(request.GET.get("after", "0"))
    except ValueError:
        return JsonResponse({"error": "after must be a message id (an integer)"}, status=400)
    messages = run.messages.filter(id__gt=after).order_by("id")[:100]
    return JsonResponse(
        {
            **serializers.as_json(serializers.run_data(run)),
            "state_label": run.get_state_display(),
            # The run page's times as it writes them (scheduler.display), so the
            # live page updates Submitted, Started, the wait and the duration.
            "display": display.run_times(run),
            "is_final": run.is_final,
            "messages": [
                {
                    **serializers.as_json(serializers.message_data(m)),
                    "when": display.when(m.created_at),
                }
                for m in messages
            ],
            "message_count": run.messages.count(),
            "messages_dropped": run.messages_dropped,
            "stdout_tail": _log_tail(run, OutputFile.Kind.STDOUT),
            "stderr_tail": _log_tail(run, OutputFile.Kind.STDERR),
        }
    )
