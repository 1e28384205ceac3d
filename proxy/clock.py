"""The proxy's clock: aware UTC datetimes, injectable (tests pin "now"), and a cheap reading.

Components take `clock: Callable[[], datetime]`, `utc_now` by default. `seconds_of(clock)` gives
POSIX seconds for comparisons made on every request: `time.time` itself (50 ns) for the real
clock, where building a datetime costs several times more.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def seconds_of(clock: Clock) -> Callable[[], float]:
    """The same clock as POSIX seconds."""
    if clock is utc_now:
        return time.time
    return lambda: clock().timestamp()
