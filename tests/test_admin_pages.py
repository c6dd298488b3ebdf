"""Every admin page, for every role; anonymous and non-staff users are refused."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse

from scheduler import services
from scheduler.models import (
    AuditEvent,
    OutputFile,
    PollerHeartbeat,
    Recurrence,
    Run,
    TaskDefinition,
)
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

MODELS = [
    "executionresource",
    "taskdefinition",
    "recurrence",
    "run",
    "statusmessage",
    "outputfile",
    "pollerheartbeat",
    "auditevent",
]

# role -> model -> (changelist status, add status)
VIEW = {m: (200, 403) for m in MODELS}
EXPECTED = {
    "viewer": {**VIEW, "auditevent": (403, 403)},
    "operator": {**VIEW, "recurrence": (200, 200), "auditevent": (403, 403)},
    "administrator": {
        **VIEW,
        "executionresource": (200, 200),
        "taskdefinition": (200, 200),
        "recurrence": (200, 200),
    },
    "superuser": {
        **VIEW,
        "executionresource": (200, 200),
        "taskdefinition": (200, 200),
        "recurrence": (200, 200),
    },
}


@pytest.fixture
def world(definition, roles):
    run = services.run_enqueue(definition=definition, parameters={"count": 2})
    services.run_add_message(run=run, text="hello from the task", progress=30)
    OutputFile.objects.create(
        run=run,
        name="out.csv",
        size=4,
        sha256="0" * 64,
        content_type="text/csv",
        stored_path=f"{run.pk}/output/out.csv",
    )
    rec = Recurrence.objects.create(
        definition=definition, name="hourly", kind="cron", cron_expression="0 * * * *"
    )
    PollerHeartbeat.objects.create(
        ident="h", host="h", pid=1, started_at=run.queued_at, last_seen_at=run.queued_at
    )
    services.audit_record(action="queue", user=roles["operator"], obj=run)
    return {"run": run, "recurrence": rec, "definition": definition}


def _login(client, user):
    assert client.login(username=user.username, password=PASSWORD)


@pytest.mark.parametrize("role", list(EXPECTED))
def test_each_role_gets_the_pages_its_permissions_allow(client, roles, world, role):
    _login(client, roles[role])
    assert client.get(reverse("admin:index")).status_code == 200
    for model, (list_status, add_status) in EXPECTED[role].items():
        got = client.get(reverse(f"admin:scheduler_{model}_changelist")).status_code
        assert got == list_status, f"{role} {model} list: {got}"
        got = client.get(reverse(f"admin:scheduler_{model}_add")).status_code
        expected_add = (
            add_status
            if model not in ("run", "statusmessage", "outputfile", "pollerheartbeat", "auditevent")
            else 403
        )
        assert got == expected_add, f"{role} {model} add: {got}"
    for name, obj in [
        ("run", world["run"]),
        ("taskdefinition", world["definition"]),
        ("recurrence", world["recurrence"]),
    ]:
        got = client.get(reverse(f"admin:scheduler_{name}_change", args=[obj.pk])).status_code
        assert got == 200, f"{role} {name} change page: {got}"
    run_now = client.get(
        reverse("admin:scheduler_taskdefinition_run", args=[world["definition"].pk])
    )
    assert run_now.status_code == (403 if role == "viewer" else 200)


@pytest.mark.parametrize("who", ["anonymous", "nonstaff"])
def test_anonymous_and_non_staff_users_are_sent_to_the_login_page(client, roles, world, who):
    if who == "nonstaff":
        _login(client, roles["nonstaff"])
    urls = (
        [reverse("admin:index")]
        + [reverse(f"admin:scheduler_{m}_changelist") for m in MODELS]
        + [
            reverse("admin:scheduler_run_change", args=[world["run"].pk]),
            reverse("admin:scheduler_taskdefinition_run", args=[world["definition"].pk]),
        ]
    )
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and "/admin/login/" in response["Location"], url


def test_the_dashboard_shows_counts_running_runs_failures_next_due_and_pollers(
    client, roles, world
):
    run = world["run"]
    services.run_claim(run_id=run.pk, poller="p")
    services.run_mark_running(run=run)
    failed = services.run_enqueue(definition=world["definition"])
    services.run_finish(run=failed, state=Run.State.FAILED, error="disk full on /scratch")
    Recurrence.objects.filter(pk=world["recurrence"].pk).update(next_due_at=run.queued_at)
    _login(client, roles["operator"])
    page = client.get(reverse("admin:index")).content.decode()
    assert "Runs by state" in page and "?state__exact=RUNNING" in page
    assert "disk full on /scratch" in page
    assert "hello from the task" in page  # the running run's status message
    assert "hourly" in page  # next due
    assert "not seen" in page or "alive" in page


def test_a_restricted_definition_is_invisible_and_its_pages_answer_404(client, roles, world):
    lab = Group.objects.create(name="lab-b")
    world["definition"].allowed_groups.add(lab)
    _login(client, roles["operator"])
    run = world["run"]
    assert client.get(reverse("admin:scheduler_run_change", args=[run.pk])).status_code == 404
    assert (
        client.get(
            reverse("admin:scheduler_taskdefinition_change", args=[world["definition"].pk])
        ).status_code
        == 404
    )
    assert (
        client.get(
            reverse("admin:scheduler_recurrence_change", args=[world["recurrence"].pk])
        ).status_code
        == 404
    )
    listing = client.get(reverse("admin:scheduler_run_changelist")).content.decode()
    assert f">{run.pk}<" not in listing
    dashboard = client.get(reverse("admin:index")).content.decode()
    assert "hello from the task" not in dashboard
    assert client.get(reverse("scheduler:run-status", args=[run.pk])).status_code == 404
    roles["operator"].groups.add(lab)
    assert client.get(reverse("admin:scheduler_run_change", args=[run.pk])).status_code == 200


def test_the_run_page_shows_messages_files_and_the_buttons_the_role_allows(client, roles, world):
    run = world["run"]
    _login(client, roles["viewer"])
    page = client.get(reverse("admin:scheduler_run_change", args=[run.pk])).content.decode()
    assert "hello from the task" in page and "out.csv" in page
    assert 'id="run-cancel"' not in page and 'id="run-again"' not in page
    client.logout()
    _login(client, roles["operator"])
    page = client.get(reverse("admin:scheduler_run_change", args=[run.pk])).content.decode()
    assert 'id="run-cancel"' in page and 'id="run-again"' in page


def test_cancel_and_run_again_work_for_operators_and_are_refused_to_viewers(client, roles, world):
    run = world["run"]
    _login(client, roles["viewer"])
    assert client.post(reverse("admin:scheduler_run_cancel", args=[run.pk])).status_code == 403
    assert client.post(reverse("admin:scheduler_run_rerun", args=[run.pk])).status_code == 403
    client.logout()
    _login(client, roles["operator"])
    response = client.post(reverse("admin:scheduler_run_cancel", args=[run.pk]))
    assert response.status_code == 302
    run.refresh_from_db()
    assert run.state == Run.State.CANCELLED
    response = client.post(reverse("admin:scheduler_run_rerun", args=[run.pk]))
    new = Run.objects.exclude(pk=run.pk).get()
    assert response["Location"] == reverse("admin:scheduler_run_change", args=[new.pk])
    assert new.parameters == run.parameters and new.requested_by == roles["operator"]
    assert set(AuditEvent.objects.values_list("action", flat=True)) >= {"cancel", "rerun"}


def test_the_status_endpoint_reports_progress_new_messages_and_rejects_bad_input(
    client, roles, world
):
    run = world["run"]
    _login(client, roles["viewer"])
    url = reverse("scheduler:run-status", args=[run.pk])
    data = client.get(url).json()
    assert data["state"] == "QUEUED" and data["progress"] == 30 and not data["is_final"]
    first = data["messages"][0]["id"]
    services.run_add_message(run=run, text="later", progress=60)
    newer = client.get(url, {"after": first}).json()
    assert [m["text"] for m in newer["messages"]] == ["later"] and newer["progress"] == 60
    assert client.get(url, {"after": "x"}).status_code == 400
    client.logout()
    assert client.get(url).status_code == 404


def test_the_run_list_never_counts_more_than_the_cap(client, roles, world, settings):
    from scheduler import paginator

    _login(client, roles["superuser"])
    definition = TaskDefinition.objects.get(pk=world["definition"].pk)
    Run.objects.bulk_create(
        [Run(definition=definition, resource=world["run"].resource) for _ in range(30)]
    )
    old = paginator.COUNT_CAP
    paginator.COUNT_CAP = 10
    try:
        page = client.get(reverse("admin:scheduler_run_changelist")).content.decode()
    finally:
        paginator.COUNT_CAP = old
    assert "11 runs" in page


def test_every_page_names_an_icon_and_favicon_ico_is_served(client, roles):
    response = client.get("/favicon.ico")
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")
    login = client.get(reverse("admin:login")).content.decode()
    assert 'rel="icon"' in login and "scheduler/favicon.png" in login
    client.login(username="administrator", password=PASSWORD)
    index = client.get(reverse("admin:index")).content.decode()
    assert 'rel="icon"' in index
    # the stylesheet comes once, from base_site, not again from each page
    assert index.count("scheduler/scheduler.css") == 1


def test_the_admin_index_spells_summaries(admin_client):
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert "Summaries" in index and "Summarys" not in index
