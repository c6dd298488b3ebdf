"""The audit trail: who queued, cancelled, re-ran, changed or downloaded what, from where."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from scheduler.models import AuditEvent, OutputFile, Run, TaskDefinition

ADDRESS = "192.0.2.44"


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def plain(db, local_resource):
    return TaskDefinition.objects.create(
        name="Plain", program="hello.py", default_resource=local_resource
    )


def only_event(action: str) -> AuditEvent:
    events = list(AuditEvent.objects.filter(action=action))
    assert len(events) == 1, [(e.action, e.object_id) for e in AuditEvent.objects.all()]
    return events[0]


def test_run_now_records_a_queue_event(client, roles, plain):
    client.force_login(roles["operator"])
    url = reverse("admin:scheduler_taskdefinition_run", args=[plain.pk])
    response = client.post(url, {"resource": "", "run_at": ""}, REMOTE_ADDR=ADDRESS)
    assert response.status_code == 302, re.findall(r"errorlist.{0,300}", response.content.decode())
    run = Run.objects.get(definition=plain)
    event = only_event("queue")
    assert (event.user, event.ip) == (roles["operator"], ADDRESS)
    assert (event.object_type, event.object_id) == ("run", str(run.pk))


def test_cancel_records_a_cancel_event(client, roles, plain, local_resource):
    run = Run.objects.create(definition=plain, resource=local_resource)
    client.force_login(roles["operator"])
    response = client.post(
        reverse("admin:scheduler_run_cancel", args=[run.pk]), REMOTE_ADDR=ADDRESS
    )
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.state == Run.State.CANCELLED
    event = only_event("cancel")
    assert (event.user, event.ip, event.object_id) == (roles["operator"], ADDRESS, str(run.pk))


def test_run_again_records_a_rerun_event_pointing_at_the_new_run(
    client, roles, plain, local_resource
):
    now = timezone.now()
    old = Run.objects.create(
        definition=plain, resource=local_resource, state="FAILED", finished_at=now
    )
    client.force_login(roles["operator"])
    response = client.post(reverse("admin:scheduler_run_rerun", args=[old.pk]), REMOTE_ADDR=ADDRESS)
    assert response.status_code == 302
    new = Run.objects.exclude(pk=old.pk).get(definition=plain)
    event = only_event("rerun")
    assert (event.user, event.ip, event.object_id) == (roles["operator"], ADDRESS, str(new.pk))
    assert event.detail["of"] == old.pk


def test_a_viewer_cannot_cancel_and_nothing_is_recorded(client, roles, plain, local_resource):
    run = Run.objects.create(definition=plain, resource=local_resource)
    client.force_login(roles["viewer"])
    response = client.post(reverse("admin:scheduler_run_cancel", args=[run.pk]))
    assert response.status_code == 403
    run.refresh_from_db()
    assert run.state == Run.State.QUEUED
    assert not AuditEvent.objects.filter(action="cancel").exists()


def test_download_and_preview_record_user_address_and_file(client, roles, plain, local_resource):
    now = timezone.now()
    run = Run.objects.create(
        definition=plain, resource=local_resource, state="SUCCEEDED", finished_at=now
    )
    data = b"hello\n"
    path = Path(settings.SCHEDULER_FILE_ROOT) / str(run.pk) / "a.txt"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    f = OutputFile.objects.create(
        run=run,
        name="a.txt",
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="text/plain",
        stored_path=f"{run.pk}/a.txt",
    )
    client.force_login(roles["viewer"])
    response = client.get(
        reverse("scheduler:file-download", args=[run.pk, f.pk]), REMOTE_ADDR=ADDRESS
    )
    assert b"".join(response.streaming_content) == data
    client.get(reverse("scheduler:file-preview", args=[run.pk, f.pk]), REMOTE_ADDR=ADDRESS)
    for action in ("download", "preview"):
        event = only_event(action)
        assert (event.user, event.username, event.ip) == (roles["viewer"], "viewer", ADDRESS)
        assert (event.object_type, event.object_id) == ("outputfile", str(f.pk))
        assert event.detail["run"] == run.pk


def test_the_audit_trail_is_read_only_in_the_admin(client, roles):
    event = AuditEvent.objects.create(action="download", username="viewer", ip=ADDRESS)
    client.force_login(roles["superuser"])
    assert client.get(reverse("admin:scheduler_auditevent_changelist")).status_code == 200
    page = client.get(reverse("admin:scheduler_auditevent_changelist") + "?action=download")
    assert ADDRESS in page.content.decode()
    assert client.get(reverse("admin:scheduler_auditevent_add")).status_code == 403
    response = client.post(
        reverse("admin:scheduler_auditevent_delete", args=[event.pk]), {"post": "yes"}
    )
    assert response.status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


# ------------------------------------------- changes made through the admin
def _admin_post(client, url, data):
    response = client.post(url, data, REMOTE_ADDR=ADDRESS)
    assert response.status_code == 302, re.findall(r"errorlist.{0,300}", response.content.decode())
    return response


def test_admin_add_change_and_delete_of_a_resource_are_recorded(client, roles):
    from scheduler.models import ExecutionResource

    client.force_login(roles["superuser"])
    form = {
        "name": "cluster",
        "job_service_url": "ssh://batch@cluster.example.org",
        "working_root": "/scratch/runs",
        "python": "python3",
        "max_concurrent_runs": "4",
        "enabled": "on",
    }
    _admin_post(client, reverse("admin:scheduler_executionresource_add"), form)
    resource = ExecutionResource.objects.get(name="cluster")
    added = only_event("add")
    assert (added.user, added.ip) == (roles["superuser"], ADDRESS)
    assert (added.object_type, added.object_id) == ("executionresource", str(resource.pk))

    form["working_root"] = "/scratch/other"
    url = reverse("admin:scheduler_executionresource_change", args=[resource.pk])
    _admin_post(client, url, form)
    changed = only_event("change")
    assert changed.detail["change"] == [{"changed": {"fields": ["Working root"]}}]

    url = reverse("admin:scheduler_executionresource_delete", args=[resource.pk])
    _admin_post(client, url, {"post": "yes"})
    deleted = only_event("delete")
    assert not ExecutionResource.objects.filter(pk=resource.pk).exists()
    assert (deleted.object_id, deleted.detail["object"]) == (str(resource.pk), "cluster")


def test_recurrence_pause_resume_and_skip_are_recorded(client, roles, plain):
    from scheduler.models import Recurrence

    rec = Recurrence.objects.create(
        definition=plain,
        name="hourly",
        kind="interval",
        interval_every=1,
        interval_unit="hours",
        timezone="UTC",
        start_at=timezone.now(),
        enabled=True,
        next_due_at=timezone.now() + timezone.timedelta(hours=1),
    )
    client.force_login(roles["operator"])
    url = reverse("admin:scheduler_recurrence_changelist")
    for action in ("pause", "resume", "skip_next"):
        _admin_post(client, url, {"action": action, "_selected_action": [rec.pk]})
    assert list(
        AuditEvent.objects.filter(object_type="recurrence")
        .order_by("created_at", "id")
        .values_list("action", "object_id", "ip")
    ) == [(a, str(rec.pk), ADDRESS) for a in ("pause", "resume", "skip")]
    rec.refresh_from_db()
    skip = only_event("skip")
    assert skip.detail["next_due"] == str(rec.next_due_at)


# ------------------------------------------- narrowed like everything else
def test_the_audit_trail_hides_events_about_a_definition_the_user_may_not_see(
    client, roles, local_resource
):
    from django.contrib.auth.models import Group

    from scheduler import services

    team = Group.objects.create(name="secret-team")
    hidden = TaskDefinition.objects.create(
        name="Payroll export zq7", program="hello.py", default_resource=local_resource
    )
    hidden.allowed_groups.add(team)
    run = services.run_enqueue(definition=hidden)
    output = OutputFile.objects.create(run=run, name="salaries.csv", stored_path="x")
    events = [
        services.audit_record(
            action="change", user=roles["superuser"], obj=hidden, detail={"object": hidden.name}
        ),
        services.audit_record(action="cancel", user=roles["superuser"], obj=run),
        services.audit_record(
            action="download", user=roles["superuser"], obj=output, detail={"name": output.name}
        ),
    ]
    assert [e.definition_id for e in events] == [hidden.pk] * 3
    visible = services.audit_record(action="change", user=roles["superuser"], obj=local_resource)

    changelist = reverse("admin:scheduler_auditevent_changelist")
    client.force_login(roles["administrator"])  # outside secret-team
    page = client.get(changelist).content.decode()
    assert "Payroll export zq7" not in page and "salaries.csv" not in page
    assert f"/admin/scheduler/auditevent/{visible.pk}/change/" in page
    for event in events:
        assert f"/admin/scheduler/auditevent/{event.pk}/change/" not in page
        detail = reverse("admin:scheduler_auditevent_change", args=[event.pk])
        assert client.get(detail).status_code == 404

    roles["administrator"].groups.add(team)
    page = client.get(changelist).content.decode()
    for event in events:
        assert f"/admin/scheduler/auditevent/{event.pk}/change/" in page
    detail = reverse("admin:scheduler_auditevent_change", args=[events[2].pk])
    assert "salaries.csv" in client.get(detail).content.decode()
