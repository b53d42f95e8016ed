"""Cron-like schedules: intervals, aliases, cron fields, and clear refusals."""

from __future__ import annotations

import datetime as dt

import pytest

from powernode.errors import Invalid
from powernode.worker.schedule import parse_schedule

T0 = dt.datetime(2026, 11, 28, 12, 7, 30, tzinfo=dt.UTC)  # a Saturday


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("@every 30s", T0 + dt.timedelta(seconds=30)),
        ("@every 5m", T0 + dt.timedelta(minutes=5)),
        ("@hourly", dt.datetime(2026, 11, 28, 13, 0, tzinfo=dt.UTC)),
        ("@daily", dt.datetime(2026, 11, 29, 0, 0, tzinfo=dt.UTC)),
        ("*/5 * * * *", dt.datetime(2026, 11, 28, 12, 10, tzinfo=dt.UTC)),
        ("0 3 * * *", dt.datetime(2026, 11, 29, 3, 0, tzinfo=dt.UTC)),
        ("30 2 1 * *", dt.datetime(2026, 12, 1, 2, 30, tzinfo=dt.UTC)),
        ("0 0 * * 1", dt.datetime(2026, 11, 30, 0, 0, tzinfo=dt.UTC)),  # Monday
        ("0 0 * * 7", dt.datetime(2026, 11, 29, 0, 0, tzinfo=dt.UTC)),  # 7 = Sunday
        ("15,45 9-17/4 * * *", dt.datetime(2026, 11, 28, 13, 15, tzinfo=dt.UTC)),
        ("0 0 29 2 *", dt.datetime(2028, 2, 29, 0, 0, tzinfo=dt.UTC)),
        ("0 0 1 * 1", dt.datetime(2026, 11, 30, 0, 0, tzinfo=dt.UTC)),  # day OR weekday
    ],
)
def test_the_next_run_is_the_first_matching_time_after_now(
    text: str, expected: dt.datetime
) -> None:
    assert parse_schedule(text).next_after(T0) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("every day", "five cron fields"),
        ("61 * * * *", "minute field '61' must lie in 0-59"),
        ("* * * 13 *", "month field"),
        ("*/0 * * * *", "positive step"),
        ("a * * * *", "minute field 'a' is not a number"),
        ("0 0 31 2 *", "never runs"),
        ("@every 0s", "at least 1s"),
    ],
)
def test_a_bad_schedule_is_refused_with_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        parse_schedule(text)


def test_the_period_of_a_schedule() -> None:
    assert parse_schedule("@every 2m").period_s == 120
    assert parse_schedule("*/15 * * * *").period_s == 900
