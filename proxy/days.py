"""The calendar rules: local days of the configured time zone, and when a day is settled.

Pure: every rule that depends on the time takes `now` as an argument, so the rules are tested
directly (tests/unit/test_days.py) and the callers decide where the time comes from (an
injectable clock).

A day is *settled* once it ended more than `settle_margin` seconds ago: its facts are no longer
expected to change without a webhook (late job finishes, MRs linked asynchronously), so they may
be cached long; younger days are cached briefly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

EARLIEST_DAY = date(2000, 1, 1)  # before GitLab existed: no deployment or incident can be older
_NEVER = datetime.max.replace(tzinfo=UTC)


def days_between(start: date, end: date) -> list[date]:
    """Every day from `start` to `end`, both included."""
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def contiguous_runs(days: Sequence[date]) -> list[tuple[date, date]]:
    """(first, last) of each run of consecutive days, in order: one upstream stream per run."""
    runs: list[tuple[date, date]] = []
    for day in sorted(days):
        if runs and day == runs[-1][1] + timedelta(days=1):
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


@dataclass(frozen=True, slots=True)
class Calendar:
    tz: ZoneInfo
    settle_margin: float  # seconds after a day ends before its facts count as settled

    def local_midnight(self, day: date) -> datetime:
        """When local `day` begins, in UTC."""
        return datetime.combine(day, time(0), self.tz).astimezone(UTC)

    def local_day(self, instant: datetime) -> date:
        return instant.astimezone(self.tz).date()

    def day_end(self, day: date) -> datetime:
        """When local `day` ends (the next local midnight, in UTC)."""
        try:
            return self.local_midnight(day + timedelta(days=1))
        except OverflowError:  # 9999-12-31 never ends
            return _NEVER

    def settled_at(self, day: date) -> datetime:
        end = self.day_end(day)
        return end if end == _NEVER else end + timedelta(seconds=self.settle_margin)

    def is_settled(self, day: date, now: datetime) -> bool:
        return self.settled_at(day) <= now

    def recent_days(self, now: datetime) -> list[date]:
        """Days not yet settled at `now`, newest first: their facts may still change."""
        day = self.local_day(now)
        days = []
        while not self.is_settled(day, now):
            days.append(day)
            day -= timedelta(days=1)
        return days

    def fetchable_days(self, start: date, end: date, now: datetime) -> list[date]:
        """The window's days that can hold facts: none before EARLIEST_DAY, none after
        tomorrow (a day of margin for clock skew). Also keeps date arithmetic at the ends of
        the calendar (0001-01-01, 9999-12-31) away from the upstream and from overflow."""
        first = max(start, EARLIEST_DAY)
        last = min(end, self.local_day(now) + timedelta(days=1))
        return days_between(first, last) if first <= last else []

    def ttl_for_day(self, day: date, now: datetime, ttl_settled: float, ttl_recent: float) -> float:
        """How long facts of `day` may be cached when read at `now`."""
        return ttl_settled if self.is_settled(day, now) else ttl_recent
