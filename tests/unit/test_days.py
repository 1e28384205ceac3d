"""The calendar rules (proxy/days.py) directly: local days across DST, settled days, windows.

Expected instants are written out by hand from the zones' published rules (not recomputed with
the code under test): Berlin leaves CET for CEST on 2026-03-29 and returns on 2026-10-25;
Adelaide (UTC+9:30, +10:30 in summer) leaves summer time on 2026-04-05; Kolkata is UTC+5:30.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from proxy.days import EARLIEST_DAY, Calendar, contiguous_runs, days_between

HOUR = 3600.0
BERLIN = ZoneInfo("Europe/Berlin")
ADELAIDE = ZoneInfo("Australia/Adelaide")
KOLKATA = ZoneInfo("Asia/Kolkata")
NEW_YORK = ZoneInfo("America/New_York")
UTC_ZONE = ZoneInfo("UTC")
NEVER = datetime.max.replace(tzinfo=UTC)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def d(text: str) -> date:
    return date.fromisoformat(text)


# --- local midnight and local day -------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "day", "midnight", "end"),
    [
        # 23-hour day: spring forward at 02:00 CET
        (BERLIN, "2026-03-29", "2026-03-28T23:00:00", "2026-03-29T22:00:00"),
        # 25-hour day: fall back at 03:00 CEST
        (BERLIN, "2026-10-25", "2026-10-24T22:00:00", "2026-10-25T23:00:00"),
        (BERLIN, "2026-07-01", "2026-06-30T22:00:00", "2026-07-01T22:00:00"),
        # half-hour zone with DST: 25-hour day when summer time ends
        (ADELAIDE, "2026-04-05", "2026-04-04T13:30:00", "2026-04-05T14:30:00"),
        # half-hour zone without DST, midnight on the previous UTC day
        (KOLKATA, "2026-03-01", "2026-02-28T18:30:00", "2026-03-01T18:30:00"),
        (UTC_ZONE, "2026-03-01", "2026-03-01T00:00:00", "2026-03-02T00:00:00"),
    ],
)
def test_local_midnight_and_day_end(zone: ZoneInfo, day: str, midnight: str, end: str) -> None:
    calendar = Calendar(zone, 0)
    assert calendar.local_midnight(d(day)) == utc(midnight)
    assert calendar.day_end(d(day)) == utc(end)


def test_day_length_follows_dst() -> None:
    calendar = Calendar(BERLIN, 0)
    length = {
        day: calendar.day_end(d(day)) - calendar.local_midnight(d(day))
        for day in (
            "2026-03-29",
            "2026-10-25",
            "2026-03-30",
        )
    }
    assert length == {
        "2026-03-29": timedelta(hours=23),
        "2026-10-25": timedelta(hours=25),
        "2026-03-30": timedelta(hours=24),
    }


@pytest.mark.parametrize(
    ("zone", "instant", "day"),
    [
        (BERLIN, "2026-03-28T22:59:59.999999", "2026-03-28"),
        (BERLIN, "2026-03-28T23:00:00", "2026-03-29"),  # CET midnight
        (BERLIN, "2026-03-29T21:59:59", "2026-03-29"),
        (BERLIN, "2026-03-29T22:00:00", "2026-03-30"),  # CEST midnight
        (BERLIN, "2026-10-25T00:30:00", "2026-10-25"),  # the repeated hour 02:xx local
        (BERLIN, "2026-10-25T01:30:00", "2026-10-25"),
        (BERLIN, "2026-10-25T22:59:59", "2026-10-25"),
        (BERLIN, "2026-10-25T23:00:00", "2026-10-26"),
        (KOLKATA, "2026-02-28T18:29:59", "2026-02-28"),
        (KOLKATA, "2026-02-28T18:30:00", "2026-03-01"),
        (ADELAIDE, "2026-04-05T14:29:59", "2026-04-05"),
        (ADELAIDE, "2026-04-05T14:30:00", "2026-04-06"),
        (NEW_YORK, "2026-03-01T04:59:59", "2026-02-28"),
    ],
)
def test_local_day(zone: ZoneInfo, instant: str, day: str) -> None:
    assert Calendar(zone, 0).local_day(utc(instant)) == d(day)


def test_local_day_accepts_any_offset_not_only_utc() -> None:
    instant = datetime.fromisoformat("2026-03-29T01:30:00+02:00")  # 2026-03-28T23:30Z
    assert Calendar(BERLIN, 0).local_day(instant) == d("2026-03-29")


def test_day_end_of_the_last_representable_day_is_never() -> None:
    assert Calendar(BERLIN, 0).day_end(date.max) == NEVER
    assert Calendar(NEW_YORK, 0).day_end(date.max) == NEVER
    # the day before still has a real end (New York's midnight is 05:00 UTC)
    assert Calendar(NEW_YORK, 0).day_end(d("9999-12-30")) == utc("9999-12-31T05:00:00")


# --- settled days -----------------------------------------------------------------------------


def test_settled_at_is_day_end_plus_margin() -> None:
    calendar = Calendar(BERLIN, 2 * HOUR)
    assert calendar.settled_at(d("2026-03-29")) == utc("2026-03-30T00:00:00")
    assert calendar.settled_at(d("2026-10-25")) == utc("2026-10-26T01:00:00")


def test_the_last_day_never_settles_and_does_not_overflow() -> None:
    calendar = Calendar(UTC_ZONE, 10 * HOUR)
    assert calendar.settled_at(date.max) == NEVER
    assert not calendar.is_settled(date.max, NEVER - timedelta(days=1))


@pytest.mark.parametrize(
    ("now", "settled"),
    [
        ("2026-03-11T00:59:59.999999", False),
        ("2026-03-11T01:00:00", True),  # exactly at day end + margin: settled
        ("2026-03-11T01:00:00.000001", True),
        ("2026-03-10T12:00:00", False),
        ("2026-03-09T12:00:00", False),  # a future day is not settled
    ],
)
def test_is_settled_around_the_margin(now: str, settled: bool) -> None:
    calendar = Calendar(UTC_ZONE, HOUR)
    assert calendar.is_settled(d("2026-03-10"), utc(now)) is settled


def test_zero_margin_settles_at_midnight() -> None:
    calendar = Calendar(KOLKATA, 0)
    assert calendar.is_settled(d("2026-03-01"), utc("2026-03-01T18:30:00"))
    assert not calendar.is_settled(d("2026-03-01"), utc("2026-03-01T18:29:59"))


@pytest.mark.parametrize(
    ("zone", "margin", "now", "days"),
    [
        (UTC_ZONE, HOUR, "2026-03-10T12:00:00", ["2026-03-10"]),
        # just after midnight, yesterday is still inside its margin
        (UTC_ZONE, HOUR, "2026-03-10T00:30:00", ["2026-03-10", "2026-03-09"]),
        (UTC_ZONE, HOUR, "2026-03-10T00:59:59", ["2026-03-10", "2026-03-09"]),
        (UTC_ZONE, HOUR, "2026-03-10T01:00:00", ["2026-03-10"]),
        (UTC_ZONE, 0, "2026-03-10T00:00:00", ["2026-03-10"]),
        # a margin longer than a day keeps several days recent
        (
            UTC_ZONE,
            2 * 24 * HOUR,
            "2026-03-10T12:00:00",
            ["2026-03-10", "2026-03-09", "2026-03-08"],
        ),
        # 2026-03-07 ends at 03-08T00:00 and settles exactly at 03-10T00:00
        (
            UTC_ZONE,
            2 * 24 * HOUR,
            "2026-03-10T00:00:00",
            ["2026-03-10", "2026-03-09", "2026-03-08"],
        ),
        (
            UTC_ZONE,
            2 * 24 * HOUR,
            "2026-03-09T23:59:59",
            ["2026-03-09", "2026-03-08", "2026-03-07"],
        ),
        (UTC_ZONE, 36 * HOUR, "2026-03-10T11:59:59", ["2026-03-10", "2026-03-09", "2026-03-08"]),
        (UTC_ZONE, 36 * HOUR, "2026-03-10T12:00:00", ["2026-03-10", "2026-03-09"]),
        # local days: 23:30 UTC is already tomorrow in Berlin
        (BERLIN, HOUR, "2026-03-10T23:30:00", ["2026-03-11", "2026-03-10"]),
        (BERLIN, HOUR, "2026-03-10T22:59:00", ["2026-03-10"]),
        (KOLKATA, HOUR, "2026-03-01T19:00:00", ["2026-03-02", "2026-03-01"]),
    ],
)
def test_recent_days_newest_first(zone: ZoneInfo, margin: float, now: str, days: list[str]) -> None:
    assert Calendar(zone, margin).recent_days(utc(now)) == [d(day) for day in days]


# --- fetchable days ---------------------------------------------------------------------------

NOW = utc("2026-03-10T12:00:00")  # today 2026-03-10 in UTC, tomorrow 2026-03-11


@pytest.mark.parametrize(
    ("start", "end", "first", "last", "count"),
    [
        ("2026-03-01", "2026-03-05", "2026-03-01", "2026-03-05", 5),
        ("2026-03-01", "2026-03-31", "2026-03-01", "2026-03-11", 11),  # clipped at tomorrow
        ("2026-03-11", "2026-03-20", "2026-03-11", "2026-03-11", 1),  # only tomorrow left
        ("1999-12-30", "2000-01-02", "2000-01-01", "2000-01-02", 2),  # clipped at EARLIEST_DAY
        ("0001-01-01", "2000-01-01", "2000-01-01", "2000-01-01", 1),
    ],
)
def test_fetchable_days_clipped(start: str, end: str, first: str, last: str, count: int) -> None:
    days = Calendar(UTC_ZONE, HOUR).fetchable_days(d(start), d(end), NOW)
    assert (days[0], days[-1], len(days)) == (d(first), d(last), count)
    assert days == days_between(d(first), d(last))


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-03-12", "2026-03-20"),  # the whole window after tomorrow
        ("1999-01-01", "1999-12-31"),  # the whole window before EARLIEST_DAY
        ("0001-01-01", "0001-01-02"),
        ("9999-12-30", "9999-12-31"),
        ("2026-03-05", "2026-03-04"),  # reversed
    ],
)
def test_fetchable_days_empty(start: str, end: str) -> None:
    assert Calendar(UTC_ZONE, HOUR).fetchable_days(d(start), d(end), NOW) == []


def test_fetchable_days_use_the_local_tomorrow() -> None:
    late = utc("2026-03-10T23:30:00")  # 2026-03-11 in Berlin: tomorrow is 2026-03-12
    assert Calendar(BERLIN, HOUR).fetchable_days(d("2026-03-10"), d("2026-03-31"), late) == [
        d("2026-03-10"),
        d("2026-03-11"),
        d("2026-03-12"),
    ]
    assert Calendar(UTC_ZONE, HOUR).fetchable_days(d("2026-03-10"), d("2026-03-31"), late) == [
        d("2026-03-10"),
        d("2026-03-11"),
    ]


def test_earliest_day() -> None:
    assert date(2000, 1, 1) == EARLIEST_DAY


# --- TTL per day ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("day", "now", "ttl"),
    [
        ("2026-03-09", "2026-03-10T00:59:59", 60.0),  # inside the margin: recent
        ("2026-03-09", "2026-03-10T01:00:00", 86400.0),  # settled
        ("2026-03-10", "2026-03-10T12:00:00", 60.0),  # today
        ("2026-03-11", "2026-03-10T12:00:00", 60.0),  # tomorrow
        ("2020-01-01", "2026-03-10T12:00:00", 86400.0),
    ],
)
def test_ttl_for_day(day: str, now: str, ttl: float) -> None:
    calendar = Calendar(UTC_ZONE, HOUR)
    assert calendar.ttl_for_day(d(day), utc(now), ttl_settled=86400.0, ttl_recent=60.0) == ttl


# --- day lists --------------------------------------------------------------------------------


def test_days_between_includes_both_ends() -> None:
    assert days_between(d("2024-02-27"), d("2024-03-01")) == [
        d("2024-02-27"),
        d("2024-02-28"),
        d("2024-02-29"),
        d("2024-03-01"),
    ]
    assert days_between(d("2026-03-01"), d("2026-03-01")) == [d("2026-03-01")]
    assert days_between(d("2026-03-02"), d("2026-03-01")) == []


def test_contiguous_runs() -> None:
    days = [d(x) for x in ("2026-03-05", "2026-03-01", "2026-03-02", "2026-03-04", "2026-03-09")]
    assert contiguous_runs(days) == [
        (d("2026-03-01"), d("2026-03-02")),
        (d("2026-03-04"), d("2026-03-05")),
        (d("2026-03-09"), d("2026-03-09")),
    ]


def test_contiguous_runs_across_month_and_year_ends() -> None:
    days = [*days_between(d("2025-12-30"), d("2026-01-02")), d("2026-02-28"), d("2026-03-01")]
    assert contiguous_runs(days) == [
        (d("2025-12-30"), d("2026-01-02")),
        (d("2026-02-28"), d("2026-03-01")),
    ]


def test_contiguous_runs_of_nothing_and_of_one_day() -> None:
    assert contiguous_runs([]) == []
    assert contiguous_runs([d("2026-03-01")]) == [(d("2026-03-01"), d("2026-03-01"))]
