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
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

from proxy.facts import Deployment, Environment, Incident, ProjectFacts
from proxy.query import INTERVALS, METRICS

PRODUCTION = "production"
_MICROSECOND = timedelta(microseconds=1)
_MICROS_PER_SECOND = 1_000_000
_Fact = TypeVar("_Fact", Deployment, Incident)


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


def _row_factory() -> Callable[..., DailyRow]:
    """A DailyRow constructor ~3× faster than the frozen dataclass `__init__`.

    The generated `__init__` of a frozen dataclass goes through `object.__setattr__` once per
    field; a group request builds one row per (environment, day) of every project, so the slot
    descriptors are called directly. Equivalent to `DailyRow(*values)`, positional only.
    """
    new = object.__new__
    setters = tuple(getattr(DailyRow, name).__set__ for name in DailyRow.__slots__)
    (p, e, t, d, df, lt, ttrs, inc) = setters

    def make(project_id, environment_id, tier, day, frequency, lead_time, restore, incidents):
        row = new(DailyRow)
        p(row, project_id)
        e(row, environment_id)
        t(row, tier)
        d(row, day)
        df(row, frequency)
        lt(row, lead_time)
        ttrs(row, restore)
        inc(row, incidents)
        return row

    return make


_make_row = _row_factory()


# --- rows -------------------------------------------------------------------------------------


def _row_median_seconds(micros: list[int]) -> int:
    """GitLab's row median (§4): exact median of microsecond durations, rounded to whole seconds.

    Ties go to even (2.5 → 2, 3.5 → 4). Python's int / int is correctly rounded and a median of
    whole microseconds has at most 7 decimals, so `round` sees exact ties and never a value
    pushed across one (for durations below ~285 years).
    """
    count = len(micros)
    if count == 1:
        return round(micros[0] / _MICROS_PER_SECOND)
    micros.sort()
    middle = count // 2
    if count % 2:
        return round(micros[middle] / _MICROS_PER_SECOND)
    return round((micros[middle - 1] + micros[middle]) / (2 * _MICROS_PER_SECOND))


def _primary_production(environments: Iterable[Environment]) -> int | None:
    """Lowest-id production-tier environment in any state (§3.1); None when there is none."""
    ids = [e.id for e in environments if e.tier == PRODUCTION]
    return min(ids) if ids else None


def _unique(items: Sequence[_Fact]) -> Sequence[_Fact]:
    """Drop repeated ids (a fact fetched twice across page boundaries must count once)."""
    if len({item.id for item in items}) == len(items):
        return items
    return list({item.id: item for item in items}.values())


def compute_daily_rows(
    facts: ProjectFacts,
    tiers: Collection[str],
    start_date: date,
    end_date: date,
    tz: ZoneInfo,
) -> list[DailyRow]:
    """Rebuild the project's rows for the requested tiers and days in [start_date, end_date].

    Facts may reach past the window (they are fetched with margins); each timestamp's day is
    decided here, in `tz`. Rows are ordered by (environment id, day). The loops are written
    flat on purpose: a group request runs them for every deployment of every project.
    """
    tier_set = frozenset(tiers)
    selected = {e.id: e.tier for e in facts.environments if e.tier in tier_set}
    primary = _primary_production(facts.environments)

    # (a) deployment rows: count and lead-time pairs (µs) per environment and day.
    counts: dict[int, dict[date, int]] = {env_id: {} for env_id in selected}
    lead_times: dict[int, dict[date, list[int]]] = {env_id: {} for env_id in selected}
    links = facts.merge_requests or {}
    for deployment in _unique(facts.deployments):
        env_counts = counts.get(deployment.environment_id)
        if env_counts is None:  # tier not requested, or an environment we do not know
            continue
        finished = deployment.finished_at
        day = finished.astimezone(tz).date()
        if day < start_date or day > end_date:
            continue
        env_counts[day] = env_counts.get(day, 0) + 1
        mrs = links.get(deployment.id)
        if mrs:
            pairs = lead_times[deployment.environment_id].setdefault(day, [])
            for mr in mrs:
                if mr.merged_at is not None:
                    micros = (finished - mr.merged_at) // _MICROSECOND
                    pairs.append(micros if micros > 0 else 0)  # Q5: merged after finish → 0

    # (b) project-wide incident values per day; only with a production environment (§3.2).
    created_per_day: dict[date, int] = {}
    restore_times: dict[date, list[int]] = {}
    if primary is not None:
        for incident in _unique(facts.incidents):
            created = incident.created_at.astimezone(tz).date()
            if start_date <= created <= end_date:
                created_per_day[created] = created_per_day.get(created, 0) + 1
            if incident.closed_at is not None:
                closed = incident.closed_at.astimezone(tz).date()
                if start_date <= closed <= end_date:
                    restore_times.setdefault(closed, []).append(
                        (incident.closed_at - incident.created_at) // _MICROSECOND
                    )
        if primary in selected:  # Q2: incident-only days get a row on the primary only.
            primary_counts = counts[primary]
            for day in (*created_per_day, *restore_times):
                primary_counts.setdefault(day, 0)

    restore_medians = {day: _row_median_seconds(values) for day, values in restore_times.items()}
    project_id = facts.project_id
    rows: list[DailyRow] = []
    append = rows.append
    for env_id in sorted(counts):
        tier = selected[env_id]
        env_counts = counts[env_id]
        env_lead_times = lead_times[env_id]
        production = tier == PRODUCTION
        for day in sorted(env_counts):
            pairs = env_lead_times.get(day)
            append(
                _make_row(
                    project_id,
                    env_id,
                    tier,
                    day,
                    env_counts[day],
                    _row_median_seconds(pairs) if pairs else None,
                    # Q4/Q10: project-wide values on every production row, none elsewhere.
                    restore_medians.get(day) if production else None,
                    created_per_day.get(day, 0) if production else None,
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
    # change_failure_rate (Q3): a ratio of sums, null without any production row.
    incidents = [r.incidents_count for r in rows if r.incidents_count is not None]
    if not incidents:
        return None
    return sum(incidents) / max(sum(r.deployment_frequency for r in rows), 1)


def aggregate(
    rows: Iterable[DailyRow], metric: str, interval: str, start_date: date, end_date: date
) -> list[dict[str, object]]:
    """Turn rows into the REST answer (§5): buckets with rows only, ascending; `all` always one.

    `metric` and `interval` must already be valid (params checks them with GitLab's messages);
    anything else is a programming error and raises ValueError.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}")
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
    rows: list[DailyRow] = []
    for facts in projects:
        rows.extend(compute_daily_rows(facts, tiers, start_date, end_date, tz))
    return aggregate(rows, metric, interval, start_date, end_date)


def render(result: list[dict[str, object]]) -> bytes:
    """The exact body of §6: compact JSON, `date` then `value`, floats in repr form (3.0)."""
    return json.dumps(result, separators=(",", ":"), allow_nan=False).encode()
