"""Issue 15 on fork://localhost through the real poller: what a run needs
(cores, memory, wall time, environment...) with per-run overrides checked
against the resource; any executable; input files (uploads and earlier runs'
outputs); output patterns without the client; core-hours and cost."""

from __future__ import annotations

import hashlib
import io
import json
import os
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group

from scheduler import api, needs, services
from scheduler.exceptions import InvalidRequest
from scheduler.http.tokens import token_issue
from scheduler.inputs import FromOutput, Upload
from scheduler.models import ApiToken, ExecutionResource, Run, RunInput, TaskDefinition
from tests.conftest import PASSWORD
from tests.poller_helpers import poller_fixture, run_to_end

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("test_programs")]

poller = poller_fixture("test-needs", services=1)


@pytest.fixture
def work(local_resource):
    local_resource.price_per_core_hour = Decimal("2.5")
    local_resource.save()
    return TaskDefinition.objects.create(
        name="Cluster work",
        program="cluster_work.sh",
        default_resource=local_resource,
        environment={"GREETING": "from the definition"},
        output_patterns=["results/*.csv", "*.log"],
    )


def _summary(run: Run) -> str:
    return run.files.get(name="results__summary.csv").absolute_path().read_text()


# ------------------------------------------------------------ checks at queue time
@pytest.mark.parametrize(
    ("override", "words"),
    [
        ({"cores": 65}, "cores: 65 asked for, but resource 'local' has"),
        ({"memory_mb": 0}, "memory_mb: expected memory in MB"),
        ({"memory_mb": 10**9}, "MB asked for, but resource 'local' has"),
        ({"gpus": 1}, "GPUs: resource 'local' is not a batch system"),
        ({"mpi": True}, "MPI: resource 'local' is not a batch system"),
        ({"queue": "long"}, "queue: resource 'local' is not a batch system"),
        ({"environment": {"SCHEDULER_RUN_DIR": "/etc"}}, "SCHEDULER_RUN_DIR is the scheduler's"),
        ({"environment": {"1BAD": "x"}}, "is not a variable name"),
        ({"wall_time_seconds": -5}, "wall_time_seconds: expected wall time"),
        ({"cpus": 2}, "unknown key 'cpus'"),
        ({"output_patterns": ["../secret"]}, "must stay inside the run directory"),
    ],
)
def test_what_a_resource_cannot_give_is_refused_with_the_reason_and_nothing_is_queued(
    work, override, words
):
    with pytest.raises(InvalidRequest) as caught:
        services.run_enqueue(definition=work, needs=override)
    assert words in str(caught.value), str(caught.value)
    assert str(caught.value).startswith("Cannot run 'Cluster work' on 'local': ")
    assert not Run.objects.exists()


def test_a_definition_asking_more_than_its_resource_has_is_a_form_error(work):
    from django.core.exceptions import ValidationError

    work.cores = 10_000
    with pytest.raises(ValidationError) as caught:
        work.full_clean()
    assert "cores: 10000 asked for" in str(caught.value)


def test_the_resolved_needs_merge_definition_override_and_resource(work):
    run = services.run_enqueue(
        definition=work,
        needs={"cores": 2, "environment": {"EXTRA": "1"}, "wall_time_seconds": "30"},
    )
    assert run.needs["cores"] == 2
    assert run.needs["environment"] == {"GREETING": "from the definition", "EXTRA": "1"}
    assert run.timeout_seconds == 30 and run.effective_timeout == 30
    assert run.needs["output_patterns"] == ["results/*.csv", "*.log"]
    assert "2 cores" in needs.summary(run.needs)


# ----------------------------------------------------------- through the poller
def test_a_shell_program_runs_with_its_environment_inputs_and_patterns_and_cost(poller, work):
    data = b"alpha,beta\n1,2\n"
    run = services.run_enqueue(
        definition=work,
        needs={"cores": 2, "environment": {"GREETING": "hello from the run"}},
        inputs=[Upload("table.csv", io.BytesIO(data))],
    )
    stored = RunInput.objects.get(run=run)
    assert stored.sha256 == hashlib.sha256(data).hexdigest() and stored.size == len(data)
    run = run_to_end(poller, run)
    assert run.state == Run.State.SUCCEEDED, (run.error, list(run.messages.values_list("text")))
    summary = _summary(run)
    assert "cores=2" in summary
    assert "greeting=hello from the run" in summary
    assert f"input table.csv {len(data)} alpha,beta" in summary
    assert run.files.get(name="work.log").absolute_path().read_text() == "work done\n"
    # The scheduler's own files and the program are never brought home by "*".
    names = set(run.files.values_list("name", flat=True))
    assert not names & {"run.json", "exit.json", "cluster_work.sh", "scheduler_client.py"}
    seconds = (run.finished_at - run.started_at).total_seconds()
    assert run.core_hours == pytest.approx(2 * seconds / 3600, rel=1e-6)
    assert run.cost == (Decimal(repr(run.core_hours)) * Decimal("2.5")).quantize(
        Decimal("0.000001")
    )
    assert api.get_task_cost(run.pk)["cores"] == 2


