"""Bookkeeping of upstream calls made for one proxy request (read by its access-log line)."""

from __future__ import annotations

import contextvars
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class CallStats:
    """Upstream calls made on behalf of one proxy request (read by the request log).

    `in_flight` names the calls started and not yet answered, so a request that runs out of
    its deadline can say which upstream call it was waiting for. `rate_limit_waited` is the
    time already spent waiting out 429s: the cap on waiting applies per proxy request.
    """

    calls: Counter[str] = field(default_factory=Counter)
    in_flight: list[str] = field(default_factory=list)
    rate_limit_waited: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.calls.values())


CURRENT_STATS: contextvars.ContextVar[CallStats | None] = contextvars.ContextVar(
    "upstream_call_stats", default=None
)

# kind, status (int or "error"), seconds — for Prometheus metrics and tests.
CallObserver = Callable[[str, str, float], None]


def count_upstream_calls() -> CallStats:
    """Count the upstream calls made from here on for this request (for its log line).

    Called when a request is about to need the upstream, not for every request: a repeated
    request answered from memory never reaches GitLab and should not pay for the bookkeeping.
    The context variable lives in the request's task (aiohttp runs each request in its own),
    so it ends with the request and the access log reads it there."""
    stats = CallStats()
    CURRENT_STATS.set(stats)
    return stats
