"""When to try an upstream call again, and after how long: pure rules, no I/O.

- 5xx, dropped connections, timeouts and malformed JSON are retried `max_retries` times with
  exponential backoff from 0.1 s (a GET is safe to repeat), then given up.
- A 429 is waited out (Retry-After, else RateLimit-Reset, else backoff from 0.5 s) while the
  proxy request's total rate-limit wait stays within `rate_limit_max_wait`; beyond that the
  caller is answered 503 at once.
"""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

FAILURE_BACKOFF_BASE = 0.1  # seconds before the first retry of a failed call
RATE_LIMIT_BACKOFF_BASE = 0.5  # seconds to wait out a 429 that names no wait of its own
JITTER = 0.2  # ±20 %


def backoff(
    attempt: int, base: float, uniform: Callable[[float, float], float] = random.uniform
) -> float:
    """Exponential backoff with ±20 % jitter, so retrying callers do not stampede together."""
    return base * 2**attempt * uniform(1 - JITTER, 1 + JITTER)


def retry_after_seconds(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or HTTP date), else `RateLimit-Reset`
    (a Unix time), measured from `now` (Unix seconds).

    None when neither header gives a usable finite value: another proxy's garbage must not
    raise here (that would answer 500) nor produce an infinite wait.
    """
    value = (headers.get("Retry-After") or "").strip()
    if value:
        try:
            seconds = float(value)
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(value)
                if parsed.tzinfo is None:  # a date without a zone means nothing definite
                    raise TypeError(value)
                seconds = parsed.timestamp() - now
            except (TypeError, ValueError, OverflowError):  # garbage, or a date without zone
                seconds = math.nan
        if math.isfinite(seconds):
            return max(0.0, seconds)
    reset = (headers.get("RateLimit-Reset") or "").strip()
    if reset:
        try:
            seconds = float(reset) - now
        except ValueError:
            return None
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 3
    rate_limit_max_wait: float = 5.0

    def after_failure(self, attempt: int) -> float | None:
        """Seconds to wait before retry `attempt + 1` of a failed call; None: give up."""
        if attempt >= self.max_retries:
            return None
        return backoff(attempt, FAILURE_BACKOFF_BASE)

    def rate_limit_wait(self, attempt: int, asked: float | None) -> float:
        """How long the 429 asks us to wait (its own header, else backoff)."""
        return asked if asked is not None else backoff(attempt, RATE_LIMIT_BACKOFF_BASE)

    def may_wait(self, attempt: int, wait: float, already_waited: float) -> bool:
        """Whether waiting `wait` more seconds stays within the request's rate-limit budget."""
        return attempt < self.max_retries and already_waited + wait <= self.rate_limit_max_wait
