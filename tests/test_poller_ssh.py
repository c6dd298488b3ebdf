"""Runs on an ssh:// resource through the real sshd fixture, end to end."""

from __future__ import annotations

import hashlib
import sys
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
def ssh_resource(sshd_server, tmp_path):
    return ExecutionResource.objects.create(
        name="sshhost",
        pilot=False,  # the per-job path; tests/test_pilot_remote.py has the pilot
        job_service_url=f"ssh://{sshd_server.user}@{sshd_server.host}:{sshd_server.port}",
        ssh_user=sshd_server.user,
        ssh_key_path=sshd_server.key_path,
        working_root=str(tmp_path / "remote-runs"),
        python=sys.executable,
    )


@pytest.fixture
def ssh_behave(ssh_resource):
    d = TaskDefinition.objects.create(
        name="Behave ssh", program="behave.py", default_resource=ssh_resource
    )
    TaskParameter.objects.create(definition=d, name="mode", default="ok")
    return d


poller = poller_fixture("test-ssh", services=1)


def test_the_hello_example_on_an_ssh_resource_ends_with_its_messages_and_files_home(
    poller, ssh_resource
):
    hello = TaskDefinition.objects.create(
        name="Hello ssh", program="hello.py", default_resource=ssh_resource
    )
    TaskParameter.objects.create(definition=hello, name="name", default="ssh")
    run = run_to_end(poller, services.run_enqueue(definition=hello), timeout=90)
    assert run.state == Run.State.SUCCEEDED, run.error
    assert run.saga_job_id.startswith("[ssh://")
    assert run.messages.filter(text="Hello, ssh!", progress=50).exists()
    result = run.files.get(name="greeting.txt")
    assert result.absolute_path().read_bytes() == b"Hello, ssh!\n"
    assert result.sha256 == hashlib.sha256(b"Hello, ssh!\n").hexdigest()
    assert b"said hello to ssh" in run.files.get(kind="stdout").absolute_path().read_bytes()
    run.resource.refresh_from_db()
    assert run.resource.last_ok_at is not None


def test_a_failure_over_ssh_carries_the_stderr_tail(poller, ssh_behave):
    run = run_to_end(
        poller, services.run_enqueue(definition=ssh_behave, parameters={"mode": "exit"}), timeout=90
    )
    assert (run.state, run.exit_code) == (Run.State.FAILED, 3)
    assert "about to exit with 3" in run.error


def test_a_remote_run_directory_gets_the_same_checks_links_and_hard_links_are_not_read(
    poller, ssh_resource, tmp_path
):
    """The remote transport of the one run-directory reader (RemoteRunDirs):
    a stderr linked to a secret and a hard-linked output, over ssh."""
    secret = tmp_path / "secret_key"
    secret.write_text("remote-s3cr3t\n")
    hostile = TaskDefinition.objects.create(
        name="Hostile ssh", program="hostile.py", default_resource=ssh_resource
    )
    for name in ("mode", "target"):
        TaskParameter.objects.create(definition=hostile, name=name, default="")
    linked = run_to_end(
        poller,
        services.run_enqueue(
            definition=hostile, parameters={"mode": "stderr_link", "target": str(secret)}
        ),
        timeout=90,
    )
    assert (linked.state, linked.exit_code) == (Run.State.FAILED, 4)
    assert "remote-s3cr3t" not in linked.error
    assert "stderr.txt in the run directory was not read: it is a symbolic link" in linked.error
    hard = run_to_end(
        poller,
        services.run_enqueue(
            definition=hostile, parameters={"mode": "hardlink_output", "target": str(secret)}
        ),
        timeout=90,
    )
    assert hard.state == Run.State.SUCCEEDED, hard.error
    assert list(hard.files.filter(kind="output").values_list("name", flat=True)) == ["fine.txt"]
    assert hard.messages.filter(
        text__startswith="Output file 'key.txt' refused: it has 2 hard links"
    ).exists()


def test_the_host_going_away_mid_run_stops_nothing_else_and_the_run_is_accounted_for(
    poller, ssh_behave, sshd_server, local_resource
):
    run = services.run_enqueue(definition=ssh_behave, parameters={"mode": "nap"})
    tick_until(poller, lambda: Run.objects.get(pk=run.pk).progress >= 11, timeout=90)

    sshd_server.stop()  # the host goes away: server and sessions
    try:
        # The poller goes on: each tick returns, the resource says what is wrong,
        # and a run on another resource starts and ends meanwhile.
        hello = TaskDefinition.objects.create(
            name="Hello here", program="hello.py", default_resource=local_resource
        )
        other = services.run_enqueue(definition=hello)
        start = time.monotonic()
        tick_until(poller, lambda: Run.objects.get(pk=other.pk).is_final, timeout=120)
        assert Run.objects.get(pk=other.pk).state == Run.State.SUCCEEDED
        tick_until(
            poller,
            lambda: ExecutionResource.objects.get(pk=ssh_behave.default_resource_id).last_error,
            timeout=120,
        )
        down_for = time.monotonic() - start
        assert Run.objects.get(pk=run.pk).state == Run.State.RUNNING  # waits, not lost yet
    finally:
        sshd_server.start()
    # The host is back: the run is tracked to its end (the program went on or was
    # killed with its sessions; either way it ends, with a reason if it did not finish).
    run = run_to_end(poller, run, timeout=180)
    assert run.is_final
    if run.state != Run.State.SUCCEEDED:
        assert run.error, "a run that did not succeed says why"
    error = ExecutionResource.objects.get(pk=ssh_behave.default_resource_id).last_error
    assert "sshhost" in error and down_for < 180


def test_a_shell_program_over_ssh_gets_its_inputs_and_brings_patterns_home(poller, ssh_resource):
    import io

    from scheduler.inputs import Upload

    work = TaskDefinition.objects.create(
        name="Work ssh",
        program="cluster_work.sh",
        default_resource=ssh_resource,
        output_patterns=["results/*.csv", "*.log"],
    )
    binary = bytes(range(256))  # not UTF-8: staged over sftp, not the shell
    run = services.run_enqueue(
        definition=work,
        needs={"environment": {"GREETING": "over ssh"}},
        inputs=[
            Upload("blob.bin", io.BytesIO(binary)),
            Upload("t.txt", io.BytesIO(b"text")),
            # sftp's mput globs and takes double quotes: such a name still
            # gets its own bytes, not another input's.
            Upload('t* "q".txt', io.BytesIO(b"starry")),
        ],
    )
    run = run_to_end(poller, run, timeout=90)
    assert run.state == Run.State.SUCCEEDED, run.error
    summary = run.files.get(name="results__summary.csv").absolute_path().read_text(errors="replace")
    assert "greeting=over ssh" in summary
    assert "input blob.bin 256" in summary and "input t.txt 4 text" in summary
    assert 'input t* "q".txt 6 starry' in summary
    assert run.files.get(name="work.log").size == len("work done\n")
    assert not run.files.filter(name__in=["run.json", "cluster_work.sh"]).exists()
    with pytest.raises(Exception, match="MPI: resource 'sshhost' is not a batch system"):
        services.run_enqueue(definition=work, needs={"mpi": True})
