"""Every example task program, through the real poller on fork://localhost."""

from __future__ import annotations

import csv
import hashlib
import io

import pytest
from django.core.management import call_command

from demo.models import Measurement, Summary
from scheduler import services
from scheduler.models import Run, TaskDefinition
from tests.poller_helpers import poller_fixture, run_to_end, tick_until

pytestmark = pytest.mark.django_db(transaction=True)


poller = poller_fixture("test-examples", services=2, scope="module")


@pytest.fixture
def demo(local_resource):
    call_command("load_demo", stdout=io.StringIO())
    Run.objects.all().delete()  # the demo's first runs; each test queues its own
    return {d.name: d for d in TaskDefinition.objects.all()}


def _run(poller, definition, **params) -> Run:
    return run_to_end(poller, services.run_enqueue(definition=definition, parameters=params))


def _stored(run, name) -> bytes:
    return run.files.get(name=name).absolute_path().read_bytes()


def test_hello_world_greets_and_writes_a_file(poller, demo):
    run = _run(poller, demo["Hello world"], name="operators")
    assert run.state == Run.State.SUCCEEDED
    assert run.messages.filter(text="Hello, operators!", progress=50).exists()
    data = _stored(run, "greeting.txt")
    assert data == b"Hello, operators!\n"
    assert run.files.get(name="greeting.txt").sha256 == hashlib.sha256(data).hexdigest()
    assert b"said hello to operators" in _stored(run, "stdout.txt")


def test_the_long_job_reports_progress_step_by_step(poller, demo):
    run = _run(poller, demo["Long job"], steps=4, sleep=0.2)
    assert run.state == Run.State.SUCCEEDED
    assert list(run.messages.exclude(progress=None).values_list("progress", flat=True)) == [
        25,
        50,
        75,
        100,
    ]


def test_the_report_writer_makes_a_csv_and_a_png_chart(poller, demo):
    run = _run(poller, demo["Report writer"], rows=5, title="Test")
    assert run.state == Run.State.SUCCEEDED, run.error
    rows = list(csv.reader(io.StringIO(_stored(run, "report.csv").decode())))
    assert rows[0] == ["label", "value"] and len(rows) == 6
    png = _stored(run, "chart.png")
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert run.files.get(name="chart.png").content_type == "image/png"
    assert run.files.get(name="report.csv").content_type == "text/csv"


def test_the_orm_demo_reads_and_writes_the_sites_models(poller, demo):
    assert Measurement.objects.count() == 5
    run = _run(poller, demo["ORM demo"])
    assert run.state == Run.State.SUCCEEDED, run.error
    summary = {s.name: (s.count, round(s.mean, 2)) for s in Summary.objects.all()}
    assert summary == {"temperature": (3, 21.5), "humidity": (2, 49.75)}


def test_the_shell_wrapper_reports_the_commands_output(poller, demo):
    run = _run(poller, demo["Shell wrapper"], command="echo 'two words' ; echo")
    assert run.state == Run.State.SUCCEEDED, run.error
    # No shell: ';' is an argument to echo, not a second command.
    assert run.messages.filter(text="two words ; echo").exists()
    failing = _run(poller, demo["Shell wrapper"], command="ls /no/such/dir")
    assert failing.state == Run.State.FAILED and "ls exited with status 2" in failing.error


@pytest.mark.parametrize(
    "mode, fragment",
    [
        ("exception", "ValueError: this task fails on purpose"),
        ("exit", "giving up with exit status 2"),
        ("fail", "the input was not acceptable"),
    ],
)
def test_the_failing_example_fails_in_each_way(poller, demo, mode, fragment):
    run = _run(poller, demo["Fails on purpose"], mode=mode)
    assert run.state == Run.State.FAILED
    assert fragment in run.error


def test_the_sleeper_runs_until_cancelled(poller, demo):
    run = services.run_enqueue(definition=demo["Sleep until cancelled"])
    tick_until(
        poller,
        lambda: (
            Run.objects.get(pk=run.pk).messages.filter(text__startswith="Still sleeping").exists()
        ),
    )
    services.run_request_cancel(run=Run.objects.get(pk=run.pk))
    run = run_to_end(poller, run)
    assert run.state == Run.State.CANCELLED
