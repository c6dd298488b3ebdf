"""Run directories are hostile input: hostile task programs under the real poller.

Each test runs tests/programs/hostile.py in one of its modes on fork://localhost
through a real Poller and a real SAGA job service, as a task author could, and
checks that no secret is shown, no run forged and no message lost without a
word. The run-as tests (two accounts, made with useradd) are at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Group
from django.urls import reverse

from poller import rundir as rundirs
from scheduler import services
from scheduler.http.tokens import token_issue
from scheduler.models import ApiToken, OutputFile, Run, TaskDefinition, TaskParameter
from tests.helpers import require_or_skip
from tests.poller_helpers import poller_fixture, run_to_end, tick_until

PROGRAMS = Path(__file__).parent / "programs"
SECRET = "s3cr3t-site-key-never-to-be-shown"

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("test_programs")]


poller = poller_fixture("test-hostile", services=2, scope="module")


@pytest.fixture
def secret(tmp_path) -> Path:
    """Stands for the site's var/secret_key (and /etc/shadow): on the same
    filesystem as the run root, so a hard link to it can be made."""
    path = tmp_path / "var" / "secret_key"
    path.parent.mkdir()
    path.write_text(SECRET + "\n")
    return path


def _definition(name: str, local_resource, *, group: Group | None = None) -> TaskDefinition:
    d = TaskDefinition.objects.create(
        name=name, program="hostile.py", default_resource=local_resource
    )
    for param in ("mode", "target", "other", "count", "pad", "names", "secret"):
        TaskParameter.objects.create(definition=d, name=param, default="")
    if group is not None:
        d.allowed_groups.add(group)
    return d


@pytest.fixture
def hostile(local_resource) -> TaskDefinition:
    return _definition("Hostile", local_resource)


def _queue(definition, **params) -> Run:
    return services.run_enqueue(definition=definition, parameters=params)


def _started(poller, run: Run) -> Run:
    tick_until(poller, lambda: Run.objects.get(pk=run.pk).state == Run.State.RUNNING, timeout=30)
    run.refresh_from_db()
    return run


def _texts(run: Run) -> list[str]:
    return list(run.messages.order_by("id").values_list("text", flat=True))


def _api_get(client, path: str, user) -> dict:
    key = token_issue(token=ApiToken(user=user, name="t"))
    response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200, response.content[:300]
    return response.json()


# -------------------------------------------------------------- 1 stderr link
def test_a_stderr_linked_to_a_secret_shows_a_warning_never_the_secret(
    poller, hostile, secret, roles, client
):
    run = run_to_end(poller, _queue(hostile, mode="stderr_link", target=str(secret)))
    assert (run.state, run.exit_code) == (Run.State.FAILED, 4)
    assert SECRET not in run.error
    assert "stderr.txt in the run directory was not read: it is a symbolic link" in run.error
    texts = _texts(run)
    assert not any(SECRET in t for t in texts)
    assert any(t.startswith("stderr.txt in the run directory was not read") for t in texts)
    # Not brought home either, and nowhere a viewer looks.
    assert not run.files.filter(kind=OutputFile.Kind.STDERR).exists()
    client.force_login(roles["viewer"])
    status = client.get(reverse("scheduler:run-status", args=[run.pk])).json()
    assert SECRET not in json.dumps(status)
    assert SECRET not in json.dumps(_api_get(client, f"/api/v1/runs/{run.pk}/", roles["viewer"]))
    assert SECRET not in client.get(reverse("admin:index")).content.decode()


# ------------------------------------------------------------- 2 hard link
def test_a_hard_link_to_a_secret_registered_as_an_output_is_refused(poller, hostile, secret):
    run = run_to_end(poller, _queue(hostile, mode="hardlink_output", target=str(secret)))
    assert run.state == Run.State.SUCCEEDED, run.error
    assert list(run.files.filter(kind="output").values_list("name", flat=True)) == ["fine.txt"]
    assert any("Output file 'key.txt' refused: it has 2 hard links" in t for t in _texts(run)), (
        _texts(run)
    )
    stored = Path(django_settings.SCHEDULER_FILE_ROOT)
    assert not any(
        SECRET in p.read_text(errors="replace") for p in stored.rglob("*") if p.is_file()
    )


# ------------------------------------------- 3 links into another run's directory
def test_events_and_stdout_linked_into_another_run_read_nothing_of_it(
    poller, hostile, local_resource, roles, client
):
    private = Group.objects.create(name="private-team")
    victim_definition = _definition("Victim", local_resource, group=private)
    victim = _started(poller, _queue(victim_definition, mode="wait"))
    tick_until(poller, lambda: "victim private message" in _texts(victim))
    victim_dir = Path(victim.run_directory)
    tick_until(poller, lambda: b"victim private stdout" in (victim_dir / "stdout.txt").read_bytes())

    thief = _started(poller, _queue(hostile, mode="steal_events", other=str(victim_dir)))
    thief_dir = Path(thief.run_directory)
    tick_until(poller, lambda: (thief_dir / "linked").exists())
    for _ in range(5):
        poller.tick()
    # While it runs, its live page reads stdout from the run directory.
    client.force_login(roles["viewer"])  # outside the victim's group
    assert client.get(reverse("scheduler:run-status", args=[victim.pk])).status_code == 404
    status = client.get(reverse("scheduler:run-status", args=[thief.pk])).json()
    assert "victim private stdout" not in status["stdout_tail"]
    assert "stdout.txt is not shown: it is a symbolic link" in status["stdout_tail"]

    (thief_dir / "release").touch()
    (victim_dir / "release").touch()
    thief = run_to_end(poller, thief)
    victim = run_to_end(poller, victim)
    texts = _texts(thief)
    assert not any("victim private" in t for t in texts), texts
    assert (
        "events.jsonl in the run directory was not read: it is a symbolic link; "
        "links are never followed." in texts
    )
    assert not thief.files.filter(kind="stdout").exists()
    # The victim's own story is whole and its own.
    assert (victim.state, victim.exit_code) == (Run.State.FAILED, 3)
    assert _texts(victim).count("victim private message") == 1


# ------------------------------------------------------- 4 forged exit records
def test_a_success_record_written_into_a_running_siblings_directory_is_not_believed(
    poller, hostile, local_resource
):
    victim = _started(poller, _queue(hostile, mode="wait"))
    victim_dir = Path(victim.run_directory)
    forger = run_to_end(poller, _queue(hostile, mode="forge_exit", other=str(victim_dir)))
    assert forger.state == Run.State.SUCCEEDED, forger.error
    assert json.loads((victim_dir / "exit.json").read_text())["started_at"].startswith("2001")
    for _ in range(20):
        poller.tick()
        time.sleep(0.05)
    victim.refresh_from_db()
    assert victim.state == Run.State.RUNNING  # its program goes on
    (victim_dir / "release").touch()
    victim = run_to_end(poller, victim)
    # The launcher's own record, written over the forged one when it ended.
    assert (victim.state, victim.exit_code) == (Run.State.FAILED, 3)
    assert victim.started_at.year > 2001 and victim.finished_at.year > 2001


def test_exit_record_times_outside_the_runs_window_are_not_believed(poller, hostile):
    run = run_to_end(poller, _queue(hostile, mode="forge_own_times"))
    assert run.state == Run.State.SUCCEEDED, run.error
    assert run.submitted_at is not None
    assert run.started_at.year > 2001 and run.finished_at.year < 2099
    assert run.submitted_at <= run.finished_at
    texts = _texts(run)
    assert any("started_at '2001-01-01T00:00:00+00:00' lies outside" in t for t in texts)
    assert any("finished_at '2099-01-01T00:00:01+00:00' lies outside" in t for t in texts)


# ------------------------------------------------------------ 5 a message flood
def test_a_flood_of_messages_keeps_the_newest_and_says_how_many_were_dropped(
    poller, hostile, settings
):
    """25,001 messages of ~170 bytes (4.3 MB, past the 4 MiB the last read
    used to stop at): the newest 1,000 are kept, the last one among them."""
    settings.SCHEDULER_MAX_MESSAGES = 1000
    run = run_to_end(poller, _queue(hostile, mode="flood", count="25000"), timeout=120)
    assert run.state == Run.State.SUCCEEDED, run.error
    events = Path(run.run_directory) / "events.jsonl"
    assert events.stat().st_size > 4 * 1024 * 1024
    task_messages = run.messages.filter(seq__isnull=False)
    assert task_messages.count() == 1000
    assert task_messages.order_by("-seq").first().text == "the last"
    assert run.messages_dropped == 24_001
    assert run.events_offset == events.stat().st_size
    assert any(
        "24,001 older status messages were dropped: a run keeps its newest 1,000" in t
        for t in _texts(run)
    )


def test_one_pass_reads_a_bounded_piece_of_a_flooded_event_stream(poller, hostile, tmp_path):
    """Reading one run's flood never holds up the tick: a piece a run a pass."""
    run_dir = Path(django_settings.SCHEDULER_RUN_ROOT) / "run-flood"
    run_dir.mkdir(parents=True)
    line = json.dumps({"v": 1, "seq": 0, "type": "status", "message": "x" * 200})
    with open(run_dir / "events.jsonl", "w") as fh:
        for seq in range(1, 20001):
            fh.write(line.replace('"seq": 0', f'"seq": {seq}') + "\n")
    size = (run_dir / "events.jsonl").stat().st_size
    run = _queue(hostile)
    Run.objects.filter(pk=run.pk).update(run_directory=str(run_dir))
    run.refresh_from_db()
    files = rundirs.for_resource(run.resource)
    found, caught_up = poller.ingest_piece(run, files)
    assert found and not caught_up
    assert 0 < run.events_offset <= rundirs.EVENTS_READ_BYTES < size
    first_piece = run.messages.count()
    assert 0 < first_piece < 20000
    poller.ingest_events(run, files)  # the last read of an ended run: to the end
    assert run.events_offset == size
    assert run.messages.filter(seq__isnull=False).count() == min(
        20000, django_settings.SCHEDULER_MAX_MESSAGES
    )


