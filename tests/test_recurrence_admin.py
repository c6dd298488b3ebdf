"""The schedule pages: readable description, DST-aware preview, errors per field."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse
from django.utils import formats, timezone

from scheduler.models import Recurrence, TaskDefinition


@pytest.fixture
def definition(db, local_resource):
    return TaskDefinition.objects.create(
        name="Morning report", program="hello.py", default_resource=local_resource
    )


def form(definition, **fields):
    data = {
        "definition": definition.pk,
        "name": "Weekday mornings",
        "enabled": "on",
        "kind": "cron",
        "timezone": "Europe/Amsterdam",
        "start_at_0": "2026-01-01",
        "start_at_1": "00:00:00",
        "cron_expression": "30 7 * * MON-FRI",
        "exdates": "[]",
        "parameters": "{}",
        "misfire_policy": "run_once",
        "misfire_grace_seconds": "300",
        "misfire_max_runs": "10",
        "overlap_policy": "allow",
    }
    data.update(fields)
    return data


def errors(response) -> str:
    return " ".join(
        re.findall(r'class="errorlist[^"]*"[^>]*>(.*?)</ul>', response.content.decode(), re.S)
    )


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"cron_expression": "61 * * * *"}, "the minute field &#x27;61&#x27; is not valid"),
        ({"cron_expression": "30 7 * *"}, "has 4 fields; it needs five"),
        (
            {"kind": "rrule", "cron_expression": "", "rrule": "FREQ=SOMETIMES"},
            "invalid &#x27;FREQ&#x27;",
        ),
        ({"kind": "interval", "cron_expression": ""}, ""),  # needs every and unit
        ({"timezone": "Mars/Olympus_Mons"}, "Mars/Olympus_Mons"),
    ],
)
def test_a_bad_schedule_gets_an_error_that_says_what_is_wrong(
    client, roles, definition, fields, says
):
    client.force_login(roles["operator"])
    response = client.post(reverse("admin:scheduler_recurrence_add"), form(definition, **fields))
    assert response.status_code == 200
    text = errors(response)
    assert text, "the form shows an error"
    assert says in text
    assert not Recurrence.objects.exists()


def test_a_saved_schedule_reads_as_a_sentence_and_previews_ten_occurrences(
    client, roles, definition
):
    client.force_login(roles["operator"])
    response = client.post(reverse("admin:scheduler_recurrence_add"), form(definition))
    assert response.status_code == 302, errors(response)
    rec = Recurrence.objects.get()
    assert rec.next_due_at is not None and rec.next_due_at > timezone.now()
    page = client.get(reverse("admin:scheduler_recurrence_change", args=[rec.pk])).content.decode()
    assert "At 07:30 on weekdays, Europe/Amsterdam" in page
    rows = re.findall(
        r"<tr><td>(\w{3} \d{4}-\d\d-\d\d 07:30 CES?T)</td><td>([\d-]+ \d\d:\d\d)</td>", page
    )
    assert len(rows) == 10
    assert all(not day.startswith(("Sat", "Sun")) for day, _ in rows)
    listing = client.get(reverse("admin:scheduler_recurrence_changelist")).content.decode()
    assert "At 07:30 on weekdays, Europe/Amsterdam" in listing


def test_the_preview_marks_an_occurrence_moved_by_a_dst_change(client, roles, definition):
    # 28 March 2027 is the last Sunday of March: 02:30 does not exist in Amsterdam.
    rec = Recurrence.objects.create(
        definition=definition,
        name="gap",
        kind="cron",
        cron_expression="30 2 28 3 *",
        timezone="Europe/Amsterdam",
        next_due_at=timezone.now(),
    )
    client.force_login(roles["operator"])
    page = client.get(reverse("admin:scheduler_recurrence_change", args=[rec.pk])).content.decode()
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td></tr>", page)
    assert len(rows) == 10
    moved = [row for row in rows if row[2] == "moved by a DST change"]
    assert ("Sun 2027-03-28 03:00 CEST", "2027-03-28 01:00", "moved by a DST change") in moved
    assert all("02:30" in local for local, _, note in rows if not note)


def test_the_definition_page_lists_its_schedules_and_next_due_time(client, roles, definition):
    due = timezone.now() + timezone.timedelta(hours=5)
    Recurrence.objects.create(
        definition=definition,
        name="Nightly",
        kind="cron",
        cron_expression="0 3 * * *",
        timezone="UTC",
        next_due_at=due,
    )
    client.force_login(roles["operator"])
    page = client.get(
        reverse("admin:scheduler_taskdefinition_change", args=[definition.pk])
    ).content.decode()
    assert "Nightly" in page
    listing = client.get(reverse("admin:scheduler_taskdefinition_changelist")).content.decode()
    # As the admin shows a datetime ("Dec. 2, 2026, 1:05 p.m.", "noon"): the test
    # compared "13:05" before, and failed whenever the due time fell after noon.
    shown = formats.date_format(timezone.localtime(due), "DATETIME_FORMAT")
    assert shown in listing


def test_pause_resume_and_skip_next_change_the_schedule(client, roles, definition):
    rec = Recurrence.objects.create(
        definition=definition,
        name="Hourly",
        kind="interval",
        interval_every=1,
        interval_unit="hours",
        timezone="UTC",
        start_at=timezone.now(),
        next_due_at=timezone.now() + timezone.timedelta(minutes=30),
    )
    url = reverse("admin:scheduler_recurrence_changelist")
    client.force_login(roles["operator"])
    client.post(url, {"action": "pause", "_selected_action": [rec.pk]})
    rec.refresh_from_db()
    assert rec.enabled is False
    client.post(url, {"action": "resume", "_selected_action": [rec.pk]})
    rec.refresh_from_db()
    assert rec.enabled and rec.next_due_at > timezone.now()
    before = rec.next_due_at
    client.post(url, {"action": "skip_next", "_selected_action": [rec.pk]})
    rec.refresh_from_db()
    assert rec.next_due_at - before == timezone.timedelta(hours=1)
    client.force_login(roles["viewer"])
    client.post(url, {"action": "pause", "_selected_action": [rec.pk]})
    rec.refresh_from_db()
    assert rec.enabled, "a viewer cannot pause"
