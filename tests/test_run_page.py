"""The run page as an operator reads it: times to the second with the zone said
once, durations as a person says them, a failure's traceback once, danger
buttons that ask first, Run now for a queued run, an administrator's delete."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from scheduler import display, services
from scheduler.models import AuditEvent, OutputFile, Run, StatusMessage

pytestmark = pytest.mark.django_db

TRACEBACK = """Traceback (most recent call last):
  File "/srv/tasks/fail_on_purpose.py", line 12, in <module>
    main()
  File "/srv/tasks/fail_on_purpose.py", line 9, in main
    raise ValueError("boom-7f3a")
ValueError: boom-7f3a"""


def page_of(client, run) -> str:
    response = client.get(reverse("admin:scheduler_run_change", args=[run.pk]))
    assert response.status_code == 200
    return response.content.decode()


def ended(definition, state=Run.State.FAILED, **fields) -> Run:
    run = services.run_enqueue(definition=definition)
    t0 = timezone.now().replace(microsecond=0) - dt.timedelta(minutes=10)
    Run.objects.filter(pk=run.pk).update(
        state=state,
        queued_at=t0,
        due_at=t0,
        submitted_at=t0 + dt.timedelta(seconds=1),
        started_at=t0 + dt.timedelta(seconds=2, milliseconds=300),
        finished_at=t0 + dt.timedelta(seconds=5, milliseconds=500),
        **fields,
    )
    run.refresh_from_db()
    return run


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (0.85, "850 ms"),
        (3.2, "3.2 s"),
        (42, "42 s"),
        (252, "4 min 12 s"),
        (240, "4 min"),
        (7500, "2 h 5 min"),
        (3 * 86400 + 4 * 3600, "3 d 4 h"),
        (dt.timedelta(seconds=3, milliseconds=200), "3.2 s"),
    ],
)
def test_durations_read_as_a_person_says_them(value, says):
    assert display.seconds(value) == says


@pytest.mark.parametrize(
    ("value", "says"), [(951, "951 bytes"), (1, "1 byte"), (1536, "1.5 KB (1,536 bytes)")]
)
def test_sizes_say_the_exact_count_only_beside_a_rounded_one(value, says):
    assert display.size(value) == says


def test_times_have_seconds_the_zone_is_said_once_and_the_wait_and_duration_are_spans(
    admin_client, definition
):
    run = ended(definition, state=Run.State.SUCCEEDED)
    page = page_of(admin_client, run)
    started = timezone.localtime(run.started_at).strftime("%Y-%m-%d %H:%M:%S")
    assert re.search(rf'field-started.*?<div class="readonly">{started}</div>', page, re.S)
    assert page.count("Times are in UTC.") == 1
    assert re.search(r'field-duration_display.*?<div class="readonly">3.2 s</div>', page, re.S)
    assert re.search(r'field-wait_display.*?<div class="readonly">2.3 s</div>', page, re.S)
    assert "0:00:03" not in page


def test_a_failures_traceback_is_shown_once_monospaced_and_long_ones_fold(admin_client, definition):
    run = ended(
        definition,
        status_message=f"ValueError: boom-7f3a\n{TRACEBACK}",
        error=f"ValueError: boom-7f3a\n--- last lines of stderr ---\n{TRACEBACK}",
    )
    StatusMessage.objects.create(
        run=run, level="error", text=f"ValueError: boom-7f3a\n{TRACEBACK}", seq=1
    )
    page = page_of(admin_client, run)
    assert page.count("raise ValueError(&quot;boom-7f3a&quot;)") == 1
    assert re.search(r'<pre class="run-error" id="run-error">ValueError: boom-7f3a\n', page)
    assert "    raise ValueError" in page  # indentation kept inside the <pre>
    assert "(traceback under Error)" in page
    # A message of one line stays whole; so does one whose text the error does not hold.
    StatusMessage.objects.create(run=run, level="error", text="other\nnot in the error", seq=2)
    assert "not in the error" in page_of(admin_client, run)

    long_error = "\n".join(f"frame line {i}" for i in range(50))
    Run.objects.filter(pk=run.pk).update(error=long_error)
    page = page_of(admin_client, run)
    assert "<summary>30 earlier lines</summary>" in page
    assert page.index("frame line 29") < page.index("frame line 30")
    assert page.count("frame line 49") == 1


def test_cancel_is_a_danger_button_that_asks_before_it_acts(client, roles, definition):
    from tests.conftest import PASSWORD

    run = services.run_enqueue(definition=definition)
    client.login(username="operator", password=PASSWORD)
    page = page_of(client, run)
    assert re.search(r'<a class="button danger" id="run-cancel" href="[^"]+/cancel/"', page)
    confirm = client.get(reverse("admin:scheduler_run_cancel", args=[run.pk]))
    assert confirm.status_code == 200
    assert 'id="run-cancel-confirm"' in confirm.content.decode()
    run.refresh_from_db()
    assert run.state == Run.State.QUEUED  # asking changed nothing
    client.post(reverse("admin:scheduler_run_cancel", args=[run.pk]))
    run.refresh_from_db()
    assert run.state == Run.State.CANCELLED


def test_run_now_makes_a_run_queued_for_later_due_now(client, roles, definition):
    from tests.conftest import PASSWORD

    later = services.run_enqueue(
        definition=definition, due_at=timezone.now() + dt.timedelta(hours=3)
    )
    due = services.run_enqueue(definition=definition)
    client.login(username="viewer", password=PASSWORD)
    assert 'id="run-due-now"' not in page_of(client, later)
    assert client.post(reverse("admin:scheduler_run_due_now", args=[later.pk])).status_code == 403
    client.logout()
    client.login(username="operator", password=PASSWORD)
    assert 'id="run-due-now"' in page_of(client, later)
    assert 'id="run-due-now"' not in page_of(client, due)
    before = timezone.now()
    client.post(reverse("admin:scheduler_run_due_now", args=[later.pk]))
    later.refresh_from_db()
    assert before <= later.due_at <= timezone.now()
    assert later.state == Run.State.QUEUED
    assert AuditEvent.objects.filter(action="run_now", object_id=str(later.pk)).count() == 1
    # a second click changes nothing and says so
    response = client.post(reverse("admin:scheduler_run_due_now", args=[later.pk]), follow=True)
    assert "not waiting for a later time" in response.content.decode()


def test_an_administrator_deletes_an_ended_run_with_its_messages_and_files(
    client, roles, definition
):
    from tests.conftest import PASSWORD

    run = ended(definition)
    StatusMessage.objects.create(run=run, text="bye", seq=1)
    folder = Path(settings.SCHEDULER_FILE_ROOT) / str(run.pk)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "out.txt").write_text("x")
    OutputFile.objects.create(
        run=run, name="out.txt", stored_path=f"{run.pk}/out.txt", size=1, sha256="0" * 64
    )
    running = services.run_enqueue(definition=definition)
    Run.objects.filter(pk=running.pk).update(state=Run.State.RUNNING)

    client.login(username="operator", password=PASSWORD)
    assert 'id="run-delete"' not in page_of(client, run)
    url = reverse("admin:scheduler_run_delete_final", args=[run.pk])
    assert client.post(url).status_code == 403
    client.logout()

    client.login(username="administrator", password=PASSWORD)
    assert 'id="run-delete"' in page_of(client, run)
    assert 'id="run-delete"' not in page_of(client, running)
    confirm = client.get(url).content.decode()
    assert 'id="run-delete-confirm"' in confirm and "1 messages and 1 files" in confirm
    assert Run.objects.filter(pk=run.pk).exists()
    response = client.post(url)
    assert response.status_code == 302
    assert not Run.objects.filter(pk=run.pk).exists()
    assert not StatusMessage.objects.filter(run_id=run.pk).exists()
    assert not OutputFile.objects.filter(run_id=run.pk).exists()
    assert not folder.exists()
    assert AuditEvent.objects.filter(action="delete", object_id=str(run.pk)).count() == 1
    # a run that has not ended is not deleted, even asked directly
    client.post(reverse("admin:scheduler_run_delete_final", args=[running.pk]))
    assert Run.objects.filter(pk=running.pk).exists()


def test_the_live_status_carries_the_times_as_the_page_writes_them(admin_client, definition):
    run = ended(definition, state=Run.State.SUCCEEDED)
    data = admin_client.get(reverse("scheduler:run-status", args=[run.pk])).json()
    assert data["display"]["started_at"] == display.when(run.started_at)
    assert data["display"]["duration"] == "3.2 s"


def test_a_small_files_size_is_said_once(admin_client, definition):
    run = ended(definition, state=Run.State.SUCCEEDED)
    folder = Path(settings.SCHEDULER_FILE_ROOT) / str(run.pk)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "small.txt").write_bytes(b"x" * 951)
    f = OutputFile.objects.create(
        run=run,
        name="small.txt",
        stored_path=f"{run.pk}/small.txt",
        size=951,
        sha256="0" * 64,
        content_type="text/plain",
    )
    preview = admin_client.get(reverse("scheduler:file-preview", args=[run.pk, f.pk]))
    files = admin_client.get(reverse("scheduler:run-files", args=[run.pk]))
    for response in (
        preview,
        files,
        admin_client.get(reverse("admin:scheduler_run_change", args=[run.pk])),
    ):
        text = response.content.decode()
        assert "951 bytes" in text and "951 bytes (951 bytes)" not in text
