"""Path traversal and name tricks on every file URL answer 404 and serve nothing.

The file URLs are found from the resolver (every pattern with a ``file_id``), so
file URLs added later (the HTTP API) are attacked too.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from scheduler.http.tokens import token_issue
from scheduler.models import ApiToken, OutputFile, Run, TaskDefinition
from scheduler.roles import OPERATORS
from tests.conftest import PASSWORD

OUTSIDE = b"OUTSIDE-THE-STORE-3c1d"
INSIDE = b"inside-bytes-9a7e"

NAME_TRICKS = [
    "../../../../etc/passwd",
    "..%2f..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%252e%252e%252foutside.txt",  # double encoded
    "..%5c..%5coutside.txt",  # backslashes
    "/etc/passwd",  # absolute: files//etc/passwd/
    "%2fetc%2fpasswd",
    "....//....//outside.txt",
    "..",
    "%2e%2e",
    "out.txt",  # the name instead of the id
    "1%00",
    "1%2f..%2f2",
    "-1",
    "0x1",
    "1.0",
    "%201",
    "99999999999999999999999",
]


def file_routes() -> list[str]:
    routes = []

    def walk(resolver: URLResolver, prefix: str) -> None:
        for entry in resolver.url_patterns:
            if isinstance(entry, URLResolver):
                walk(entry, prefix + str(entry.pattern))
            elif isinstance(entry, URLPattern) and "file_id" in entry.pattern.regex.groupindex:
                routes.append(prefix + str(entry.pattern))

    walk(get_resolver(), "")
    return routes


def build(route: str, **values) -> str:
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(values[m.group(1)]), route)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world(db, roles, definition, local_resource):
    root = Path(settings.SCHEDULER_FILE_ROOT)
    root.mkdir(parents=True)
    (root.parent / "outside.txt").write_bytes(OUTSIDE)
    team = Group.objects.create(name="team-a")
    secret = TaskDefinition.objects.create(
        name="Secret", program="hello.py", default_resource=local_resource
    )
    secret.allowed_groups.add(team)
    runs, files = {}, {}
    for key, d in (("mine", definition), ("other", definition), ("secret", secret)):
        now = timezone.now()
        run = Run.objects.create(
            definition=d, resource=local_resource, state="SUCCEEDED", finished_at=now
        )
        rel = Path(str(run.pk)) / "out.txt"
        (root / rel).parent.mkdir(parents=True)
        (root / rel).write_bytes(INSIDE + key.encode())
        runs[key] = run
        files[key] = OutputFile.objects.create(
            run=run, name="out.txt", size=20, content_type="text/plain", stored_path=str(rel)
        )
    outsider = User.objects.create_user("outsider", "o@example.org", PASSWORD, is_staff=True)
    outsider.groups.add(Group.objects.get(name=OPERATORS))
    member = User.objects.create_user("member", "m@example.org", PASSWORD, is_staff=True)
    member.groups.add(Group.objects.get(name=OPERATORS), team)
    return {"runs": runs, "files": files, "outsider": outsider, "member": member, **roles}


def login(client, user) -> None:
    """A session for the site's pages and a token for the HTTP API's, same user."""
    client.force_login(user)
    key = token_issue(token=ApiToken(user=user, name="paths"))
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {key}"


def assert_nothing_served(response, url: str) -> None:
    assert response.status_code == 404, f"{url} answered {response.status_code}"
    content = b"".join(response.streaming_content) if response.streaming else response.content
    assert OUTSIDE not in content, url
    assert INSIDE not in content, url
    assert b"root:" not in content, url
    assert not response.has_header("X-Accel-Redirect") and not response.has_header("X-Sendfile")


def test_there_are_file_urls_to_attack():
    assert len(file_routes()) >= 3


@pytest.mark.parametrize("mode", ["django", "nginx", "apache"])
def test_name_tricks_in_the_file_id_answer_404_and_serve_nothing(client, world, settings, mode):
    settings.SCHEDULER_SENDFILE = mode
    login(client, world["superuser"])
    run = world["runs"]["mine"]
    for route in file_routes():
        for trick in NAME_TRICKS:
            url = build(route, run_id=run.pk, file_id=trick)
            assert_nothing_served(client.get(url), url)


def test_name_tricks_in_the_run_id_answer_404_and_serve_nothing(client, world):
    login(client, world["superuser"])
    f = world["files"]["mine"]
    for route in file_routes():
        for trick in NAME_TRICKS:
            url = build(route, run_id=trick, file_id=f.pk)
            assert_nothing_served(client.get(url), url)


def test_traversal_after_a_valid_file_url_answers_404(client, world):
    login(client, world["superuser"])
    run, f = world["runs"]["mine"], world["files"]["mine"]
    for route in file_routes():
        url = build(route, run_id=run.pk, file_id=f.pk)
        for tail in ("../../../outside.txt", "%2e%2e/%2e%2e/outside.txt", "x/../../"):
            assert_nothing_served(client.get(url + tail), url + tail)


def test_another_runs_file_id_with_this_runs_id_answers_404(client, world):
    login(client, world["superuser"])
    for route in file_routes():
        url = build(route, run_id=world["runs"]["mine"].pk, file_id=world["files"]["other"].pk)
        assert_nothing_served(client.get(url), url)
        # and the real pairing works, so the 404 above is about the pairing
        if route.endswith("download/"):
            good = build(
                route, run_id=world["runs"]["other"].pk, file_id=world["files"]["other"].pk
            )
            response = client.get(good)
            assert response.status_code == 200
            assert b"".join(response.streaming_content) == INSIDE + b"other"


def test_a_restricted_runs_file_answers_404_to_an_outsider_in_every_pairing(client, world):
    login(client, world["outsider"])
    runs, files = world["runs"], world["files"]
    for route in file_routes():
        for run_key, file_key in (("secret", "secret"), ("mine", "secret"), ("secret", "mine")):
            url = build(route, run_id=runs[run_key].pk, file_id=files[file_key].pk)
            assert_nothing_served(client.get(url), url)


def test_a_restricted_file_id_under_a_visible_run_answers_404_even_to_a_member(client, world):
    login(client, world["member"])
    for route in file_routes():
        url = build(route, run_id=world["runs"]["mine"].pk, file_id=world["files"]["secret"].pk)
        assert_nothing_served(client.get(url), url)
