"""Recurrence maths: when a schedule fires, in local wall time, with DST rules.

Pure functions over a Recurrence-like object (the model, the ``Schedule``
dataclass below, or anything with the same field names). No database access.

Rules (docs/recurrences.md explains them with examples; tests check each):

- Every schedule is read in its IANA time zone, in local wall time.
- A local time that does not exist (the spring-forward gap) runs once, at the
  first instant after the gap. Several such times (every 15 minutes inside the
  gap, say) collapse into that one run.
- A local time that occurs twice (fall back) runs once, at its first occurrence
  (``fold=0``); the repeated hour does not run the schedule again.
- Intervals of minutes and hours run on true elapsed time (UTC arithmetic), so
  their wall-clock times shift by the DST change; intervals of days, weeks and
  months keep the start's local wall time; months keep the start's day of the
  month, clamped to the month's end (Jan 31 -> Feb 28/29 -> Mar 31).
- ``exdates`` (local date-times, or whole local dates) remove occurrences of any
  kind; ``end_at`` and ``max_runs`` end every kind.
- Missed occurrences (no poller ran) follow the misfire policy
  (``due_occurrences``); enabling a paused schedule starts from now, never from
  the past (``next_due_on_enable``).
"""

from __future__ import annotations

import calendar
import dataclasses
import datetime as dt
import re
import zoneinfo
from collections.abc import Iterator
from typing import Any

from cronsim import CronSim, CronSimError
from dateutil.rrule import rrule as RRule
from dateutil.rrule import rrulestr

UTC = dt.UTC
KINDS = ("once", "interval", "cron", "rrule")
UNITS = ("minutes", "hours", "days", "weeks", "months")
MISFIRE_POLICIES = ("skip", "run_once", "run_each")
_TICK = dt.timedelta(microseconds=1)
# An rrule that can never fire (FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30) makes dateutil
# search to the year 9999, seconds of work: searches stop this far ahead.
_RRULE_HORIZON_YEARS = 100
_MAX_WALK = 200_000  # occurrences walked in one call before giving up (a safety net)


@dataclasses.dataclass
class Schedule:
    """The Recurrence model's schedule fields without the ORM (tests, bench, previews)."""

    kind: str = "cron"
    timezone: str = "UTC"
    start_at: dt.datetime = dt.datetime(2026, 1, 1, tzinfo=UTC)
    end_at: dt.datetime | None = None
    interval_every: int | None = None
    interval_unit: str = ""
    cron_expression: str = ""
    rrule: str = ""
    exdates: list[str] = dataclasses.field(default_factory=list)
    max_runs: int | None = None
    runs_created: int = 0
    misfire_policy: str = "run_once"
    misfire_grace_seconds: int = 300
    misfire_max_runs: int = 10
    next_due_at: dt.datetime | None = None


# ----------------------------------------------------------- local <-> UTC
def zone(rec: Any) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(rec.timezone or "UTC")


def exists(local: dt.datetime, tz: zoneinfo.ZoneInfo) -> bool:
    """Whether a naive wall time happens at all in ``tz`` (False inside a DST gap)."""
    aware = local.replace(tzinfo=tz)
    return aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == local