# ------------------------------------------------------------ 6 a file flood
def test_files_over_the_per_run_limit_are_refused_with_one_message(poller, hostile, settings):
    settings.SCHEDULER_MAX_FILES = 50
    run = run_to_end(poller, _queue(hostile, mode="many_files", count="80"), timeout=60)
    assert run.state == Run.State.SUCCEEDED, run.error
    names = list(run.files.filter(kind="output").order_by("name").values_list("name", flat=True))
    assert names == [f"f{i:04d}.txt" for i in range(50)]
    refusals = [t for t in _texts(run) if "output files refused" in t]
    assert refusals == [
        "30 output files refused: a run brings home at most 50 (SCHEDULER_MAX_FILES), "
        "the first registered; the first refused was 'f0050.txt'."
    ]


# -------------------------------------------------------------- 8 bad names
BAD_NAMES = ["two\nlines.txt", "carriage\r.txt", "tab\there.txt", "gnp\u202etxt.exe", "esc\x1b.txt"]


def test_names_with_controls_or_bidi_overrides_are_refused_with_the_reason(poller, hostile):
    run = run_to_end(poller, _queue(hostile, mode="bad_names", names=json.dumps(BAD_NAMES)))
    assert run.state == Run.State.SUCCEEDED, run.error
    assert list(run.files.filter(kind="output").values_list("name", flat=True)) == ["plain.txt"]
    texts = "\n".join(_texts(run))
    assert "'two\\nlines.txt': a name may not contain the control character U+000A" in texts
    assert "'carriage\\r.txt': a name may not contain the control character U+000D" in texts
    assert "'tab\\there.txt': a name may not contain the control character U+0009" in texts
    assert "a name may not contain the bidirectional control U+202E" in texts
    assert "'esc\\x1b.txt': a name may not contain the control character U+001B" in texts


