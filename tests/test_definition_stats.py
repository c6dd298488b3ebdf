"""Per-definition statistics: success rate per day and duration per run as SVG
drawn on the server, median and 95th percentile, the last failures; a bounded
window in few queries; only for users who may see the definition."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from scheduler import charts, services
from scheduler.models import Run, TaskDefinition
from scheduler.stats import definition_stats, percentile

T = dt.datetime(2026, 5, 4, tzinfo=dt.UTC)


def _finished(definition, state, *, ended, seconds, error="", exit_code=None):
    run = services.run_enqueue(definition=definition)
    Run.objects.filter(pk=run.pk).update(
        state=state,
        due_at=ended - dt.timedelta(seconds=seconds + 1),
        queued_at=ended - dt.timedelta(seconds=seconds + 1),
        submitted_at=ended - dt.timedelta(seconds=seconds),
        started_at=ended - dt.timedelta(seconds=seconds),
        finished_at=ended,
        error=error,
        exit_code=exit_code,
    )
    return run


def _stats_url(definition):
    return reverse("admin:scheduler_taskdefinition_stats", args=[definition.pk])


def test_bars_per_day_draws_one_bar_per_day_with_a_rate_and_skips_empty_days():
    days = [(dt.date(2026, 5, d), rate, 4) for d, rate in ((1, 1.0), (2, None), (3, 0.5))]
    svg = charts.bars_per_day(days, width=340, height=160)  # 300 px of plot: 100 per day
    bars = re.findall(r'<rect x="([\d.]+)" y="([\d.]+)" width="[\d.]+" height="([\d.]+)"', svg)
    assert [float(x) for x, _, _ in bars] == [35.0, 235.0]  # the empty day has no bar
    assert [float(h) for _, _, h in bars] == [134.0, 67.0]  # 134 px of plot height: 100%, 50%
    # Bars stand on the axis: y + height is the bottom of the plot for each.
    assert {float(y) + float(h) for _, y, h in bars} == {142.0}
    assert 'fill="#27ae60"' in svg and 'fill="#eb5757"' in svg  # 100% green, 50% red
    assert "2026-05-03: 50% of 4" in svg


def test_durations_places_dots_by_time_and_seconds_and_draws_the_lines():
    svg = charts.durations(
        [(T, 10.0, "SUCCEEDED"), (T + dt.timedelta(hours=1), 30.0, "FAILED")],
        start=T,
        end=T + dt.timedelta(hours=1),
        width=720,
        height=180,
        lines={"median": 20.0, "<p95>": 25.0},
    )
    dots = re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', svg)
    # Plot from x = 52 over 662 px; the scale's top is the tick above 30 s in
    # steps of 10 s (0, 10, 20, 30, 40 s) over 154 px.
    assert [float(x) for x, _ in dots] == [52.0, 714.0]
    assert [float(y) for _, y in dots] == [pytest.approx(8 + 154 * (1 - 10 / 40), abs=0.06)] + [
        pytest.approx(8 + 154 * (1 - 30 / 40), abs=0.06)
    ]
    assert "median 20 s" in svg
    assert "<p95>" not in svg and "&lt;p95&gt; 25 s" in svg  # labels are escaped
    assert svg.count('class="ch-line"') == 2


def test_percentile_interpolates():
    assert percentile([], 95) is None
    assert percentile([5.0], 95) == 5.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # sorts first
    assert percentile([float(v) for v in range(1, 101)], 95) == pytest.approx(95.05)


def test_statistics_count_the_window_and_leave_out_cancelled_active_and_other_runs(
    definition, local_resource
):
    now = timezone.now()
    for i, seconds in enumerate([10, 20, 30, 40, 50, 60, 70, 80]):
        _finished(
            definition, Run.State.SUCCEEDED, ended=now - dt.timedelta(days=i), seconds=seconds
        )
    for i in range(2):
        _finished(
            definition,
            Run.State.FAILED,
            ended=now - dt.timedelta(days=i),
            seconds=5,
            error=f"Traceback\nOSError: disk {i}",
        )
    _finished(definition, Run.State.CANCELLED, ended=now, seconds=3)  # not a failure
    _finished(definition, Run.State.FAILED, ended=now - dt.timedelta(days=40), seconds=1)  # old
    # Queued before the window, ended in it: outside (the window is of queued runs).
    _finished(definition, Run.State.FAILED, ended=now, seconds=31 * 86400)
    services.run_enqueue(definition=definition)  # queued: not finished
    other = TaskDefinition.objects.create(name="Other", program="hello.py")
    _finished(other, Run.State.FAILED, ended=now, seconds=9, error="not mine")

    stats = definition_stats(definition, now=now)
    assert stats["runs"] == 11  # 8 + 2 + the cancelled one; not old, still queued or other
    assert stats["success_rate"] == pytest.approx(0.8)  # 8 of 10: cancelled not counted
    assert stats["median"] == pytest.approx(45.0)  # of the successful runs only
    assert stats["p95"] == pytest.approx(76.5)
    assert len(stats["day_rows"]) == 30
    assert [r for _, r, _ in stats["day_rows"][-2:]] == [pytest.approx(0.5), pytest.approx(0.5)]
    assert [n for _, _, n in stats["day_rows"][-3:]] == [1, 2, 2]
    assert stats["day_rows"][0][1] is None  # 29 days ago: nothing ran
    errors = [r.error for r in stats["failures"]]
    assert "not mine" not in errors and errors[:2] == [
        "Traceback\nOSError: disk 0",
        "Traceback\nOSError: disk 1",
    ]
    assert str(stats["duration_chart"]).count('class="ch-dot"') == 11
    assert str(stats["rate_chart"]).count('class="ch-bar"') == 8  # days that had runs


def test_the_window_is_capped_to_the_newest_runs(definition, monkeypatch):
    import scheduler.stats

    now = timezone.now()
    for i in range(5):
        _finished(
            definition, Run.State.SUCCEEDED, ended=now - dt.timedelta(hours=i), seconds=10 + i
        )
    monkeypatch.setattr(scheduler.stats, "MAX_RUNS", 3)
    stats = definition_stats(definition, now=now)
    assert stats["runs"] == 3 and stats["capped"]
    assert sorted(p[1] for p in stats["points"]) == [10.0, 11.0, 12.0]  # the newest three


def test_statistics_page_shows_figures_charts_and_failures(
    client, roles, definition, django_assert_max_num_queries
):
    now = timezone.now()
    for i, seconds in enumerate([10, 20, 30, 40, 50, 60, 70, 80]):
        _finished(
            definition, Run.State.SUCCEEDED, ended=now - dt.timedelta(days=i), seconds=seconds
        )
    for i in range(2):
        _finished(
            definition,
            Run.State.FAILED,
            ended=now - dt.timedelta(days=i),
            seconds=5,
            error=f"Traceback\nOSError: <disk> {i}",
        )
    url = _stats_url(definition)
    client.force_login(roles["viewer"])
    with django_assert_max_num_queries(12):
        page = client.get(url).content.decode()
    assert 'id="success-rate">80%' in page
    assert 'id="median">45 s' in page and 'id="p95">1 min 16 s' in page
    assert "OSError: &lt;disk&gt; 1" in page and "<disk>" not in page
    assert page.count('<svg class="chart"') == 2 and page.count('class="ch-dot"') == 10
    assert page.count("/admin/scheduler/run/") >= 2  # each failure links to its run
    # The definition's change page links here.
    change = client.get(reverse("admin:scheduler_taskdefinition_change", args=[definition.pk]))
    assert f'href="{url}"' in change.content.decode()


def test_a_definition_without_runs_has_an_empty_page_not_an_error(client, roles, definition):
    client.force_login(roles["operator"])
    response = client.get(_stats_url(definition))
    page = response.content.decode()
    assert response.status_code == 200
    assert "<strong>0</strong> finished runs" in page and "No failures." in page
    assert 'id="success-rate"' not in page and 'id="median"' not in page


def test_a_hostile_definition_name_is_escaped_on_the_statistics_page(client, roles, definition):
    TaskDefinition.objects.filter(pk=definition.pk).update(name="<img src=x onerror=alert(1)>")
    client.force_login(roles["viewer"])
    page = client.get(_stats_url(definition)).content.decode()
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_only_users_who_may_see_the_definition_get_its_statistics(client, roles, definition):
    url = _stats_url(definition)
    lab = Group.objects.create(name="lab")
    definition.allowed_groups.add(lab)
    for role in ("viewer", "operator", "administrator"):
        client.force_login(roles[role])
        assert client.get(url).status_code == 404, role
    roles["operator"].groups.add(lab)
    client.force_login(roles["operator"])
    assert client.get(url).status_code == 200
    client.force_login(roles["superuser"])
    assert client.get(url).status_code == 200
    missing = reverse("admin:scheduler_taskdefinition_stats", args=[definition.pk + 1000])
    assert client.get(missing).status_code == 404
    client.force_login(roles["nonstaff"])
    assert client.get(url).status_code == 302  # to the login page
    client.logout()
    response = client.get(url)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_duration_chart_thins_out_past_its_dot_limit(client, roles, definition, monkeypatch):
    import scheduler.stats

    now = timezone.now()
    for i in range(7):
        _finished(
            definition, Run.State.SUCCEEDED, ended=now - dt.timedelta(hours=i), seconds=10 + i
        )
    monkeypatch.setattr(scheduler.stats, "MAX_DOTS", 3)
    stats = definition_stats(definition, now=now)
    assert stats["dots_every"] == 3 and len(stats["points"]) == 7
    assert str(stats["duration_chart"]).count('class="ch-dot"') == 3  # runs 1, 4 and 7
    assert stats["median"] == pytest.approx(13.0)  # of all seven
    client.force_login(roles["viewer"])
    page = client.get(_stats_url(definition)).content.decode()
    assert 'id="dots-every">One dot for every 3 runs' in page


@pytest.mark.parametrize(
    ("highest", "labels"),
    [
        (0.12, ["0", "50 ms", "100 ms", "150 ms"]),
        (3.4, ["0", "1.0 s", "2.0 s", "3.0 s", "4.0 s"]),
        (250, ["0", "1 min", "2 min", "3 min", "4 min", "5 min"]),
        (0.0, ["0", "1 ms", "2 ms"]),
    ],
)
def test_the_duration_axis_ticks_follow_the_data_and_never_repeat_a_label(highest, labels):
    ticks = charts.duration_ticks(highest)
    assert [charts._seconds(t) for t in ticks] == labels
    assert ticks[-1] > highest


def test_short_runs_chart_in_ms_and_the_chart_agrees_with_the_sentence():
    start = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    points = [(start + dt.timedelta(hours=i), 0.05 + i * 0.001, "SUCCEEDED") for i in range(60)]
    svg = charts.durations(
        points, start=start, end=start + dt.timedelta(days=3), lines={"median": 0.08, "p95": 0.106}
    )
    axis = re.findall(r'class="ch-axis">([^<]+)</text>', svg)
    assert axis == ["0", "50 ms", "100 ms", "150 ms"]
    assert "p95 106 ms" in svg and "median 80 ms" in svg
    ys = [float(y) for y in re.findall(r'<text x="[\d.]+" y="([\d.]+)" class="ch-label">', svg)]
    assert abs(ys[0] - ys[1]) >= 12  # the two labels do not overlap
