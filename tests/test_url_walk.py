"""Walk every URL pattern of the site for every kind of user and check each answer.

The resolver of project.urls is iterated recursively (the admin's own patterns
included); path arguments are filled with ids of real objects: one that everyone
in a role may see ("visible") and one of a definition limited to group "team-a"
("restricted"). The viewer, operator and administrator are members of team-a; the
"outsider" is an operator who is not.

EXPECTED below is the one table of answers. A pattern that is not in it fails the
test with the row to add, so every new URL gets a conscious decision.

Codes: 200; L = redirect to the login page; R = redirect elsewhere; 401; 403; 404; 405.
A row is seven codes for the roles in ROLES order, or a dict {subject: row} for
patterns with object ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.contrib.contenttypes.models import ContentType
from django.urls import URLPattern, URLResolver, get_resolver, path, reverse
from django.utils import timezone

from demo.models import Measurement, Summary
from project import urls as project_urls
from scheduler.http.tokens import token_issue
from scheduler.models import (
    ApiToken,
    AuditEvent,
    ExecutionResource,
    OutputFile,
    PollerHeartbeat,
    Recurrence,
    Run,
    StatusMessage,
    TaskDefinition,
    TaskParameter,
)
from scheduler.roles import OPERATORS, VIEWERS
from tests.conftest import PASSWORD

ROLES = ("anonymous", "nonstaff", "viewer", "operator", "administrator", "outsider", "superuser")

# Rows that recur (columns in ROLES order).
ALL_STAFF = "L L 200 200 200 200 200"  # any staff user with a role
OPERATE = "L L 403 200 200 200 200"  # operators and up (the outsider is an operator)
ADMINISTER = "L L 403 403 200 403 200"  # administrators and superusers
SUPER = "L L 403 403 403 403 200"  # superusers only
NOBODY = "L L 403 403 403 403 403"  # read-only admin pages: nobody adds or deletes
TO_CHANGE = "L L R R R R R"  # admin's <id>/ redirects to <id>/change/ for any id
POST_ONLY = "L L 405 405 405 405 405"
FILES = "L 404 200 200 200 200 200"  # own views: non-staff get 404, not the login page


def hidden(row: str) -> str:
    """The row for an object of the restricted definition: the outsider gets 404."""
    codes = row.split()
    codes[ROLES.index("outsider")] = "404"
    return " ".join(codes)


def obj(row: str, *, restricted: bool = True) -> dict[str, str]:
    return {"visible": row, "restricted": hidden(row)} if restricted else {"visible": row}


def model_admin(
    path: str,
    *,
    changelist: str,
    add: str,
    change: str,
    delete: str,
    restricted: bool = False,
    **extra: str | dict[str, str],
) -> dict[str, str | dict[str, str]]:
    """The six URLs ModelAdmin makes for a model, plus its extra ones (import, export...)."""
    rows: dict[str, str | dict[str, str]] = {
        f"admin/{path}/": changelist,
        f"admin/{path}/add/": add,
        f"admin/{path}/<path:object_id>/history/": obj(change, restricted=restricted),
        f"admin/{path}/<path:object_id>/delete/": obj(delete, restricted=restricted),
        f"admin/{path}/<path:object_id>/change/": obj(change, restricted=restricted),
        # Redirects any id, visible or not, without looking: leaks nothing.
        f"admin/{path}/<path:object_id>/": {"visible": TO_CHANGE, "restricted": TO_CHANGE}
        if restricted
        else {"visible": TO_CHANGE},
    }
    for route, row in extra.items():
        rows[f"admin/{path}/{route.replace('__', '/')}"] = row
    return rows


IMPORT_EXPORT = {"import__": ADMINISTER, "export__": ALL_STAFF, "process_import__": POST_ONLY}

EXPECTED: dict[str, str | dict[str, str]] = {
    # --- site root, file pages and the JSON status (scheduler/urls.py) ----------
    "": "R R R R R R R",
    "favicon.ico": "200 200 200 200 200 200 200",  # an icon, the same for everyone
    "scheduler/runs/<int:run_id>/files/": obj(FILES),
    "scheduler/runs/<int:run_id>/files/<int:file_id>/": obj(FILES),
    "scheduler/runs/<int:run_id>/files/<int:file_id>/download/": obj(FILES),
    # Only PNG/JPEG/GIF/WebP are served inline; the walk's file is text: 404 for all.
    "scheduler/runs/<int:run_id>/files/<int:file_id>/inline/": obj("L 404 404 404 404 404 404"),
    # JSON for scripts: no login redirect, 404 for anyone who may not see the run.
    "scheduler/runs/<int:run_id>/status.json": obj("404 404 200 200 200 200 200"),
    # --- admin site pages -------------------------------------------------------
    "admin/": ALL_STAFF,
    "admin/login/": "200 200 R R R R R",
    "admin/logout/": "R R 405 405 405 405 405",  # POST only since Django 5
    "admin/password_change/": ALL_STAFF,
    "admin/password_change/done/": ALL_STAFF,
    "admin/autocomplete/": NOBODY,  # 403 without app_label/model_name/field_name
    "admin/jsi18n/": ALL_STAFF,
    "admin/r/<path:content_type_id>/<path:object_id>/": obj(
        "L L 404 404 404 404 404"  # runs have no get_absolute_url: no "view on site"
    ),
    "admin/^(?P<app_label>auth|axes|scheduler|demo)/$": ALL_STAFF,
    "admin/(?P<url>.*)$": "L L 404 404 404 404 404",
    # --- admin: scheduler models --------------------------------------------------
    **model_admin(
        "scheduler/taskdefinition",
        changelist=ALL_STAFF,
        add=ADMINISTER,
        change=ALL_STAFF,
        delete=ADMINISTER,
        restricted=True,
        **IMPORT_EXPORT,
        **{
            "<int:definition_id>__run__": obj(OPERATE),  # Run now
            "<int:definition_id>__stats__": obj(ALL_STAFF),  # charts: whoever may see it
        },
    ),
    **model_admin(
        "scheduler/executionresource",
        changelist=ALL_STAFF,
        add=ADMINISTER,
        change=ALL_STAFF,
        delete=ADMINISTER,
        **IMPORT_EXPORT,
    ),
    **model_admin(
        "scheduler/recurrence",
        changelist=ALL_STAFF,
        add=OPERATE,
        change=ALL_STAFF,
        delete=OPERATE,
        restricted=True,
        **{**IMPORT_EXPORT, "import__": OPERATE},
    ),
    **model_admin(
        "scheduler/run",
        changelist=ALL_STAFF,
        add=NOBODY,  # runs are queued through "Run now", never added by hand
        change=ALL_STAFF,
        delete=NOBODY,
        restricted=True,
        **{
            "export__": ALL_STAFF,
            # GET redirects to the run page (the action is a POST); viewers may not.
            "<int:run_id>__cancel__": obj("L L 403 R R R R"),
            "<int:run_id>__rerun__": obj("L L 403 R R R R"),
            # The walk's run has ended: Run now (a POST) redirects; delete asks
            # first (200), and only administrators and superusers may.
            "<int:run_id>__due-now__": obj("L L 403 R R R R"),
            "<int:run_id>__delete-final__": obj("L L 403 403 200 403 200"),
        },
    ),
    **model_admin(
        "scheduler/statusmessage",
        changelist=ALL_STAFF,
        add=NOBODY,
        change=ALL_STAFF,
        delete=NOBODY,
        restricted=True,
    ),
    **model_admin(
        "scheduler/outputfile",
        changelist=ALL_STAFF,
        add=NOBODY,
        change=ALL_STAFF,
        delete=NOBODY,
        restricted=True,
    ),
    **model_admin(
        "scheduler/pollerheartbeat",
        changelist=ALL_STAFF,
        add=NOBODY,
        change=ALL_STAFF,
        delete=NOBODY,
    ),
    **model_admin(
        "scheduler/auditevent",
        changelist=ADMINISTER,
        add=NOBODY,
        change=ADMINISTER,
        delete=NOBODY,
        **{"export__": ADMINISTER},
    ),
    **model_admin(
        "scheduler/apitoken",
        changelist=ADMINISTER,
        add=ADMINISTER,
        change=ADMINISTER,
        delete=ADMINISTER,
    ),
    # --- admin: accounts, login throttle records, demo app: superusers only ------
    **model_admin("auth/user", changelist=SUPER, add=SUPER, change=SUPER, delete=SUPER),
    "admin/auth/user/<id>/password/": obj(SUPER, restricted=False),
    **model_admin("auth/group", changelist=SUPER, add=SUPER, change=SUPER, delete=SUPER),
    **model_admin("axes/accessattempt", changelist=SUPER, add=NOBODY, change=SUPER, delete=SUPER),
    **model_admin("axes/accesslog", changelist=SUPER, add=NOBODY, change=SUPER, delete=SUPER),
    **model_admin(
        "axes/accessfailurelog", changelist=SUPER, add=NOBODY, change=SUPER, delete=SUPER
    ),
    **model_admin("demo/measurement", changelist=SUPER, add=SUPER, change=SUPER, delete=SUPER),
    **model_admin("demo/summary", changelist=SUPER, add=SUPER, change=SUPER, delete=SUPER),
    # --- HTTP API (scheduler/http/urls.py): a token per role; 401 without one, 403
    # for a token of a user with no scheduler role, 404 outside the groups --------
    "api/v1/openapi.json": "200 200 200 200 200 200 200",  # describes, reveals nothing
    "api/v1/definitions/": "401 403 200 200 200 200 200",
    "api/v1/runs/": "401 403 200 200 200 200 200",
    "api/v1/runs/<int:run_id>/": obj("401 403 200 200 200 200 200"),
    # POST only: a GET is refused before anything is looked up, so it leaks nothing.
    "api/v1/runs/<int:run_id>/cancel/": {
        "visible": "405 " * 6 + "405",
        "restricted": "405 " * 6 + "405",
    },
    "api/v1/runs/<int:run_id>/files/": obj("401 403 200 200 200 200 200"),
    "api/v1/runs/<int:run_id>/files/<int:file_id>/download/": obj("401 403 200 200 200 200 200"),
    "api/v1/<path:rest>": "404 404 404 404 404 404 404",  # JSON 404 for anything else
}

# Text that only the restricted definition's objects carry: no page the outsider
# gets with 200 may contain any of it (lists, counts, search, exports, JSON).
SECRETS = ("Secret-7f3a", "restricted message 7f3a", "restricted bytes 7f3a")


def classify(response) -> str:
    if response.status_code in (301, 302):
        login = reverse("admin:login")
        return "L" if response["Location"].split("?")[0].endswith(login) else "R"
    return str(response.status_code)


def iter_patterns(resolver: URLResolver, prefix: str = "", ns: str = "") -> Iterator[tuple]:
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            namespace = ns
            if entry.namespace:
                namespace = f"{ns}:{entry.namespace}" if ns else entry.namespace
            yield from iter_patterns(entry, prefix + str(entry.pattern), namespace)
        elif isinstance(entry, URLPattern):
            name = f"{ns}:{entry.name}" if ns and entry.name else entry.name
            yield prefix + str(entry.pattern), name, entry


def arg_names(pattern: URLPattern) -> list[str]:
    return list(pattern.pattern.regex.groupindex)


# --- the objects the walk uses -----------------------------------------------------


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world(db, roles, local_resource, definition, tmp_path):
    team = Group.objects.create(name="team-a")
    for name in ("viewer", "operator", "administrator"):
        roles[name].groups.add(team)
    outsider = User.objects.create_user("outsider", "o@example.org", PASSWORD, is_staff=True)
    outsider.groups.add(Group.objects.get(name=OPERATORS))
    users = {"anonymous": None, **roles, "outsider": outsider}

    secret = TaskDefinition.objects.create(
        name="Secret-7f3a", program="hello.py", default_resource=local_resource
    )
    secret.allowed_groups.add(team)
    subjects: dict[str, dict] = {"visible": {}, "restricted": {}}
    for subject, d in (("visible", definition), ("restricted", secret)):
        now = timezone.now()
        run = Run.objects.create(
            definition=d,
            resource=local_resource,
            state=Run.State.SUCCEEDED,
            started_at=now,
            finished_at=now,
        )
        rel = Path(str(run.pk)) / "output" / "out.txt"
        (Path(settings.SCHEDULER_FILE_ROOT) / rel).parent.mkdir(parents=True)
        data = f"{subject} bytes 7f3a\n".encode()
        (Path(settings.SCHEDULER_FILE_ROOT) / rel).write_bytes(data)
        output = OutputFile.objects.create(
            run=run,
            name="out.txt",
            size=len(data),
            content_type="text/plain",
            stored_path=str(rel),
        )
        subjects[subject] = {
            TaskDefinition: d,
            Run: run,
            OutputFile: output,
            StatusMessage: StatusMessage.objects.create(run=run, text=f"{subject} message 7f3a"),
            Recurrence: Recurrence.objects.create(
                definition=d,
                name="hourly",
                kind="interval",
                interval_every=1,
                interval_unit="hours",
            ),
            TaskParameter: TaskParameter.objects.create(definition=d, name="p", type="string")
            if subject == "restricted"
            else d.parameters.first(),
        }
    shared = {
        ExecutionResource: local_resource,
        PollerHeartbeat: PollerHeartbeat.objects.create(
            ident="h:1:0", host="h", pid=1, started_at=timezone.now(), last_seen_at=timezone.now()
        ),
        AuditEvent: AuditEvent.objects.create(action="download", username="viewer"),
        ApiToken: ApiToken.objects.create(user=roles["superuser"], name="ci", key_hash="0" * 64),
        User: roles["viewer"],
        Group: Group.objects.get(name=VIEWERS),
        AccessAttempt: AccessAttempt.objects.create(
            username="alice", ip_address="192.0.2.1", failures_since_start=1
        ),
        AccessLog: AccessLog.objects.create(username="alice", ip_address="192.0.2.1"),
        AccessFailureLog: AccessFailureLog.objects.create(username="alice", ip_address="192.0.2.1"),
        Measurement: Measurement.objects.create(name="temperature", value=21.5),
        Summary: Summary.objects.create(name="temperature", count=1, mean=21.5),
    }
    subjects["visible"].update(shared)
    return users, subjects


def object_for(subjects: dict, subject: str, model) -> object | None:
    found = subjects[subject].get(model)
    if found is not None:
        return found
    if subject == "visible":
        instance = model._default_manager.first()
        if instance is not None:
            return instance
    return None


# Path arguments named after a model take the subject's object of that model.
ID_ARGS = {
    "run_id": Run,
    "file_id": OutputFile,
    "definition_id": TaskDefinition,
    "recurrence_id": Recurrence,
    "message_id": StatusMessage,
    "resource_id": ExecutionResource,
    "token_id": ApiToken,
    "parameter_id": TaskParameter,
}


# <pk>/<id> after one of these path segments (the HTTP API) is an object of that model.
SEGMENT_MODELS = {
    "runs": Run,
    "files": OutputFile,
    "definitions": TaskDefinition,
    "tasks": TaskDefinition,
    "recurrences": Recurrence,
    "schedules": Recurrence,
    "messages": StatusMessage,
    "resources": ExecutionResource,
    "tokens": ApiToken,
}


def fill(route: str, pattern: URLPattern, subjects: dict, subject: str) -> dict | None:
    """kwargs for ``pattern`` pointing at the subject's objects, or None if it has none."""
    kwargs = {}
    model_match = re.match(r"admin/(\w+)/(\w+)/", route)
    for name in arg_names(pattern):
        if name in ID_ARGS:
            instance = object_for(subjects, subject, ID_ARGS[name])
            if instance is None:
                return None
            kwargs[name] = instance.pk
        elif name == "app_label":
            kwargs[name] = "scheduler"
        elif name == "url":
            kwargs[name] = "no-such-page/"
        elif name == "content_type_id":
            kwargs[name] = ContentType.objects.get_for_model(Run).pk
        elif name == "object_id" and route.startswith("admin/r/"):
            kwargs[name] = subjects[subject][Run].pk
        elif name in ("object_id", "id", "pk") and model_match:
            from django.apps import apps

            model = apps.get_model(model_match.group(1), model_match.group(2))
            instance = object_for(subjects, subject, model)
            if instance is None:
                return None
            kwargs[name] = instance.pk
        elif (
            name in ("pk", "id")
            and (segment := re.search(rf"(\w+)/<(?:\w+:)?{name}>", route))
            and segment.group(1) in SEGMENT_MODELS
        ):
            instance = object_for(subjects, subject, SEGMENT_MODELS[segment.group(1)])
            if instance is None:
                return None
            kwargs[name] = instance.pk
        elif name == "rest":
            kwargs[name] = "runs/-1/"  # the API's catch-all: no such endpoint
        else:
            raise AssertionError(
                f"URL walk: no way to fill argument {name!r} of {route!r}; "
                "add it to fill() in tests/test_url_walk.py"
            )
    return kwargs


