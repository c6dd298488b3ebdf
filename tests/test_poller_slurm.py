"""Runs on a slurm://localhost resource through a real single-node Slurm, end to end."""

from __future__ import annotations

import hashlib
import time

import pytest

from scheduler import services
from scheduler.models import ExecutionResource, Run, TaskDefinition, TaskParameter
from tests.poller_helpers import poller_fixture, run_to_end, tick_until

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.usefixtures("test_programs"),
]


@pytest.fixture
def cluster(slurm, tmp_path):
    return ExecutionResource.objects.create(
        name="cluster",
        pilot=False,  # the per-job path; tests/test_pilot_remote.py has the pilot
        job_service_url="slurm://localhost/",
        queue="debug",
        working_root=str(tmp_path / "slurm-runs"),
        max_concurrent_runs=4,
    )


@pytest.fixture
def slurm_behave(cluster):
    d = TaskDefinition.objects.create(
        name="Behave slurm", program="behave.py", default_resource=cluster
    )
    TaskParameter.objects.create(definition=d, name="mode", default="ok")
    return d


poller = poller_fixture("test-slurm", services=1)


def _job_number(run: Run) -> str:
    # "[slurm://localhost/]-[42]"
    return run.saga_job_id.rsplit("[", 1)[1].rstrip("]")


def test_the_hello_example_runs_as_a_slurm_job_with_messages_and_files_home(poller, cluster, slurm):
    hello = TaskDefinition.objects.create(
        name="Hello slurm", program="hello.py", default_resource=cluster
    )
    TaskParameter.objects.create(definition=hello, name="name", default="Slurm")
    run = run_to_end(poller, services.run_enqueue(definition=hello), timeout=90)
    assert run.state == Run.State.SUCCEEDED, (run.error, slurm.logs()[-2000:])
    assert run.exit_code == 0 and run.progress == 100
    assert run.saga_job_id.startswith("[slurm://localhost/]-[")
    texts = " ".join(run.messages.values_list("text", flat=True))
    assert "Slurm" in texts
    for f in run.files.all():
        data = f.absolute_path().read_bytes()
        assert hashlib.sha256(data).hexdigest() == f.sha256 and len(data) == f.size
    assert run.files.filter(kind="stdout").exists()


def test_a_failing_program_on_slurm_fails_with_its_stderr(poller, slurm_behave):
    run = run_to_end(
        poller,
        services.run_enqueue(definition=slurm_behave, parameters={"mode": "exit"}),
        timeout=90,
    )
    assert run.state == Run.State.FAILED
    assert run.exit_code == 3
    assert "about to exit with 3" in run.error


def test_cancel_ends_the_slurm_job(poller, slurm_behave, slurm):
    run = services.run_enqueue(definition=slurm_behave, parameters={"mode": "sleep"})
    tick_until(
        poller,
        lambda: Run.objects.get(pk=run.pk).progress >= 3,  # the program is really going
        timeout=90,
    )
    run.refresh_from_db()
    job = _job_number(run)
    assert job in slurm.queued_job_ids()
    services.run_request_cancel(run=run)
    run = run_to_end(poller, run, timeout=60)
    assert run.state == Run.State.CANCELLED
    deadline = time.monotonic() + 30
    while job in slurm.queued_job_ids() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert job not in slurm.queued_job_ids(), "the batch job really ended"


def test_a_job_slurm_has_forgotten_is_finished_from_the_exit_record(poller, slurm_behave, slurm):
    run = services.run_enqueue(definition=slurm_behave)
    tick_until(poller, lambda: bool(Run.objects.get(pk=run.pk).saga_job_id), timeout=60)
    run.refresh_from_db()
    job = _job_number(run)
    # No ticks while the job runs, ends and ages out of slurmctld (MinJobAge=2).
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shown = slurm.run("scontrol", "show", "job", job)
        if "JobState" not in shown:
            break
        time.sleep(1)
    assert "JobState" not in slurm.run("scontrol", "show", "job", job), "Slurm forgot the job"
    run = run_to_end(poller, run, timeout=60)
    assert run.state == Run.State.SUCCEEDED, run.error
    assert run.exit_code == 0
    assert run.files.get(name="result.txt", kind="output").size == 5


