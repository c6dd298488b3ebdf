"""The dashboard's timeline and the per-definition statistics: SVG drawn on the
server, bounded queries, nothing of a restricted definition shown to outsiders."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from scheduler import charts, services
from scheduler.models import Recurrence, Run, TaskDefinition
from scheduler.stats import definition_stats, percentile

UTC = dt.UTC
T = dt.datetime(2026, 5, 4, tzinfo=UTC)


def test_the_timeline_places_bars_and_marks_by_time_and_escapes_names():
    svg = charts.timeline(
        [
            charts.Bar(
                "<script>alert(1)</script>",
                T + dt.timedelta(hours=24),
                T + dt.timedelta(hours=30),
                "FAILED",
                "run 1",
                "/admin/x/",
            )
        ],
        [charts.Mark("nightly & co", T + dt.timedelta(hours=36), "next")],
        start=T,
        end=T + dt.timedelta(hours=48),
        now=T + dt.timedelta(hours=24),
        tz=UTC,
        width=960,
        label_width=160,
    )
    # plot width 960 - 160 - 10 = 790: hour 24 of 48 is x = 160 + 395.
    assert '<rect x="555.0"' in svg and 'width="98.8"' in svg  # 6 h of 48
    assert '<circle cx="752.5"' in svg  # hour 36
    assert '<line x1="555.0" y1="14" x2="555.0"' in svg  # now
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "nightly &amp; co" in svg
    assert 'fill="#eb5757"' in svg  # failed is red
    assert svg.count(">00:00<") == 3 and ">12:00<" in svg  # a tick every 3 h, labelled


def test_bars_per_day_and_durations_draw_what_they_are_given():
    days = [(dt.date(2026, 5, d), rate, 4) for d, rate in ((1, 1.0), (2, None), (3, 0.5))]
    svg = charts.bars_per_day(days, width=340, height=160)  # 300 px of plot: 100 per day
    bars = re.findall(r'<rect x="([\d.]+)" y="([\d.]+)" width="[\d.]+" height="([\d.]+)"', svg)
    assert [float(x) for x, _, _ in bars] == [35.0, 235.0]  # the empty day has no bar
    assert [float(h) for _, _, h in bars] == [134.0, 67.0]
    svg = charts.durations(
        [(T, 10.0, "SUCCEEDED"), (T + dt.timedelta(hours=1), 30.0, "FAILED")],
        start=T,
        end=T + dt.timedelta(hours=1),
        lines={"median": 20.0},
    )
    assert svg.count("<circle") == 2 and "median 20 s" in svg


def test_percentile_interpolates():
    assert percentile([], 95) is None
    assert percentile([5.0], 95) == 5.0
    assert percentile([float(v) for v in range(1, 101)], 95) == pytest.approx(95.05)


@pytest.fixture
def busy(definition, local_resource):
    now = timezone.now()
    lab = Group.objects.create(name="lab")
    secret = TaskDefinition.objects.create(
        name="Secret payroll", program="hello.py", default_resource=local_resource
    )
    secret.allowed_groups.add(lab)
    made = {}
    for d, tag in ((definition, "open"), (secret, "secret")):
        run = services.run_enqueue(definition=d)
        Run.objects.filter(pk=run.pk).update(
            state=Run.State.RUNNING, started_at=now - dt.timedelta(hours=2), progress=40
        )
        done = services.run_enqueue(definition=d)
        Run.objects.filter(pk=done.pk).update(
            state=Run.State.FAILED,
            started_at=now - dt.timedelta(hours=5),
            finished_at=now - dt.timedelta(hours=4),
            error="ValueError: bad",
        )
        Recurrence.objects.create(
            definition=d,
            name=f"{tag} hourly",
            kind="interval",
            interval_every=1,
            interval_unit="hours",
            timezone="UTC",
            start_at=now - dt.timedelta(days=1),
            next_due_at=now + dt.timedelta(minutes=30),
        )
        made[tag] = (run, done)
    return made


def test_the_dashboard_timeline_shows_runs_and_upcoming_occurrences(
    client, roles, busy, django_assert_max_num_queries
):
    client.force_login(roles["operator"])
    with django_assert_max_num_queries(30):
        page = client.get(reverse("admin:index")).content.decode()
    begin = page.index('<svg class="timeline"')
    svg = page[begin : page.index("</svg>", begin)]
    running, failed = busy["open"]
    assert f'href="/admin/scheduler/run/{running.pk}/change/"' in svg
    assert f'href="/admin/scheduler/run/{failed.pk}/change/"' in svg
    assert "tl-running" in svg and "tl-failed" in svg
    assert 23 <= svg.count('class="tl-mark"') <= 25  # hourly over the next 24 h
    # The operator is outside the secret definition's group: none of it shows.
    assert "Secret payroll" not in page
    for run in busy["secret"]:
        assert f"/admin/scheduler/run/{run.pk}/" not in page
    client.force_login(roles["superuser"])
    page = client.get(reverse("admin:index")).content.decode()
    assert "Secret payroll" in page


def test_definition_statistics_page(client, roles, definition, local_resource):
    now = timezone.now()
    for i, seconds in enumerate([10, 20, 30, 40, 50, 60, 70, 80]):
        run = services.run_enqueue(definition=definition)
        Run.objects.filter(pk=run.pk).update(
            state=Run.State.SUCCEEDED,
            started_at=now - dt.timedelta(days=i, seconds=seconds),
            finished_at=now - dt.timedelta(days=i),
            exit_code=0,
        )
    for i in range(2):
        run = services.run_enqueue(definition=definition)
        Run.objects.filter(pk=run.pk).update(
            state=Run.State.FAILED,
            started_at=now - dt.timedelta(days=i, seconds=5),
            finished_at=now - dt.timedelta(days=i),
            error=f"Traceback\nOSError: disk {i}",
        )
    stats = definition_stats(definition, now=now)
    assert stats["runs"] == 10 and stats["success_rate"] == pytest.approx(0.8)
    assert stats["median"] == pytest.approx(45.0) and stats["p95"] == pytest.approx(76.5)
    assert [r for _, r, _ in stats["day_rows"][-2:]] == [pytest.approx(0.5), pytest.approx(0.5)]
    url = reverse("admin:scheduler_taskdefinition_stats", args=[definition.pk])
    client.force_login(roles["viewer"])
    page = client.get(url).content.decode()
    assert 'id="success-rate">80%' in page and 'id="median">45.0 s' in page
    assert "OSError: disk 1" in page and page.count('class="ch-dot"') == 10
    change = client.get(reverse("admin:scheduler_taskdefinition_change", args=[definition.pk]))
    assert url in change.content.decode()
    definition.allowed_groups.add(Group.objects.create(name="lab"))
    assert client.get(url).status_code == 404
    client.logout()
    assert client.get(url).status_code == 302  # to the login page