def to_utc(local: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """Naive local wall time -> aware UTC instant, by our DST rules.

    Ambiguous (fall back): the first occurrence. Missing (spring forward): the
    first instant after the gap, which is the transition itself.
    """
    first = local.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == local:
        return first
    # In a gap, fold=0 reads the wall time with the offset from before the gap and
    # fold=1 with the one after; the transition lies between the two readings.
    # Bisection over whole seconds (every zone's transitions are on whole seconds).
    a = int(local.replace(tzinfo=tz, fold=1).astimezone(UTC).timestamp())
    b = int(first.timestamp())
    lo, hi = min(a, b), max(a, b)
    before = dt.datetime.fromtimestamp(lo, tz).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if dt.datetime.fromtimestamp(mid, tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return dt.datetime.fromtimestamp(hi, UTC)


def to_local(instant: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


# ------------------------------------------------------------- validation
_CRON_FIELDS = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31, L or LW"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT, with 5L (last Friday) or MON#2 (second Monday)"),
]


_DEGENERATE_RANGE = re.compile(r"^([0-9]+|[A-Za-z]{3})-([0-9]+|[A-Za-z]{3})/[0-9]+$")


def cron_normalized(expr: str) -> str:
    """The expression as cronsim should read it.

    cronsim reads a one-value range with a step ("5-5/2", "JAN-JAN/1") as "from 5
    to the end, every 2"; cron and every reader take it as that one value.
    """
    fields = []
    for field in expr.split():
        items = []
        for item in field.split(","):
            match = _DEGENERATE_RANGE.match(item)
            if match and match.group(1).upper() == match.group(2).upper():
                item = match.group(1)
            items.append(item)
        fields.append(",".join(items))
    return " ".join(fields)


def _cron(expr: str, start: dt.datetime) -> CronSim:
    return CronSim(cron_normalized(expr.strip()), start)


def _cron_field_error(expr: str) -> str:
    """Which field of a cron expression is bad, and what it may hold."""
    parts = expr.split()
    for i, (name, allowed) in enumerate(_CRON_FIELDS):
        probe = ["*"] * 5
        probe[i] = parts[i]
        try:
            _cron(" ".join(probe), dt.datetime(2000, 1, 1))
        except CronSimError:
            return (
                f"cron expression {expr!r}: the {name} field {parts[i]!r} is not valid; "
                f"it takes {allowed}, '*', ranges (1-5), lists (1,15) and steps (*/15)."
            )
    return (
        f"cron expression {expr!r} can never fire: no month has the day it asks for "
        f"(e.g. day 30 in February)."
    )


def _cron_error(expr: str) -> str | None:
    fields = expr.split()
    if len(fields) != 5:
        return (
            f"cron expression {expr!r} has {len(fields)} fields; it needs five: minute hour "
            "day-of-month month day-of-week, e.g. '30 7 * * MON-FRI'."
        )
    try:
        _cron(expr, dt.datetime(2000, 1, 1))
    except CronSimError:
        return _cron_field_error(expr)
    return None


def validate_by_field(rec: Any) -> dict[str, list[str]]:
    """Readable errors keyed by model field ("__all__" for the whole schedule)."""
    errors: dict[str, list[str]] = {}

    def add(field: str, text: str) -> None:
        errors.setdefault(field, []).append(text)

    try:
        zoneinfo.ZoneInfo(rec.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        add("timezone", f"time zone {rec.timezone!r} is not an IANA zone, e.g. Europe/Amsterdam.")
    start = rec.start_at
    if start is None:
        add("start_at", "a start time is needed (for 'once' it is the time to run).")
    elif start.tzinfo is None:
        add("start_at", "the start time needs a time zone (an aware datetime).")
    kind = rec.kind
    if kind == "interval":
        every = rec.interval_every
        if not isinstance(every, int) or every < 1:
            add("interval_every", f"'every' must be a whole number of at least 1, not {every!r}.")
        if rec.interval_unit not in UNITS:
            add(
                "interval_unit",
                f"interval unit {rec.interval_unit!r} is not one of {', '.join(UNITS)}.",
            )
    elif kind == "cron":
        expr = (rec.cron_expression or "").strip()
        if not expr:
            add("cron_expression", "give a cron expression, e.g. '30 7 * * MON-FRI'.")
        else:
            problem = _cron_error(expr)
            if problem:
                add("cron_expression", problem)
    elif kind == "rrule":
        text = (rec.rrule or "").strip()
        if not text:
            add("rrule", "give a rule, e.g. FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0.")
        elif "timezone" not in errors and "start_at" not in errors:
            problem = _rrule_error(rec)
            if problem:
                add("rrule", problem)
    elif kind != "once":
        add("kind", f"kind {kind!r} is not one of {', '.join(KINDS)}.")
    try:
        _exdates(rec)
    except ValueError as exc:
        add("exdates", str(exc))
    if rec.end_at and start and rec.end_at <= start:
        add("end_at", "the end must come after the start.")
    if rec.max_runs is not None and rec.max_runs < 1:
        add("max_runs", "the maximum number of runs must be at least 1 (or empty: no limit).")
    policy = getattr(rec, "misfire_policy", "run_once")
    if policy not in MISFIRE_POLICIES:
        add("misfire_policy", f"misfire policy {policy!r} is not one of skip, run_once, run_each.")
    if (getattr(rec, "misfire_max_runs", 1) or 0) < 1:
        add("misfire_max_runs", "the catch-up cap must be at least 1.")
    return errors


def validate(rec: Any) -> list[str]:
    """Readable errors, one string each; empty when the schedule is good."""
    return [text for texts in validate_by_field(rec).values() for text in texts]


# ----------------------------------------------------------------- rrules
_UNTIL_UTC = re.compile(r"UNTIL=(\d{8}T\d{6})Z", re.IGNORECASE)


def _rrule_lines(rec: Any, tz: zoneinfo.ZoneInfo) -> str:
    lines = []
    for raw in (rec.rrule or "").strip().splitlines():
        line = raw.strip()
        if not line:
            continue
        upper = line.upper()
        if upper.startswith("DTSTART"):
            raise ValueError("leave DTSTART out: the schedule's start is the rule's start.")
        if upper.startswith("FREQ="):
            line = "RRULE:" + line

        # UNTIL in UTC (the RFC form) becomes local wall time, as the rule runs in it.
        def local_until(m: re.Match) -> str:
            instant = dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
            return f"UNTIL={to_local(instant, tz):%Y%m%dT%H%M%S}"

        lines.append(_UNTIL_UTC.sub(local_until, line))
    return "\n".join(lines)


def _rule(rec: Any, horizon: dt.datetime | None = None):
    """The rule as a dateutil rruleset in naive local time, starting at start_at."""
    tz = zone(rec)
    ruleset = rrulestr(_rrule_lines(rec, tz), dtstart=to_local(rec.start_at, tz), forceset=True)
    if horizon is not None:
        # A rule that never fires would otherwise search to the year 9999.
        ruleset._rrule = [
            r.replace(until=horizon) if r._count is None and r._until is None else r
            for r in ruleset._rrule
        ]
    return ruleset


def _rrule_error(rec: Any) -> str | None:
    text = (rec.rrule or "").strip()
    try:
        ruleset = _rule(rec)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        return f"rule {text!r} is not a valid RFC 5545 rule: {exc}"
    for r in ruleset._rrule:
        if r._freq == 6:  # SECONDLY
            return f"rule {text!r}: FREQ=SECONDLY is finer than the scheduler's minute."
    if not ruleset._rrule and not ruleset._rdate:
        return f"rule {text!r} has no RRULE line (FREQ=...)."
    tz = zone(rec)
    start = to_local(rec.start_at, tz)
    probe = _rule(rec)
    limit = _add_months(start, 60)
    probe._rrule = [r.replace(count=None, until=limit) for r in probe._rrule]
    if probe.after(start, inc=True) is None and not ruleset._rdate:
        return f"rule {text!r} never fires in the five years after the start."
    return None


def _exdates(rec: Any) -> tuple[set[dt.datetime], set[dt.date]]:
    """Excluded local date-times (to the minute) and whole excluded local dates."""
    times: set[dt.datetime] = set()
    days: set[dt.date] = set()
    values = rec.exdates or []
    if not isinstance(values, list | tuple):
        raise ValueError('excluded dates must be a list, e.g. ["2026-12-25T09:00"].')
    for value in values:
        text = str(value).strip()
        try:
            if len(text) == 10:
                days.add(dt.date.fromisoformat(text))
                continue
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"excluded date {value!r} is not a local date-time like 2026-12-25T09:00 "
                "or a date like 2026-12-25."
            ) from None
        if parsed.tzinfo is not None:
            raise ValueError(
                f"excluded date {value!r} has an offset; give the local wall time without one."
            )
        times.add(parsed.replace(second=0, microsecond=0))
    return times, days


# ------------------------------------------------------------- occurrences
def _step(rec: Any) -> dt.timedelta:
    every = rec.interval_every
    return {
        "minutes": dt.timedelta(minutes=every),
        "hours": dt.timedelta(hours=every),
        "days": dt.timedelta(days=every),
        "weeks": dt.timedelta(weeks=every),
    }[rec.interval_unit]


def _add_months(start: dt.datetime, months: int) -> dt.datetime:
    year, month0 = divmod(start.month - 1 + months, 12)
    year += start.year
    day = min(start.day, calendar.monthrange(year, month0 + 1)[1])
    return start.replace(year=year, month=month0 + 1, day=day)


def _wall_candidates(rec: Any, begin: dt.datetime) -> Iterator[dt.datetime]:
    """The naive local wall times a wall-time schedule asks for, ascending, from
    about ``begin`` (never later than the first one at or after it)."""
    tz = zone(rec)
    start = to_local(rec.start_at, tz)
    begin = max(begin, start)
    kind = rec.kind
    if kind == "cron":
        # cronsim gets naive local time on purpose: with an aware datetime it runs
        # wildcard expressions on elapsed time (the repeated hour fires twice) and
        # moves gap times by its own rules. Ours are applied by to_utc().
        first = (begin - dt.timedelta(minutes=1)).replace(second=0, microsecond=0)
        for candidate in _cron(rec.cron_expression, first):
            if candidate >= start:
                yield candidate
    elif kind == "rrule":
        horizon = _add_months(begin, 12 * min(_RRULE_HORIZON_YEARS, 9998 - begin.year))
        yield from _rule(rec, horizon=horizon).xafter(begin, inc=True)
    elif kind == "interval" and rec.interval_unit in ("days", "weeks"):
        step = _step(rec)
        k = (begin - start) // step
        while True:
            yield start + k * step
            k += 1
    elif kind == "interval" and rec.interval_unit == "months":
        every = rec.interval_every
        k = (begin.year - start.year) * 12 + begin.month - start.month - 1
        k = max(0, k - k % every)
        while True:
            yield _add_months(start, k)
            k += every
    else:
        raise ValueError(f"no wall-time candidates for kind {kind!r}")


def _is_elapsed(rec: Any) -> bool:
    return rec.kind == "interval" and rec.interval_unit in ("minutes", "hours")


def iter_after(rec: Any, after: dt.datetime) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """(requested local wall time, UTC instant) of every occurrence strictly after
    ``after``, ascending, up to end_at. Ignores max_runs (a count of runs made)."""
    after = after.astimezone(UTC)
    start = rec.start_at.astimezone(UTC)
    end = rec.end_at.astimezone(UTC) if rec.end_at else None
    tz = zone(rec)
    ex_times, ex_days = _exdates(rec)

    def kept(local: dt.datetime) -> bool:
        return local not in ex_times and local.date() not in ex_days

    if rec.kind == "once":
        if start > after and (end is None or start <= end) and kept(to_local(start, tz)):
            yield to_local(start, tz), start
        return
    if _is_elapsed(rec):
        # True elapsed time: DST does not move these.
        step = _step(rec)
        k = 0 if after < start else (after - start) // step + 1
        while True:
            instant = start + k * step
            if end is not None and instant > end:
                return
            local = to_local(instant, tz)
            if kept(local):
                yield local, instant
            k += 1
    # Wall-time kinds. to_utc() is monotone (non-decreasing) in the wall time, and
    # no wall time before after's own maps past ``after``: starting the candidates
    # at after's wall time misses nothing.
    last: dt.datetime | None = None
    for local in _wall_candidates(rec, to_local(after, tz)):
        instant = to_utc(local, tz)
        if instant <= after or instant < start or (last is not None and instant <= last):
            continue  # before the window, or collapsed into the previous one (a gap)
        if end is not None and instant > end:
            return
        if kept(local):
            last = instant
            yield local, instant


def next_after(rec: Any, after: dt.datetime, *, count_limit: bool = True) -> dt.datetime | None:
    """The first occurrence strictly after ``after`` (aware), as aware UTC, or None.

    With ``count_limit`` a schedule that made its max_runs runs has no next one.
    """
    if count_limit and rec.max_runs is not None and rec.runs_created >= rec.max_runs:
        return None
    for _local, instant in iter_after(rec, after):
        return instant
    return None


def occurrences_between(
    rec: Any, start: dt.datetime, end: dt.datetime, limit: int = 1000
) -> list[dt.datetime]:
    """Occurrences t with start <= t <= end (aware UTC), the first ``limit`` of them."""
    out: list[dt.datetime] = []
    if limit <= 0:
        return out
    for _local, instant in iter_after(rec, start - _TICK):
        if instant > end:
            break
        out.append(instant)
        if len(out) >= limit:
            break
    return out


def next_due_on_enable(rec: Any, now: dt.datetime) -> dt.datetime | None:
    """The first occurrence at or after now: a (re-)enabled schedule never fires
    what it missed while it was off."""
    return next_after(rec, now - _TICK)


def preview(
    rec: Any, after: dt.datetime, n: int = 10
) -> list[tuple[dt.datetime, dt.datetime, bool]]:
    """(local time, UTC time, moved by DST) for the next n occurrences after ``after``.

    Moved: the schedule asked for a wall time that did not exist (a spring-forward
    gap), so it runs at the first instant after the gap. Ambiguous wall times run
    at their first occurrence and are not moved.
    """
    tz = zone(rec)
    rows = []
    left = None
    if rec.max_runs is not None:
        left = max(0, rec.max_runs - rec.runs_created)
    for requested, instant in iter_after(rec, after):
        if len(rows) >= n or (left is not None and len(rows) >= left):
            break
        local = instant.astimezone(tz)
        moved = not _is_elapsed(rec) and local.replace(tzinfo=None) != requested
        rows.append((local, instant, moved))
    return rows


# --------------------------------------------------------------- describe
_DAY_NAMES = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_FREQ_WORDS = {
    0: ("Yearly", "years"),
    1: ("Monthly", "months"),
    2: ("Weekly", "weeks"),
    3: ("Daily", "days"),
    4: ("Hourly", "hours"),
    5: ("Every minute", "minutes"),
}


def _ordinal(n: int) -> str:
    if n == -1:
        return "last"
    suffix = (
        "th" if 10 <= abs(n) % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(abs(n) % 10, "th")
    )
    return f"{n}{suffix}" if n > 0 else f"{-n}{suffix} last"


def _describe_rrule(r: RRule) -> str:
    word, unit = _FREQ_WORDS.get(r._freq, ("Every", "units"))
    text = f"Every {r._interval} {unit}" if r._interval > 1 else word
    parts = []
    if r._bymonth and r._freq < 1:
        parts.append("in " + ", ".join(calendar.month_name[m] for m in sorted(r._bymonth)))
    days = [_DAY_NAMES[d] for d in sorted(r._byweekday or ())]
    nth = [f"the {_ordinal(n)} {_DAY_NAMES[d]}" for d, n in sorted(r._bynweekday or ())]
    setpos = sorted(r._bysetpos or ())
    if days and len(setpos) == 1 and r._freq <= 2:
        # BYDAY=MO;BYSETPOS=1 (or MO,TU,WE,TH,FR;BYSETPOS=-1): one pick among them.
        among = "weekday" if days == _DAY_NAMES[:5] else " or ".join(days)
        parts.append(f"on the {_ordinal(setpos[0])} {among}")
        setpos = []
    elif days == _DAY_NAMES[:5]:
        parts.append("on weekdays")
    elif days and len(days) < 7:
        parts.append("on " + ", ".join(days))
    if nth:
        parts.append("on " + ", ".join(nth))
    if r._bymonthday and r._freq <= 1:
        monthdays = sorted(r._bymonthday) + sorted(r._bynmonthday or ())
        parts.append("on day " + ", ".join(str(d) for d in monthdays))
    elif r._bynmonthday and r._freq <= 1:
        parts.append("on the " + ", ".join(_ordinal(d) for d in r._bynmonthday) + " day")
    if setpos:
        parts.append("(positions " + ", ".join(str(p) for p in setpos) + ")")
    if r._freq >= 3 or r._byhour is not None:
        hours = sorted(r._byhour or ())
        minutes = sorted(r._byminute or ())
        if r._freq <= 3 and len(hours) * len(minutes) <= 6:
            times = [f"{h:02d}:{m:02d}" for h in hours for m in minutes]
            parts.append("at " + ", ".join(times))
        elif r._freq == 4 and minutes:
            parts.append("at minute " + ", ".join(str(m) for m in minutes))
    if r._count:
        parts.append(f"{r._count} times")
    if r._until:
        parts.append(f"until {r._until:%Y-%m-%d %H:%M}")
    return " ".join([text, *parts])


def describe(rec: Any) -> str:
    """A readable one-line description, e.g. 'At 07:30 on weekdays, Europe/Amsterdam'."""
    tzname = rec.timezone or "UTC"
    try:
        tz = zone(rec)
        start_local = to_local(rec.start_at, tz) if rec.start_at else None
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        return f"(unknown time zone {tzname!r})"
    since = f" from {start_local:%Y-%m-%d %H:%M}" if start_local else ""
    kind = rec.kind
    try:
        if kind == "once":
            text = f"Once at {start_local:%Y-%m-%d %H:%M}" if start_local else "Once"
        elif kind == "interval":
            unit = rec.interval_unit or "units"
            every = rec.interval_every or 0
            text = f"Every {unit[:-1]}" if every == 1 else f"Every {every} {unit}"
            if unit == "months" and start_local:
                day = start_local.day
                text += f" on day {day}" + (" (or the month's last day)" if day > 28 else "")
                text += f" at {start_local:%H:%M}"
            text += since
        elif kind == "cron":
            text = _cron(rec.cron_expression, dt.datetime(2000, 1, 1)).explain()
            text = text.replace("Monday through Friday", "weekdays")
        elif kind == "rrule":
            rules = _rule(rec)._rrule
            text = "; ".join(_describe_rrule(r) for r in rules) or f"Rule {rec.rrule!r}"
            if start_local:
                text += since
        else:
            text = f"Unknown kind {kind!r}"
    except Exception:  # noqa: BLE001 - a description never breaks a page
        text = {"cron": f"Cron {rec.cron_expression!r}", "rrule": f"Rule {rec.rrule!r}"}.get(
            kind, str(kind)
        ) + " (not valid)"
    extras = []
    if rec.exdates:
        extras.append(f"except {len(rec.exdates)} date{'s' if len(rec.exdates) != 1 else ''}")
    if rec.end_at:
        extras.append(f"until {to_local(rec.end_at, tz):%Y-%m-%d %H:%M}")
    if rec.max_runs:
        extras.append(f"at most {rec.max_runs} run{'s' if rec.max_runs != 1 else ''}")
    return f"{text}, {tzname}" + (f" ({', '.join(extras)})" if extras else "")


# ---------------------------------------------------------------- misfires
def _last_n(rec: Any, lo: dt.datetime, hi: dt.datetime, n: int) -> list[dt.datetime]:
    """The last n occurrences t with lo <= t < hi, found by widening windows back
    from hi, so a week of downtime of an every-minute schedule is not walked."""
    span = dt.timedelta(hours=1)
    while True:
        wlo = max(lo, hi - span)
        found = [t for t in occurrences_between(rec, wlo, hi, limit=_MAX_WALK) if t < hi]
        if len(found) >= n or wlo == lo:
            return found[-n:] if n else []
        span *= 8


_UNSET: Any = object()


def due_occurrences(
    rec: Any, now: dt.datetime, next_due_at: dt.datetime | None = _UNSET
) -> tuple[list[dt.datetime], dt.datetime | None]:
    """The due times to turn into runs now, by the misfire policy, and the new next
    due time (after now; None when the schedule is done).

    ``next_due_at`` (default: the recurrence's own) is where the previous tick
    left off; every occurrence from it up to now is due. Those within the grace
    period (now - t <= misfire_grace_seconds) are on time, the older ones missed:

    - skip: only the on-time ones run; missed ones are dropped.
    - run_once: if any was missed, one run for all of them (due at the latest
      due occurrence); otherwise the on-time ones.
    - run_each: every missed one and every on-time one.

    No policy returns more than misfire_max_runs times (the latest are kept), and
    never more than max_runs allows.
    """
    now = now.astimezone(UTC)
    if next_due_at is _UNSET:
        next_due_at = rec.next_due_at
    if next_due_at is None:
        return [], next_due_on_enable(rec, now)
    if next_due_at > now:
        return [], next_due_at
    left = None if rec.max_runs is None else max(0, rec.max_runs - rec.runs_created)
    if left == 0:
        return [], None
    # The stored due time is where to look from, not an occurrence we trust: the
    # rule may have been edited since.
    first = next_after(rec, next_due_at - _TICK, count_limit=False)
    if first is None:
        return [], None
    if first > now:
        return [], first
    grace_start = now - dt.timedelta(seconds=rec.misfire_grace_seconds or 0)
    cap = max(1, rec.misfire_max_runs or 1)
    on_time: list[dt.datetime] = []
    next_due: dt.datetime | None = None
    for _local, instant in iter_after(rec, max(first, grace_start) - _TICK):
        if instant > now:
            next_due = instant
            break
        on_time.append(instant)
        if len(on_time) > _MAX_WALK:
            break
    on_time = on_time[-cap:]
    missed = first < grace_start
    policy = rec.misfire_policy
    if not missed:
        chosen = on_time
    elif policy == "skip":
        chosen = on_time
    elif policy == "run_once":
        chosen = on_time[-1:] or _last_n(rec, first, grace_start, 1)
    else:  # run_each
        late = _last_n(rec, first, grace_start, cap)
        chosen = (late + on_time)[-cap:]
    if left is not None:
        chosen = chosen[:left]
        if len(chosen) >= left:
            next_due = None
    return chosen, next_due