def test_the_client_library_refuses_the_same_names_before_anything_is_written():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "scheduler_client_names", django_settings.BASE_DIR / "task_programs" / "scheduler_client.py"
    )
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    for name in BAD_NAMES:
        with pytest.raises(ValueError, match="control characters"):
            client.check_name(name)
    client.check_name("résumé 2026.txt")  # letters of any script are fine


def test_the_run_directory_names_are_the_client_librarys():
    """One place names the files of a run directory; the client writes the same."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "scheduler_client_files", django_settings.BASE_DIR / "task_programs" / "scheduler_client.py"
    )
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    for constant, name in rundirs.RUN_DIR_NAMES.items():
        assert getattr(client, constant) == name, constant


# ------------------------------------------------------ run as other accounts
RUN_ACCOUNTS = ("sched-run-a", "sched-run-b")


@pytest.fixture(scope="module")
def run_accounts():
    """Two accounts for programs, made with useradd (as CI runs, as root)."""
    import pwd
    import shutil
    import subprocess

    if os.geteuid() != 0:
        require_or_skip("creating the run accounts (useradd) needs root; CI runs as root")
    if not (shutil.which("useradd") and shutil.which("runuser")):
        require_or_skip("useradd and runuser (util-linux, passwd) are not installed")
    for name in RUN_ACCOUNTS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                check=True,
            )
    return {name: pwd.getpwnam(name) for name in RUN_ACCOUNTS}


@pytest.fixture
def shared_base():
    """A place both accounts can pass through (pytest's own tmp folders are root's, 0700)."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="scheduler-run-as-", dir="/tmp"))
    base.chmod(0o711)
    (base / "runs").mkdir(mode=0o711)
    (base / "runs").chmod(0o711)
    var = base / "var"  # as docs/deploy.md sets up the site's var/: the site's account only
    var.mkdir(mode=0o700)
    (var / "secret_key").write_text(SECRET + "\n")
    (var / "secret_key").chmod(0o600)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _python_for_accounts() -> str:
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(candidate, os.X_OK):
            return candidate
    require_or_skip("no system python3 that other accounts can run (/usr/bin/python3)")
    return ""


