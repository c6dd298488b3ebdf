"""The HTTP API under /api/v1/: JSON in and out, token authentication.

A thin layer over scheduler.api (the Python API) with the admin's access rules:
``Authorization: Bearer <token>`` (issued in the admin, stored hashed), the
user's role decides what it may do (viewers read and download, operators also
queue and cancel), and a run of a definition the user may not see answers 404,
like an unknown one. Every error is JSON ``{"error": "...", "detail": ...}``
with a fitting status; bad input is a 400 with the reason, never a 500.
The schema is served at /api/v1/openapi.json (scheduler/http/schema.py).
"""

from __future__ import annotations

import json
from functools import wraps
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from django.urls import reverse
from django.utils.dateparse import parse_datetime
from django.views.decorators.csrf import csrf_exempt

from scheduler import access, api, downloads, serializers, services
from scheduler.exceptions import Forbidden, NotFound, SchedulerError
from scheduler.http.schema import schema
from scheduler.http.tokens import token_user
from scheduler.models import OutputFile, Run

MAX_BODY = 64 * 1024  # a run request is small; a bigger body is refused
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
RUN_MESSAGES = 200  # the newest messages in a run's detail
FILE_ORDER = ("kind", "name", "id")


class ApiError(Exception):
    def __init__(self, status: int, error: str, detail: Any = None) -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail


def _error(status: int, error: str, detail: Any = None) -> JsonResponse:
    body = {"error": error}
    if detail is not None:
        body["detail"] = detail
    response = JsonResponse(body, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="scheduler"'
    return response


def endpoint(*methods: str):
    """Token auth, allowed methods, and every failure as a JSON answer."""

    def wrap(view):
        @csrf_exempt  # no cookies: the token in the header is the credential
        @wraps(view)
        def inner(request: HttpRequest, *args, **kwargs):
            if request.method not in methods:
                response = _error(405, f"Method {request.method} is not allowed here.")
                response["Allow"] = ", ".join(methods)
                return response
            header = request.headers.get("Authorization", "")
            scheme, _, key = header.partition(" ")
            if scheme.lower() != "bearer" or not key.strip():
                return _error(401, "Authentication required: send 'Authorization: Bearer <token>'.")
            user = token_user(key.strip())
            if user is None:
                return _error(
                    401, "The token is not valid (unknown, revoked or its user inactive)."
                )
            if not (user.is_staff or user.is_superuser):
                return _error(403, "This account has no scheduler role.")
            request.user = user
            try:
                return view(request, *args, **kwargs)
            except ApiError as exc:
                return _error(exc.status, exc.error, exc.detail)
            except Http404 as exc:
                return _error(404, str(exc) or "Not found.")
            except PermissionDenied as exc:
                return _error(403, str(exc) or "Not allowed.")
            except SchedulerError as exc:
                return _error(_status_for(exc), str(exc))

        return inner

    return wrap


def _status_for(exc: SchedulerError) -> int:
    """The status of an error by its kind (scheduler.exceptions), never its text."""
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Forbidden):
        return 403
    return 400


def _need(request, perm: str, what: str) -> None:
    if not request.user.has_perm(perm):
        raise ApiError(403, f"Your role may not {what}.")


def _body(request) -> dict[str, Any]:
    if len(request.body) > MAX_BODY:
        raise ApiError(413, f"The request body is over {MAX_BODY} bytes.")
    if not request.body:
        raise ApiError(400, "A JSON object is required as the request body.")
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "The request body is not valid JSON.", str(exc)) from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return data


def _datetime(value: Any, name: str):
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be an ISO 8601 date-time string.")
    try:
        parsed = parse_datetime(value)
    except ValueError:
        parsed = None
    if parsed is None:
        raise ApiError(400, f"{name} {value!r} is not an ISO 8601 date-time.")
    if parsed.tzinfo is None:
        raise ApiError(400, f"{name} {value!r} needs a time zone, e.g. 2026-05-04T07:30:00Z.")
    return parsed


def _int_param(request, name: str, default: int, low: int, high: int) -> int:
    raw = request.GET.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number.") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}.")
    return value


def _run_json(status: dict[str, Any]) -> dict[str, Any]:
    """A run (serializers.run_data, as the Python API answers it) and its URL."""
    return {**serializers.as_json(status), "url": reverse("api:run", args=[status["run_id"]])}


def _file_json(run_id: int, f: OutputFile) -> dict[str, Any]:
    return {
        **serializers.as_json(serializers.file_data(f)),
        "download_url": reverse("api:file-download", args=[run_id, f.pk]),
    }


