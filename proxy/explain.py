"""Why a DORA number is what it is: the facts it was computed from and exact statistics.

Pure, like `proxy.dora` (no I/O, clock or logging), and built on the same rules: a fact is
listed here exactly when `dora.compute_daily_rows` lets it into a row for the same window,
tiers and time zone. The extension endpoints (`/-/api/v1/.../dora/facts` and `.../summary`)
and the dashboard's drill-down read this module; the DORA API itself never does.

- deployments: successful, in an environment of a requested tier, finished on a day of the
  window (each id once);
Every record names its project and the local day(s) (in the configured time zone) that put it
in a bucket, so a chart point's facts are those whose day falls in the point's bucket.

- merge requests: one record per (counted deployment, linked MR with a merge time), the pair
  GitLab's lead time uses; a merge after the deployment counts as 0 (quirk Q5);
- incidents: only with `production` among the tiers and a production environment in the
  project; listed when created or closed on a day of the window. `time_to_restore_seconds`
  is set when the closing falls in the window (the sample time to restore uses).

The summary adds what GitLab's API does not give: the true median over all samples (GitLab's
value is a median of daily medians), p75 and p90 (linear interpolation between closest ranks,
numpy's default), the sample count and the DORA performance level.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from proxy.dora import METRICS, PRODUCTION, compute_metric
from proxy.facts import ProjectFacts, format_time

LEVELS_FILE = Path(__file__).parent / "data" / "dora_levels.json"
LEVEL_NAMES = ("elite", "high", "medium", "low")
_MICROSECOND = timedelta(microseconds=1)


# --- the facts behind a number ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Explained:
    """The counted facts of one window, as JSON-ready records (instants in GitLab's format)."""

    deployments: list[dict[str, Any]]
    merge_requests: list[dict[str, Any]]
    incidents: list[dict[str, Any]]
    # Samples for the statistics: lead times and restore times in seconds, per-day counts.
    lead_times: list[float]
    restore_times: list[float]
    daily_deployments: list[int]
    incidents_created: int


def _seconds(delta: timedelta) -> float:
    """A duration in seconds, exact to the microsecond (as GitLab's rows measure it)."""
    return (delta // _MICROSECOND) / 1_000_000


def explain(
    projects: Iterable[ProjectFacts],
    paths: Mapping[int, str],
    *,
    tiers: Collection[str],
    start_date: date,
    end_date: date,
    tz: ZoneInfo,
    web_base: str | None = None,
) -> Explained:
    """The facts `dora.compute_metric` counts for this window and these tiers, per project.

    `web_base` (GitLab's base URL) builds each deployment's link: its job's page."""
    tier_set = frozenset(tiers)
    deployments: list[dict[str, Any]] = []
    merge_requests: list[dict[str, Any]] = []
    incidents: list[dict[str, Any]] = []
    lead_times: list[float] = []
    restore_times: list[float] = []
    per_day: dict[date, int] = {}
    created_count = 0
    for facts in projects:
        project = paths.get(facts.project_id, str(facts.project_id))
        environments = {e.id: e for e in facts.environments if e.tier in tier_set}
        links = facts.merge_requests or {}
        seen: set[int] = set()
        for deployment in sorted(facts.deployments, key=lambda d: (d.finished_at, d.id)):
            environment = environments.get(deployment.environment_id)
            if environment is None or deployment.id in seen:
                continue
            day = deployment.finished_at.astimezone(tz).date()
            if not start_date <= day <= end_date:
                continue
            seen.add(deployment.id)
            per_day[day] = per_day.get(day, 0) + 1
            deployments.append(
                {
                    "project": project,
                    "id": deployment.id,
                    "environment": environment.name,
                    "tier": environment.tier,
                    "finished_at": format_time(deployment.finished_at),
                    "day": day.isoformat(),
                    "web_url": (
                        f"{web_base}/{project}/-/jobs/{deployment.job_id}"
                        if web_base and deployment.job_id is not None and facts.project_id in paths
                        else None
                    ),
                }
            )
            for mr in links.get(deployment.id, ()):
                if mr.merged_at is None:
                    continue
                lead = max(_seconds(deployment.finished_at - mr.merged_at), 0.0)
                lead_times.append(lead)
                merge_requests.append(
                    {
                        "project": project,
                        "id": mr.id,
                        "iid": mr.iid,
                        "merged_at": format_time(mr.merged_at),
                        "deployed_at": format_time(deployment.finished_at),
                        "deployment_id": deployment.id,
                        "day": day.isoformat(),
                        "lead_time_seconds": lead,
                        "web_url": mr.web_url,
                    }
                )
        has_production = any(e.tier == PRODUCTION for e in facts.environments)
        if PRODUCTION not in tier_set or not has_production:
            continue
        listed: set[int] = set()
        for incident in sorted(facts.incidents, key=lambda i: (i.created_at, i.id)):
            if incident.id in listed:
                continue
            created_day = incident.created_at.astimezone(tz).date()
            closed_day = incident.closed_at.astimezone(tz).date() if incident.closed_at else None
            created = start_date <= created_day <= end_date
            closed = closed_day is not None and start_date <= closed_day <= end_date
            if not (created or closed):
                continue
            listed.add(incident.id)
            created_count += created
            restore = None
            if closed:
                assert incident.closed_at is not None
                restore = _seconds(incident.closed_at - incident.created_at)
                restore_times.append(restore)
            incidents.append(
                {
                    "project": project,
                    "id": incident.id,
                    "iid": incident.iid,
                    "created_at": format_time(incident.created_at),
                    "closed_at": format_time(incident.closed_at) if incident.closed_at else None,
                    "created_day": created_day.isoformat(),
                    "closed_day": closed_day.isoformat() if closed_day else None,
                    "created_in_window": created,
                    "time_to_restore_seconds": restore,
                    "web_url": incident.web_url,
                }
            )
    days = (end_date - start_date).days + 1
    daily = [per_day.get(start_date + timedelta(days=n), 0) for n in range(days)]
    return Explained(
        deployments, merge_requests, incidents, lead_times, restore_times, daily, created_count
    )


def facts_body(explained: Explained) -> dict[str, Any]:
    """The JSON object of GET .../dora/facts."""
    return {
        "deployments": explained.deployments,
        "merge_requests": explained.merge_requests,
        "incidents": explained.incidents,
    }


# --- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default; p50 is the exact median).

    None for no values. `fraction` in [0, 1].
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = fraction * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _stats(samples: Sequence[float]) -> dict[str, float | None]:
    return {
        "median": percentile(samples, 0.5),
        "p75": percentile(samples, 0.75),
        "p90": percentile(samples, 0.9),
    }


# --- DORA performance levels -----------------------------------------------------------------


def load_levels(path: Path | None = None) -> dict[str, Any]:
    """The thresholds file (the shipped one by default); checked so a team's own file that is
    wrong stops start-up with a clear message rather than mislabelling levels."""
    source = path or LEVELS_FILE
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"DORA levels file {source}: {exc}") from None
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(metrics, dict) or set(metrics) != set(METRICS):
        raise ValueError(f"DORA levels file {source}: 'metrics' must name the four metrics")
    for metric, spec in metrics.items():
        levels = spec.get("levels") if isinstance(spec, dict) else None
        if spec.get("better") not in ("higher", "lower") or not isinstance(levels, list):
            raise ValueError(f"DORA levels file {source}: {metric} needs 'better' and 'levels'")
        if not levels or levels[-1].get("bound") is not None:
            raise ValueError(f"DORA levels file {source}: {metric}'s last level has no bound")
        for level in levels[:-1]:
            if not isinstance(level.get("bound"), int | float) or not level.get("level"):
                raise ValueError(f"DORA levels file {source}: {metric} has a level without bound")
    return data


def level_of(metric: str, value: float | None, levels: Mapping[str, Any]) -> str | None:
    """The best level whose bound the value meets (≥ bound when higher is better, else ≤)."""
    if value is None:
        return None
    spec = levels["metrics"][metric]
    higher = spec["better"] == "higher"
    for level in spec["levels"]:
        bound = level["bound"]
        if bound is None or (value >= bound if higher else value <= bound):
            return str(level["level"])
    return None


# --- the summary ------------------------------------------------------------------------------


def all_values(
    projects: Sequence[ProjectFacts],
    *,
    tiers: Collection[str],
    start_date: date,
    end_date: date,
    tz: ZoneInfo,
) -> dict[str, int | float | None]:
    """GitLab's `interval=all` value of each metric, by the API's own computation."""
    return {
        metric: compute_metric(
            projects,
            metric=metric,
            interval="all",
            start_date=start_date,
            end_date=end_date,
            tiers=tiers,
            tz=tz,
        )[0]["value"]  # type: ignore[misc]
        for metric in METRICS
    }


def summary(
    projects: Sequence[ProjectFacts],
    paths: Mapping[int, str],
    levels: Mapping[str, Any],
    *,
    tiers: Collection[str],
    start_date: date,
    end_date: date,
    tz: ZoneInfo,
    per_project: bool = False,
) -> dict[str, Any]:
    """The JSON object of GET .../dora/summary; `per_project` adds each project's values."""
    window = {"tiers": tiers, "start_date": start_date, "end_date": end_date, "tz": tz}
    explained = explain(projects, paths, **window)
    values = all_values(projects, **window)
    deployments = len(explained.deployments)
    metrics: dict[str, Any] = {
        "deployment_frequency": {
            "value": values["deployment_frequency"],
            **_stats(explained.daily_deployments),
            "sample_count": deployments,
            "samples": "deployments per day, every day of the window",
        },
        "lead_time_for_changes": {
            "value": values["lead_time_for_changes"],
            **_stats(explained.lead_times),
            "sample_count": len(explained.lead_times),
            "samples": "seconds from merge to deployment, per (deployment, merge request)",
        },
        "time_to_restore_service": {
            "value": values["time_to_restore_service"],
            **_stats(explained.restore_times),
            "sample_count": len(explained.restore_times),
            "samples": "seconds from creation to closing, per incident closed in the window",
        },
        "change_failure_rate": {
            "value": values["change_failure_rate"],
            "median": None,
            "p75": None,
            "p90": None,
            "sample_count": explained.incidents_created,
            "deployments": deployments,
            "samples": "incidents created in the window, against its deployments",
        },
    }
    for metric, entry in metrics.items():
        entry["level"] = level_of(metric, entry["value"], levels)
    body: dict[str, Any] = {
        "start_date": start_date.isoformat(),
        "end_date": end_date.isoformat(),
        "environment_tiers": list(tiers),
        "metrics": metrics,
        "levels_source": {"source": levels.get("source"), "year": levels.get("year")},
    }
    if per_project:
        body["projects"] = [
            {
                "id": facts.project_id,
                "full_path": paths.get(facts.project_id, str(facts.project_id)),
                "values": all_values([facts], **window),
            }
            for facts in sorted(projects, key=lambda p: paths.get(p.project_id, ""))
        ]
    return body
