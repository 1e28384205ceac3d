"""proxy.explain: the facts behind a number, exact statistics and DORA levels (pure)."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from proxy import facts as f
from proxy.dora import compute_metric
from proxy.explain import (
    LEVELS_FILE,
    explain,
    level_of,
    load_levels,
    percentile,
    summary,
)
from proxy.facts import Deployment, Environment, Incident, MergeRequest, ProjectFacts

UTC_TZ = ZoneInfo("UTC")
START, END = date(2024, 3, 1), date(2024, 3, 10)
LEVELS = load_levels()


def t(day: int, hour: float) -> datetime:
    return datetime(2024, 3, 1, tzinfo=UTC) + timedelta(days=day - 1, hours=hour)


def hand_built() -> ProjectFacts:
    """Day 2: three production deployments (MR lead times 1 h, 2 h, 9 h); day 5: one (10 h);
    a staging deployment and one outside the window that must not count; two incidents
    created in the window (restored in 30 min and 3 h), one created before and closed in it."""
    environments = (Environment(1, "production", "production"), Environment(2, "stage", "staging"))
    deployments = (
        Deployment(10, 1, t(2, 12), 910),
        Deployment(11, 1, t(2, 13)),
        Deployment(12, 1, t(2, 14)),
        Deployment(13, 1, t(5, 12)),
        Deployment(14, 2, t(5, 13)),  # staging: not asked for
        Deployment(15, 1, t(12, 12)),  # after the window
    )
    mrs = {
        10: (MergeRequest(100, t(2, 11), 7, "https://gitlab.test/mr/7"),),
        11: (MergeRequest(101, t(2, 11)), MergeRequest(104, None)),  # unmerged: no sample
        12: (MergeRequest(102, t(2, 5)),),
        13: (MergeRequest(103, t(5, 2)),),
    }
    incidents = (
        Incident(200, t(3, 1), t(3, 1.5), 1, "https://gitlab.test/i/1"),
        Incident(201, t(6, 0), t(6, 3)),
        Incident(202, t(-5, 0), t(4, 0)),  # created before the window, closed in it
        Incident(203, t(-5, 0), None),  # neither created nor closed in the window
    )
    return ProjectFacts(7, environments, deployments, incidents, mrs)


def api_value(projects: list[ProjectFacts], metric: str) -> object:
    return compute_metric(
        projects,
        metric=metric,
        interval="all",
        start_date=START,
        end_date=END,
        tiers=("production",),
        tz=UTC_TZ,
    )[0]["value"]


def test_percentiles_against_hand_computed_values() -> None:
    assert percentile([10, 1, 4, 3, 2], 0.5) == 3
    assert percentile([1, 2, 3, 4, 10], 0.75) == 4
    assert percentile([1, 2, 3, 4, 10], 0.9) == pytest.approx(7.6)  # rank 3.6: 4 + 0.6 × 6
    assert percentile([10, 20, 30, 40], 0.5) == 25
    assert percentile([10, 20, 30, 40], 0.75) == 32.5
    assert percentile([10, 20, 30, 40], 0.9) == pytest.approx(37)
    assert percentile([], 0.5) is None
    assert percentile([5], 0.9) == 5


def test_listed_facts_are_exactly_the_counted_ones() -> None:
    project = hand_built()
    got = explain(
        [project],
        {7: "g/app"},
        tiers=("production",),
        start_date=START,
        end_date=END,
        tz=UTC_TZ,
        web_base="https://gitlab.test",
    )
    assert [d["id"] for d in got.deployments] == [10, 11, 12, 13]
    days = (END - START).days + 1
    assert len(got.deployments) / days == api_value([project], "deployment_frequency")
    assert got.deployments[0] == {
        "project": "g/app",
        "id": 10,
        "environment": "production",
        "tier": "production",
        "finished_at": "2024-03-02T12:00:00.000Z",
        "day": "2024-03-02",
        "web_url": "https://gitlab.test/g/app/-/jobs/910",
    }
    assert [(m["id"], m["lead_time_seconds"]) for m in got.merge_requests] == [
        (100, 3600.0),
        (101, 7200.0),
        (102, 32400.0),
        (103, 36000.0),
    ]
    assert [i["id"] for i in got.incidents] == [202, 200, 201]
    created = [i for i in got.incidents if i["created_in_window"]]
    assert len(created) / len(got.deployments) == api_value([project], "change_failure_rate")
    assert sorted(got.restore_times) == [1800.0, 10800.0, 9 * 86400.0]


def test_summary_true_median_differs_from_gitlabs_median_of_daily_medians() -> None:
    project = hand_built()
    body = summary(
        [project],
        {7: "g/app"},
        LEVELS,
        tiers=("production",),
        start_date=START,
        end_date=END,
        tz=UTC_TZ,
    )
    lead = body["metrics"]["lead_time_for_changes"]
    # GitLab: day 2's row median is 2 h, day 5's is 10 h → median of the two rows 6 h.
    assert lead["value"] == api_value([project], "lead_time_for_changes") == 6 * 3600.0
    # Every sample: 1, 2, 9, 10 h → median 5.5 h, p75 rank 2.25 → 9.25 h, p90 rank 2.7 → 9.7 h.
    assert lead["median"] == 5.5 * 3600
    assert lead["p75"] == pytest.approx(9.25 * 3600)
    assert lead["p90"] == pytest.approx(9.7 * 3600)
    assert lead["sample_count"] == 4
    assert lead["level"] == "elite"
    restore = body["metrics"]["time_to_restore_service"]
    assert (restore["median"], restore["sample_count"]) == (10800.0, 3)
    frequency = body["metrics"]["deployment_frequency"]
    # Per day over 10 days: 0,3,0,0,1,0,0,0,0,0 → sorted, p90 at rank 8.1: 1 + 0.1 × 2 = 1.2.
    assert (frequency["value"], frequency["sample_count"], frequency["median"]) == (0.4, 4, 0)
    assert frequency["p90"] == pytest.approx(1.2)
    assert frequency["level"] == "high"
    failure = body["metrics"]["change_failure_rate"]
    assert (failure["value"], failure["sample_count"], failure["deployments"]) == (0.5, 2, 4)
    assert failure["level"] == "low"


def test_without_production_no_incident_is_listed() -> None:
    project = hand_built()
    got = explain([project], {}, tiers=("staging",), start_date=START, end_date=END, tz=UTC_TZ)
    assert [d["id"] for d in got.deployments] == [14]
    assert got.incidents == [] and got.merge_requests == []


def test_group_summary_lists_each_projects_own_values() -> None:
    one = hand_built()
    two = ProjectFacts(8, (Environment(3, "prod", "production"),), (Deployment(30, 3, t(1, 1)),))
    body = summary(
        [one, two],
        {7: "g/b-app", 8: "g/a-app"},
        LEVELS,
        tiers=("production",),
        start_date=START,
        end_date=END,
        tz=UTC_TZ,
        per_project=True,
    )
    assert [p["full_path"] for p in body["projects"]] == ["g/a-app", "g/b-app"]
    assert body["projects"][0]["values"]["deployment_frequency"] == 0.1
    assert body["projects"][1]["values"] == {
        m: api_value([one], m)
        for m in (
            "deployment_frequency",
            "lead_time_for_changes",
            "time_to_restore_service",
            "change_failure_rate",
        )
    }
    assert body["metrics"]["deployment_frequency"]["sample_count"] == 5


@pytest.mark.parametrize(
    ("metric", "value", "level"),
    [
        ("deployment_frequency", 1.0, "elite"),
        ("deployment_frequency", 0.99, "high"),
        ("deployment_frequency", 1 / 7, "high"),
        ("deployment_frequency", 0.1, "medium"),
        ("deployment_frequency", 0.01, "low"),
        ("lead_time_for_changes", 86400, "elite"),
        ("lead_time_for_changes", 86401, "high"),
        ("lead_time_for_changes", 40 * 86400, "low"),
        ("time_to_restore_service", 3599, "elite"),
        ("time_to_restore_service", 7200, "high"),
        ("time_to_restore_service", 3 * 86400, "medium"),
        ("change_failure_rate", 0.05, "elite"),
        ("change_failure_rate", 0.12, "medium"),
        ("change_failure_rate", 0.5, "low"),
        ("change_failure_rate", None, None),
    ],
)
def test_levels_follow_the_data_file(metric: str, value: float | None, level: str | None) -> None:
    assert level_of(metric, value, LEVELS) == level


def test_a_teams_own_levels_file_replaces_the_thresholds(tmp_path) -> None:
    data = json.loads(LEVELS_FILE.read_text())
    data["metrics"]["change_failure_rate"]["levels"][0]["bound"] = 0.5
    own = tmp_path / "levels.json"
    own.write_text(json.dumps(data))
    assert level_of("change_failure_rate", 0.4, load_levels(own)) == "elite"
    del data["metrics"]["lead_time_for_changes"]
    own.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="four metrics"):
        load_levels(own)
    own.write_text("{not json")
    with pytest.raises(ValueError, match=r"levels\.json"):
        load_levels(own)


def test_cached_entries_without_the_new_fields_still_decode() -> None:
    """Entries written before iid/web_url existed decode (with None); new ones round-trip."""
    old = b'[{"id":1,"environment_id":2,"finished_at":"2024-03-01T00:00:00+00:00"}]'
    (deployment,) = f.deployments_from_json(f.loads(old))  # type: ignore[arg-type]
    assert deployment.job_id is None
    assert f.dumps(f.deployments_to_json((deployment,))) == old
    linked = Deployment(1, 2, t(1, 0), 77)
    assert f.deployments_from_json(f.deployments_to_json((linked,))) == (linked,)
    (mr,) = f.merge_requests_from_json([{"id": 3, "merged_at": None}])
    assert mr.iid is None
    (incident,) = f.incidents_from_json(
        [{"id": 4, "created_at": "2024-03-01T00:00:00+00:00", "closed_at": None}]
    )
    assert incident.web_url is None
    new = Incident(4, t(1, 0), None, 9, "https://gitlab.test/i/9")
    assert f.incidents_from_json(f.incidents_to_json((new,))) == (new,)