# ----------------------------------------------------------------- the views
def openapi(request):
    """The schema needs no token: it describes, it reveals nothing."""
    if request.method not in ("GET", "HEAD"):
        return _error(405, f"Method {request.method} is not allowed here.")
    return JsonResponse(schema(request.build_absolute_uri("/api/v1/")))


@csrf_exempt
def not_found(request, rest: str):
    return _error(404, f"No such API endpoint: /api/v1/{rest}")


@endpoint("GET")
def definitions(request):
    user = request.user
    can_run = user.has_perm("scheduler.run_taskdefinition")
    items = []
    for d in access.visible_definitions(user).prefetch_related("parameters").order_by("name"):
        items.append(
            {
                "name": d.name,
                "description": d.description,
                "enabled": d.enabled,
                "can_run": can_run and d.enabled,
                "parameters": [
                    {
                        "name": p.name,
                        "type": p.type,
                        "default": p.default,
                        "required": p.required,
                        "help": p.help_text,
                        "choices": p.choices or [],
                    }
                    for p in d.parameters.all()
                ],
            }
        )
    return JsonResponse({"results": items})


@endpoint("GET", "POST")
def runs(request):
    if request.method == "POST":
        return _queue(request)
    user = request.user
    _need(request, "scheduler.view_run", "see runs")
    limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    state = request.GET.get("state") or None
    definition = request.GET.get("definition") or None
    results = api.list_runs(
        user=user,
        state=state,
        definition=definition,
        since=_datetime(request.GET.get("since"), "since"),
        until=_datetime(request.GET.get("until"), "until"),
        limit=limit + 1,  # one more tells whether a next page exists
        offset=offset,
    )
    return _page(request, results, limit, offset, _run_json)


def _page(request, found: list, limit: int, offset: int, shape) -> JsonResponse:
    """A page of ``found`` (fetched with one row more than ``limit``: that row
    tells whether a next page exists) and the URL of the next page."""
    next_url = None
    if len(found) > limit:
        query = request.GET.copy()
        query["offset"] = str(offset + limit)
        query["limit"] = str(limit)
        next_url = f"{request.path}?{query.urlencode()}"
    return JsonResponse({"results": [shape(item) for item in found[:limit]], "next": next_url})


def _multipart(request) -> tuple[dict[str, Any], list]:
    """A run request with uploaded input files: multipart/form-data with the
    JSON object in the field ``request`` and each file in a field ``inputs``
    (its file name is its name in inputs/). A body over the input limit is
    refused by its length, before it is read."""
    from django.conf import settings
    from django.http.multipartparser import MultiPartParserError

    from scheduler import inputs as run_inputs

    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    limit = settings.SCHEDULER_MAX_INPUT_BYTES
    if length > limit + MAX_BODY:
        raise ApiError(
            413,
            f"The request is {length:,} bytes, over the limit of {limit:,} bytes for a run's "
            "input files (SCHEDULER_MAX_INPUT_BYTES).",
        )
    try:
        text = request.POST.get("request", "")
        files = request.FILES.getlist("inputs")
    except MultiPartParserError as exc:
        raise ApiError(400, f"The multipart body could not be read: {exc}") from None
    unknown_files = sorted(set(request.FILES) - {"inputs"})
    if unknown_files:
        raise ApiError(400, f"Unknown file field(s): {', '.join(unknown_files)}; use 'inputs'.")
    if not text:
        raise ApiError(400, "A multipart run request needs its JSON object in the field 'request'.")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ApiError(400, "The field 'request' is not valid JSON.", str(exc)) from None
    if not isinstance(data, dict):
        raise ApiError(400, "The field 'request' must be a JSON object.")
    return data, [run_inputs.Upload(f.name, f, f.size) for f in files]


def _input_refs(value: Any) -> list:
    """``inputs`` of a JSON run request: [{"output_file": ID, "name": "..."}]."""
    from scheduler import inputs as run_inputs

    if value in (None, []):
        return []
    if not isinstance(value, list):
        raise ApiError(400, 'inputs must be a list of objects like {"output_file": 12}.')
    refs = []
    for item in value:
        if (
            not isinstance(item, dict)
            or set(item) - {"output_file", "name"}
            or not isinstance(item.get("output_file"), int)
            or isinstance(item.get("output_file"), bool)
            or not isinstance(item.get("name", ""), str)
        ):
            raise ApiError(
                400,
                'Each input must be {"output_file": ID} with an optional "name", '
                f"got {json.dumps(item)[:200]}.",
            )
        refs.append(run_inputs.FromOutput(item["output_file"], item.get("name", "")))
    return refs


