"""Property tests of the recurrence maths against a brute-force oracle.

The oracle steps through every UTC minute of a bounded window and decides, from
the local wall time alone, whether that minute is an occurrence by our rules:

- a minute whose local time matches the schedule runs if it is the first (or
  only) occurrence of that wall time (fold=0);
- the instant a spring-forward gap ends runs if any wall time inside the gap
  matches.

``iter_after`` must produce exactly the oracle's minutes, in order, from any
starting point; so the next occurrence after t is after t, matches, and none
between t and it is skipped.
"""

from __future__ import annotations

import calendar
import datetime as dt
import itertools
import os
import zoneinfo
from collections.abc import Callable

from dateutil.rrule import rrulestr
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scheduler import recurrence as maths
from scheduler.recurrence import Schedule

UTC = dt.UTC
MINUTE = dt.timedelta(minutes=1)
ZONES = [
    "UTC",
    "Europe/Amsterdam",
    "America/New_York",
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "Europe/Dublin",  # "negative" DST in tzdata
    "America/St_Johns",  # half-hour offset with DST
    "Pacific/Chatham",  # +12:45 / +13:45
    "Asia/Kathmandu",  # +05:45, no DST
    "America/Sao_Paulo",  # DST until 2019
]
# CI replays the same examples every run (a failure there is reproducible); local runs explore.
PROPERTY = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")),
)


def transitions(name: str, years=range(2018, 2029)) -> list[dt.datetime]:
    """UTC instants where the zone's offset changes, found by hourly scan and bisection."""
    tz = zoneinfo.ZoneInfo(name)
    out = []
    t = dt.datetime(years[0], 1, 1, tzinfo=UTC)
    end = dt.datetime(years[-1] + 1, 1, 1, tzinfo=UTC)
    step = dt.timedelta(hours=6)
    while t < end:
        if t.astimezone(tz).utcoffset() != (t + step).astimezone(tz).utcoffset():
            lo, hi = t, t + step
            while hi - lo > MINUTE:
                mid = lo + (hi - lo) / 2
                if mid.astimezone(tz).utcoffset() == lo.astimezone(tz).utcoffset():
                    lo = mid
                else:
                    hi = mid
            out.append(hi.replace(second=0, microsecond=0))
        t += step
    return out


TRANSITIONS = {name: transitions(name) for name in ZONES}


@st.composite
def instants(draw, zone: str) -> dt.datetime:
    """A minute-aligned UTC instant, often within days of one of the zone's DST changes."""
    near = TRANSITIONS[zone]
    if near and draw(st.booleans()):
        base = draw(st.sampled_from(near))
        offset = draw(st.integers(-3 * 24 * 60, 1 * 24 * 60))
    else:
        base = dt.datetime(2019, 1, 1, tzinfo=UTC)
        offset = draw(st.integers(0, 9 * 365 * 24 * 60))
    return base + offset * MINUTE


def oracle(
    rec: Schedule, matches: Callable[[dt.datetime], bool], lo: dt.datetime, hi: dt.datetime
) -> list[dt.datetime]:
    """Occurrences in (lo, hi] by brute-force minute stepping."""
    tz = zoneinfo.ZoneInfo(rec.timezone)
    start = rec.start_at
    out = []
    u = lo + MINUTE
    while u <= hi:
        here = u.astimezone(tz)
        local = here.replace(tzinfo=None)
        hit = here.fold == 0 and matches(local)
        before = (u - MINUTE).astimezone(tz)
        if not hit and here.utcoffset() > before.utcoffset():
            # u ends a gap: the wall times strictly between the two readings never
            # happened; any of them that matches runs now.
            m = before.replace(tzinfo=None) + MINUTE
            while m < local and not hit:
                hit = matches(m)
                m += MINUTE
        if hit and u >= start:
            out.append(u)
        u += MINUTE
    return out


def check_against_oracle(rec: Schedule, matches, t: dt.datetime, window: dt.timedelta) -> None:
    hi = t + window
    expected = oracle(rec, matches, t, hi)
    got = []
    for _local, instant in maths.iter_after(rec, t):
        if instant > hi:
            break
        got.append(instant)
    assert got == expected
    nxt = maths.next_after(rec, t)
    if expected:
        assert nxt == expected[0]
    if nxt is not None:
        assert nxt > t
        if not expected:
            assert nxt > hi
            # Beyond the window: still an occurrence by the oracle.
            assert oracle(rec, matches, nxt - MINUTE, nxt) == [nxt]


