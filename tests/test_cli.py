"""manage.py runs: queue, list, show, follow, cancel, fetch - through the Python API."""

from __future__ import annotations

import hashlib
import io
import threading
import time

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import close_old_connections
from django.utils.timezone import now as time_now

from scheduler import services
from scheduler.models import AuditEvent, OutputFile, Run


def runs(*args) -> str:
    out = io.StringIO()
    call_command("runs", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def test_queue_checks_parameters_by_type_and_records_the_request(definition):
    out = runs("queue", "Hello", "-p", "count=3", "-p", "loud=yes", "-p", "greeting=a=b")
    run = Run.objects.get()
    assert out.strip() == f"Queued run {run.pk} of 'Hello'."
    assert (run.parameters["count"], run.parameters["loud"], run.parameters["greeting"]) == (
        3,
        True,
        "a=b",
    )
    assert AuditEvent.objects.get(action="queue").detail["via"] == "cli"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["queue", "Nope"], "Unknown task definition 'Nope'"),
        (["queue", "Hello", "-p", "count=many"], "count"),
        (["queue", "Hello", "-p", "novalue"], "-p takes NAME=VALUE"),
        (["queue", "Hello", "--resource", "mars"], "Unknown execution resource"),
        (["queue", "Hello", "--at", "2030-01-01T10:00"], "with a zone"),
        (["--user", "ghost", "queue", "Hello"], "No user 'ghost'"),
        (["show", "999"], "Unknown run 999"),
        (["list", "--limit", "0"], "--limit must be 1-1000"),
    ],
)
def test_bad_input_is_one_readable_line(definition, args, says):
    with pytest.raises(CommandError, match=None) as info:
        runs(*args)
    assert says in str(info.value)
    assert not Run.objects.exists()


def test_a_user_acts_with_their_role_and_groups(definition, roles):
    with pytest.raises(CommandError, match="You may not queue runs"):
        runs("--user", "viewer", "queue", "Hello")
    runs("--user", "operator", "queue", "Hello")
    run = Run.objects.get()
    assert run.requested_by == roles["operator"]
    from django.contrib.auth.models import Group

    definition.allowed_groups.add(Group.objects.create(name="lab"))
    with pytest.raises(CommandError, match="Unknown run"):
        runs("--user", "operator", "show", str(run.pk))
    assert "No runs." in runs("--user", "operator", "list")


def test_list_and_show(definition):
    a = services.run_enqueue(definition=definition)
    b = services.run_enqueue(definition=definition)
    Run.objects.filter(pk=a.pk).update(
        state=Run.State.FAILED,
        error="Traceback\nValueError: no input",
        exit_code=1,
        finished_at=time_now(),
    )
    services.run_add_message(run=b, text="halfway there", progress=50)
    listing = runs("list")
    lines = listing.splitlines()[1:]
    assert [int(line.split()[0]) for line in lines] == [b.pk, a.pk]  # newest first
    assert "Hello - ValueError: no input" in listing  # the error's last line
    failed = runs("list", "--state", "FAILED")
    assert [int(line.split()[0]) for line in failed.splitlines()[1:]] == [a.pk]
    shown = runs("show", str(b.pk))
    assert "QUEUED (50%)" in shown and "halfway there" in shown and "[ 50%]" in shown
    shown = runs("show", str(a.pk))
    assert "exit code 1" in shown and "ValueError: no input" in shown


def test_cancel_says_what_happened(definition):
    run = services.run_enqueue(definition=definition)
    assert "cancelled" in runs("cancel", str(run.pk))
    assert "already ended" in runs("cancel", str(run.pk))
    run.refresh_from_db()
    assert run.state == Run.State.CANCELLED


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("ending", ["SUCCEEDED", "FAILED"])
def test_follow_prints_messages_as_they_come_until_the_end(definition, ending):
    run = services.run_enqueue(definition=definition)

    def the_task():
        try:
            time.sleep(0.5)
            services.run_add_message(run=run, text="step one", progress=30)
            time.sleep(0.5)
            services.run_add_message(run=run, text="step two", progress=80)
            Run.objects.filter(pk=run.pk).update(state=Run.State.RUNNING)
            run.refresh_from_db()
            services.run_finish(
                run=run,
                state=ending,
                exit_code=0 if ending == "SUCCEEDED" else 2,
                error="" if ending == "SUCCEEDED" else "it broke",
            )
        finally:
            close_old_connections()

    worker = threading.Thread(target=the_task)
    worker.start()
    out = io.StringIO()
    try:
        call_command(
            "runs", "follow", str(run.pk), "--interval", "0.1", "--timeout", "30", stdout=out
        )
        failed = None
    except CommandError as exc:
        failed = str(exc)
    worker.join()
    text = out.getvalue()
    assert text.index("step one") < text.index("step two") < text.index(f"ended {ending}")
    assert text.count("step one") == 1
    if ending == "SUCCEEDED":
        assert failed is None
    else:
        assert failed == "it broke"


def test_follow_gives_up_after_its_timeout(definition):
    run = services.run_enqueue(definition=definition)
    with pytest.raises(CommandError, match="still QUEUED after 0.3 s"):
        runs("follow", str(run.pk), "--interval", "0.1", "--timeout", "0.3")


def test_fetch_copies_files_and_checks_their_hashes(definition, tmp_path):
    run = services.run_enqueue(definition=definition)
    store = settings.SCHEDULER_FILE_ROOT / str(run.pk)
    store.mkdir(parents=True)
    for name, kind, data in [("out.csv", "output", b"a,b\n1,2\n"), ("stdout", "stdout", b"hi\n")]:
        (store / name).write_bytes(data)
        OutputFile.objects.create(
            run=run,
            name=name,
            kind=kind,
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            stored_path=f"{run.pk}/{name}",
        )
    out = runs("fetch", str(run.pk), "--dest", str(tmp_path / "got"))
    folder = tmp_path / "got" / f"run-{run.pk}"
    assert (folder / "out.csv").read_bytes() == b"a,b\n1,2\n"
    assert (folder / "stdout.txt").read_bytes() == b"hi\n"
    assert out.count("sha256 ok") == 2
    (store / "out.csv").write_bytes(b"tampered\n")
    with pytest.raises(CommandError, match="did not arrive intact"):
        runs("fetch", str(run.pk), "--dest", str(tmp_path / "again"))


@pytest.mark.django_db(transaction=True)
def test_a_reader_that_stops_early_gets_no_traceback(definition):
    """`manage.py runs show 8 | head -2`: the reader closes the pipe after two lines."""
    import subprocess
    import sys

    from tests.poller_process import ROOT, poller_env

    run = services.run_enqueue(definition=definition)
    services.run_add_message(run=run, text="x" * 600, level="info")
    run.messages.bulk_create(
        [run.messages.model(run=run, text=f"line {i} " + "y" * 600) for i in range(199)]
    )
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runs", "show", str(run.pk)],
        cwd=ROOT,
        env=poller_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first = [proc.stdout.readline(), proc.stdout.readline()]
    proc.stdout.close()  # as head does after its lines: more than a pipe's 64 KiB was to come
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert first[0].startswith(f"Run {run.pk}".encode()), first
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert err == ""