def test_a_program_without_the_executable_bit_fails_with_a_readable_error(poller, work):
    work.program = "not_executable.sh"
    work.save()
    run = run_to_end(poller, services.run_enqueue(definition=work))
    assert run.state == Run.State.FAILED
    assert run.exit_code == 126
    assert "cannot start not_executable.sh: it is not executable" in run.error


def test_staging_keeps_the_executable_bit_and_never_writes_through_a_planted_link(
    poller, work, tmp_path
):
    run = services.run_enqueue(definition=work, inputs=[Upload("in.txt", io.BytesIO(b"x"))])
    # A link planted where an input goes (another run's program could do it,
    # with the same account): staging replaces the link, the target is untouched.
    target = tmp_path / "victim.txt"
    target.write_text("untouched")
    run_dir = tmp_path / "runs" / f"run-{run.pk}"
    (run_dir / "inputs").mkdir(parents=True)
    os.symlink(target, run_dir / "inputs" / "in.txt")
    os.symlink(target, run_dir / "cluster_work.sh")
    run = run_to_end(poller, run)
    assert run.state == Run.State.SUCCEEDED, run.error
    assert target.read_text() == "untouched"
    program = run_dir / "cluster_work.sh"
    assert not program.is_symlink() and os.stat(program).st_mode & 0o777 == 0o755
    assert "input in.txt 1 x" in _summary(run)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_staged_files_get_their_modes_whatever_the_umask_with_a_chmod_only_when_needed(
    tmp_path, monkeypatch, umask
):
    """A chmod is a metadata write: staging asks for one only when the umask
    took bits away from the mode a file needs."""
    from poller import rundir

    chmods = []
    real_fchmod = os.fchmod
    monkeypatch.setattr(
        rundir.os, "fchmod", lambda fd, mode: (chmods.append(mode), real_fchmod(fd, mode))
    )
    old = os.umask(umask)
    try:
        rundir._write_new(tmp_path, "program.sh", [b"#!/bin/sh\n"], mode=0o755)
        rundir._write_new(tmp_path, "run.json", [b"{}"], mode=0o644)
    finally:
        os.umask(old)
    assert oct(os.stat(tmp_path / "program.sh").st_mode & 0o7777) == "0o755"
    assert oct(os.stat(tmp_path / "run.json").st_mode & 0o7777) == "0o644"
    assert chmods == ([] if umask == 0o022 else [0o755, 0o644])


def test_a_run_feeds_the_next_and_a_hidden_run_cannot_be_taken_from(poller, work, roles):
    first = run_to_end(poller, services.run_enqueue(definition=work))
    out = first.files.get(name="results__summary.csv")
    second = services.run_enqueue(
        definition=work,
        inputs=[FromOutput(out.pk, "previous.csv")],
        requested_by=roles["operator"],
    )
    second = run_to_end(poller, second)
    assert second.state == Run.State.SUCCEEDED, second.error
    row = second.inputs.get()
    assert (row.source_run_id, row.source_file_id, row.sha256) == (first.pk, out.pk, out.sha256)
    assert f"input previous.csv {out.size} cpus=none" in _summary(second)
    # A user who may not see the first run's definition cannot chain from it.
    work.allowed_groups.add(Group.objects.create(name="lab"))
    with pytest.raises(InvalidRequest, match=r"Unknown output file \d+ \(or one you may not see\)"):
        services.run_enqueue(
            definition=TaskDefinition.objects.create(name="Other", program="cluster_work.sh"),
            inputs=[FromOutput(out.pk)],
            requested_by=roles["operator"],
        )
    assert Run.objects.count() == 2


def test_inputs_over_the_limit_are_refused_and_leave_no_run_nor_bytes(work, settings, tmp_path):
    settings.SCHEDULER_MAX_INPUT_BYTES = 1000
    with pytest.raises(InvalidRequest, match="over the limit of 1,000 bytes"):
        services.run_enqueue(
            definition=work,
            inputs=[
                Upload("a.bin", io.BytesIO(b"a" * 600)),
                Upload("b.bin", io.BytesIO(b"b" * 600)),
            ],
        )
    with pytest.raises(InvalidRequest, match="a name may not contain '/'"):
        services.run_enqueue(definition=work, inputs=[Upload("../x", io.BytesIO(b"a"))])
    assert not Run.objects.exists() and not RunInput.objects.exists()
    files = tmp_path / "files"
    assert not files.exists() or not any(p.is_file() for p in files.rglob("*"))