# ------------------------------------------------------------------- cron
def _values(lo: int, hi: int, names: list[str] | None = None):
    def build(kind, a, b, k, picks):
        a, b = min(a, b), max(a, b)
        if kind == "star":
            return "*", set(range(lo, hi + 1))
        if kind == "step":
            return f"*/{k}", set(range(lo, hi + 1, k))
        if kind == "one":
            text = names[a - lo] if names and k % 2 else str(a)
            return text, {a}
        if kind == "range":
            return f"{a}-{b}", set(range(a, b + 1))
        if kind == "rangestep":
            return f"{a}-{b}/{k}", set(range(a, b + 1, k))
        picked = sorted(set(picks))
        return ",".join(map(str, picked)), set(picked)

    return st.builds(
        build,
        st.sampled_from(["star", "step", "one", "range", "rangestep", "list"]),
        st.integers(lo, hi),
        st.integers(lo, hi),
        st.integers(1, max(2, (hi - lo) // 2)),
        st.lists(st.integers(lo, hi), min_size=1, max_size=4),
    )


DOW_NAMES = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
MONTH_NAMES = [m.upper() for m in calendar.month_abbr[1:]]


@st.composite
def dows(draw):
    """(text, predicate on a date) for the day-of-week field, with L and #."""
    kind = draw(st.sampled_from(["plain", "plain", "weekdays", "last", "nth", "seven"]))
    if kind == "plain":
        text, values = draw(_values(0, 6, DOW_NAMES))
        return text, lambda d: (d.isoweekday() % 7) in values
    if kind == "weekdays":
        return "MON-FRI", lambda d: d.weekday() < 5
    if kind == "seven":
        return "7", lambda d: d.weekday() == 6
    day = draw(st.integers(0, 6))
    if kind == "last":
        return (
            f"{day}L",
            lambda d: (
                d.isoweekday() % 7 == day and d.day + 7 > calendar.monthrange(d.year, d.month)[1]
            ),
        )
    nth = draw(st.integers(1, 5))
    return (
        f"{DOW_NAMES[day]}#{nth}",
        lambda d: d.isoweekday() % 7 == day and (d.day - 1) // 7 + 1 == nth,
    )


@st.composite
def doms(draw):
    if draw(st.integers(0, 5)) == 0:
        return "L", lambda d: d.day == calendar.monthrange(d.year, d.month)[1]
    text, values = draw(_values(1, 31))
    return text, lambda d: d.day in values


@st.composite
def crons(draw):
    minute, minutes = draw(_values(0, 59))
    hour, hours = draw(_values(0, 23))
    dom, dom_ok = draw(doms())
    month, months = draw(_values(1, 12, MONTH_NAMES))
    dow, dow_ok = draw(dows())
    expr = f"{minute} {hour} {dom} {month} {dow}"
    assume(not maths._cron_error(expr))
    day_and = dom.startswith("*") or dow.startswith("*")

    def matches(local: dt.datetime) -> bool:
        d = local.date()
        day = (dom_ok(d) and dow_ok(d)) if day_and else (dom_ok(d) or dow_ok(d))
        return local.minute in minutes and local.hour in hours and local.month in months and day

    return expr, matches


@PROPERTY
@given(data=st.data(), zone=st.sampled_from(ZONES), cron=crons())
def test_cron_next_occurrence_matches_and_skips_nothing(data, zone, cron):
    expr, matches = cron
    t = data.draw(instants(zone))
    start = t - data.draw(st.integers(-600, 10 * 24 * 60)) * MINUTE
    rec = Schedule(kind="cron", timezone=zone, cron_expression=expr, start_at=start)
    check_against_oracle(rec, matches, t, dt.timedelta(hours=30))


# -------------------------------------------------------------- intervals
@PROPERTY
@given(
    data=st.data(),
    zone=st.sampled_from(ZONES),
    unit=st.sampled_from(["minutes", "hours"]),
    every=st.integers(1, 200),
)
def test_short_intervals_run_on_elapsed_time(data, zone, unit, every):
    t = data.draw(instants(zone))
    start = t - data.draw(st.integers(-300, 20_000)) * MINUTE
    rec = Schedule(
        kind="interval", timezone=zone, interval_every=every, interval_unit=unit, start_at=start
    )
    step = every * (60 if unit == "hours" else 1)
    hi = t + dt.timedelta(hours=30)
    expected = []
    u = t + MINUTE
    while u <= hi:
        if u >= start and ((u - start) // MINUTE) % step == 0:
            expected.append(u)
        u += MINUTE
    got = maths.occurrences_between(rec, t + MINUTE, hi, limit=10**6)
    assert got == expected
    assert maths.next_after(rec, t) > t


@PROPERTY
@given(
    data=st.data(),
    zone=st.sampled_from(ZONES),
    unit=st.sampled_from(["days", "weeks", "months"]),
    every=st.integers(1, 3),
)
def test_calendar_intervals_keep_wall_time(data, zone, unit, every):
    t = data.draw(instants(zone))
    tz = zoneinfo.ZoneInfo(zone)
    # Month-end starts (29-31) are the interesting ones for months.
    start_local = data.draw(st.datetimes(dt.datetime(2018, 1, 1), dt.datetime(2028, 1, 1))).replace(
        second=0, microsecond=0
    )
    if unit == "months" and data.draw(st.booleans()):
        last = calendar.monthrange(start_local.year, start_local.month)[1]
        start_local = start_local.replace(day=data.draw(st.integers(max(1, last - 3), last)))
    start = maths.to_utc(start_local, tz)
    t = max(t, start - dt.timedelta(days=2))
    rec = Schedule(
        kind="interval", timezone=zone, interval_every=every, interval_unit=unit, start_at=start
    )
    wall = maths.to_local(start, tz)  # the wall time the start really had

    def matches(local: dt.datetime) -> bool:
        if local < wall or local.time() != wall.time():
            return False
        if unit == "months":
            months = (local.year - wall.year) * 12 + local.month - wall.month
            last = calendar.monthrange(local.year, local.month)[1]
            return months % every == 0 and local.day == min(wall.day, last)
        days = (local.date() - wall.date()).days
        return days % (every * (7 if unit == "weeks" else 1)) == 0

    window = dt.timedelta(days=100 if unit == "months" else 22)
    check_against_oracle(rec, matches, t, window)


# ------------------------------------------------------------------ rrules
@st.composite
def rrules(draw):
    freq = draw(st.sampled_from(["MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY"]))
    parts = [f"FREQ={freq}"]
    interval = draw(st.integers(1, 4))
    if freq == "MINUTELY":
        interval = draw(st.integers(7, 90))
    if interval > 1:
        parts.append(f"INTERVAL={interval}")
    if freq in ("DAILY", "WEEKLY", "MONTHLY", "YEARLY"):
        hours = draw(st.lists(st.integers(0, 23), min_size=1, max_size=3, unique=True))
        parts.append("BYHOUR=" + ",".join(map(str, hours)))
    if freq != "MINUTELY":
        minutes = draw(st.lists(st.integers(0, 59), min_size=1, max_size=2, unique=True))
        parts.append("BYMINUTE=" + ",".join(map(str, minutes)))
    if freq in ("WEEKLY", "DAILY") and draw(st.booleans()):
        days = draw(
            st.lists(
                st.sampled_from(["MO", "TU", "WE", "TH", "FR", "SA", "SU"]),
                min_size=1,
                max_size=3,
                unique=True,
            )
        )
        parts.append("BYDAY=" + ",".join(days))
    if freq == "MONTHLY":
        choice = draw(st.sampled_from(["day", "last", "nth"]))
        if choice == "day":
            parts.append(f"BYMONTHDAY={draw(st.integers(1, 31))}")
        elif choice == "last":
            parts.append("BYMONTHDAY=-1")
        else:
            parts.append(f"BYDAY={draw(st.sampled_from(['1MO', '2TU', '-1FR', '1SU']))}")
    if freq == "YEARLY":
        month = draw(st.integers(1, 12))
        day = draw(st.integers(1, calendar.monthrange(2024, month)[1]))
        parts.append(f"BYMONTH={month};BYMONTHDAY={day}")
    return ";".join(parts)


@PROPERTY
@given(data=st.data(), zone=st.sampled_from(ZONES), rule=rrules())
def test_rrule_next_occurrence_matches_and_skips_nothing(data, zone, rule):
    tz = zoneinfo.ZoneInfo(zone)
    t = data.draw(instants(zone))
    start = (t - data.draw(st.integers(-600, 60 * 24 * 60)) * MINUTE).replace(second=0)
    rec = Schedule(kind="rrule", timezone=zone, rrule=rule, start_at=start)
    # Some of the rule's own wall times excluded.
    window = dt.timedelta(days=40 if "MONTHLY" in rule or "YEARLY" in rule else 3)
    own = rrulestr("RRULE:" + rule, dtstart=maths.to_local(start, tz))
    lo_local = maths.to_local(t, tz) - dt.timedelta(days=1)
    hi_local = maths.to_local(t + window, tz) + dt.timedelta(days=1)
    wall_times = set(own.between(lo_local, hi_local, inc=True))
    if wall_times and data.draw(st.booleans()):
        excluded = data.draw(st.sampled_from(sorted(wall_times)))
        rec.exdates = [excluded.isoformat()]
        wall_times.discard(excluded)
    check = wall_times.__contains__
    hi = t + window
    expected = oracle(rec, check, t, hi)
    got = [i for _l, i in itertools.islice(maths.iter_after(rec, t), len(expected) + 1)]
    got = [i for i in got if i <= hi]
    assert got == expected
    assert all(g > t for g in got)
