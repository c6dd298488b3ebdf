"""A run with many messages and files: every page and API answer is one page of them."""

from __future__ import annotations

import pytest
from django.urls import reverse

from scheduler import services
from scheduler.http.tokens import token_issue
from scheduler.models import ApiToken, OutputFile, Run, StatusMessage


@pytest.fixture
def big_run(definition) -> Run:
    run = services.run_enqueue(definition=definition)
    OutputFile.objects.bulk_create(
        OutputFile(run=run, name=f"f{i:04d}.txt", stored_path=f"{run.pk}/output/f{i:04d}.txt")
        for i in range(230)
    )
    StatusMessage.objects.bulk_create(
        StatusMessage(run=run, text=f"message {i}", seq=i + 1) for i in range(450)
    )
    return run


def test_the_files_page_shows_a_hundred_files_a_page(client, roles, big_run):
    client.force_login(roles["viewer"])
    url = reverse("scheduler:run-files", args=[big_run.pk])
    first = client.get(url).content.decode()
    assert first.count('class="download"') == 100
    assert "f0000.txt" in first and "f0100.txt" not in first
    assert "page 1 of 3 (230 files)" in first and 'href="?page=2"' in first
    last = client.get(url + "?page=3").content.decode()
    assert "f0229.txt" in last and "f0199.txt" not in last
    # A page past the end or not a number: the nearest page, not an error.
    assert "f0229.txt" in client.get(url + "?page=99").content.decode()
    assert "f0000.txt" in client.get(url + "?page=x").content.decode()


def test_the_run_page_shows_the_first_fifty_files_and_links_to_the_rest(client, roles, big_run):
    client.force_login(roles["viewer"])
    page = client.get(reverse("admin:scheduler_run_change", args=[big_run.pk])).content.decode()
    assert "f0049.txt" in page and "f0050.txt" not in page
    assert "first 50 of 230" in page
    assert "message 449" in page and "message 249" not in page  # the newest 200


def _api(client, user, path):
    key = token_issue(token=ApiToken(user=user, name="t"))
    response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200, response.content[:300]
    return response.json()


def test_the_api_pages_through_a_runs_files(client, roles, big_run):
    viewer = roles["viewer"]
    detail = _api(client, viewer, f"/api/v1/runs/{big_run.pk}/")
    assert len(detail["files"]) == 50 and detail["file_count"] == 230
    assert len(detail["messages"]) == 200 and detail["message_count"] == 450
    names = []
    url = detail["files_next"].replace("offset=50", "offset=0")
    while url:
        page = _api(client, viewer, url)
        assert len(page["results"]) <= 50
        names += [f["name"] for f in page["results"]]
        url = page["next"]
    assert names == [f"f{i:04d}.txt" for i in range(230)]
    bad = client.get(
        f"/api/v1/runs/{big_run.pk}/files/?limit=0",
        HTTP_AUTHORIZATION=f"Bearer {token_issue(token=ApiToken(user=viewer, name='u'))}",
    )
    assert bad.status_code == 400 and "limit" in bad.json()["error"]