def url_for(route: str, name: str | None, pattern: URLPattern, kwargs: dict) -> str:
    if name:
        return reverse(name, kwargs=kwargs)
    if route == "admin/(?P<url>.*)$":
        return "/admin/" + kwargs["url"]
    if not re.search(r"[\\^$()*+?\[\]]", route):  # a path() route: put the ids in
        return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(kwargs[m.group(1)]), route)
    raise AssertionError(f"URL walk: pattern {route!r} has no name; give it one or a url here")


def body_of(response) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return response.content


def walk_site(client, world) -> tuple[list[str], int]:
    """GET every pattern as every user; the problems found and the number of requests."""
    users, subjects = world
    secret_id = subjects["restricted"][TaskDefinition].pk
    # The HTTP API may want a token rather than the session: each user gets one.
    api_keys = {
        role: token_issue(token=ApiToken(user=user, name="walk"))
        for role, user in users.items()
        if user is not None
    }
    problems: list[str] = []
    unknown: list[str] = []
    leaks: list[str] = []
    walked = 0
    for route, name, pattern in iter_patterns(get_resolver()):
        expected = EXPECTED.get(route)
        targets = {"-": {}}
        if arg_names(pattern):
            visible = fill(route, pattern, subjects, "visible")
            restricted = fill(route, pattern, subjects, "restricted")
            assert visible is not None, f"URL walk: no object to put in {route!r}; make one"
            targets = {"visible": visible}
            if restricted is not None and restricted != visible:
                targets["restricted"] = restricted
            elif restricted == visible:
                targets = {"-": visible}  # no object ids: one row
        actual_rows: dict[str, str] = {}
        for subject, kwargs in targets.items():
            url = url_for(route, name, pattern, kwargs)
            codes = []
            for role in ROLES:
                client.logout()
                headers = {}
                if users[role] is not None:
                    client.force_login(users[role])
                    if route.startswith("api/"):
                        headers["HTTP_AUTHORIZATION"] = f"Bearer {api_keys[role]}"
                try:
                    response = client.get(url, **headers)
                    codes.append(classify(response))
                except Exception as exc:  # noqa: BLE001 - a crash is an answer to report
                    codes.append(f"500:{type(exc).__name__}")
                    continue
                walked += 1
                content = body_of(response)
                if role == "outsider" and response.status_code == 200:
                    for secret in SECRETS:
                        if secret.encode() in content:
                            leaks.append(f"{url} shows {secret!r} to the outsider")
            actual_rows[subject] = " ".join(codes)
            if name and name.endswith("_changelist"):
                # Search and filters must not find what the list does not show.
                client.force_login(users["outsider"])
                for query in ("?q=7f3a", "?q=Secret", f"?definition__id__exact={secret_id}"):
                    response = client.get(url + query)
                    content = body_of(response)
                    for secret in SECRETS:
                        if response.status_code == 200 and secret.encode() in content:
                            leaks.append(f"{url}{query} shows {secret!r} to the outsider")
        actual = actual_rows.get("-") or actual_rows
        if expected is None:
            unknown.append(f"    {route!r}: {actual!r},  # name={name}")
        elif expected != actual:
            problems.append(f"{route} (name={name}):\n  expected {expected}\n  actual   {actual}")
    message = []
    if unknown:
        message.append(
            "URL patterns missing from EXPECTED in tests/test_url_walk.py "
            f"(roles: {' '.join(ROLES)}); decide and add:\n" + "\n".join(unknown)
        )
    if problems:
        message.append("Answers that differ from EXPECTED:\n" + "\n".join(problems))
    if leaks:
        message.append("Restricted objects leaked:\n" + "\n".join(leaks))
    stale = set(EXPECTED) - {route for route, _, _ in iter_patterns(get_resolver())}
    if stale:
        message.append(f"EXPECTED names patterns the site no longer has: {sorted(stale)}")
    return message, walked


def test_every_url_pattern_answers_as_the_table_says(client, world):
    message, walked = walk_site(client, world)
    assert not message, "\n\n".join(message)
    assert walked > 500


def _new_page(request):
    from django.http import HttpResponse

    return HttpResponse("new")


# The site's URLs plus one nobody put in the table, for the test below.
urlpatterns = [*project_urls.urlpatterns, path("brand-new-page/", _new_page, name="new-page")]


@pytest.mark.urls(__name__)
def test_a_pattern_missing_from_the_table_fails_the_walk_with_the_row_to_add(client, world):
    message, _ = walk_site(client, world)
    assert len(message) == 1
    assert "URL patterns missing from EXPECTED" in message[0]
    assert "'brand-new-page/': '200 200 200 200 200 200 200',  # name=new-page" in message[0]
