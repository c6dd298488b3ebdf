"""The pure part of tracking (poller.tracking): what a run's end means, from its
exit record or, when the launcher wrote none, from SAGA's state alone."""

from __future__ import annotations

import pytest

from poller.tracking import outcome_of_exit_record, outcome_without_exit_record
from scheduler.models import Run


def record(**fields) -> dict:
    return {"v": 1, "exit_code": 0, "signal": None, "failed": False, "error": None, **fields}


def test_a_clean_record_is_a_success():
    outcome = outcome_of_exit_record(record(), cancel_requested=False)
    assert (outcome.state, outcome.exit_code, outcome.error, outcome.warning) == (
        Run.State.SUCCEEDED,
        0,
        "",
        "",
    )


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"exit_code": 3}, "Exit code 3."),
        ({"exit_code": 0, "failed": True, "error": "fail() was called"}, "fail() was called"),
        ({"exit_code": 137, "signal": 9}, "Killed by signal 9."),
        ({"exit_code": 1, "signal": 15, "error": "stopped"}, "Killed by signal 15. stopped"),
    ],
)
def test_a_failed_record_says_why(fields, error):
    outcome = outcome_of_exit_record(record(**fields), cancel_requested=False)
    assert outcome.state == Run.State.FAILED
    assert outcome.error == error
    assert outcome.exit_code == fields["exit_code"]


@pytest.mark.parametrize("code", ["0", None, True, 1.5, [0]])
def test_an_exit_code_that_is_not_a_number_fails_the_run_with_a_warning(code):
    outcome = outcome_of_exit_record(record(exit_code=code), cancel_requested=False)
    assert (outcome.state, outcome.exit_code) == (Run.State.FAILED, 1)
    assert "is not a number" in outcome.warning


def test_a_cancel_asked_for_wins_over_the_record():
    for fields in ({}, {"exit_code": 143, "signal": 15}):
        outcome = outcome_of_exit_record(record(**fields), cancel_requested=True)
        assert (outcome.state, outcome.error) == (Run.State.CANCELLED, "")


@pytest.mark.parametrize(
    ("saga", "code", "state", "words"),
    [
        ("Done", 137, Run.State.FAILED, "killed by signal 9"),
        ("Failed", -15, Run.State.FAILED, "killed by signal 15"),
        ("Failed", 2, Run.State.FAILED, "ended with exit code 2"),
        ("Done", None, Run.State.LOST, "cannot be accounted for"),
        ("Unknown", None, Run.State.LOST, "SAGA state Unknown"),
        ("Canceled", 143, Run.State.LOST, "SAGA state Canceled"),
    ],
)
def test_without_an_exit_record_the_job_state_and_code_decide(saga, code, state, words):
    outcome = outcome_without_exit_record(saga, code, cancel_requested=False)
    assert outcome.state == state and outcome.exit_code == code
    assert words in outcome.error


def test_without_an_exit_record_a_cancel_asked_for_is_a_cancel():
    outcome = outcome_without_exit_record("Canceled", None, cancel_requested=True)
    assert (outcome.state, outcome.error) == (Run.State.CANCELLED, "")


@pytest.mark.django_db(transaction=True)
def test_an_end_seen_then_taken_back_gives_a_later_end_its_own_grace(tmp_path, monkeypatch):
    """SAGA's (or a pilot's) word that a job ended, then that it runs (a remote
    pilot taken for gone at a first read, then heard from): a later end waits
    EXIT_RECORD_GRACE_SECONDS for the exit record again. Before, the first
    end's clock still ran, and the later end finished the run as lost at once."""
    import time

    from poller import tracking
    from poller.loop import Poller
    from scheduler import services
    from scheduler.models import ExecutionResource, TaskDefinition

    monkeypatch.setattr(tracking, "SAGA_CHECK_SECONDS", 0.0)
    monkeypatch.setattr(tracking, "EXIT_RECORD_GRACE_SECONDS", 0.5)
    resource = ExecutionResource.objects.create(
        name="cluster",
        job_service_url="slurm://localhost/",
        queue="debug",
        working_root=str(tmp_path),
    )
    definition = TaskDefinition.objects.create(
        name="T", program="behave.py", default_resource=resource
    )
    run = services.run_enqueue(definition=definition)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    Run.objects.filter(pk=run.pk).update(
        state=Run.State.RUNNING, saga_job_id="[slurm://localhost/]-[9]", run_directory=run_dir
    )
    said = []
    poller = Poller(name="grace", services_per_resource=1)
    monkeypatch.setattr(poller, "_job_state", lambda run: (said.pop(0), None))
    try:

        def track(state: str) -> str:
            said.append(state)
            poller.track_run(Run.objects.select_related("resource", "definition").get(pk=run.pk))
            return Run.objects.get(pk=run.pk).state

        assert track("Done") == Run.State.RUNNING  # its grace begins
        time.sleep(0.6)
        assert track("Running") == Run.State.RUNNING
        assert track("Done") == Run.State.RUNNING, "the later end got no grace"
        time.sleep(0.6)
        assert track("Done") == Run.State.LOST
    finally:
        poller.close()
