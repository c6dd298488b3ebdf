"""Recurrence maths: when a schedule fires, in local wall time, with DST rules.

Pure functions over a Recurrence-like object (the model, or anything with its
fields). Rules, documented in docs/recurrences.md and tested:

- Every schedule is read in its IANA time zone, in local wall time.
- A local time that does not exist (the spring-forward gap) runs once, at the
  first instant after the gap. Several such times (say every 15 minutes inside
  the gap) collapse into that one run.
- A local time that occurs twice (fall back) runs once, at its first occurrence.
- Intervals of hours or less run on true elapsed time (UTC arithmetic); days,
  weeks and months keep the local wall time; months keep the start's day of the
  month, clamped to the month's end (Jan 31 -> Feb 28 -> Mar 31).
- Missed occurrences (no poller ran) follow the misfire policy; enabling a paused
  schedule starts from now, never from the past.
"""

from __future__ import annotations

import calendar
import datetime as dt
import zoneinfo
from typing import Any

from cronsim import CronSim, CronSimError
from dateutil.rrule import rrulestr

UTC = dt.UTC
# Wide enough to cover any DST shift (Lord Howe 30 min, others 1 h, 2 h historically).
_SHIFT = dt.timedelta(hours=3)
_SEARCH_LIMIT = 10_000  # candidates examined before giving up (a rule that never fires)


# ----------------------------------------------------------- local <-> UTC
def zone(rec: Any) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(rec.timezone or "UTC")


def exists(local: dt.datetime, tz: zoneinfo.ZoneInfo) -> bool:
    aware = local.replace(tzinfo=tz)
    return aware.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == local


def to_utc(local: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    """Naive local wall time -> aware UTC, by our DST rules."""
    if exists(local, tz):
        return local.replace(tzinfo=tz, fold=0).astimezone(UTC)  # fold=0: first occurrence
    # In a gap: the first instant after it, i.e. the transition instant, found by
    # bisection between the two readings of the wall time.
    lo = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
    hi = local.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if lo > hi:
        lo, hi = hi, lo
    before = lo.astimezone(tz).utcoffset()
    while (hi - lo) > dt.timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).utcoffset() == before:
            lo = mid
        else:
            hi = mid
    return hi.replace(microsecond=0)


