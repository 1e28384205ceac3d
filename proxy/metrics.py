"""The DORA computation: facts → GitLab's daily rows → one response body.

Pure on purpose (no I/O, clock or logging) so that the project and group endpoints, the cache and
the tests all share one oracle. It follows the spec's two stages: `compute_daily_rows` rebuilds
the (environment, day) rows GitLab stores (§3, §4), `aggregate` turns rows into the REST answer
(§5, §6). Quirks kept on purpose are named after the spec (Q1–Q10).
"""

from __future__ import annotations

import calendar
import json
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from proxy.facts import Deployment, Environment, Incident, ProjectFacts

METRICS: tuple[str, ...] = (
    "deployment_frequency",
    "lead_time_for_changes",
    "time_to_restore_service",
    "change_failure_rate",
)
INTERVALS: tuple[str, ...] = ("all", "monthly", "daily")

PRODUCTION = "production"
_MICROSECOND = timedelta(microseconds=1)
_MICROS_PER_SECOND = 1_000_000


@dataclass(frozen=True, slots=True)
class DailyRow:
    """One (environment, day) record, GitLab's unit of storage (§3)."""

    project_id: int
    environment_id: int
    tier: str
    day: date
    deployment_frequency: int
    lead_time_for_changes_in_seconds: int | None
    time_to_restore_service_in_seconds: int | None
    incidents_count: int | None


# --- rows -------------------------------------------------------------------------------------


def _round_half_even(numerator: int, denominator: int) -> int:
    """Round numerator/denominator (denominator > 0) to an int, ties to even, exactly."""
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        return quotient + 1
    return quotient


def _row_median_seconds(micros: list[int]) -> int:
    """GitLab's row median (§4): exact median of microsecond durations, rounded to whole seconds.

    Integer arithmetic keeps ties exact (2.5 → 2, 3.5 → 4) where float sums could drift.
    """
    micros.sort()
    middle = len(micros) // 2
    if len(micros) % 2:
        return _round_half_even(micros[middle], _MICROS_PER_SECOND)
    return _round_half_even(micros[middle - 1] + micros[middle], 2 * _MICROS_PER_SECOND)


def _micros(delta: timedelta) -> int:
    return delta // _MICROSECOND


def _primary_production(environments: Iterable[Environment]) -> int | None:
    """Lowest-id production-tier environment in any state (§3.1); None when there is none."""
    ids = [e.id for e in environments if e.tier == PRODUCTION]
    return min(ids) if ids else None


def _unique(items: Iterable[Deployment | Incident]) -> list:
    """Drop repeated ids (a fact fetched twice across page boundaries must count once)."""
    seen: set[int] = set()
    result = []
    for item in items:
        if item.id not in seen:
            seen.add(item.id)
            result.append(item)
    return result


def compute_daily_rows(
    facts: ProjectFacts,
    tiers: Collection[str],
    start_date: date,
    end_date: date,
    tz: ZoneInfo,
) -> list[DailyRow]:
    """Rebuild the project's rows for the requested tiers and days in [start_date, end_date].

    Facts may reach past the window (they are fetched with margins); each timestamp's day is
    decided here, in `tz`. Rows are ordered by (day, environment id).
    """
    tier_set = frozenset(tiers)
    environments = {e.id: e for e in facts.environments}
    selected = {env_id: e.tier for env_id, e in environments.items() if e.tier in tier_set}
    primary = _primary_production(environments.values())

    def day_of(instant: datetime) -> date | None:
        day = instant.astimezone(tz).date()
        return day if start_date <= day <= end_date else None

    # (a) deployment rows: count and lead-time pairs per (environment, day).
    counts: dict[tuple[int, date], int] = defaultdict(int)
    lead_times: dict[tuple[int, date], list[int]] = defaultdict(list)
    links = facts.merge_requests or {}
    for deployment in _unique(facts.deployments):
        if deployment.environment_id not in selected:
            continue
        day = day_of(deployment.finished_at)
        if day is None:
            continue
        key = (deployment.environment_id, day)
        counts[key] += 1
        for mr in links.get(deployment.id, ()):
            if mr.merged_at is not None:
                # Q5: a merge after the finish time counts as 0.
                lead_times[key].append(max(0, _micros(deployment.finished_at - mr.merged_at)))

    # (b) project-wide incident values per day; only with a production environment (§3.2).
    created_per_day: dict[date, int] = defaultdict(int)
    restore_times: dict[date, list[int]] = defaultdict(list)
    if primary is not None:
        for incident in _unique(facts.incidents):
            created = day_of(incident.created_at)
            if created is not None:
                created_per_day[created] += 1
            if incident.closed_at is not None:
                closed = day_of(incident.closed_at)
                if closed is not None:
                    restore_times[closed].append(_micros(incident.closed_at - incident.created_at))
        if primary in selected:  # Q2: incident-only days get a row on the primary only.
            for day in (*created_per_day, *restore_times):
                counts.setdefault((primary, day), 0)

    restore_medians = {day: _row_median_seconds(values) for day, values in restore_times.items()}
    rows = []
    for env_id, day in sorted(counts, key=lambda key: (key[1], key[0])):
        tier = selected[env_id]
        pairs = lead_times.get((env_id, day))
        production = tier == PRODUCTION
        rows.append(
            DailyRow(
                project_id=facts.project_id,
                environment_id=env_id,
                tier=tier,
                day=day,
                deployment_frequency=counts[env_id, day],
                lead_time_for_changes_in_seconds=_row_median_seconds(pairs) if pairs else None,
                # Q4/Q10: project-wide values on every production row, none elsewhere.
                time_to_restore_service_in_seconds=restore_medians.get(day) if production else None,
                incidents_count=created_per_day.get(day, 0) if production else None,
            )
        )
    return rows


