"""DORA arithmetic edges that mutation testing found unpinned (docs/mutation.md).

Each test names the spec rule it pins (§3, §4, §5) and the mutant it kills: a row median over an
odd count is rounded, not truncated; a negative MR→deployment difference is exactly 0 inside a
median; the window's last day counts like every other day.
"""

from __future__ import annotations

import itertools
from datetime import date, timedelta
from zoneinfo import ZoneInfo

import pytest

from proxy.dora import DailyRow, aggregate, compute_daily_rows, compute_metric, render
from proxy.facts import Deployment, Environment, Incident, MergeRequest, ProjectFacts, parse_time

UTC_ZONE = ZoneInfo("UTC")
PRODUCTION = Environment(1, "production", "production")
STAGING = Environment(2, "staging", "staging")
FINISHED = "2021-03-11T12:00:00Z"
_ids = itertools.count(1000)


def at(text: str):
    return parse_time(text)


def before(instant: str, seconds: float) -> str:
    return (at(instant) - timedelta(seconds=seconds)).isoformat()


def one_deployment(*merged: str | None, finished: str = FINISHED, env: int = 1) -> ProjectFacts:
    """One successful deployment of `env` with MRs merged at `merged`."""
    deployment = Deployment(next(_ids), env, at(finished))
    mrs = tuple(MergeRequest(next(_ids), at(m) if m is not None else None) for m in merged)
    return ProjectFacts(
        project_id=1,
        environments=(PRODUCTION, STAGING),
        deployments=(deployment,),
        merge_requests={deployment.id: mrs},
    )


def incidents(*spans: tuple[str, str | None], deployments: tuple[str, ...] = ()) -> ProjectFacts:
    return ProjectFacts(
        project_id=1,
        environments=(PRODUCTION,),
        deployments=tuple(Deployment(next(_ids), 1, at(f)) for f in deployments),
        incidents=tuple(
            Incident(next(_ids), at(created), at(closed) if closed else None)
            for created, closed in spans
        ),
    )


def row_lead_time(facts: ProjectFacts) -> int | None:
    (row,) = compute_daily_rows(
        facts, ("production",), date(2021, 3, 10), date(2021, 3, 12), UTC_ZONE
    )
    return row.lead_time_for_changes_in_seconds


def answer(facts: ProjectFacts, metric: str, start: str, end: str, interval: str = "all") -> bytes:
    return render(
        compute_metric(
            [facts],
            metric=metric,
            interval=interval,
            start_date=date.fromisoformat(start),
            end_date=date.fromisoformat(end),
            tiers=("production",),
            tz=UTC_ZONE,
        )
    )


# --- §4 row medians over an odd count are rounded ---------------------------------------------


@pytest.mark.parametrize(
    ("seconds_before", "expected"),
    [
        ((1, 1.7, 3), 2),  # median 1.7 → 2; truncation would give 1
        ((3, 1.7, 1), 2),  # order of the MRs does not matter
        ((1, 1.2, 3), 1),  # 1.2 → 1: rounding, not ceiling
        ((0.4, 2.5, 9, 9, 100), 9),
        ((1, 2.5, 3), 2),  # a tie in an odd count: 2.5 → 2 (to even)
        ((1, 3.5, 5), 4),  # 3.5 → 4 (to even)
    ],
)
def test_lead_time_row_median_of_an_odd_count_is_rounded(
    seconds_before: tuple[float, ...], expected: int
) -> None:
    facts = one_deployment(*(before(FINISHED, s) for s in seconds_before))
    assert row_lead_time(facts) == expected


def test_lead_time_odd_median_in_the_answer() -> None:
    facts = one_deployment(*(before(FINISHED, s) for s in (1, 1.7, 3)))
    body = answer(facts, "lead_time_for_changes", "2021-03-10", "2021-03-12", "daily")
    assert body == b'[{"date":"2021-03-11","value":2.0}]'


@pytest.mark.parametrize(
    ("durations", "expected"),
    [
        ((1, 1.7, 3), 2),  # truncation would give 1
        ((3, 1, 1.7), 2),
        ((1, 2.5, 3), 2),
        ((10, 20, 30.5, 40, 50), 30),
    ],
)
def test_ttrs_row_median_of_an_odd_count_is_rounded(
    durations: tuple[float, ...], expected: int
) -> None:
    created = "2021-03-11T10:00:00Z"
    facts = incidents(*((created, before("2021-03-11T10:00:00Z", -d)) for d in durations))
    (row,) = compute_daily_rows(
        facts, ("production",), date(2021, 3, 10), date(2021, 3, 12), UTC_ZONE
    )
    assert row.time_to_restore_service_in_seconds == expected
    body = answer(facts, "time_to_restore_service", "2021-03-10", "2021-03-12", "daily")
    assert body == f'[{{"date":"2021-03-11","value":{float(expected)}}}]'.encode()


# --- §4 a negative MR→deployment difference is exactly 0 ------------------------------------


def test_negative_difference_is_zero_inside_an_even_median() -> None:
    # merged 30 s after the deployment finished (counts 0) and 3 s before: (0 + 3) / 2 = 1.5 → 2
    facts = one_deployment(before(FINISHED, -30), before(FINISHED, 3))
    assert row_lead_time(facts) == 2  # unclamped it would be (-30 + 3) / 2 → -14


def test_negative_difference_is_exactly_zero_not_a_hair_above() -> None:
    # (0 + 1) / 2 = 0.5 → 0 (ties to even); a clamp to one microsecond would round up to 1
    facts = one_deployment(before(FINISHED, -30), before(FINISHED, 1))
    assert row_lead_time(facts) == 0


