"""The Run-now page: a form built from the typed parameters, validated per type."""

from __future__ import annotations

import pytest
from django.urls import reverse

from scheduler.models import AuditEvent, Run
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator_client(client, roles):
    assert client.login(username="operator", password=PASSWORD)
    return client


def _url(definition):
    return reverse("admin:scheduler_taskdefinition_run", args=[definition.pk])


def test_the_form_has_a_field_per_parameter_with_its_default(operator_client, definition):
    page = operator_client.get(_url(definition)).content.decode()
    for name in ["greeting", "count", "ratio", "loud", "fmt", "day"]:
        assert f'name="param_{name}"' in page
    assert 'value="hello"' in page and 'type="date"' in page
    assert '<option value="xlsx">' in page


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("count", "ten", "count: &#x27;ten&#x27; is not a whole number"),
        ("ratio", "1,5", "ratio: &#x27;1,5&#x27; is not a number"),
        ("fmt", "pdf", "fmt: &#x27;pdf&#x27; is not one of csv, xlsx"),
        ("day", "2026-02-30", "day: &#x27;2026-02-30&#x27; is not a date"),
        ("greeting", "", "greeting: a value is required"),
    ],
)
def test_each_kind_of_bad_value_is_refused_with_a_message_and_nothing_is_queued(
    operator_client, definition, field, value, message
):
    if field == "greeting":
        definition.parameters.filter(name="greeting").update(default="", required=True)
    data = {"param_count": "1", "param_fmt": "csv", f"param_{field}": value}
    response = operator_client.post(_url(definition), data)
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Run.objects.exists()


def test_a_good_post_queues_a_run_with_typed_values_and_shows_it(
    operator_client, definition, roles
):
    response = operator_client.post(
        _url(definition),
        {
            "param_greeting": "hi there",
            "param_count": "7",
            "param_ratio": "0.25",
            "param_loud": "on",
            "param_fmt": "xlsx",
            "param_day": "2026-12-24",
        },
    )
    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:scheduler_run_change", args=[run.pk])
    assert run.parameters == {
        "greeting": "hi there",
        "count": 7,
        "ratio": 0.25,
        "loud": True,
        "fmt": "xlsx",
        "day": "2026-12-24",
    }
    assert run.requested_by == roles["operator"]
    event = AuditEvent.objects.get(action="queue")
    assert event.username == "operator" and event.object_id == str(run.pk)
    assert event.ip == "127.0.0.1"


def test_a_run_at_time_and_another_resource_are_honoured(operator_client, definition):
    from scheduler.models import ExecutionResource

    other = ExecutionResource.objects.create(name="second", job_service_url="fork://localhost")
    operator_client.post(
        _url(definition),
        {
            "param_count": "1",
            "param_fmt": "csv",
            "resource": other.pk,
            "run_at": "2030-01-02T03:04",
        },
    )
    run = Run.objects.get()
    assert run.resource == other
    assert run.due_at.year == 2030 and run.due_at.hour == 3


def test_viewers_may_not_queue(client, roles, definition):
    assert client.login(username="viewer", password=PASSWORD)
    assert client.post(_url(definition), {"param_count": "1"}).status_code == 403
    assert not Run.objects.exists()