# --- aggregation ------------------------------------------------------------------------------


def _median(values: list[int]) -> float | None:
    """Median across rows, not rounded (Q6): 3 and 4 give 3.5."""
    if not values:
        return None
    values.sort()
    middle = len(values) // 2
    if len(values) % 2:
        return float(values[middle])
    return (values[middle - 1] + values[middle]) / 2


def _days_of_month_in_window(month: date, start_date: date, end_date: date) -> int:
    last = month.replace(day=calendar.monthrange(month.year, month.month)[1])
    return (min(last, end_date) - max(month, start_date)).days + 1


def _value(
    rows: list[DailyRow], metric: str, interval: str, bucket: date | None, window: tuple[date, date]
) -> int | float | None:
    if metric == "deployment_frequency":
        total = sum(row.deployment_frequency for row in rows)
        if interval == "daily":
            return total
        if interval == "monthly":
            assert bucket is not None
            return total / _days_of_month_in_window(bucket, *window)
        return total / ((window[1] - window[0]).days + 1)
    if metric == "lead_time_for_changes":
        return _median(
            [
                r.lead_time_for_changes_in_seconds
                for r in rows
                if r.lead_time_for_changes_in_seconds is not None
            ]
        )
    if metric == "time_to_restore_service":
        return _median(
            [
                r.time_to_restore_service_in_seconds
                for r in rows
                if r.time_to_restore_service_in_seconds is not None
            ]
        )
    if metric == "change_failure_rate":
        incidents = [r.incidents_count for r in rows if r.incidents_count is not None]
        if not incidents:
            return None
        return sum(incidents) / max(sum(r.deployment_frequency for r in rows), 1)
    raise ValueError(f"unknown metric {metric!r}")


def aggregate(
    rows: Iterable[DailyRow], metric: str, interval: str, start_date: date, end_date: date
) -> list[dict[str, object]]:
    """Turn rows into the REST answer (§5): buckets with rows only, ascending; `all` always one."""
    if interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval!r}")
    window = (start_date, end_date)
    selected = [row for row in rows if start_date <= row.day <= end_date]
    if interval == "all":
        value = _value(selected, metric, interval, None, window) if selected else None
        return [{"date": None, "value": value}]
    buckets: dict[date, list[DailyRow]] = defaultdict(list)
    if interval == "daily":
        for row in selected:
            buckets[row.day].append(row)
    else:
        for row in selected:
            buckets[row.day.replace(day=1)].append(row)
    return [
        {
            "date": bucket.isoformat(),
            "value": _value(buckets[bucket], metric, interval, bucket, window),
        }
        for bucket in sorted(buckets)
    ]


def compute_metric(
    projects: Iterable[ProjectFacts],
    *,
    metric: str,
    interval: str,
    start_date: date,
    end_date: date,
    tiers: Collection[str],
    tz: ZoneInfo,
) -> list[dict[str, object]]:
    """One project or a whole group (§8): the union of every project's rows, aggregated."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}")
    rows: list[DailyRow] = []
    for facts in projects:
        rows.extend(compute_daily_rows(facts, tiers, start_date, end_date, tz))
    return aggregate(rows, metric, interval, start_date, end_date)


def render(result: list[dict[str, object]]) -> bytes:
    """The exact body of §6: compact JSON, `date` then `value`, floats in repr form (3.0)."""
    return json.dumps(result, separators=(",", ":"), allow_nan=False).encode()
