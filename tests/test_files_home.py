"""Files brought home by the real poller: names, links, limits, vanished files, the stream."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from scheduler import services
from scheduler.models import Run, TaskDefinition, TaskParameter
from tests.poller_helpers import poller_fixture, run_to_end, tick_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("test_programs")]


poller = poller_fixture("test-files", services=1, scope="module")


@pytest.fixture
def cases(local_resource):
    d = TaskDefinition.objects.create(name="Files", program="files_cases.py")
    TaskParameter.objects.create(definition=d, name="mode", required=True)
    return d


def _run(poller, cases, mode) -> Run:
    return run_to_end(poller, services.run_enqueue(definition=cases, parameters={"mode": mode}))


def _warnings(run) -> str:
    return "\n".join(run.messages.filter(level="warning").values_list("text", flat=True))


def test_bad_names_are_refused_with_a_message_each(poller, cases):
    run = _run(poller, cases, "names")
    assert run.state == Run.State.SUCCEEDED
    assert list(run.files.filter(kind="output").values_list("name", flat=True)) == ["ok.txt"]
    text = _warnings(run)
    for fragment in [
        "may not contain '/'",
        "may not contain '..'",
        "may not start with a dot",
        "may not contain NUL",
        "limited to 200 characters",
    ]:
        assert fragment in text, fragment
    assert "x..y" in text  # '..' anywhere is refused, not only as a path step


def test_links_are_never_followed(poller, cases):
    run = _run(poller, cases, "link")
    names = set(run.files.filter(kind="output").values_list("name", flat=True))
    assert names == {"real.txt"}
    text = _warnings(run)
    assert "'report.txt' refused: it is a symbolic link" in text
    assert "'passwd.txt' refused: it is a symbolic link" in text
    store = Path(django_settings.SCHEDULER_FILE_ROOT)
    assert not any("root:" in p.read_text(errors="ignore") for p in store.rglob("*") if p.is_file())


def test_per_file_and_per_run_size_limits_say_what_was_not_brought_home(poller, cases, settings):
    settings.SCHEDULER_MAX_FILE_BYTES = 2000
    settings.SCHEDULER_MAX_RUN_BYTES = 1000  # stdout and stderr are empty
    run = _run(poller, cases, "size")
    outputs = dict(run.files.filter(kind="output").values_list("name", "size"))
    assert outputs == {"small1.bin": 600}
    text = _warnings(run)
    assert "'big.bin' is 3000 bytes, over the per-file limit of 2000 bytes" in text
    assert "'small2.bin' (600 bytes) would pass the per-run limit of 1000 bytes" in text


def test_a_registered_file_that_is_not_there_is_reported_not_fatal(poller, cases):
    run = _run(poller, cases, "vanish")
    assert run.state == Run.State.SUCCEEDED
    kept = run.files.get(name="kept.txt")
    assert kept.sha256 == hashlib.sha256(b"kept").hexdigest()
    assert "'gone.txt' was registered but is not there" in _warnings(run)


def test_a_half_line_waits_and_a_malformed_line_becomes_a_warning(poller, cases):
    run = services.run_enqueue(definition=cases, parameters={"mode": "stream"})
    tick_until(poller, lambda: Run.objects.get(pk=run.pk).messages.filter(text="before").exists())
    tick_until(poller, lambda: "Malformed event" in _warnings(Run.objects.get(pk=run.pk)))
    run.refresh_from_db()
    assert not run.messages.filter(text="split line").exists()  # the half line is not applied
    run = run_to_end(poller, run)
    assert run.messages.filter(text="split line", progress=40).count() == 1
    assert "not JSON" in _warnings(run)
    assert run.state == Run.State.SUCCEEDED
