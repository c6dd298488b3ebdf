"""The HTTP API: tokens, roles, restricted definitions, bad input, files, paging."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.utils import timezone

from scheduler import services
from scheduler.http.tokens import token_issue
from scheduler.models import ApiToken, AuditEvent, OutputFile, Run

API = "/api/v1/"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def tokens(roles):
    return {
        role: token_issue(token=ApiToken(user=user, name=f"{role} token"))
        for role, user in roles.items()
    }


def call(client, method, path, token=None, body=None, raw=None, **headers):
    if token:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    kwargs = {"content_type": "application/json"} if data is not None else {}
    fn = getattr(client, method.lower())
    response = (
        fn(API + path, data, **kwargs, **headers) if data is not None else fn(API + path, **headers)
    )
    return response


def error_of(response) -> str:
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    return response.json()["error"]


# ------------------------------------------------------------------ tokens
def test_without_a_valid_token_the_api_answers_401_in_json(client, definition, tokens, roles):
    response = call(client, "GET", "runs/")
    assert response.status_code == 401 and "Bearer" in response["WWW-Authenticate"]
    assert "Authorization: Bearer" in error_of(response)
    assert call(client, "GET", "runs/", token="dts_not-a-token").status_code == 401
    roles["operator"].is_active = False
    roles["operator"].save()
    assert call(client, "GET", "runs/", token=tokens["operator"]).status_code == 401
    ApiToken.objects.filter(user=roles["viewer"]).delete()  # revoked
    assert call(client, "GET", "runs/", token=tokens["viewer"]).status_code == 401
    response = call(client, "GET", "runs/", token=tokens["nonstaff"])
    assert response.status_code == 403 and "no scheduler role" in error_of(response)
    # A session cookie is not a credential here.
    client.force_login(roles["superuser"])
    assert call(client, "GET", "runs/").status_code == 401


def test_the_schema_is_served_without_a_token(client, db):
    response = client.get(API + "openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert {"/runs/", "/runs/{run_id}/", "/runs/{run_id}/cancel/", "/definitions/"} <= set(
        schema["paths"]
    )
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


# ------------------------------------------------------------------ queue
def test_an_operator_queues_a_run_with_typed_parameters(client, definition, tokens, roles):
    response = call(
        client,
        "POST",
        "runs/",
        tokens["operator"],
        {"definition": "Hello", "parameters": {"count": 3, "loud": True, "ratio": 2}},
        REMOTE_ADDR="192.0.2.9",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    run = Run.objects.get(pk=body["run_id"])
    assert response["Location"] == f"{API}runs/{run.pk}/"
    assert (body["state"], run.parameters["count"], run.parameters["loud"]) == ("QUEUED", 3, True)
    assert run.requested_by == roles["operator"]
    event = AuditEvent.objects.get(action="queue")
    assert (event.ip, event.detail["via"], event.object_id) == ("192.0.2.9", "api", str(run.pk))


def test_a_later_run_time_is_kept(client, definition, tokens):
    when = (timezone.now() + dt.timedelta(hours=2)).replace(microsecond=0)
    response = call(
        client,
        "POST",
        "runs/",
        tokens["operator"],
        {"definition": "Hello", "run_at": when.isoformat()},
    )
    assert response.status_code == 201
    assert Run.objects.get(pk=response.json()["run_id"]).due_at == when


@pytest.mark.parametrize(
    ("raw", "status", "says"),
    [
        ("{not json", 400, "not valid JSON"),
        ("[1, 2]", 400, "must be a JSON object"),
        ("", 400, "A JSON object is required"),
        ('{"definition": "Hello", "colour": "red"}', 400, "Unknown field(s): colour"),
        ('{"parameters": {}}', 400, "definition"),
        ('{"definition": "Nope"}', 404, "Unknown task definition"),
        ('{"definition": "Hello", "parameters": {"count": "many"}}', 400, "count"),
        # JSON has numbers and booleans: their text is a mistake, not a value.
        (
            '{"definition": "Hello", "parameters": {"count": "10"}}',
            400,
            'count: expected a JSON number (e.g. 10, not "10"), got a string',
        ),
        (
            '{"definition": "Hello", "parameters": {"ratio": "2.5"}}',
            400,
            "ratio: expected a JSON number",
        ),
        (
            '{"definition": "Hello", "parameters": {"loud": "yes"}}',
            400,
            "loud: expected true or false",
        ),
        ('{"definition": "Hello", "parameters": {"loud": 1}}', 400, "loud: expected true or false"),
        (
            '{"definition": "Hello", "parameters": {"greeting": 5}}',
            400,
            "greeting: expected a JSON string",
        ),
        (
            '{"definition": "Hello", "parameters": {"count": 2.5}}',
            400,
            "count: 2.5 is not a whole number",
        ),
        ('{"definition": "Hello", "parameters": {"colour": 1}}', 400, "colour: no such parameter"),
        ('{"definition": "Hello", "parameters": [1]}', 400, "parameters must be an object"),
        ('{"definition": "Hello", "resource": "mars"}', 400, "Unknown execution resource"),
        ('{"definition": "Hello", "run_at": "tomorrow"}', 400, "not an ISO 8601"),
        ('{"definition": "Hello", "run_at": "2030-01-01T10:00:00"}', 400, "needs a time zone"),
        ('{"definition": "Hello", "run_at": 5}', 400, "date-time string"),
    ],
)
def test_bad_input_is_a_json_error_with_the_reason_and_queues_nothing(
    client, definition, tokens, raw, status, says
):
    response = call(client, "POST", "runs/", tokens["operator"], raw=raw)
    assert response.status_code == status
    assert says in error_of(response)
    assert not Run.objects.exists()


def test_a_huge_body_is_refused(client, definition, tokens):
    raw = json.dumps({"definition": "Hello", "parameters": {"greeting": "x" * 100_000}})
    response = call(client, "POST", "runs/", tokens["operator"], raw=raw)
    assert response.status_code == 413 and not Run.objects.exists()


def test_roles_decide_what_a_token_may_do(client, definition, tokens):
    run = services.run_enqueue(definition=definition)
    response = call(client, "POST", "runs/", tokens["viewer"], {"definition": "Hello"})
    assert response.status_code == 403 and "may not queue" in error_of(response)
    assert call(client, "GET", f"runs/{run.pk}/", tokens["viewer"]).status_code == 200
    response = call(client, "POST", f"runs/{run.pk}/cancel/", tokens["viewer"])
    assert response.status_code == 403
    run.refresh_from_db()
    assert run.state == Run.State.QUEUED
    response = call(client, "POST", f"runs/{run.pk}/cancel/", tokens["operator"])
    assert response.status_code == 200 and response.json()["result"] == "cancelled"
    assert response.json()["run"]["state"] == "CANCELLED"
    again = call(client, "POST", f"runs/{run.pk}/cancel/", tokens["operator"])
    assert again.json()["result"] == "final"
    assert AuditEvent.objects.filter(action="cancel").count() == 1


def test_wrong_methods_are_405_in_json(client, definition, tokens):
    response = call(client, "DELETE", "runs/", tokens["operator"])
    assert response.status_code == 405 and "GET, POST" in response["Allow"]
    assert "not allowed" in error_of(response)
    assert call(client, "GET", "runs/1/cancel/", tokens["operator"]).status_code == 405


# --------------------------------------------------- restricted definitions
def test_a_restricted_definition_is_invisible_everywhere(client, definition, tokens, roles):
    lab = Group.objects.create(name="lab-a")
    definition.allowed_groups.add(lab)
    run = services.run_enqueue(definition=definition)
    for path in (f"runs/{run.pk}/", f"runs/{run.pk}/files/"):
        response = call(client, "GET", path, tokens["operator"])
        assert response.status_code == 404 and "Unknown run" in error_of(response)
    assert call(client, "POST", f"runs/{run.pk}/cancel/", tokens["operator"]).status_code == 404
    assert call(client, "GET", "runs/", tokens["operator"]).json()["results"] == []
    assert call(client, "GET", "definitions/", tokens["operator"]).json()["results"] == []
    response = call(client, "POST", "runs/", tokens["operator"], {"definition": "Hello"})
    assert response.status_code == 404
    assert Run.objects.count() == 1
    # The superuser, and a member of the group, see it.
    assert call(client, "GET", f"runs/{run.pk}/", tokens["superuser"]).status_code == 200
    roles["operator"].groups.add(lab)
    assert call(client, "GET", f"runs/{run.pk}/", tokens["operator"]).status_code == 200


def test_definitions_list_their_typed_parameters(client, definition, tokens):
    body = call(client, "GET", "definitions/", tokens["viewer"]).json()
    (hello,) = body["results"]
    assert hello["name"] == "Hello" and hello["can_run"] is False
    assert {p["name"]: p["type"] for p in hello["parameters"]}["day"] == "date"
    assert call(client, "GET", "definitions/", tokens["operator"]).json()["results"][0]["can_run"]


# ----------------------------------------------------------------- listing
def test_runs_are_listed_newest_first_with_filters_and_pages(client, definition, tokens):
    runs = [services.run_enqueue(definition=definition) for _ in range(5)]
    Run.objects.filter(pk=runs[0].pk).update(
        state=Run.State.FAILED, finished_at=timezone.now(), error="bad"
    )
    page = call(client, "GET", "runs/?limit=2", tokens["viewer"]).json()
    assert [r["run_id"] for r in page["results"]] == [runs[4].pk, runs[3].pk]
    second = client.get(page["next"], HTTP_AUTHORIZATION=f"Bearer {tokens['viewer']}").json()
    assert [r["run_id"] for r in second["results"]] == [runs[2].pk, runs[1].pk]
    last = client.get(second["next"], HTTP_AUTHORIZATION=f"Bearer {tokens['viewer']}").json()
    assert [r["run_id"] for r in last["results"]] == [runs[0].pk] and last["next"] is None
    failed = call(client, "GET", "runs/?state=FAILED", tokens["viewer"]).json()["results"]
    assert [(r["run_id"], r["error"]) for r in failed] == [(runs[0].pk, "bad")]
    since = (timezone.now() + dt.timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    assert call(client, "GET", f"runs/?since={since}", tokens["viewer"]).json()["results"] == []
    assert (
        len(call(client, "GET", "runs/?definition=Hello", tokens["viewer"]).json()["results"]) == 5
    )


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("state=DONE", "Unknown state"),
        ("limit=0", "limit must be between 1 and 500"),
        ("limit=ten", "limit must be a whole number"),
        ("offset=-1", "offset must be between"),
        ("since=yesterday", "not an ISO 8601"),
        ("until=2026-01-01T00:00:00", "needs a time zone"),
    ],
)
def test_bad_filters_are_400_with_the_reason(client, definition, tokens, query, says):
    response = call(client, "GET", f"runs/?{query}", tokens["viewer"])
    assert response.status_code == 400 and says in error_of(response)


def test_an_unknown_definition_filter_is_404(client, definition, tokens):
    response = call(client, "GET", "runs/?definition=Nope", tokens["viewer"])
    assert response.status_code == 404


# ------------------------------------------------------------------- files
@pytest.fixture
def stored(definition):
    run = services.run_enqueue(definition=definition)
    data = b"name,value\n" + b"".join(b"row%d,%d\n" % (i, i) for i in range(1000))
    path = settings.SCHEDULER_FILE_ROOT / str(run.pk) / "out.csv"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    f = OutputFile.objects.create(
        run=run,
        name="out.csv",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="text/csv",
        stored_path=f"{run.pk}/out.csv",
    )
    return run, f, data


def test_files_are_listed_and_downloaded_whole_or_by_range(client, tokens, stored):
    run, f, data = stored
    listed = call(client, "GET", f"runs/{run.pk}/files/", tokens["viewer"]).json()["results"]
    assert [(x["name"], x["sha256"], x["size"]) for x in listed] == [("out.csv", f.sha256, f.size)]
    response = client.get(
        listed[0]["download_url"], HTTP_AUTHORIZATION=f"Bearer {tokens['viewer']}"
    )
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert hashlib.sha256(body).hexdigest() == f.sha256
    assert response["Content-Disposition"].startswith("attachment")
    assert response["X-Content-Type-Options"] == "nosniff"
    part = client.get(
        listed[0]["download_url"],
        HTTP_AUTHORIZATION=f"Bearer {tokens['viewer']}",
        HTTP_RANGE="bytes=11-20",
    )
    assert part.status_code == 206 and b"".join(part.streaming_content) == data[11:21]
    assert AuditEvent.objects.filter(action="download", detail__via="api").count() == 2
    detail = call(client, "GET", f"runs/{run.pk}/", tokens["viewer"]).json()
    assert detail["files"][0]["download_url"] == listed[0]["download_url"]


def test_another_runs_file_id_or_a_missing_copy_is_404(client, definition, tokens, stored):
    run, f, _ = stored
    other = services.run_enqueue(definition=definition)
    response = call(client, "GET", f"runs/{other.pk}/files/{f.pk}/download/", tokens["viewer"])
    assert response.status_code == 404 and "has no file" in error_of(response)
    f.absolute_path().unlink()
    response = call(client, "GET", f"runs/{run.pk}/files/{f.pk}/download/", tokens["viewer"])
    assert response.status_code == 404 and "missing" in error_of(response)


def test_anything_else_under_the_api_is_a_json_404(client, db):
    for path in ("runs/-5/", "nope/", "runs/1/cancel/extra/"):
        response = client.post(API + path)
        assert response.status_code == 404 and "No such API endpoint" in error_of(response)


@pytest.mark.parametrize(
    ("query", "status"),
    [
        # Offsets Python takes and PostgreSQL would refuse: compared in UTC.
        ("since=0449-05-05T10:34:38Z&until=0222-07-13T01:36:24%2B22:07", 200),
        # Before year 1 once in UTC: a 400, not a crash.
        ("since=0001-01-01T00:30:00%2B23:00", 400),
    ],
)
def test_extreme_times_and_offsets_are_answered(client, definition, tokens, query, status):
    response = call(client, "GET", f"runs/?{query}", tokens["viewer"])
    assert response.status_code == status, response.content
    if status == 400:
        assert "out of range" in error_of(response)
