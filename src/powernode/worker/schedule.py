"""Cron-like schedules: `@every 30s|5m|2h`, `@hourly`, `@daily`, or five cron fields.

Cron fields are minute, hour, day of month, month, day of week (0 or 7 = Sunday), each `*`, a
number, a range `a-b`, a step `*/s` or `a-b/s`, or a comma list of those. As in cron, when both
day of month and day of week are restricted, a day matching either runs.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from powernode.errors import Invalid

_EVERY = re.compile(r"^@every\s+(\d+)\s*(s|m|h)$")
_UNITS = {"s": 1, "m": 60, "h": 3600}
_ALIASES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0"}
_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)


@dataclass(frozen=True)
class Schedule:
    """When a job runs; `next_after(t)` is the first run time strictly after `t`."""

    text: str
    every_s: int | None = None
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()
    days_restricted: bool = False
    weekdays_restricted: bool = False

    @property
    def period_s(self) -> float:
        """A typical gap between runs (for intervals, exactly the interval)."""
        if self.every_s is not None:
            return float(self.every_s)
        start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        first = self.next_after(start)
        return (self.next_after(first) - first).total_seconds()

    def next_after(self, after: dt.datetime) -> dt.datetime:
        if self.every_s is not None:
            return after + dt.timedelta(seconds=self.every_s)
        t = after.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        for _ in range(100_000):  # bounded: any valid schedule matches within five years
            if t.month not in self.months:
                t = (t.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
            elif not self._day_matches(t):
                t = t.replace(hour=0, minute=0) + dt.timedelta(days=1)
            elif t.hour not in self.hours:
                t = t.replace(minute=0) + dt.timedelta(hours=1)
            elif t.minute not in self.minutes:
                t += dt.timedelta(minutes=1)
            else:
                return t
        raise Invalid(f"schedule {self.text!r} never runs")

    def _day_matches(self, t: dt.datetime) -> bool:
        dom = t.day in self.days
        dow = (t.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        return dom and dow


def parse_schedule(text: str) -> Schedule:
    """Parse a schedule; errors say which field is wrong and what is accepted."""
    spec = text.strip()
    every = _EVERY.match(spec)
    if every:
        seconds = int(every.group(1)) * _UNITS[every.group(2)]
        if seconds < 1:
            raise Invalid(f"schedule {text!r}: the interval must be at least 1s")
        return Schedule(text=spec, every_s=seconds)
    spec = _ALIASES.get(spec, spec)
    parts = spec.split()
    if len(parts) != 5:
        raise Invalid(
            f"schedule {text!r} is not valid: use '@every 30s' (s, m or h), '@hourly', "
            "'@daily', '@weekly' or five cron fields like '*/5 * * * *'"
        )
    sets = [_field(part, *limits, text) for part, limits in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in sets[4])
    schedule = Schedule(
        text=text.strip(),
        minutes=sets[0],
        hours=sets[1],
        days=sets[2],
        months=sets[3],
        weekdays=weekdays,
        days_restricted=parts[2] != "*",
        weekdays_restricted=parts[4] != "*",
    )
    schedule.next_after(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))  # refuses "0 0 31 2 *"
    return schedule


def _field(part: str, name: str, low: int, high: int, text: str) -> frozenset[int]:
    values: set[int] = set()
    for item in part.split(","):
        base, _, step_text = item.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if base == "*":
                start, end = low, high
            elif "-" in base:
                a, b = base.split("-", 1)
                start, end = int(a), int(b)
            else:
                start = end = int(base)
                if step_text:
                    end = high
        except ValueError:
            raise Invalid(
                f"schedule {text!r}: {name} field {part!r} is not a number, range, step or list"
            ) from None
        if step < 1 or not low <= start <= end <= high:
            raise Invalid(
                f"schedule {text!r}: {name} field {part!r} must lie in {low}-{high} "
                "with a positive step"
            )
        values.update(range(start, end + 1, step))
    return frozenset(values)
