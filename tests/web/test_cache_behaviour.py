"""The cache through real HTTP: what the fake GitLab is asked, request by request.

Issue 4's promises, each checked by counting the fake's data calls (environments, deployments,
merge requests, issues, group projects; the permission look-ups are cached separately):

- another metric, interval or tier set over an already-fetched window asks nothing;
- a window shifted by one day fetches only the day it lacked;
- a group and its projects share one set of facts, in either order;
- N concurrent identical cold requests cost the calls of one; concurrent different requests for
  one project share what they have in common;
- an upstream failure with an older answer at hand serves that answer, marked stale;
- every answer carries an ETag and Cache-Control; a matching If-None-Match gets 304.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import structlog

from proxy.demo import DATA_KINDS, Call
from proxy.demo.world import REPORTER, World, at

NOW = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)  # 2024-03-15 is the only unsettled day
RITA = {"PRIVATE-TOKEN": "tok-rita"}
WINDOW = {"start_date": "2024-01-01", "end_date": "2024-02-29"}
METRICS = (
    "deployment_frequency",
    "lead_time_for_changes",
    "time_to_restore_service",
    "change_failure_rate",
)
INTERVALS = ("daily", "monthly", "all")


def acme_world() -> World:
    """Group acme (id 10) with projects web (20) and api (21); rita is a Reporter of acme.

    Both projects deploy to production and staging in January, February and today, with merged
    MRs, and web has two incidents, so every kind of fact exists in the window.
    """
    world = World().add_cast()
    acme = world.add_group(10, "acme")
    world.add_member(12, acme, REPORTER)
    for project_id, path in ((20, "web"), (21, "api")):
        project = world.add_project(project_id, path, acme)
        production = world.add_environment(project, "production", "production")
        staging = world.add_environment(project, "staging", "staging")
        for day in ("2024-01-05", "2024-01-20", "2024-02-10", "2024-02-11", "2024-03-15"):
            world.deploy(production, f"{day}T09:00:00Z", mrs=[f"{day}T07:00:00Z"])
            world.deploy(staging, f"{day}T08:00:00Z", mrs=[f"{day}T06:00:00Z"])
    world.incident(20, "2024-01-20T10:00:00Z", "2024-01-20T14:00:00Z")
    world.incident(20, "2024-02-11T10:00:00Z", "2024-02-12T10:00:00Z")
    return world


def target(container: str, metric: str, **params: str) -> str:
    """A metrics URL; `tiers` is a comma-separated list sent as environment_tiers[]."""
    tiers = params.pop("tiers", "")
    query = [f"metric={metric}", *(f"{k}={v}" for k, v in params.items())]
    query += [f"environment_tiers[]={tier}" for tier in tiers.split(",") if tier]
    return f"/api/v4/{container}/dora/metrics?" + "&".join(query)


def signature(call: Call) -> tuple[str, str, tuple[tuple[str, str], ...]]:
    return call.kind, call.path, tuple(sorted(call.query.items()))


def data_kinds(stack) -> list[str]:
    return sorted(call.kind for call in stack.fake.data_calls())


async def ok(stack, path: str) -> str:
    status, body = await stack.get(path, RITA)
    assert status == 200, (path, status, body)
    return body


# ---- 1. facts shared across metrics, intervals, tiers, windows and containers ----------------


async def test_other_metrics_intervals_and_tiers_over_a_fetched_window_ask_nothing(
    start_stack,
) -> None:
    stack = await start_stack(acme_world(), now=NOW)
    # Lead time over both tiers fetches every kind of fact: environments, deployments, the MRs
    # of both tiers' deployments and (production is included) the incidents.
    await ok(
        stack, target("projects/20", "lead_time_for_changes", tiers="production,staging", **WINDOW)
    )
    assert set(data_kinds(stack)) == {
        "environments",
        "deployments",
        "deployment_mrs",
        "project_issues",
    }
    stack.fake.reset_calls()

    answers = 0
    for metric in METRICS:
        for interval in INTERVALS:
            for tiers in ("", "production", "staging", "staging,production"):
                await ok(
                    stack, target("projects/20", metric, interval=interval, tiers=tiers, **WINDOW)
                )
                answers += 1
    await ok(
        stack,
        target(
            "projects/20", "change_failure_rate", start_date="2024-02-01", end_date="2024-02-15"
        ),
    )
    assert answers == 48
    assert stack.fake.data_calls() == []


async def test_a_window_shifted_by_one_day_fetches_only_that_day(start_stack) -> None:
    stack = await start_stack(acme_world(), now=NOW)
    await ok(
        stack,
        target(
            "projects/20", "change_failure_rate", start_date="2024-01-10", end_date="2024-02-10"
        ),
    )
    stack.fake.reset_calls()

    shifted = target(
        "projects/20", "change_failure_rate", start_date="2024-01-11", end_date="2024-02-11"
    )
    body = await ok(stack, shifted)

    calls = stack.fake.data_calls()
    assert sorted(call.kind for call in calls) == ["deployments", "project_issues"]
    deployments = next(call for call in calls if call.kind == "deployments")
    # The one missing day, 2024-02-11, with the collector's one-day margin on either side.
    assert at(deployments.query["finished_after"]) == at("2024-02-10T00:00:00Z")
    assert at(deployments.query["finished_before"]) == at("2024-02-13T00:00:00Z")
    issues = next(call for call in calls if call.kind == "project_issues")
    assert at(issues.query["updated_after"]) == at("2024-02-11T00:00:00Z")

    # Stitched from cached and fresh days, the answer is the one a cold cache gives.
    cold = await start_stack(acme_world(), now=NOW)
    assert body == await ok(cold, shifted)


async def test_a_group_reuses_the_facts_of_its_projects(start_stack) -> None:
    stack = await start_stack(acme_world(), now=NOW)
    for project in ("projects/20", "projects/21"):
        await ok(stack, target(project, "change_failure_rate", **WINDOW))
    stack.fake.reset_calls()

    await ok(stack, target("groups/acme", "change_failure_rate", **WINDOW))
    assert data_kinds(stack) == ["group_projects"]  # which projects: the rest is cached


async def test_projects_reuse_the_facts_their_group_fetched(start_stack) -> None:
    stack = await start_stack(acme_world(), now=NOW)
    await ok(stack, target("groups/acme", "change_failure_rate", **WINDOW))
    assert "group_issues" in data_kinds(stack)  # one group stream for both projects' incidents
    stack.fake.reset_calls()

    for project in ("projects/20", "projects/21", "projects/acme%2Fweb"):
        await ok(stack, target(project, "time_to_restore_service", **WINDOW))
    assert stack.fake.data_calls() == []


# ---- 2. single flight ----------------------------------------------------------------------


async def test_fifty_identical_cold_requests_cost_the_calls_of_one(start_stack) -> None:
    path = target("groups/acme", "lead_time_for_changes", **WINDOW)
    single = await start_stack(acme_world(), now=NOW)
    expected_body = await ok(single, path)
    calls_of_one = Counter(signature(call) for call in single.fake.data_calls())

    stack = await start_stack(acme_world(), now=NOW)
    # Slow data calls, so every request arrives while the first computation is still running.
    stack.fake.faults.latency = 0.2
    stack.fake.faults.only_kinds = set(DATA_KINDS)
    bodies = await asyncio.gather(*(ok(stack, path) for _ in range(50)))

    assert set(bodies) == {expected_body}
    assert Counter(signature(call) for call in stack.fake.data_calls()) == calls_of_one


async def test_fifty_identical_cold_requests_share_their_permission_lookups(start_stack) -> None:
    path = target("groups/acme", "deployment_frequency", **WINDOW)
    single = await start_stack(acme_world(), now=NOW)
    await ok(single, path)
    calls_of_one = Counter(call.kind for call in single.fake.calls)

    stack = await start_stack(acme_world(), now=NOW)
    stack.fake.faults.latency = 0.05
    await asyncio.gather(*(ok(stack, path) for _ in range(50)))
    assert Counter(call.kind for call in stack.fake.calls) == calls_of_one


async def test_concurrent_different_requests_share_their_common_fetches(start_stack) -> None:
    stack = await start_stack(acme_world(), now=NOW)
    stack.fake.faults.latency = 0.1
    stack.fake.faults.only_kinds = set(DATA_KINDS)
    paths = [
        target("projects/20", "deployment_frequency", interval="daily", **WINDOW),
        target("projects/20", "deployment_frequency", interval="monthly", **WINDOW),
        target("projects/20", "lead_time_for_changes", interval="all", **WINDOW),
        target("projects/20", "change_failure_rate", interval="monthly", **WINDOW),
        target("projects/20", "time_to_restore_service", interval="all", **WINDOW),
        # Overlapping windows: February is common to all of them.
        target(
            "projects/20", "deployment_frequency", start_date="2024-02-01", end_date="2024-02-29"
        ),
        target(
            "projects/20", "change_failure_rate", start_date="2024-02-05", end_date="2024-02-20"
        ),
    ]
    await asyncio.gather(*(ok(stack, path) for path in paths))

    repeated = {s: n for s, n in Counter(map(signature, stack.fake.data_calls())).items() if n > 1}
    assert repeated == {}
    kinds = Counter(data_kinds(stack))
    assert kinds["environments"] == 1
    # The production deployments of January and February, one MR list each.
    assert kinds["deployment_mrs"] == 4
    # Whoever came first fetched its window; the others fetched at most the days it lacked.
    deployment_days = set()
    for call in stack.fake.calls_of("deployments"):
        first = at(call.query["finished_after"]) + timedelta(days=1)
        last = at(call.query["finished_before"]) - timedelta(days=1)
        days = {first + timedelta(days=n) for n in range((last - first).days)}
        assert not days & deployment_days, "a day was fetched twice"
        deployment_days |= days


# ---- 3. stale on error ---------------------------------------------------------------------


async def test_an_upstream_failure_serves_the_older_answer_marked_stale(start_stack) -> None:
    path = target("projects/20", "deployment_frequency")  # default window: ends today
    # Short real lifetimes for today's facts and answer: they expire, the stale copy does not.
    stack = await start_stack(
        acme_world(), now=NOW, answer_ttl_current=0.3, facts_ttl_recent=0.3, upstream_max_retries=0
    )
    fresh = await stack.client.get(path, headers=RITA)
    assert fresh.status == 200
    body = await fresh.read()
    await asyncio.sleep(0.5)

    stack.fake.faults.status_codes = [502] * 20
    stack.fake.faults.only_kinds = set(DATA_KINDS)
    with structlog.testing.capture_logs() as logs:
        stale = await stack.client.get(path, headers=RITA)

    assert stale.status == 200
    assert await stale.read() == body
    assert stale.headers["X-Dora-Proxy-Stale"] == "true"
    assert stale.headers["Warning"] == '110 - "Response is Stale"'
    assert stale.headers["Cache-Control"] == "private, no-cache"
    assert stale.headers["ETag"] == fresh.headers["ETag"]
    assert any(call.status == 502 for call in stack.fake.data_calls())  # it did try
    served = [entry for entry in logs if entry["event"] == "stale_answer_served"]
    assert served and served[0]["cause"] == 502 and served[0]["container_id"] == 20


async def test_without_stale_on_error_the_failure_is_answered(start_stack) -> None:
    path = target("projects/20", "deployment_frequency")
    stack = await start_stack(
        acme_world(),
        now=NOW,
        answer_ttl_current=0.3,
        facts_ttl_recent=0.3,
        upstream_max_retries=0,
        stale_on_error=False,
    )
    await ok(stack, path)
    await asyncio.sleep(0.5)
    stack.fake.faults.status_codes = [502] * 20
    stack.fake.faults.only_kinds = set(DATA_KINDS)

    status, _ = await stack.get(path, RITA)
    assert status == 502
    assert "X-Dora-Proxy-Stale" not in (await stack.client.get(path, headers=RITA)).headers


async def test_a_failure_without_an_older_answer_is_an_error(start_stack) -> None:
    stack = await start_stack(acme_world(), now=NOW, upstream_max_retries=0)
    stack.fake.faults.status_codes = [502] * 20
    stack.fake.faults.only_kinds = set(DATA_KINDS)
    status, _ = await stack.get(target("projects/20", "deployment_frequency"), RITA)
    assert status == 502


# ---- 5. HTTP caching -----------------------------------------------------------------------


async def test_etag_and_304_on_a_matching_if_none_match(start_stack) -> None:
    stack = await start_stack(acme_world(), now=NOW)
    past = target("projects/20", "deployment_frequency", **WINDOW)
    current = target("projects/20", "deployment_frequency")

    first = await stack.client.get(past, headers=RITA)
    etag = first.headers["ETag"]
    assert first.status == 200 and etag.startswith('"') and etag.endswith('"')
    assert first.headers["Cache-Control"] == "private, max-age=86400"  # answer_ttl_past
    assert "PRIVATE-TOKEN" in first.headers["Vary"]
    today = await stack.client.get(current, headers=RITA)
    assert today.headers["Cache-Control"] == "private, max-age=300"  # answer_ttl_current
    assert today.headers["ETag"] != etag

    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}'):
        again = await stack.client.get(past, headers={**RITA, "If-None-Match": if_none_match})
        assert again.status == 304, if_none_match
        assert await again.read() == b""
        assert again.headers["ETag"] == etag
        assert again.headers["Cache-Control"] == "private, max-age=86400"

    other = await stack.client.get(past, headers={**RITA, "If-None-Match": '"other"'})
    assert other.status == 200
    assert json.loads(await other.read()) == json.loads(await first.read())


async def test_304_still_requires_permission(start_stack) -> None:
    """A stranger holding an ETag learns nothing: permission comes before the cache."""
    stack = await start_stack(acme_world(), now=NOW)
    past = target("projects/20", "deployment_frequency", **WINDOW)
    etag = (await stack.client.get(past, headers=RITA)).headers["ETag"]
    response = await stack.client.get(
        past, headers={"PRIVATE-TOKEN": "tok-gus", "If-None-Match": etag}
    )
    assert response.status == 404
