"""The way home for the two original systems' users (issue 15), through the
real poller on fork://localhost: seed 000's API (scheduler.compat.
saga_task_manager) called as its callers call it, and seed 002's example task
program test2.py, ported as docs/migrating.md says."""

from __future__ import annotations

from decimal import Decimal

import pytest

from scheduler import services
from scheduler.compat import saga_task_manager as stm
from scheduler.exceptions import InvalidRequest, NotFound
from scheduler.models import Run, TaskDefinition
from tests.poller_helpers import poller_fixture, run_to_end, tick_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("test_programs")]

poller = poller_fixture("test-compat", services=1)


def test_seed_000_callers_submit_poll_and_collect_as_before(poller, local_resource, tmp_path):
    local_resource.price_per_core_hour = Decimal("0.5")
    local_resource.save()
    source = tmp_path / "input_test.txt"
    source.write_bytes(b"seed zero input\n")
    with open(source, "rb") as handle:
        task_id = stm.submit_task(
            "cluster_work.sh",
            remote=False,
            arguments=["--flag", "two words"],
            input_files=[handle],
            environment={"GREETING": "seed 000"},
            expected_output_files=["results/summary.csv", "work.log"],
            wallclock_limit=600,
            project="",
            nprocs=2,
        )
    assert isinstance(task_id, int)
    assert stm.get_task_status(task_id) == "QU"
    tick_until(poller, lambda: stm.get_task_status(task_id) in ("CO", "FA", "FL"), timeout=30)
    assert stm.get_task_status(task_id) == "CO", Run.objects.get(pk=task_id).error
    results = stm.get_task_results(task_id)
    try:
        assert b"cluster_work ran with: --flag two words" in results["stdout"].read()
        outputs = {h.name.rsplit("/", 1)[-1]: h.read() for h in results["output_files"]}
    finally:
        for h in [results.get("stdout"), results.get("stderr"), *results["output_files"]]:
            if h is not None:
                h.close()
    assert outputs["work.log"] == b"work done\n"
    summary = outputs["results__summary.csv"].decode()
    assert "cores=2" in summary and "greeting=seed 000" in summary
    assert "input input_test.txt 16 seed zero input" in summary
    run = Run.objects.get(pk=task_id)
    assert run.timeout_seconds == 600
    assert stm.get_task_cost(task_id) == pytest.approx(float(run.cost)) and run.cost > 0
    # A second run of the same name; statuses oldest first, as seed 000 gave them.
    second = stm.submit_task("cluster_work.sh", nprocs=1)
    assert stm.get_task_statuses("cluster_work.sh") == [
        {"id": task_id, "status": "CO"},
        {"id": second, "status": "QU"},
    ]
    assert TaskDefinition.objects.filter(name="cluster_work.sh").count() == 1


def test_seed_000_bad_input_is_a_readable_error_and_queues_nothing(local_resource, settings):
    with pytest.raises(NotFound, match="No task definition or program '/etc/passwd'"):
        stm.submit_task("/etc/passwd")
    with pytest.raises(InvalidRequest, match="cores: 65 asked for"):
        stm.submit_task("cluster_work.sh", nprocs=65)
    with pytest.raises(InvalidRequest, match="SCHEDULER_COMPAT_REMOTE_RESOURCE"):
        stm.submit_task("cluster_work.sh", remote=True)
    with pytest.raises(InvalidRequest, match="must stay inside the run directory"):
        stm.submit_task("cluster_work.sh", expected_output_files=["../../etc/shadow"])
    settings.SCHEDULER_COMPAT_REMOTE_RESOURCE = "local"
    assert stm.submit_task("cluster_work.sh", remote=True)
    assert Run.objects.count() == 1
    with pytest.raises(NotFound):
        stm.get_task_status(999999)


def test_seed_000_status_codes_follow_our_states():
    run = Run(state=Run.State.FAILED, started_at=None)
    assert stm.status_code(run) == "FA"
    run.started_at = run.queued_at
    assert stm.status_code(run) == "FL"
    assert stm.status_code(Run(state=Run.State.CANCELLED)) == "FA"
    assert stm.status_code(Run(state=Run.State.SUBMITTED)) == "QU"
    assert stm.status_code(Run(state=Run.State.RUNNING)) == "RU"


@pytest.mark.parametrize("fail", [False, True])
def test_seed_002_example_program_runs_ported(poller, local_resource, fail):
    definition = TaskDefinition.objects.create(
        name="Seed 002 test2",
        program="seed002_test2.py",
        default_resource=local_resource,
        default_args=["-i", "1"],
        environment={"SEED_FAIL": "1"} if fail else {},
    )
    run = run_to_end(poller, services.run_enqueue(definition=definition))
    texts = list(run.messages.order_by("id").values_list("text", flat=True))
    assert "Task start." in texts and "progress 24" in texts and "ended 300" in texts
    if fail:
        assert run.state == Run.State.FAILED
        assert "the task reported failed_task()" in run.error
        assert "Task failed." in texts and "Task ended successfully." not in texts
    else:
        assert run.state == Run.State.SUCCEEDED, run.error
        assert texts.index("Processing") < texts.index("Completed") < len(texts) - 1
        assert "Task ended successfully." in texts and "File closed: file1.txt" in texts
        file1 = run.files.get(name="file1.txt").absolute_path().read_text()
        assert file1.splitlines() == [str(i) for i in range(25)]
        assert run.files.get(name="file2.txt").absolute_path().read_text() == "24\n"
        assert b"progress 24" in run.files.get(kind="stdout").absolute_path().read_bytes()