def test_two_ssh_resources_on_one_host_keep_connections_of_their_own(
    slurm, sshd_server, slurm_login_node, tmp_path
):
    """radical.saga keyed its ssh masters by user and host, not port: the login
    node's commands went to the sshd opened first (this failed whenever the ssh
    tests ran before this module)."""
    from poller.saga_executor import RemoteRunDirs

    def resource(server, name):
        return ExecutionResource(
            name=name,
            job_service_url=f"ssh://{server.user}@{server.host}:{server.port}/",
            ssh_user=server.user,
            ssh_key_path=server.key_path,
            working_root=str(tmp_path / name),
        )

    plain = RemoteRunDirs(resource(sshd_server, "plain"))
    login = RemoteRunDirs(resource(slurm_login_node, "login"))
    assert plain._run("echo x${SLURM_CONF}x")[1].strip() == "xx"
    assert login._run("echo x${SLURM_CONF}x")[1].strip() == f"x{slurm.conf}x"
    assert plain._run("echo x${SLURM_CONF}x")[1].strip() == "xx"


def test_a_run_on_slurm_over_ssh_ends_with_its_files_home(
    poller, slurm, slurm_login_node, tmp_path
):
    """slurm+ssh://: sbatch and squeue over ssh to a login node (the same host),
    run directories over ssh, the same single-node Slurm."""
    import sys

    sshd_server = slurm_login_node
    remote = ExecutionResource.objects.create(
        name="cluster-over-ssh",
        pilot=False,  # the per-job path; tests/test_pilot_remote.py has the pilot
        job_service_url=(f"slurm+ssh://{sshd_server.user}@{sshd_server.host}:{sshd_server.port}/"),
        ssh_user=sshd_server.user,
        ssh_key_path=sshd_server.key_path,
        queue="debug",
        working_root=str(tmp_path / "slurm-ssh-runs"),
        python=sys.executable,
        max_concurrent_runs=2,
    )
    assert not remote.on_this_host()
    hello = TaskDefinition.objects.create(
        name="Hello slurm+ssh", program="hello.py", default_resource=remote
    )
    TaskParameter.objects.create(definition=hello, name="name", default="Remote Slurm")
    run = run_to_end(poller, services.run_enqueue(definition=hello), timeout=120)
    assert run.state == Run.State.SUCCEEDED, (run.error, slurm.logs()[-2000:])
    assert run.saga_job_id.startswith("[slurm+ssh://")
    assert "Remote Slurm" in " ".join(run.messages.values_list("text", flat=True))
    stdout = run.files.get(kind="stdout")
    data = stdout.absolute_path().read_bytes()
    assert hashlib.sha256(data).hexdigest() == stdout.sha256


def test_a_django_task_runs_as_a_slurm_job_when_its_queue_names_the_cluster(poller, cluster, slurm):
    """A batch system on the site's host can set the site's Django up: a task
    whose queue_name names it runs there, its return value comes home."""
    from demo.tasks import add_numbers

    result = add_numbers.using(queue_name="cluster").enqueue(20, 22)
    run = Run.objects.get(pk=int(result.id))
    assert run.resource == cluster
    run = run_to_end(poller, run, timeout=90)
    assert run.state == Run.State.SUCCEEDED, (run.error, slurm.logs()[-2000:])
    assert run.saga_job_id.startswith("[slurm://localhost/]-[")
    result.refresh()
    assert result.return_value == 42


# ----------------------------------------------------------- issue 15 on Slurm
@pytest.fixture
def slurm_work(cluster):
    cluster.queues = "long"
    cluster.price_per_core_hour = 1
    cluster.save()
    return TaskDefinition.objects.create(
        name="Work slurm",
        program="cluster_work.sh",
        default_resource=cluster,
        output_patterns=["results/*.csv"],
    )