def _queue(request):
    _need(request, "scheduler.run_taskdefinition", "queue runs")
    uploads: list = []
    if request.content_type == "multipart/form-data":
        data, uploads = _multipart(request)
    else:
        data = _body(request)
    unknown = sorted(
        set(data) - {"definition", "parameters", "resource", "run_at", "needs", "inputs"}
    )
    if unknown:
        raise ApiError(400, f"Unknown field(s): {', '.join(unknown)}.")
    definition = data.get("definition")
    if not isinstance(definition, str) or not definition.strip():
        raise ApiError(400, "definition (the task definition's name) is required.")
    parameters = data.get("parameters", {})
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise ApiError(400, "parameters must be an object of name: value pairs.")
    resource = data.get("resource")
    if resource is not None and not isinstance(resource, str):
        raise ApiError(400, "resource must be the name of an execution resource.")
    needs = data.get("needs")
    if needs is not None and not isinstance(needs, dict):
        raise ApiError(400, 'needs must be an object, e.g. {"cores": 4}.')
    run_id = api.submit_task(
        definition,
        parameters=parameters,
        resource=resource or None,
        run_at=_datetime(data.get("run_at"), "run_at"),
        user=request.user,
        json_types=True,
        needs=needs,
        inputs=[*_input_refs(data.get("inputs")), *uploads],
    )
    run = Run.objects.get(pk=run_id)
    services.audit_record(
        action="queue",
        user=request.user,
        ip=services.client_ip(request),
        obj=run,
        detail={"definition": definition, "via": "api"},
    )
    response = JsonResponse(_run_json(api.get_task_status(run_id)), status=201)
    response["Location"] = reverse("api:run", args=[run_id])
    return response


@endpoint("GET")
def run(request, run_id: int):
    _need(request, "scheduler.view_run", "see runs")
    run = api._run(run_id, request.user)
    out = _run_json(serializers.run_data(run))
    # The newest messages and the first page of files: a run may hold 10,000
    # messages and 1,000 files (SCHEDULER_MAX_MESSAGES, SCHEDULER_MAX_FILES).
    newest = list(run.messages.order_by("-id")[:RUN_MESSAGES])[::-1]
    out["messages"] = [serializers.as_json(serializers.message_data(m)) for m in newest]
    out["message_count"] = run.messages.count()
    out["inputs"] = [serializers.input_data(i) for i in run.inputs.all()]
    out["messages_dropped"] = run.messages_dropped
    # The order of the file list, so that files_next goes on where this stops.
    files = list(run.files.order_by(*FILE_ORDER)[: DEFAULT_LIMIT + 1])
    out["files"] = [_file_json(run.pk, f) for f in files[:DEFAULT_LIMIT]]
    out["file_count"] = run.files.count()
    out["files_next"] = (
        f"{reverse('api:files', args=[run.pk])}?offset={DEFAULT_LIMIT}&limit={DEFAULT_LIMIT}"
        if len(files) > DEFAULT_LIMIT
        else None
    )
    return JsonResponse(out)


@endpoint("POST")
def cancel(request, run_id: int):
    run = api._run(run_id, request.user)  # 404 first: an invisible run is unknown
    _need(request, "scheduler.cancel_run", "cancel runs")
    outcome = api.cancel_task(run.pk, user=request.user)
    if outcome != "final":
        services.audit_record(
            action="cancel",
            user=request.user,
            ip=services.client_ip(request),
            obj=run,
            detail={"outcome": outcome, "via": "api"},
        )
    return JsonResponse({"result": outcome, "run": _run_json(api.get_task_status(run.pk))})


@endpoint("GET")
def files(request, run_id: int):
    run = api._run(run_id, request.user)
    _need(request, "scheduler.view_outputfile", "see output files")
    limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int_param(request, "offset", 0, 0, 10**9)
    found = list(run.files.order_by(*FILE_ORDER)[offset : offset + limit + 1])
    return _page(request, found, limit, offset, lambda f: _file_json(run.pk, f))


@endpoint("GET", "HEAD")
def file_download(request, run_id: int, file_id: int):
    run = api._run(run_id, request.user)
    _need(request, "scheduler.download_outputfile", "download files")
    output = run.files.filter(pk=file_id).first()
    if output is None:
        raise ApiError(404, f"Run {run.pk} has no file {file_id}.")
    try:
        path = downloads.contained_path(output)
    except Http404:
        raise ApiError(404, f"The stored copy of {output.name!r} is missing.") from None
    if request.method == "GET":
        services.audit_record(
            action="download",
            user=request.user,
            ip=services.client_ip(request),
            obj=output,
            detail={
                "run": run.pk,
                "name": output.name,
                "via": "api",
                "range": request.headers.get("Range", ""),
            },
        )
    return downloads.serve(request, output, disposition="attachment", path=path)