def test_a_program_run_as_its_account_cannot_read_the_site_secret_nor_touch_another_run(
    poller, run_accounts, shared_base
):
    from scheduler.models import ExecutionResource

    python = _python_for_accounts()
    resources = {}
    for name in RUN_ACCOUNTS:
        resource = ExecutionResource(
            name=name,
            job_service_url="fork://localhost",
            working_root=str(shared_base / "runs"),
            python=python,
            run_as=name,
        )
        resource.full_clean()
        resource.save()
        resources[name] = _definition(f"As {name}", resource)
    a, b = RUN_ACCOUNTS

    victim = _started(poller, _queue(resources[b], mode="wait"))
    victim_dir = Path(victim.run_directory)
    st = victim_dir.stat()
    assert (st.st_uid, oct(st.st_mode & 0o777)) == (run_accounts[b].pw_uid, "0o700")
    tick_until(poller, lambda: "victim private message" in _texts(victim))

    # The run root's read-only copy of the victim's program (poller.rundir.SHARED_DIR).
    program = (victim_dir / "hostile.py").read_bytes()
    copy = shared_base / "runs" / ".shared" / f"{hashlib.sha256(program).hexdigest()}-444"
    assert copy.exists() and copy.stat().st_ino == (victim_dir / "hostile.py").stat().st_ino
    probe = run_to_end(
        poller,
        _queue(
            resources[a],
            mode="probe",
            secret=str(shared_base / "var" / "secret_key"),
            other=str(victim_dir),
            target=str(copy),
        ),
    )
    assert probe.state == Run.State.SUCCEEDED, probe.error
    texts = _texts(probe)
    assert "read secret: PermissionError" in texts, texts
    assert "list other: PermissionError" in texts
    assert "write other: PermissionError" in texts
    assert "write client: PermissionError" in texts
    assert "list shared: PermissionError" in texts
    assert "read shared: PermissionError" in texts
    mine = probe.files.get(name="mine.txt")
    assert mine.absolute_path().read_text() == f"uid {run_accounts[a].pw_uid}\n"
    assert not (victim_dir / "intruder.txt").exists()

    (victim_dir / "release").touch()
    victim = run_to_end(poller, victim)
    # Files of the run's own account are read as usual.
    assert (victim.state, victim.exit_code) == (Run.State.FAILED, 3)
    assert victim.files.get(kind="stdout").absolute_path().read_text() == "victim private stdout\n"


def test_a_file_of_another_account_in_a_run_directory_is_refused(poller, run_accounts, shared_base):
    """The poller (root here) wrote a file where the run's account should have:
    not read, since the run account's files are the only ones a run may hand in."""
    from scheduler.models import ExecutionResource

    a = RUN_ACCOUNTS[0]
    resource = ExecutionResource.objects.create(
        name="owner-check",
        job_service_url="fork://localhost",
        working_root=str(shared_base / "runs"),
        run_as=a,
    )
    files = rundirs.for_resource(resource)
    run_dir = files.run_dir(999)
    files.stage(run_dir, {"run.json": b"{}"})
    Path(run_dir, "exit.json").write_text('{"exit_code": 0}')
    with pytest.raises(rundirs.RefusedFile, match="belongs to uid 0, not to the account"):
        files.read_json(run_dir, "exit.json")
    os.chown(Path(run_dir, "exit.json"), run_accounts[a].pw_uid, -1)
    assert files.read_json(run_dir, "exit.json") == {"exit_code": 0}


def test_run_as_is_checked_when_a_resource_is_saved(db):
    from django.core.exceptions import ValidationError

    from scheduler.models import ExecutionResource

    for url, account, message in (
        ("fork://localhost", "no-such-account-here", "There is no account"),
        ("fork://localhost", "Robert'); DROP", "Give an account name"),
        ("ssh://127.0.0.1", "root", "Only local resources run as another account"),
    ):
        resource = ExecutionResource(name="x", job_service_url=url, run_as=account)
        with pytest.raises(ValidationError, match=message):
            resource.full_clean()


def test_a_run_as_resource_needs_a_run_root_outside_the_sites_var(db, run_accounts, settings):
    from django.core.exceptions import ValidationError

    from scheduler.models import ExecutionResource

    settings.SCHEDULER_RUN_ROOT = settings.VAR_DIR / "runs"
    resource = ExecutionResource(name="x", job_service_url="fork://localhost", run_as="sched-run-a")
    with pytest.raises(ValidationError, match="need a working root outside the site's"):
        resource.full_clean()
    resource.working_root = "/srv/scheduler-runs"
    resource.full_clean()
