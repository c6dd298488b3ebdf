"""Fixed cases: the DST changes of three zones, month ends, leap days, exdates.

Rules (docs/recurrences.md): a wall time that does not exist runs once, at the
first instant after the gap; a wall time that occurs twice runs once, at its
first occurrence; intervals of hours or less run on true elapsed time, longer
ones keep the wall time.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

import pytest

from scheduler import recurrence as maths
from scheduler.recurrence import Schedule

UTC = dt.UTC


def u(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def local(zone: str, *args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=zoneinfo.ZoneInfo(zone))


def between(rec, start, end):
    return maths.occurrences_between(rec, start, end, limit=10_000)


# ------------------------------------------------------- daily wall times in a gap
@pytest.mark.parametrize(
    ("zone", "expr", "day_before", "gap_day", "after_gap", "day_after"),
    [
        # Amsterdam 2026-03-29: 02:00 CET -> 03:00 CEST; 02:30 does not exist.
        (
            "Europe/Amsterdam",
            "30 2 * * *",
            u(2026, 3, 28, 1, 30),
            (2026, 3, 29),
            u(2026, 3, 29, 1, 0),
            u(2026, 3, 30, 0, 30),
        ),
        # New York 2026-03-08: 02:00 EST -> 03:00 EDT.
        (
            "America/New_York",
            "30 2 * * *",
            u(2026, 3, 7, 7, 30),
            (2026, 3, 8),
            u(2026, 3, 8, 7, 0),
            u(2026, 3, 9, 6, 30),
        ),
        # Lord Howe 2026-10-04: 02:00 +10:30 -> 02:30 +11; 02:15 does not exist.
        (
            "Australia/Lord_Howe",
            "15 2 * * *",
            u(2026, 10, 2, 15, 45),
            (2026, 10, 4),
            u(2026, 10, 3, 15, 30),
            u(2026, 10, 4, 15, 15),
        ),
    ],
)
def test_a_wall_time_in_the_spring_gap_runs_once_at_the_end_of_the_gap(
    zone, expr, day_before, gap_day, after_gap, day_after
):
    rec = Schedule(kind="cron", timezone=zone, cron_expression=expr, start_at=u(2026, 1, 1))
    got = between(rec, day_before, day_after)
    assert got == [day_before, after_gap, day_after]
    # The gap day's run is at the first instant after the gap, local time:
    end_of_gap = after_gap.astimezone(zoneinfo.ZoneInfo(zone))
    assert (end_of_gap.year, end_of_gap.month, end_of_gap.day) == gap_day
    # ... and the preview marks it as moved, the others not.
    rows = maths.preview(rec, day_before - dt.timedelta(minutes=1), n=3)
    assert [moved for _, _, moved in rows] == [False, True, False]


@pytest.mark.parametrize(
    ("zone", "expr", "fold_day_start", "first", "second_would_be"),
    [
        # Amsterdam 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 happens twice.
        (
            "Europe/Amsterdam",
            "30 2 * * *",
            u(2026, 10, 24, 12),
            u(2026, 10, 25, 0, 30),
            u(2026, 10, 25, 1, 30),
        ),
        # New York 2026-11-01: 02:00 EDT -> 01:00 EST; 01:30 happens twice.
        (
            "America/New_York",
            "30 1 * * *",
            u(2026, 10, 31, 12),
            u(2026, 11, 1, 5, 30),
            u(2026, 11, 1, 6, 30),
        ),
        # Lord Howe 2026-04-05: 02:00 +11 -> 01:30 +10:30; 01:45 happens twice.
        (
            "Australia/Lord_Howe",
            "45 1 * * *",
            u(2026, 4, 4, 6),
            u(2026, 4, 4, 14, 45),
            u(2026, 4, 4, 15, 15),
        ),
    ],
)
def test_a_repeated_wall_time_runs_once_at_its_first_occurrence(
    zone, expr, fold_day_start, first, second_would_be
):
    rec = Schedule(kind="cron", timezone=zone, cron_expression=expr, start_at=u(2026, 1, 1))
    got = between(rec, fold_day_start, fold_day_start + dt.timedelta(hours=23))
    assert got == [first]
    assert second_would_be not in between(rec, first, first + dt.timedelta(hours=3))
    assert maths.next_after(rec, first) > second_would_be


def test_hourly_and_shorter_intervals_run_on_elapsed_time_through_both_changes():
    spring_day = (u(2026, 3, 28, 23), u(2026, 3, 29, 22))  # Amsterdam's 23-hour day
    autumn_day = (u(2026, 10, 24, 22), u(2026, 10, 25, 23))  # its 25-hour day
    hourly = Schedule(
        kind="interval",
        timezone="Europe/Amsterdam",
        interval_every=1,
        interval_unit="hours",
        start_at=u(2026, 1, 1),
    )
    for lo, hi in (spring_day, autumn_day):
        got = between(hourly, lo, hi - dt.timedelta(minutes=1))
        assert len(got) == (hi - lo) // dt.timedelta(hours=1)  # 23, then 25 runs
        assert all(b - a == dt.timedelta(hours=1) for a, b in zip(got, got[1:], strict=False))
    every_45 = Schedule(
        kind="interval",
        timezone="Australia/Lord_Howe",
        interval_every=45,
        interval_unit="minutes",
        start_at=u(2026, 10, 3, 12),
    )
    got = between(every_45, u(2026, 10, 3, 12), u(2026, 10, 3, 18))
    assert all(b - a == dt.timedelta(minutes=45) for a, b in zip(got, got[1:], strict=False))
    assert len(got) == 9


def test_daily_and_weekly_intervals_keep_the_wall_time_across_dst():
    daily = Schedule(
        kind="interval",
        timezone="America/New_York",
        interval_every=1,
        interval_unit="days",
        start_at=local("America/New_York", 2026, 3, 6, 7, 30).astimezone(UTC),
    )
    got = between(daily, u(2026, 3, 6), u(2026, 3, 10, 23))
    assert [t.astimezone(zoneinfo.ZoneInfo("America/New_York")).hour for t in got] == [7] * 5
    assert got[1] - got[0] == dt.timedelta(hours=24)
    assert got[2] - got[1] == dt.timedelta(hours=23)  # across 2026-03-08
    assert got[3] - got[2] == dt.timedelta(hours=24)


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        # Monthly from the 31st: clamped to each month's end, back to the 31st after.
        ((2026, 1, 31, 9), [(2026, 1, 31), (2026, 2, 28), (2026, 3, 31), (2026, 4, 30)]),
        # In a leap year February has its 29th.
        ((2024, 1, 31, 9), [(2024, 1, 31), (2024, 2, 29), (2024, 3, 31), (2024, 4, 30)]),
        # From a leap day, every month: the 29th, never the 28th after March.
        ((2024, 2, 29, 9), [(2024, 2, 29), (2024, 3, 29), (2024, 4, 29), (2024, 5, 29)]),
    ],
)
def test_months_keep_the_day_of_month_clamped_to_the_month_end(start, expected):
    rec = Schedule(
        kind="interval",
        timezone="Europe/Amsterdam",
        interval_every=1,
        interval_unit="months",
        start_at=local("Europe/Amsterdam", *start).astimezone(UTC),
    )
    got = maths.occurrences_between(rec, rec.start_at, rec.start_at + dt.timedelta(days=100))
    tz = zoneinfo.ZoneInfo("Europe/Amsterdam")
    assert [(t.astimezone(tz).year, t.astimezone(tz).month, t.astimezone(tz).day) for t in got][
        :4
    ] == expected
    assert {t.astimezone(tz).hour for t in got} == {9}


def test_a_yearly_leap_day_schedule():
    every_12_months = Schedule(
        kind="interval",
        timezone="UTC",
        interval_every=12,
        interval_unit="months",
        start_at=u(2024, 2, 29, 6),
    )
    got = between(every_12_months, u(2024, 1, 1), u(2029, 1, 1))
    assert got == [
        u(2024, 2, 29, 6),
        u(2025, 2, 28, 6),
        u(2026, 2, 28, 6),
        u(2027, 2, 28, 6),
        u(2028, 2, 29, 6),
    ]
    cron_leap = Schedule(
        kind="cron", timezone="UTC", cron_expression="0 12 29 2 *", start_at=u(2024, 3, 1)
    )
    assert maths.next_after(cron_leap, u(2024, 3, 1)) == u(2028, 2, 29, 12)
    last_day = Schedule(
        kind="cron", timezone="UTC", cron_expression="0 0 L * *", start_at=u(2024, 1, 1)
    )
    assert between(last_day, u(2024, 1, 15), u(2024, 4, 15)) == [
        u(2024, 1, 31),
        u(2024, 2, 29),
        u(2024, 3, 31),
    ]


def test_rrule_with_exdates_end_and_max_runs():
    rule = Schedule(
        kind="rrule",
        timezone="Europe/Amsterdam",
        rrule="FREQ=WEEKLY;BYDAY=MO,WE;BYHOUR=7;BYMINUTE=30",
        start_at=u(2026, 3, 1),
        exdates=["2026-03-25T07:30:00"],
    )
    got = between(rule, u(2026, 3, 20), u(2026, 4, 2))
    tz = zoneinfo.ZoneInfo("Europe/Amsterdam")
    assert [t.astimezone(tz).strftime("%a %d %H:%M") for t in got] == [
        "Mon 23 07:30",
        "Mon 30 07:30",
        "Wed 01 07:30",  # Wed 25 excluded
    ]
    assert got[0] == u(2026, 3, 23, 6, 30) and got[1] == u(2026, 3, 30, 5, 30)  # CET, CEST
    rule.end_at = u(2026, 3, 31)
    assert between(rule, u(2026, 3, 20), u(2026, 4, 2)) == got[:2]
    rule.end_at, rule.max_runs, rule.runs_created = None, 5, 5
    assert maths.next_after(rule, u(2026, 3, 20)) is None


def test_a_one_value_range_with_a_step_is_that_one_value():
    # cronsim reads "5-5/2" as "5 to 59 every 2"; cron and we read it as 5.
    assert maths.cron_normalized("5-5/2 3-3/1 * JAN-JAN/1 *") == "5 3 * JAN *"
    rec = Schedule(
        kind="cron", timezone="UTC", cron_expression="5-5/2 * * * *", start_at=u(2026, 1, 1)
    )
    assert between(rec, u(2026, 1, 1), u(2026, 1, 1, 1, 59)) == [
        u(2026, 1, 1, 0, 5),
        u(2026, 1, 1, 1, 5),
    ]
