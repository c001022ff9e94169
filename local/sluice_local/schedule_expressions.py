"""EventBridge and EventBridge Scheduler schedule expressions: when does a schedule fire next?

- `rate(N minute|minutes|hour|hours|day|days)`: every N units, counted from when local mode started
  the schedule (AWS counts from when the rule or schedule was created, which is the same moment here).
- `cron(minutes hours day-of-month month day-of-week year)`: AWS's six fields, with `*`, `?`, lists
  (`1,15`), ranges (`MON-FRI`), increments (`0/5`, `*/10`, `10-50/20`), month and day names, and
  day-of-week 1-7 meaning SUN-SAT. `L`, `W` and `#` (last day, nearest weekday, nth weekday) are
  not supported locally: such a schedule is reported and not run, rather than run at the wrong times.
- `at(yyyy-mm-ddThh:mm:ss)`: Scheduler's one-time schedule.

Cron and at expressions are read in the schedule's time zone (Scheduler's ScheduleExpressionTimezone;
rules are always UTC).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["At", "Cron", "Expression", "ExpressionError", "Rate", "UnsupportedExpression", "parse_expression"]


class ExpressionError(ValueError):
    """Not a schedule expression AWS would accept."""


class UnsupportedExpression(ExpressionError):
    """Valid on AWS, but local mode cannot compute its times (it says which part)."""


_UNITS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}
_RATE = re.compile(r"^rate\(\s*(\d+)\s+([a-z]+)\s*\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
_MONTH_NAMES = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_MONTHS = {name: index for index, name in enumerate(_MONTH_NAMES, 1)}
# AWS numbers days of the week 1-7 from Sunday.
_WEEKDAYS = {name: index for index, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], 1)}
# How far ahead a cron is searched: a year field may name a year far off, but not this far.
_SEARCH_YEARS = 10


@dataclass(frozen=True)
class Rate:
    seconds: int

    def next_after(self, moment: datetime, origin: datetime) -> datetime | None:
        """The first firing strictly after `moment`, on the grid origin + k * seconds (k >= 1)."""
        elapsed = (moment - origin).total_seconds()
        periods = max(int(elapsed // self.seconds) + 1, 1)
        return origin + timedelta(seconds=periods * self.seconds)


@dataclass(frozen=True)
class At:
    moment: datetime  # aware, UTC

    def next_after(self, moment: datetime, _origin: datetime) -> datetime | None:
        return self.moment if self.moment > moment else None


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int] | None  # day of month; None: `?` or `*` (any)
    months: frozenset[int]
    weekdays: frozenset[int] | None  # 1 (SUN) - 7 (SAT); None: `?` or `*` (any)
    years: frozenset[int] | None  # None: any
    zone: ZoneInfo

    def next_after(self, moment: datetime, _origin: datetime) -> datetime | None:
        """The first whole minute strictly after `moment` matching every field, or None within the search years."""
        local = moment.astimezone(self.zone)
        day = local.date()
        for _ in range(366 * _SEARCH_YEARS):
            if self._matches_day(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=self.zone)
                        # A wall-clock time skipped by a DST change maps to a shifted instant; compare in UTC.
                        if candidate.astimezone(UTC) > moment:
                            return candidate.astimezone(UTC)
            day += timedelta(days=1)
        return None

    def _matches_day(self, day: date) -> bool:
        if self.years is not None and day.year not in self.years:
            return False
        if day.month not in self.months:
            return False
        if self.days is not None and day.day not in self.days:
            return False
        # Python: Monday 0 .. Sunday 6; AWS: Sunday 1 .. Saturday 7.
        return self.weekdays is None or (day.weekday() + 1) % 7 + 1 in self.weekdays


Expression = Rate | Cron | At


def parse_expression(text: str, timezone: str | None = None) -> Expression:
    """Parse a ScheduleExpression.

    ExpressionError if AWS would refuse it; UnsupportedExpression if only local mode cannot schedule it.
    """
    text = text.strip()
    zone = _zone(timezone)
    if match := _RATE.match(text):
        value, unit = int(match.group(1)), match.group(2)
        if unit not in _UNITS:
            raise ExpressionError(f"{text!r}: the unit must be minute(s), hour(s) or day(s)")
        if value < 1:
            raise ExpressionError(f"{text!r}: the rate must be at least 1")
        return Rate(value * _UNITS[unit])
    if match := _AT.match(text):
        moment = datetime.fromisoformat(match.group(1)).replace(tzinfo=zone)
        return At(moment.astimezone(UTC))
    if match := _CRON.match(text):
        return _parse_cron(text, match.group(1).split(), zone)
    raise ExpressionError(f"{text!r} is not a rate(...), cron(...) or at(...) expression")


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ExpressionError(f"unknown time zone {name!r}") from None


def _parse_cron(text: str, fields: list[str], zone: ZoneInfo) -> Cron:
    if len(fields) != 6:
        raise ExpressionError(f"{text!r}: AWS cron has 6 fields (minutes hours day-of-month month day-of-week year)")
    minutes, hours, days, months, weekdays, years = fields
    # Day names contain no L, W or #: any of them here is AWS's last / nearest weekday / nth weekday.
    for name, value, marks in (("day-of-month", days, "LW"), ("day-of-week", weekdays, "L#")):
        if any(mark in value.upper() for mark in marks):
            raise UnsupportedExpression(
                f"{text!r}: {name} {value!r} uses {' or '.join(marks)}, which local mode does not schedule"
            )
    if days != "?" and weekdays != "?":
        raise ExpressionError(f"{text!r}: one of day-of-month and day-of-week must be '?'")
    return Cron(
        minutes=_field(text, "minutes", minutes, 0, 59, {}),
        hours=_field(text, "hours", hours, 0, 23, {}),
        days=_any_or(text, "day-of-month", days, 1, 31, {}),
        months=_field(text, "month", months, 1, 12, _MONTHS),
        weekdays=_any_or(text, "day-of-week", weekdays, 1, 7, _WEEKDAYS),
        years=_any_or(text, "year", years, 1970, 2199, {}),
        zone=zone,
    )


def _any_or(text: str, name: str, value: str, low: int, high: int, names: dict[str, int]) -> frozenset[int] | None:
    return None if value in ("?", "*") else _field(text, name, value, low, high, names)


def _field(text: str, name: str, value: str, low: int, high: int, names: dict[str, int]) -> frozenset[int]:
    if value == "?":
        raise ExpressionError(f"{text!r}: '?' is only allowed in day-of-month and day-of-week")
    found: set[int] = set()
    for part in value.split(","):
        base, _, step_text = part.partition("/")
        step = _number(text, name, step_text, names) if step_text else 1
        if step < 1:
            raise ExpressionError(f"{text!r}: {name} increment {step_text!r} must be at least 1")
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _number(text, name, first, names), _number(text, name, last, names)
        else:
            start = _number(text, name, base, names)
            # `5/15` runs from 5 to the end of the range; a plain `5` is just 5.
            end = high if step_text else start
        if not (low <= start <= high and low <= end <= high):
            raise ExpressionError(f"{text!r}: {name} {part!r} is outside {low}-{high}")
        if start > end:
            raise ExpressionError(f"{text!r}: {name} range {part!r} runs backwards")
        found.update(range(start, end + 1, step))
    return frozenset(found)


def _number(text: str, name: str, value: str, names: dict[str, int]) -> int:
    upper = value.upper()
    if upper in names:
        return names[upper]
    if value.isdigit():
        return int(value)
    raise ExpressionError(f"{text!r}: {name} value {value!r} is not a number" + (" or a name" if names else ""))