def to_local(instant: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    return instant.astimezone(tz).replace(tzinfo=None)


# ------------------------------------------------------------- validation
def validate(rec: Any) -> dict[str, str] | list[str]:
    """Readable errors keyed by field (empty if the schedule is good)."""
    errors: dict[str, str] = {}
    try:
        zoneinfo.ZoneInfo(rec.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        errors["timezone"] = f"{rec.timezone!r} is not an IANA time zone (e.g. Europe/Amsterdam)."
        return errors
    kind = rec.kind
    if kind == "interval":
        if not rec.interval_every or rec.interval_every < 1:
            errors["interval_every"] = "Say how many units, a whole number of at least 1."
        if rec.interval_unit not in ("minutes", "hours", "days", "weeks", "months"):
            errors["interval_unit"] = "Choose minutes, hours, days, weeks or months."
    elif kind == "cron":
        expr = (rec.cron_expression or "").strip()
        fields = expr.split()
        if len(fields) != 5:
            errors["cron_expression"] = (
                f"A cron expression has five fields (minute hour day-of-month month "
                f"day-of-week), e.g. '30 7 * * MON-FRI'; this one has {len(fields)}."
            )
        else:
            try:
                CronSim(expr, dt.datetime(2000, 1, 1))
            except (CronSimError, ValueError) as exc:
                errors["cron_expression"] = f"{expr!r}: {exc}."
    elif kind == "rrule":
        text = (rec.rrule or "").strip()
        if not text:
            errors["rrule"] = "Give a rule, e.g. FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0."
        else:
            try:
                _rule(rec)
            except (ValueError, TypeError) as exc:
                errors["rrule"] = f"Not a valid RFC 5545 rule: {exc}."
        try:
            _exdates(rec)
        except ValueError as exc:
            errors["exdates"] = str(exc)
    elif kind != "once":
        errors["kind"] = "Choose once, interval, cron or rrule."
    if rec.end_at and rec.start_at and rec.end_at <= rec.start_at:
        errors["end_at"] = "The end must come after the start."
    return errors


def _rule(rec: Any):
    tz = zone(rec)
    text = rec.rrule.strip()
    if not any(text.upper().startswith(p) for p in ("RRULE:", "DTSTART", "EXRULE", "RDATE")):
        text = "RRULE:" + text
    return rrulestr(text, dtstart=to_local(rec.start_at, tz), forceset=True)


def _exdates(rec: Any) -> set[dt.datetime]:
    out = set()
    for value in rec.exdates or []:
        try:
            out.add(dt.datetime.fromisoformat(str(value)).replace(tzinfo=None))
        except ValueError:
            raise ValueError(f"{value!r} is not a local date-time like 2026-12-25T09:00.") from None
    return out


# ------------------------------------------------------------- occurrences
def _local_candidates(rec: Any, from_local: dt.datetime):
    """Naive local wall times of the schedule, ascending, from about from_local."""
    tz = zone(rec)
    start_local = to_local(rec.start_at, tz)
    kind = rec.kind
    if kind == "cron":
        begin = max(from_local, start_local - dt.timedelta(minutes=1))
        it = CronSim(rec.cron_expression.strip(), begin.replace(second=0, microsecond=0))
        for candidate in it:
            yield candidate
    elif kind == "rrule":
        excluded = _exdates(rec)
        for candidate in _rule(rec).xafter(max(from_local, start_local), inc=True):
            if candidate.replace(tzinfo=None) not in excluded:
                yield candidate.replace(tzinfo=None)
    elif kind == "interval" and rec.interval_unit in ("days", "weeks"):
        step = dt.timedelta(days=rec.interval_every * (7 if rec.interval_unit == "weeks" else 1))
        k = max(0, (from_local - start_local) // step)
        while True:
            yield start_local + k * step
            k += 1
    elif kind == "interval" and rec.interval_unit == "months":
        k = 0
        if from_local > start_local:
            k = max(
                0,
                (from_local.year - start_local.year) * 12
                + from_local.month
                - start_local.month
                - 1,
            )
            k -= k % rec.interval_every
        while True:
            yield _add_months(start_local, k)
            k += rec.interval_every


def _add_months(start: dt.datetime, months: int) -> dt.datetime:
    year, month0 = divmod(start.month - 1 + months, 12)
    year += start.year
    day = min(start.day, calendar.monthrange(year, month0 + 1)[1])
    return start.replace(year=year, month=month0 + 1, day=day)


def next_after(rec: Any, after: dt.datetime, *, count_limit: bool = True) -> dt.datetime | None:
    """The first occurrence strictly after ``after`` (aware), or None."""
    if count_limit and rec.max_runs is not None and rec.runs_created >= rec.max_runs:
        return None
    start = rec.start_at
    result: dt.datetime | None = None
    if rec.kind == "once":
        result = start if start > after else None
    elif rec.kind == "interval" and rec.interval_unit in ("minutes", "hours"):
        # True elapsed time: DST does not move these.
        step = dt.timedelta(
            minutes=rec.interval_every * (60 if rec.interval_unit == "hours" else 1)
        )
        if after < start:
            result = start
        else:
            k = (after - start) // step + 1
            result = start + k * step
    else:
        tz = zone(rec)
        from_local = to_local(max(after, start), tz) - _SHIFT
        for n, local in enumerate(_local_candidates(rec, from_local)):
            if n > _SEARCH_LIMIT:
                break
            instant = to_utc(local, tz)
            if instant > after and instant >= start.astimezone(UTC):
                result = instant
                break
    if result is not None and rec.end_at and result > rec.end_at:
        return None
    return result.astimezone(UTC) if result is not None else None


def occurrences_between(
    rec: Any, start: dt.datetime, end: dt.datetime, *, limit: int = 1000
) -> list[dt.datetime]:
    """Occurrences t with start <= t <= end (aware UTC), at most ``limit``."""
    out: list[dt.datetime] = []
    t = next_after(rec, start - dt.timedelta(microseconds=1), count_limit=False)
    while t is not None and t <= end and len(out) < limit:
        out.append(t)
        t = next_after(rec, t, count_limit=False)
    return out


def next_due_on_enable(rec: Any, now: dt.datetime) -> dt.datetime | None:
    """From now on: a (re-)enabled schedule never fires what it missed while off."""
    return next_after(rec, now - dt.timedelta(microseconds=1))


def preview(
    rec: Any, after: dt.datetime, n: int = 10
) -> list[tuple[dt.datetime, dt.datetime, bool]]:
    """(local time, UTC time, moved by a DST change) of the next n occurrences."""
    tz = zone(rec)
    rows = []
    t = next_after(rec, after, count_limit=False)
    wanted: set[dt.datetime] = set()
    if rec.kind in ("cron", "rrule") or (
        rec.kind == "interval" and rec.interval_unit in ("days", "weeks", "months")
    ):
        # Which local times the rule asked for, to see which were moved.
        for local in _local_candidates(rec, to_local(after, tz) - _SHIFT):
            wanted.add(local)
            if len(wanted) > 4 * n + 20:
                break
    while t is not None and len(rows) < n:
        local = t.astimezone(tz)
        # Moved: the rule asked for a wall time that did not exist (spring gap),
        # so the run happens at the first instant after it.
        moved = bool(wanted) and local.replace(tzinfo=None) not in wanted
        rows.append((local, t, moved))
        t = next_after(rec, t, count_limit=False)
    return rows


# --------------------------------------------------------------- describe
def describe(rec: Any) -> str:
    tzname = rec.timezone or "UTC"
    tz = zone(rec)
    start_local = to_local(rec.start_at, tz) if rec.start_at else None
    if rec.kind == "once":
        text = f"Once at {start_local:%Y-%m-%d %H:%M}"
    elif rec.kind == "interval":
        unit = rec.interval_unit or "?"
        every = rec.interval_every or 0
        text = f"Every {unit[:-1] if every == 1 else f'{every} {unit}'}"
        if start_local:
            text += f" from {start_local:%Y-%m-%d %H:%M}"
    elif rec.kind == "cron":
        try:
            text = CronSim(rec.cron_expression.strip(), dt.datetime(2000, 1, 1)).explain()
        except Exception:  # noqa: BLE001 - a description never breaks a page
            text = f"Cron {rec.cron_expression!r}"
    elif rec.kind == "rrule":
        try:
            text = str(_rule(rec)._rrule[0]).split("\n")[-1].replace("RRULE:", "Rule ")
        except Exception:  # noqa: BLE001
            text = f"Rule {rec.rrule!r}"
    else:
        text = rec.kind
    extras = []
    if rec.end_at:
        extras.append(f"until {to_local(rec.end_at, tz):%Y-%m-%d %H:%M}")
    if rec.max_runs:
        extras.append(f"at most {rec.max_runs} runs")
    return f"{text}, {tzname}" + (f" ({', '.join(extras)})" if extras else "")


# ---------------------------------------------------------------- misfires
def due_occurrences(rec: Any, now: dt.datetime) -> tuple[list[dt.datetime], dt.datetime | None]:
    """Occurrences to run now, by the misfire policy, and the next due time after now.

    The poller calls this for a recurrence whose next_due_at has come. Missed
    occurrences are those between next_due_at and now. Within the grace period
    an occurrence is on time; older ones are missed:
    - skip: run only the on-time ones;
    - run_once: one run (at the latest missed time) for all missed ones;
    - run_each: every missed one, at most misfire_max_runs (the latest ones).
    """
    if rec.next_due_at is None:
        return [], next_due_on_enable(rec, now)
    grace = dt.timedelta(seconds=rec.misfire_grace_seconds or 0)
    cap = max(1, rec.misfire_max_runs or 1)
    missed: list[dt.datetime] = []
    t: dt.datetime | None = rec.next_due_at
    # Walk from the stored due time; beyond the cap only the latest matter, so
    # keep a bounded window.
    examined = 0
    while t is not None and t <= now:
        missed.append(t)
        if len(missed) > cap + 1:
            missed.pop(0)
        examined += 1
        if examined > 100_000:
            break
        t = next_after(rec, t, count_limit=False)
    on_time = [m for m in missed if now - m <= grace]
    late = [m for m in missed if now - m > grace]
    policy = rec.misfire_policy
    if policy == "skip":
        chosen = on_time
    elif policy == "run_each":
        chosen = missed[-cap:]
    else:  # run_once
        chosen = missed[-1:] if missed else []
        if late and on_time:
            chosen = on_time[-1:]
    if rec.max_runs is not None:
        chosen = chosen[: max(0, rec.max_runs - rec.runs_created)]
    next_due = t if t is not None and t > now else next_after(rec, now, count_limit=False)
    if rec.max_runs is not None and rec.runs_created + len(chosen) >= rec.max_runs:
        next_due = None
    return chosen, next_due