def test_negative_differences_in_an_odd_median() -> None:
    # -5 → 0, -1 → 0, 7: median 0
    facts = one_deployment(before(FINISHED, -5), before(FINISHED, -1), before(FINISHED, 7))
    assert row_lead_time(facts) == 0


def test_merged_at_the_finish_instant_is_zero() -> None:
    assert row_lead_time(one_deployment(FINISHED, before(FINISHED, 4))) == 2


# --- §5 the window includes end_date -----------------------------------------------------------


def test_incident_created_on_end_date_counts_for_change_failure_rate() -> None:
    facts = incidents(
        ("2021-03-05T23:59:59.999Z", None),  # on end_date: counted
        ("2021-03-06T00:00:00Z", None),  # the day after: not counted
        deployments=("2021-03-05T12:00:00Z",),
    )
    assert answer(facts, "change_failure_rate", "2021-03-01", "2021-03-05") == (
        b'[{"date":null,"value":1.0}]'
    )
    assert answer(facts, "change_failure_rate", "2021-03-01", "2021-03-05", "daily") == (
        b'[{"date":"2021-03-05","value":1.0}]'
    )


def test_incident_created_on_end_date_alone_makes_a_row() -> None:
    facts = incidents(("2021-03-05T08:00:00Z", None), ("2021-02-28T23:59:59Z", None))
    assert answer(facts, "change_failure_rate", "2021-03-01", "2021-03-05", "daily") == (
        b'[{"date":"2021-03-05","value":1.0}]'
    )
    assert answer(facts, "deployment_frequency", "2021-03-01", "2021-03-05", "daily") == (
        b'[{"date":"2021-03-05","value":0}]'
    )


def test_incident_closed_on_end_date_counts_for_time_to_restore() -> None:
    facts = incidents(
        ("2021-03-04T10:00:00Z", "2021-03-05T10:00:30Z"),  # closed on end_date: counted
        ("2021-03-05T10:00:00Z", "2021-03-06T00:00:00Z"),  # closed after the window: not
    )
    assert answer(facts, "time_to_restore_service", "2021-03-01", "2021-03-05") == (
        b'[{"date":null,"value":86430.0}]'
    )


def test_incident_created_on_start_date_counts_and_the_day_before_does_not() -> None:
    facts = incidents(
        ("2021-03-01T00:00:00Z", None),
        ("2021-02-28T23:59:59.999Z", None),
        deployments=("2021-03-01T12:00:00Z", "2021-03-02T12:00:00Z"),
    )
    assert answer(facts, "change_failure_rate", "2021-03-01", "2021-03-05") == (
        b'[{"date":null,"value":0.5}]'
    )


def test_deployment_finished_on_end_date_counts() -> None:
    facts = incidents(deployments=("2021-03-05T23:59:59.999Z", "2021-03-06T00:00:00Z"))
    assert answer(facts, "deployment_frequency", "2021-03-01", "2021-03-05", "daily") == (
        b'[{"date":"2021-03-05","value":1}]'
    )


def test_incident_closed_on_start_date_counts_for_time_to_restore() -> None:
    facts = incidents(
        ("2021-02-28T23:00:00Z", "2021-03-01T00:00:10Z"),  # closed on start_date: counted
        ("2021-02-27T10:00:00Z", "2021-02-28T23:59:59Z"),  # closed the day before: not
    )
    assert answer(facts, "time_to_restore_service", "2021-03-01", "2021-03-05") == (
        b'[{"date":null,"value":3610.0}]'
    )


def test_aggregate_keeps_rows_of_both_window_ends() -> None:
    rows = [
        DailyRow(1, 1, "production", date(2021, 3, day), frequency, None, None, None)
        for day, frequency in ((1, 1), (5, 10), (6, 100), (28, 1000))
    ]
    result = aggregate(rows, "deployment_frequency", "daily", date(2021, 3, 1), date(2021, 3, 5))
    assert result == [{"date": "2021-03-01", "value": 1}, {"date": "2021-03-05", "value": 10}]
    assert aggregate(rows, "deployment_frequency", "all", date(2021, 3, 1), date(2021, 3, 5)) == [
        {"date": None, "value": 11 / 5}
    ]


# --- sub-millisecond facts --------------------------------------------------------------------


def test_a_one_microsecond_lead_time_is_kept_not_clamped() -> None:
    # pairs 1 µs and 2.999999 s: (1 + 2_999_999) µs / 2 = 1.5 s → 2; dropping the 1 µs gives 1
    finished = "2021-03-11T12:00:00.000001+00:00"
    facts = one_deployment(
        "2021-03-11T12:00:00+00:00", "2021-03-11T11:59:57.000002+00:00", finished=finished
    )
    assert row_lead_time(facts) == 2


# --- rendering ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_render_refuses_values_json_cannot_carry(value: float) -> None:
    """No NaN or Infinity ever reaches a client as invalid JSON: a bug must fail loudly."""
    with pytest.raises(ValueError):
        render([{"date": None, "value": value}])


def test_rows_are_rebuilt_only_for_days_inside_the_window() -> None:
    """Facts are fetched with margins (§3.4): those outside [start, end] make no row at all."""
    facts = incidents(
        ("2021-02-28T12:00:00Z", "2021-03-06T12:00:00Z"),  # created before, closed after
        deployments=("2021-02-28T23:59:59Z", "2021-03-03T12:00:00Z", "2021-03-06T00:00:00Z"),
    )
    rows = compute_daily_rows(facts, ("production",), date(2021, 3, 1), date(2021, 3, 5), UTC_ZONE)
    assert [(r.day, r.deployment_frequency, r.incidents_count) for r in rows] == [
        (date(2021, 3, 3), 1, 0)
    ]
