"""The public Python API and its one error type."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from scheduler import services
from scheduler.api import (
    SchedulerError,
    cancel_task,
    get_task_results,
    get_task_status,
    get_task_statuses,
    submit_task,
)
from scheduler.models import ExecutionResource, OutputFile, Run


def test_it_queues_a_run_by_name_with_typed_parameters_and_defaults(definition):
    run_id = submit_task("Hello", parameters={"count": "3", "loud": "yes", "day": "2026-02-03"})
    run = Run.objects.get(pk=run_id)
    assert run.state == Run.State.QUEUED
    assert run.parameters == {
        "greeting": "hello",
        "count": 3,
        "loud": True,
        "fmt": "csv",
        "day": "2026-02-03",
    }
    assert run.resource.name == "local"


def test_it_queues_by_instance_and_by_id_and_for_a_later_time(definition):
    later = timezone.now() + dt.timedelta(hours=2)
    a = submit_task(definition, run_at=later)
    b = submit_task(definition.pk)
    assert Run.objects.get(pk=a).due_at == later
    assert Run.objects.get(pk=b).due_at <= timezone.now()


@pytest.mark.parametrize(
    "parameters, fragment",
    [
        ({"count": "many"}, "count: 'many' is not a whole number"),
        ({"ratio": "fast"}, "ratio: 'fast' is not a number"),
        ({"fmt": "pdf"}, "fmt: 'pdf' is not one of csv, xlsx"),
        ({"day": "31/12/2026"}, "day: '31/12/2026' is not a date"),
        ({"loud": "perhaps"}, "loud: 'perhaps' is not true or false"),
        ({"colour": "red"}, "colour: no such parameter"),
        ({"count": True}, "count: expected a whole number"),
    ],
)
def test_it_refuses_bad_parameters_with_a_readable_message(definition, parameters, fragment):
    with pytest.raises(SchedulerError, match="Bad parameters") as info:
        submit_task(definition, parameters=parameters)
    assert fragment in str(info.value)
    assert not Run.objects.exists()


def test_it_reports_a_missing_required_parameter(definition):
    definition.parameters.filter(name="greeting").update(default="", required=True)
    with pytest.raises(SchedulerError, match="greeting: a value is required"):
        submit_task(definition)


def test_it_refuses_unknown_definitions_resources_and_naive_times(definition):
    with pytest.raises(SchedulerError, match="Unknown task definition 'Nope'"):
        submit_task("Nope")
    with pytest.raises(SchedulerError, match="Unknown execution resource 'mars'"):
        submit_task(definition, resource="mars")
    with pytest.raises(SchedulerError, match="aware datetime"):
        submit_task(definition, run_at=dt.datetime(2026, 1, 1, 12, 0))
    with pytest.raises(SchedulerError, match="parameters must be a dict"):
        submit_task(definition, parameters=["count", 1])


def test_it_refuses_disabled_definitions_and_resources(definition, local_resource):
    ExecutionResource.objects.filter(pk=local_resource.pk).update(enabled=False)
    with pytest.raises(SchedulerError, match="Resource 'local' is disabled"):
        submit_task(definition)
    definition.enabled = False
    definition.save()
    with pytest.raises(SchedulerError, match="is disabled"):
        submit_task(definition)


def test_it_reads_status_statuses_and_results_with_download_urls(definition, tmp_path):
    run_id = submit_task(definition)
    run = Run.objects.get(pk=run_id)
    services.run_add_message(run=run, text="halfway", progress=50)
    OutputFile.objects.create(
        run=run,
        name="out.csv",
        size=3,
        sha256="ab" * 32,
        content_type="text/csv",
        stored_path=f"{run.pk}/out.csv",
    )
    status = get_task_status(run_id)
    assert (status["state"], status["progress"], status["message"]) == ("QUEUED", 50, "halfway")
    assert [s["run_id"] for s in get_task_statuses("Hello")] == [run_id]
    results = get_task_results(run_id)
    assert results["messages"][0]["text"] == "halfway"
    assert (
        results["files"][0]["download_url"]
        == f"/scheduler/runs/{run_id}/files/{results['files'][0]['id']}/download/"
    )


def test_it_refuses_unknown_runs(db):
    for call in (get_task_status, get_task_results, cancel_task):
        with pytest.raises(SchedulerError, match="Unknown run 999"):
            call(999)
    with pytest.raises(SchedulerError, match="Unknown run 'x'"):
        get_task_status("x")


def test_cancel_of_a_queued_run_is_immediate_and_of_a_running_one_is_a_request(definition):
    queued = submit_task(definition)
    assert cancel_task(queued) == "cancelled"
    run = Run.objects.get(pk=queued)
    assert run.state == Run.State.CANCELLED and run.finished_at is not None
    running = Run.objects.get(pk=submit_task(definition))
    assert services.run_claim(run_id=running.pk, poller="p1")
    assert cancel_task(running.pk) == "requested"
    running.refresh_from_db()
    assert running.state == Run.State.SUBMITTED and running.cancel_requested_at is not None
    assert cancel_task(queued) == "final"


def test_a_user_only_reaches_runs_of_definitions_their_groups_allow(definition, roles):
    restricted = Group.objects.create(name="lab-a")
    definition.allowed_groups.add(restricted)
    run_id = submit_task(definition)
    operator = roles["operator"]
    with pytest.raises(SchedulerError, match="Unknown run"):
        get_task_status(run_id, user=operator)
    with pytest.raises(SchedulerError, match="Unknown task definition"):
        submit_task("Hello", user=operator)
    operator.groups.add(restricted)
    operator = type(operator).objects.get(pk=operator.pk)  # fresh permission cache
    assert get_task_status(run_id, user=operator)["state"] == "QUEUED"
    assert get_task_status(run_id, user=roles["superuser"])["run_id"] == run_id


def test_a_viewer_may_read_but_not_queue_or_cancel(definition, roles):
    run_id = submit_task(definition)
    viewer = roles["viewer"]
    assert get_task_status(run_id, user=viewer)["state"] == "QUEUED"
    with pytest.raises(SchedulerError, match="may not queue"):
        submit_task(definition, user=viewer)
    with pytest.raises(SchedulerError, match="may not cancel"):
        cancel_task(run_id, user=viewer)
    assert submit_task(definition, user=roles["operator"]) > run_id


@pytest.mark.parametrize("how", ["given", "the definition's", "local"])
def test_a_run_is_queued_on_its_resource_read_once_afresh(definition, local_resource, how):
    """The resource of a queued run is read once (it was read, then asked
    whether it is enabled: two questions of each run queued), and read afresh:
    a resource object the caller holds, or the definition's, may be stale."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    kwargs = {"resource": local_resource} if how == "given" else {}
    if how == "the definition's":
        definition.default_resource = local_resource
        definition.save()
    elif how == "local":
        definition.default_resource = None
        definition.save()
    definition = type(definition).objects.get(pk=definition.pk)  # as a page reads it
    with CaptureQueriesContext(connection) as seen:
        run = services.run_enqueue(definition=definition, **kwargs)
    assert run.resource_id == local_resource.pk
    asked = [q["sql"] for q in seen.captured_queries if "scheduler_executionresource" in q["sql"]]
    assert len(asked) == 1, asked
    ExecutionResource.objects.filter(pk=local_resource.pk).update(enabled=False)
    assert local_resource.enabled  # the objects the caller holds say enabled
    with pytest.raises(SchedulerError, match="Resource 'local' is disabled"):
        services.run_enqueue(definition=definition, **kwargs)
