"""The dashboard: counts per state linking to the run list, running runs, recent
failures, the timeline (SVG drawn on the server), poller and resource health;
bounded queries; nothing of a restricted definition shown to outsiders.
The per-definition statistics are in test_definition_stats.py."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from scheduler import charts, services
from scheduler.models import ExecutionResource, PollerHeartbeat, Recurrence, Run, TaskDefinition

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


def _dashboard(client, user) -> str:
    client.force_login(user)
    response = client.get(reverse("admin:index"))
    assert response.status_code == 200
    return response.content.decode()


def _timeline(page: str) -> str:
    begin = page.index('<svg class="timeline"')
    return page[begin : page.index("</svg>", begin)]


def _counts(page: str) -> dict[str, tuple[str, str]]:
    """state -> (link, count) from the "Runs by state" links."""
    found = re.findall(
        r'<a class="dash-tile run-state-(\w+)" href="([^"]+)"><strong>([^<]+)</strong>', page
    )
    return {state.upper(): (link.replace("&amp;", "&"), count) for state, link, count in found}


@pytest.fixture
def busy(definition, local_resource):
    """Per definition - the open "Hello" and a restricted "Secret payroll" - a running
    run, a failure of the last day, a queued due run, successes (2 open, 3 secret) and
    an hourly schedule; a resource with an error and a limit; two pollers."""
    now = timezone.now()
    lab = Group.objects.create(name="lab")
    secret = TaskDefinition.objects.create(
        name="Secret payroll", program="hello.py", default_resource=local_resource
    )
    secret.allowed_groups.add(lab)
    ExecutionResource.objects.filter(pk=local_resource.pk).update(
        max_concurrent_runs=4,
        last_error="ssh: connect to host: Connection refused",
        last_error_at=now - dt.timedelta(minutes=3),
    )
    PollerHeartbeat.objects.create(
        ident="alive-poller", host="h", pid=11, started_at=now, last_seen_at=now, version="1"
    )
    PollerHeartbeat.objects.create(
        ident="stale-poller",
        host="h",
        pid=12,
        started_at=now - dt.timedelta(days=1),
        last_seen_at=now - dt.timedelta(hours=3),
        version="1",
    )
    made = {}
    for d, tag, successes in ((definition, "open", 2), (secret, "secret", 3)):
        run = services.run_enqueue(definition=d)
        Run.objects.filter(pk=run.pk).update(
            state=Run.State.RUNNING,
            submitted_at=now - dt.timedelta(hours=2),
            started_at=now - dt.timedelta(hours=2),
            progress=40 if tag == "open" else 70,
            status_message=f"{tag} step 4 of 10",
        )
        done = services.run_enqueue(definition=d)
        Run.objects.filter(pk=done.pk).update(
            state=Run.State.FAILED,
            started_at=now - dt.timedelta(hours=5),
            finished_at=now - dt.timedelta(hours=4),
            error=f"Traceback\nValueError: {tag} input is bad",
        )
        queued = services.run_enqueue(definition=d, due_at=now - dt.timedelta(minutes=1))
        for i in range(successes):
            ok = services.run_enqueue(definition=d)
            Run.objects.filter(pk=ok.pk).update(
                state=Run.State.SUCCEEDED,
                started_at=now - dt.timedelta(hours=10 + i),
                finished_at=now - dt.timedelta(hours=9 + i),
                exit_code=0,
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
        made[tag] = (run, done, queued)
    return made


def test_the_dashboard_timeline_shows_runs_and_upcoming_occurrences(
    client, roles, busy, django_assert_max_num_queries
):
    client.force_login(roles["operator"])
    with django_assert_max_num_queries(30):
        page = client.get(reverse("admin:index")).content.decode()
    begin = page.index('<svg class="timeline"')
    svg = page[begin : page.index("</svg>", begin)]
    running, failed, _ = busy["open"]
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


def test_counts_per_state_link_to_the_filtered_run_list(client, roles, busy):
    counts = _counts(_dashboard(client, roles["operator"]))
    assert set(counts) == {value for value, _ in Run.State.choices}
    # Only the open definition's runs: the secret ones count for nobody outside its group.
    assert {s: c for s, (_, c) in counts.items() if c != "0"} == {
        "RUNNING": "1",
        "FAILED": "1",
        "QUEUED": "1",
        "SUCCEEDED": "2",
    }
    link, _ = counts["FAILED"]
    assert link == reverse("admin:scheduler_run_changelist") + "?state__exact=FAILED"
    listing = client.get(link).content.decode()
    failed = busy["open"][1]
    assert f"/admin/scheduler/run/{failed.pk}/change/" in listing
    assert f"/admin/scheduler/run/{busy['open'][0].pk}/change/" not in listing  # running
    assert f"/admin/scheduler/run/{busy['secret'][1].pk}/change/" not in listing
    counts = _counts(_dashboard(client, roles["superuser"]))
    assert [counts[s][1] for s in ("RUNNING", "FAILED", "QUEUED", "SUCCEEDED")] == [
        "2",
        "2",
        "2",
        "5",
    ]


def test_counts_past_the_cap_say_so(client, roles, busy, monkeypatch):
    import scheduler.dashboard

    monkeypatch.setattr(scheduler.dashboard, "COUNT_CAP", 2)
    counts = _counts(_dashboard(client, roles["superuser"]))
    assert counts["SUCCEEDED"][1] == "2+" and counts["FAILED"][1] == "2"


def test_running_runs_failures_queued_and_next_due(client, roles, busy):
    page = _dashboard(client, roles["operator"])
    running, failed, queued = busy["open"]
    assert '<progress max="100" value="40"></progress> 40%' in page
    assert "open step 4 of 10" in page
    assert "ValueError: open input is bad" in page
    for run in (running, failed, queued):
        assert f'href="/admin/scheduler/run/{run.pk}/change/"' in page
    assert "open hourly" in page


def test_poller_and_resource_health(client, roles, busy):
    page = _dashboard(client, roles["operator"])
    assert re.search(r'<li class="dash-ok">\s*<strong>alive-poller</strong>: alive', page)
    assert re.search(r'<li class="dash-bad">\s*<strong>stale-poller</strong>: not seen', page)
    row = re.search(r'<tr class="dash-bad">\s*<td>local</td>(.*?)</tr>', page, re.S)
    assert row, "the resource with a recent error is marked"
    assert '<td class="nowrap">1 / 4</td>' in row.group(
        1
    )  # in flight (visible to the operator) / limit
    assert "Connection refused" in row.group(1)
    page = _dashboard(client, roles["superuser"])
    assert (
        '<td class="nowrap">2 / 4</td>' in page
    )  # the superuser sees the secret run in flight too
    PollerHeartbeat.objects.all().delete()
    assert "No poller has ever reported" in _dashboard(client, roles["operator"])


def test_a_restricted_definition_shows_in_no_part_of_the_dashboard(client, roles, busy):
    page = _dashboard(client, roles["operator"])
    for text in (
        "Secret payroll",
        "secret step 4 of 10",
        "secret input is bad",
        "secret hourly",
        'value="70"',
    ):
        assert text not in page, text
    for run in busy["secret"]:
        assert f"/admin/scheduler/run/{run.pk}/" not in page
    # A member of the group sees it all, in every part.
    roles["operator"].groups.add(Group.objects.get(name="lab"))
    page = _dashboard(client, roles["operator"])
    for text in ("secret step 4 of 10", "secret input is bad", "secret hourly", 'value="70"'):
        assert text in page, text
    assert "Secret payroll" in _timeline(page)
    assert _counts(page)["SUCCEEDED"][1] == "5" and '<td class="nowrap">2 / 4</td>' in page


def test_the_number_of_queries_does_not_grow_with_the_data(
    client, roles, busy, local_resource, django_assert_max_num_queries
):
    client.force_login(roles["operator"])
    url = reverse("admin:index")
    client.get(url)  # warm: content types, sessions
    with CaptureQueriesContext(connection) as few:
        client.get(url)
    now = timezone.now()
    for i in range(15):
        d = TaskDefinition.objects.create(
            name=f"task {i}", program="hello.py", default_resource=local_resource
        )
        for state in (Run.State.RUNNING, Run.State.FAILED):
            run = services.run_enqueue(definition=d)
            Run.objects.filter(pk=run.pk).update(
                state=state,
                started_at=now - dt.timedelta(hours=1),
                finished_at=now if state == Run.State.FAILED else None,
                error="boom",
            )
        Recurrence.objects.create(
            definition=d,
            name=f"every 2 h {i}",
            kind="interval",
            interval_every=2,
            interval_unit="hours",
            timezone="UTC",
            start_at=now - dt.timedelta(days=1),
            next_due_at=now + dt.timedelta(minutes=10 + i),
        )
    with django_assert_max_num_queries(30):
        with CaptureQueriesContext(connection) as many:
            page = client.get(url).content.decode()
    assert len(many) == len(few)
    assert "task 14" in _timeline(page)


def test_the_timeline_caps_its_bars_and_marks(client, roles, busy, monkeypatch):
    import scheduler.dashboard

    monkeypatch.setattr(scheduler.dashboard, "TIMELINE_MAX_BARS", 4)
    monkeypatch.setattr(scheduler.dashboard, "TIMELINE_MAX_MARKS", 5)
    svg = _timeline(_dashboard(client, roles["superuser"]))
    # 2 running (up to half the bars) + 2 failed + 5 succeeded in the window: 4 drawn,
    # the running ones and the runs that ended last (the failures, 4 hours ago).
    assert svg.count('class="tl-bar') == 4
    assert svg.count("tl-running") == 2 and svg.count("tl-failed") == 2
    assert svg.count('class="tl-mark"') == 5


def test_a_hostile_definition_name_is_escaped_in_every_part(client, roles, busy, definition):
    TaskDefinition.objects.filter(pk=definition.pk).update(name="<script>alert(1)</script>")
    page = _dashboard(client, roles["operator"])
    assert "<script>alert(1)" not in page
    # In the timeline's lane, the running and failure tables and the next-due table.
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4
    assert "&lt;script&gt;alert(1)&lt;/script&gt;</text>" in _timeline(page)


def test_the_hour_axis_follows_the_clock_across_a_dst_change():
    from zoneinfo import ZoneInfo

    start = dt.datetime(2026, 3, 28, 12, tzinfo=UTC)  # Berlin: 13:00 CET; clocks go
    svg = charts.timeline(  # forward at 01:00 UTC on the 29th (02:00 -> 03:00)
        [],
        [],
        start=start,
        end=start + dt.timedelta(hours=48),
        now=start + dt.timedelta(hours=24),
        tz=ZoneInfo("Europe/Berlin"),
    )
    ticks = re.findall(r'<text x="([\d.]+)" y="11" class="tl-tick">([\d:]+)</text>', svg)
    labels = [label for _, label in ticks]
    # 15, 18, 21, 0 (CET), then 3 (CEST, only 3 real hours after midnight), 6, ...
    assert labels[:6] == ["15:00", "18:00", "21:00", "00:00", "03:00", "06:00"]
    assert len(labels) == len(set(ticks)) and labels.count("03:00") == 2  # 29th and 30th
    step = (1400 - 210 - 10) / 48  # px per real hour: the plot's width over 48 hours
    xs = [float(x) for x, _ in ticks]
    assert xs[4] - xs[3] == pytest.approx(2 * step, abs=0.1)  # 00:00 CET -> 03:00 CEST
    assert xs[5] - xs[4] == pytest.approx(3 * step, abs=0.1)


def test_dense_occurrences_read_as_a_band_with_a_count_and_rows_span_the_window():
    start = dt.datetime(2026, 12, 1, 12, tzinfo=UTC)
    now = start + dt.timedelta(hours=24)
    every_minute = [
        charts.Mark(lane="Hello", at=now + dt.timedelta(minutes=i + 1), title="")
        for i in range(24 * 60 - 1)
    ]
    every_6_hours = [
        charts.Mark(lane="Report", at=now + dt.timedelta(hours=6 * i + 1), title="")
        for i in range(4)
    ]
    svg = charts.timeline(
        [],
        every_minute + every_6_hours,
        start=start,
        end=now + dt.timedelta(hours=24),
        now=now,
        tz=UTC,
    )
    assert svg.count('<g class="tl-band">') == 1 and "1,439\u00d7" in svg
    assert "1,439 occurrences, 12:01 to 11:59" in svg
    assert svg.count('class="tl-mark"') == 4  # sparse ones stay dots
    band = re.search(r'<g class="tl-band">.*?<rect x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', svg)
    plot_end = 1400 - 10
    assert float(band.group(1)) + float(band.group(2)) >= plot_end - 2  # to the window's end
    rows = re.findall(r'<rect x="210" y="[\d.]+" width="1180" height="20" class="tl-row', svg)
    assert len(rows) == 2  # each lane's row spans the whole window


def test_a_schedule_every_minute_is_drawn_to_the_end_of_the_window(client, roles, definition):
    now = timezone.now()
    rec = Recurrence(
        definition=definition,
        name="each minute",
        kind="cron",
        cron_expression="* * * * *",
        timezone="UTC",
        start_at=now - dt.timedelta(days=1),
    )
    rec.next_due_at = rec.next_due_on_enable(now)
    rec.save()
    svg = _timeline(_dashboard(client, roles["operator"]))
    count = int(re.search(r"([\d,]+)\u00d7</text>", svg).group(1).replace(",", ""))
    assert 1430 <= count <= 1440
