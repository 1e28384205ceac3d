"""The pure retry policy (proxy/upstream/retry.py): backoff, 429 waits, the wait budget.

Reached through HTTP elsewhere (tests/web); here every edge is checked directly, with a fixed
`uniform` where the jitter matters.
"""

from __future__ import annotations

import pytest

from proxy.upstream.retry import (
    FAILURE_BACKOFF_BASE,
    JITTER,
    RATE_LIMIT_BACKOFF_BASE,
    RetryPolicy,
    backoff,
    retry_after_seconds,
)

# 2015-10-21T07:28:00Z, the HTTP date used below
T = 1445412480.0


def lowest(a: float, b: float) -> float:
    return a


def highest(a: float, b: float) -> float:
    return b


# --- backoff ----------------------------------------------------------------------------------


def test_constants() -> None:
    assert (FAILURE_BACKOFF_BASE, RATE_LIMIT_BACKOFF_BASE, JITTER) == (0.1, 0.5, 0.2)


@pytest.mark.parametrize(
    ("attempt", "low", "high"),
    [(0, 0.08, 0.12), (1, 0.16, 0.24), (2, 0.32, 0.48), (3, 0.64, 0.96)],
)
def test_backoff_doubles_within_twenty_percent(attempt: int, low: float, high: float) -> None:
    assert backoff(attempt, 0.1, lowest) == pytest.approx(low)
    assert backoff(attempt, 0.1, highest) == pytest.approx(high)
    assert backoff(attempt, 0.1, lambda a, b: 1.0) == pytest.approx(0.1 * 2**attempt)


def test_backoff_asks_for_jitter_between_080_and_120() -> None:
    asked: list[tuple[float, float]] = []

    def spy(a: float, b: float) -> float:
        asked.append((a, b))
        return 1.0

    backoff(4, 0.5, spy)
    assert asked == [(pytest.approx(0.8), pytest.approx(1.2))]


def test_backoff_jitter_is_random_by_default() -> None:
    values = {backoff(2, 1.0) for _ in range(50)}
    assert len(values) > 1
    assert all(3.2 <= v <= 4.8 for v in values)


# --- Retry-After and RateLimit-Reset ----------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "now", "seconds"),
    [
        ({"Retry-After": "7"}, T, 7.0),
        ({"Retry-After": "1.5"}, T, 1.5),
        ({"Retry-After": " 7 "}, T, 7.0),
        ({"Retry-After": "0"}, T, 0.0),
        ({"Retry-After": "-5"}, T, 0.0),  # negative: no wait, not a negative sleep
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, T - 10, 10.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, T + 10, 0.0),  # in the past
        ({"Retry-After": "Wed, 21 Oct 2015 09:28:05 +0200"}, T, 5.0),  # a zone other than GMT
        ({"RateLimit-Reset": str(T + 30)}, T, 30.0),
        ({"RateLimit-Reset": str(T - 30)}, T, 0.0),
        ({"RateLimit-Reset": " 1445412490 "}, T, 10.0),
        # Retry-After wins over RateLimit-Reset
        ({"Retry-After": "2", "RateLimit-Reset": str(T + 30)}, T, 2.0),
        # an unusable Retry-After falls back to RateLimit-Reset
        ({"Retry-After": "soon", "RateLimit-Reset": str(T + 30)}, T, 30.0),
        ({"Retry-After": "", "RateLimit-Reset": str(T + 30)}, T, 30.0),
        ({"Retry-After": "inf", "RateLimit-Reset": str(T + 30)}, T, 30.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00", "RateLimit-Reset": str(T + 4)}, T, 4.0),
    ],
)
def test_retry_after_seconds(headers: dict[str, str], now: float, seconds: float) -> None:
    assert retry_after_seconds(headers, now) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Retry-After": ""},
        {"Retry-After": "   "},
        {"Retry-After": "soon"},
        {"Retry-After": "Wed, 21 Oct 2015 07:28:00"},  # a date without a zone means nothing
        {"Retry-After": "Wed, 21 Oct 2015 07:28:00 -0000"},  # RFC 2822: -0000 is "no zone"
        {"Retry-After": "Wed, 21 Oct 99999 07:28:00 GMT"},  # year out of range
        {"Retry-After": "inf"},
        {"Retry-After": "-inf"},
        {"Retry-After": "nan"},
        {"Retry-After": "1e400"},  # overflows to inf
        {"RateLimit-Reset": "later"},
        {"RateLimit-Reset": "inf"},
        {"RateLimit-Reset": "nan"},
        {"Retry-After": "soon", "RateLimit-Reset": "later"},
    ],
)
def test_retry_after_unusable_is_none(headers: dict[str, str]) -> None:
    assert retry_after_seconds(headers, T) is None


# --- RetryPolicy ------------------------------------------------------------------------------


def test_after_failure_backs_off_from_a_tenth_then_gives_up() -> None:
    policy = RetryPolicy(max_retries=3)
    for attempt in range(3):
        wait = policy.after_failure(attempt)
        assert wait is not None
        assert 0.08 * 2**attempt <= wait <= 0.12 * 2**attempt
    assert policy.after_failure(3) is None
    assert policy.after_failure(4) is None


def test_no_retries_means_give_up_at_once() -> None:
    assert RetryPolicy(max_retries=0).after_failure(0) is None


def test_defaults() -> None:
    assert RetryPolicy() == RetryPolicy(max_retries=3, rate_limit_max_wait=5.0)


@pytest.mark.parametrize("asked", [0.0, 2.5, 100.0])
def test_rate_limit_wait_takes_what_was_asked(asked: float) -> None:
    # 0.0 included: "wait zero seconds" is an answer, not a missing one
    assert RetryPolicy().rate_limit_wait(2, asked) == asked


@pytest.mark.parametrize("attempt", [0, 1, 2])
def test_rate_limit_wait_without_an_answer_backs_off_from_half_a_second(attempt: int) -> None:
    wait = RetryPolicy().rate_limit_wait(attempt, None)
    assert 0.4 * 2**attempt <= wait <= 0.6 * 2**attempt


@pytest.mark.parametrize(
    ("attempt", "wait", "already", "allowed"),
    [
        (0, 1.0, 0.0, True),
        (2, 1.0, 0.0, True),  # the last retry
        (3, 1.0, 0.0, False),  # retries used up
        (0, 5.0, 0.0, True),  # exactly the budget
        (0, 2.0, 3.0, True),
        (0, 2.0, 3.01, False),
        (0, 5.01, 0.0, False),
        (0, 0.0, 5.0, True),
        (0, 0.0, 5.5, False),
    ],
)
def test_may_wait(attempt: int, wait: float, already: float, allowed: bool) -> None:
    assert RetryPolicy(max_retries=3, rate_limit_max_wait=5.0).may_wait(attempt, wait, already) is (
        allowed
    )