def test_the_wall_time_override_times_the_run_out(poller, work):
    run = services.run_enqueue(definition=work, needs={"wall_time_seconds": 1})
    Run.objects.filter(pk=run.pk).update(args=["sleep", "30"])
    run = run_to_end(poller, run, timeout=40)
    assert run.state == Run.State.TIMED_OUT
    assert "Timed out after 1 s" in run.error
    assert run.core_hours is not None and run.core_hours > 0


# ------------------------------------------------------------ the ways in
def test_run_now_advanced_overrides_and_uploads(client, roles, work):
    assert client.login(username="operator", password=PASSWORD)
    url = f"/admin/scheduler/taskdefinition/{work.pk}/run/"
    page = client.get(url).content.decode()
    assert 'enctype="multipart/form-data"' in page and "Advanced:" in page
    refused = client.post(url, {"adv_cores": "65"})
    assert refused.status_code == 200
    text = refused.content.decode()
    assert "cores: 65 asked for, but resource &#x27;local&#x27; has" in text
    assert '<details id="run-now-advanced" open>' in text
    assert not Run.objects.exists()
    unknown = client.post(url, {"adv_from_outputs": "run:999/x.csv, nonsense"}).content.decode()
    assert "&#x27;nonsense&#x27;: give run:ID/NAME, e.g. run:12/result.csv." in unknown
    unknown = client.post(url, {"adv_from_outputs": "run:999/x.csv"}).content.decode()
    assert "Unknown output file &#x27;run:999/x.csv&#x27; (or one you may not see)." in unknown
    assert not Run.objects.exists()
    upload = io.BytesIO(b"id\n7\n")
    upload.name = "ids.csv"
    done = client.post(
        url, {"adv_cores": "1", "adv_environment": "GREETING=hi\nMODE=fast", "adv_inputs": upload}
    )
    assert done.status_code == 302, done.content.decode()[:2000]
    run = Run.objects.get()
    assert run.needs["environment"] == {"GREETING": "hi", "MODE": "fast"}
    assert run.inputs.get().name == "ids.csv"
    page = client.get(f"/admin/scheduler/run/{run.pk}/change/").content.decode()
    assert 'id="run-inputs"' in page and "ids.csv" in page
    assert "1 core, files results/*.csv *.log, GREETING=hi, MODE=fast" in page


def test_http_api_needs_inputs_and_upload_limit(client, roles, work, settings):
    token = token_issue(token=ApiToken(user=roles["operator"], name="t"))
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    bad = client.post(
        "/api/v1/runs/",
        json.dumps({"definition": work.name, "needs": {"cores": "2"}}),
        content_type="application/json",
        **auth,
    )
    assert bad.status_code == 400
    assert "cores: expected cores (a whole number, 1 or more), got '2'" in bad.json()["error"]
    settings.SCHEDULER_MAX_INPUT_BYTES = 1000
    big = io.BytesIO(b"z" * 200_000)
    big.name = "big.bin"
    over = client.post(
        "/api/v1/runs/", {"request": json.dumps({"definition": work.name}), "inputs": big}, **auth
    )
    assert over.status_code == 413 and "SCHEDULER_MAX_INPUT_BYTES" in over.json()["error"]
    small = io.BytesIO(b"q" * 10)
    small.name = "small.txt"
    ok = client.post(
        "/api/v1/runs/",
        {
            "request": json.dumps({"definition": work.name, "needs": {"cores": 1}}),
            "inputs": small,
        },
        **auth,
    )
    assert ok.status_code == 201, ok.content
    detail = client.get(ok.json()["url"], **auth).json()
    assert detail["needs"]["cores"] == 1
    assert [(i["name"], i["size"]) for i in detail["inputs"]] == [("small.txt", 10)]
    assert Run.objects.count() == 1


def test_the_cli_queues_with_needs_and_inputs(work, roles, tmp_path):
    from django.core.management import CommandError, call_command

    src = tmp_path / "data.txt"
    src.write_text("cli data")
    out = io.StringIO()
    call_command(
        "runs", "--user", "operator", "queue", work.name, "--cores", "1", "-e", "A=b",
        "-i", str(src), stdout=out,
    )  # fmt: skip
    run = Run.objects.get()
    assert run.needs["environment"]["A"] == "b" and run.inputs.get().name == "data.txt"
    with pytest.raises(CommandError, match="cores: 65 asked for"):
        call_command("runs", "--user", "operator", "queue", work.name, "--cores", "65")
    assert Run.objects.count() == 1


