"""Retention: old final runs go with their messages and files; the newest N of
each definition and every active run stay."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from poller.loop import Poller
from scheduler import retention, services
from scheduler.models import AuditEvent, OutputFile, Run, StatusMessage, TaskDefinition

NOW = timezone.now()
DAY = dt.timedelta(days=1)


def make_run(definition, *, age_days: float, state=Run.State.SUCCEEDED, files=True) -> Run:
    when = NOW - age_days * DAY
    run = Run.objects.create(
        definition=definition,
        resource=definition.default_resource,
        state=state,
        queued_at=when,
        due_at=when,
        finished_at=when + dt.timedelta(minutes=5) if state in Run.FINAL_STATES else None,
    )
    services.run_add_message(run=run, text="hello")
    if files:
        folder = settings.SCHEDULER_FILE_ROOT / str(run.pk)
        folder.mkdir(parents=True)
        (folder / "out.txt").write_bytes(b"x" * 1000)
        OutputFile.objects.create(
            run=run, name="out.txt", size=1000, sha256="0" * 64, stored_path=f"{run.pk}/out.txt"
        )
    return run


@pytest.fixture
def world(definition, local_resource):
    other = TaskDefinition.objects.create(
        name="Other", program="hello.py", default_resource=local_resource
    )
    old = [make_run(definition, age_days=40 + i) for i in range(6)]
    recent = [make_run(definition, age_days=i) for i in range(3)]
    running = make_run(definition, age_days=50, state=Run.State.RUNNING, files=False)
    other_old = [make_run(other, age_days=60 + i) for i in range(4)]
    retried = make_run(definition, age_days=1, files=False)
    Run.objects.filter(pk=retried.pk).update(retry_of=old[0])
    return {
        "old": old,
        "recent": recent,
        "running": running,
        "other_old": other_old,
        "retried": retried,
    }


def test_old_runs_go_with_messages_and_files_keeping_the_newest_of_each(world):
    result = retention.prune(older_than=30 * DAY, keep_last=2, now=NOW)
    gone = world["old"] + world["other_old"][2:]  # "Other": its 2 newest stay, old or not
    assert result.runs == len(gone) and result.files == len(gone)
    assert result.bytes == 1000 * len(gone)
    assert not Run.objects.filter(pk__in=[r.pk for r in gone]).exists()
    assert not StatusMessage.objects.filter(run_id__in=[r.pk for r in gone]).exists()
    for run in gone:
        assert not (settings.SCHEDULER_FILE_ROOT / str(run.pk)).exists()
    kept = world["recent"] + world["other_old"][:2] + [world["running"], world["retried"]]
    assert Run.objects.filter(pk__in=[r.pk for r in kept]).count() == len(kept)
    for run in world["recent"]:
        assert (settings.SCHEDULER_FILE_ROOT / str(run.pk) / "out.txt").exists()
    assert Run.objects.get(pk=world["retried"].pk).retry_of is None
    event = AuditEvent.objects.get(action="prune")
    assert (event.detail["runs"], event.detail["keep_last"]) == (len(gone), 2)


def test_a_dry_run_counts_and_keeps_everything(world):
    before = Run.objects.count()
    result = retention.prune(older_than=30 * DAY, keep_last=2, now=NOW, dry_run=True)
    assert result.runs == 8 and Run.objects.count() == before
    assert all((settings.SCHEDULER_FILE_ROOT / str(r.pk)).exists() for r in world["old"])
    assert not AuditEvent.objects.filter(action="prune").exists()


def test_keep_last_zero_and_a_short_age(world):
    result = retention.prune(older_than=0.5 * DAY, keep_last=0, now=NOW)
    # Everything final and older than half a day: all but the newest recent run.
    assert result.runs == 6 + 2 + 4 + 1
    assert set(Run.objects.values_list("pk", flat=True)) == {
        world["recent"][0].pk,
        world["running"].pk,
    }


def test_the_command_says_what_it_did_and_refuses_bad_input(world):
    out = io.StringIO()
    call_command("prune_runs", "--older-than", "30", "--keep-last", "2", "--dry-run", stdout=out)
    assert out.getvalue().startswith("Would remove 8 runs, 8 messages, 8 files")
    with pytest.raises(CommandError, match="--older-than DAYS"):
        call_command("prune_runs")
    with pytest.raises(CommandError, match="--keep-last must be 0 or more"):
        call_command("prune_runs", "--older-than", "3", "--keep-last", "-1")


def test_the_poller_prunes_once_a_day_when_retention_is_set(world, settings):
    poller = Poller(name="retention-test")
    try:
        settings.SCHEDULER_RETENTION_DAYS = 0
        poller.retention()
        assert Run.objects.filter(pk=world["old"][0].pk).exists()  # off by default
        settings.SCHEDULER_RETENTION_DAYS = 30
        settings.SCHEDULER_RETENTION_KEEP_LAST = 2
        poller.retention()
        assert not Run.objects.filter(pk=world["old"][0].pk).exists()
        assert AuditEvent.objects.filter(action="prune").count() == 1
        # Another poller (or a cron tick) the same day does not prune again.
        make_run(world["old"][1].definition, age_days=45)
        other = Poller(name="retention-test-2")
        other.retention()
        other._threads.shutdown()
        assert AuditEvent.objects.filter(action="prune").count() == 1
    finally:
        poller._threads.shutdown()


def test_a_time_budget_prunes_a_backlog_in_slices_until_done(world, settings, monkeypatch):
    settings.SCHEDULER_RETENTION_DAYS = 30
    settings.SCHEDULER_RETENTION_KEEP_LAST = 0
    monkeypatch.setattr(retention, "BATCH", 4)
    monkeypatch.setattr(retention, "PARAMS", 3)  # statements of 3 ids in a batch of 4+
    first = retention.prune_if_due(max_seconds=0)  # one batch, then stop
    assert not first.complete and "stopped at its time limit" in str(first)
    left = Run.objects.filter(pk__in=[r.pk for r in world["old"] + world["other_old"]]).count()
    assert 0 < left < 10 and first.runs == 10 - left
    assert AuditEvent.objects.filter(action="prune_partial").count() == 1
    second = retention.prune_if_due(max_seconds=0)  # not done today yet: the next slice
    assert second.runs == left and Run.objects.filter(pk=world["running"].pk).exists()
    assert not Run.objects.filter(pk__in=[r.pk for r in world["old"] + world["other_old"]])
    third = retention.prune_if_due(max_seconds=0)  # finds nothing more: a complete prune
    assert third.complete and third.runs == 0
    assert retention.prune_if_due(max_seconds=0) is None  # done for today