def test_a_two_core_shell_program_on_slurm_sees_two_cpus_and_its_input(poller, slurm_work, slurm):
    import io

    from scheduler.inputs import Upload

    run = services.run_enqueue(
        definition=slurm_work,
        needs={"cores": 2, "memory_mb": 200, "environment": {"GREETING": "on slurm"}},
        inputs=[Upload("in.txt", io.BytesIO(b"slurm input"))],
    )
    run = run_to_end(poller, run, timeout=90)
    assert run.state == Run.State.SUCCEEDED, (run.error, slurm.logs()[-2000:])
    summary = run.files.get(name="results__summary.csv").absolute_path().read_text()
    assert "cpus=2 nproc=2 cores=2" in summary, summary
    # One task with two CPUs (--ntasks=1 --cpus-per-task=2), --mem=200 on its node.
    assert "ntasks=1 mem=200 memory=200" in summary, summary
    assert "greeting=on slurm" in summary and "input in.txt 11 slurm input" in summary
    assert run.core_hours > 0 and run.cost is not None


def test_a_slurm_run_over_its_wall_time_ends_timed_out(poller, slurm_work):
    run = services.run_enqueue(definition=slurm_work, needs={"wall_time_seconds": 2})
    Run.objects.filter(pk=run.pk).update(args=["sleep", "60"])
    run = run_to_end(poller, run, timeout=90)
    assert run.state == Run.State.TIMED_OUT, run.error
    assert "Timed out after 2 s" in run.error


def test_slurm_refuses_what_the_cluster_does_not_offer_before_queueing(slurm_work):
    from scheduler.exceptions import InvalidRequest

    cluster = slurm_work.default_resource
    cluster.max_cores = 2  # what the operator says the test cluster's node has
    cluster.save()
    for override, words in [
        ({"cores": 65}, "cores: 65 asked for, but resource 'cluster' lets a run take 2"),
        ({"memory_mb": 0}, "memory_mb: expected memory in MB"),
        ({"queue": "nosuch"}, "'nosuch' is not a queue of resource 'cluster'; it has debug, long"),
        ({"gpus": 1}, "GPUs: 1 asked for, but resource 'cluster' lets a run take 0"),
        ({"cores": 0}, "cores: expected cores"),
        ({"processes_per_host": 4, "cores": 2}, "processes per host: 4 is more than"),
    ]:
        with pytest.raises(InvalidRequest, match=words):
            services.run_enqueue(definition=slurm_work, needs=override)
    assert not Run.objects.exists()
    run = services.run_enqueue(definition=slurm_work, needs={"queue": "long", "mpi": True})
    assert run.needs["queue"] == "long" and run.needs["mpi"] is True


def test_an_mpi_run_on_slurm_starts_one_rank_a_core_under_one_launcher(poller, cluster, slurm):
    ranks = TaskDefinition.objects.create(
        name="Ranks slurm",
        program="mpi_ranks.sh",
        default_resource=cluster,
        output_patterns=["ranks.txt"],
        mpi=True,
        cores=2,
    )
    run = run_to_end(poller, services.run_enqueue(definition=ranks), timeout=90)
    assert run.state == Run.State.SUCCEEDED, (run.error, slurm.logs()[-2000:])
    lines = sorted(run.files.get(name="ranks.txt").absolute_path().read_text().splitlines())
    assert lines == ["rank 0 of 2", "rank 1 of 2"]
    assert run.needs["mpi"] is True and run.core_hours > 0


def test_no_job_monitor_thread_asks_slurm_or_dies_with_a_traceback(
    poller, cluster, slurm, monkeypatch
):
    """radical.saga's Slurm job service started a thread that asked scontrol
    about each job every 3 s (over the service's one shell) for callbacks the
    poller never sets, and died with a traceback at a job's first change of
    state (saga_workarounds._batch_monitors_not_started). No such thread runs,
    and no thread dies."""
    import threading

    died = []
    monkeypatch.setattr(threading, "excepthook", died.append)
    hello = TaskDefinition.objects.create(
        name="Hello slurm", program="hello.py", default_resource=cluster
    )
    run = run_to_end(poller, services.run_enqueue(definition=hello), timeout=90)
    assert run.state == Run.State.SUCCEEDED, run.error
    time.sleep(4)  # the monitor looked every 3 s
    assert not died, [str(d.exc_value) for d in died]
    monitors = [t for t in threading.enumerate() if type(t).__name__ == "_job_state_monitor"]
    assert not [t for t in monitors if t.is_alive()]
    assert poller._pools[cluster.pk]._all, "no Slurm job service was made"