def test_a_resource_lists_the_queues_a_run_may_ask_for(work):
    from django.core.exceptions import ValidationError

    cluster = ExecutionResource(
        name="c", job_service_url="slurm://localhost", queue="debug", queues="long, gpu"
    )
    cluster.full_clean()
    assert cluster.allowed_queues() == ["debug", "long", "gpu"]
    local = ExecutionResource(name="l", job_service_url="fork://localhost", queues="long")
    with pytest.raises(ValidationError, match="Only batch systems have queues"):
        local.full_clean()


def test_a_schedule_overrides_what_its_runs_need_and_a_bad_override_is_its_form_error(work):
    import datetime as dt

    from django.core.exceptions import ValidationError
    from django.utils import timezone

    from scheduler import recurrence as maths
    from scheduler.models import Recurrence
    from scheduler.scheduling import schedule_materialize

    start = timezone.now() - dt.timedelta(minutes=1)
    rec = Recurrence(
        definition=work,
        name="every minute",
        kind="interval",
        interval_every=1,
        interval_unit="minutes",
        timezone="UTC",
        start_at=start,
        needs={"cores": 2, "environment": {"MODE": "scheduled"}},
    )
    rec.full_clean()
    rec.save()
    rec.next_due_at = maths.next_due_on_enable(rec, start)
    rec.save()
    schedule_materialize(now=timezone.now())
    runs = list(Run.objects.filter(recurrence=rec))
    assert runs
    for run in runs:
        assert run.needs["cores"] == 2 and run.needs["environment"]["MODE"] == "scheduled"
    rec.needs = {"cores": 65}
    with pytest.raises(ValidationError) as caught:
        rec.full_clean()
    assert "cores: 65 asked for" in str(caught.value.message_dict["needs"])


@pytest.mark.parametrize(
    ("needs", "expected"),
    [
        # A plain run: one process with all its cores (--ntasks=1 --cpus-per-task=N).
        ({"cores": 8}, {"total_cpu_count": 8, "number_of_processes": 1, "processes_per_host": 1}),
        # Memory is per node; radical.saga divides it by ceil(cores / ppn) nodes.
        (
            {"cores": 8, "memory_mb": 1000},
            {"total_cpu_count": 8, "processes_per_host": 1, "total_physical_memory": 8000},
        ),
        # MPI: a task a core, ppn as given; the launcher starts the ranks (srun).
        (
            {"cores": 64, "mpi": True, "processes_per_host": 32, "memory_mb": 1000},
            {
                "number_of_processes": 64,
                "processes_per_host": 32,
                "total_physical_memory": 2000,
            },
        ),
        ({"cores": 1, "gpus": 2}, {"total_gpu_count": 2}),
    ],
)
def test_the_batch_job_description_has_the_shape_radical_saga_reads(needs, expected):
    from poller.saga_executor import JobSpec, _batch_shape, radical_saga

    jd = radical_saga().job.Description()
    _batch_shape(
        jd, JobSpec(run_id=1, executable="x", arguments=[], working_directory="/w", **needs)
    )
    for key, value in expected.items():
        assert getattr(jd, key) == value, key
    # Never SAGA's spmd_variation: it would start the launcher once per rank.
    assert not jd.attribute_exists("spmd_variation") or not jd.spmd_variation


def test_cancel_ends_a_shell_program_and_its_sleep(poller, work):
    import time

    import psutil

    from tests.poller_helpers import tick_until

    run = services.run_enqueue(definition=work)
    Run.objects.filter(pk=run.pk).update(args=["sleep", "300"])
    tick_until(poller, lambda: Run.objects.get(pk=run.pk).state == Run.State.RUNNING)
    run.refresh_from_db()

    def in_run_dir():
        found = []
        for proc in psutil.process_iter(["cwd"]):
            if proc.info.get("cwd") == run.run_directory and proc.status() != "zombie":
                found.append(proc)
        return found

    tick_until(poller, lambda: any("sleep" in p.name() for p in in_run_dir()))
    started = time.monotonic()
    services.run_request_cancel(run=run)
    run = run_to_end(poller, run, timeout=30)
    assert run.state == Run.State.CANCELLED and time.monotonic() - started < 20
    deadline = time.monotonic() + 10
    while in_run_dir() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not in_run_dir()
