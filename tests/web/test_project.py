"""Project requests: what goes upstream, and what does not."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from proxy.demo.world import REPORTER, World

RITA = {"PRIVATE-TOKEN": "tok-rita"}
NOW = datetime(2021, 3, 1, tzinfo=UTC)
URL = "/api/v4/projects/11/dora/metrics?start_date=2021-01-01&end_date=2021-01-31&metric="


def build(world: World) -> None:
    group = world.add_group(10, "s1")
    world.add_member(12, group, REPORTER)
    project = world.add_project(11, "app", group)
    production = world.add_environment(project, "production", "production")
    staging = world.add_environment(project, "staging", "staging")
    for day in range(1, 29):
        world.deploy(production, f"2021-01-{day:02d}T10:00:00Z", mrs=["2021-01-01T08:00:00Z"])
        world.deploy(staging, f"2021-01-{day:02d}T09:00:00Z", mrs=["2021-01-01T07:00:00Z"])
    world.incident(project, "2021-01-05T10:00:00Z", "2021-01-05T11:00:00Z")


@pytest.mark.parametrize(
    "query",
    [
        "deployment_frequency&interval=hourly",
        "bogus",
        "deployment_frequency&environment_tiers[]=prod",
        "deployment_frequency&start_date=2020-01-01",  # range over 180 days
    ],
)
async def test_a_bad_parameter_makes_no_data_call(world, start_stack, query):
    build(world)
    stack = await start_stack(world, now=NOW)
    status, _ = await stack.get(URL + query, RITA)
    assert status == 400
    assert {c.kind for c in stack.fake.calls} <= {"user", "project", "project_members"}
    assert stack.fake.data_calls() == []


async def test_deployments_are_fetched_in_one_filtered_stream(world, start_stack):
    build(world)
    stack = await start_stack(world, now=NOW)
    status, _ = await stack.get(URL + "deployment_frequency", RITA)
    assert status == 200
    (call,) = stack.fake.calls_of("deployments")
    assert call.query["status"] == "success"
    assert call.query["order_by"] == "finished_at"
    assert call.query["per_page"] == "100"
    # the window in UTC, with a one-day margin on both sides
    assert call.query["finished_after"] == "2020-12-31T00:00:00Z"
    assert call.query["finished_before"] == "2021-02-02T00:00:00Z"
    assert "environment" not in call.query
    (issues,) = stack.fake.calls_of("project_issues")
    assert issues.query["issue_type"] == "incident"
    assert issues.query["updated_after"] == "2021-01-01T00:00:00Z"
    assert stack.fake.calls_of("deployment_mrs") == []  # only lead time needs MR lists


async def test_lead_time_asks_merge_requests_only_for_requested_tiers(world, start_stack):
    build(world)
    stack = await start_stack(world, now=NOW)
    status, body = await stack.get(URL + "lead_time_for_changes&interval=all", RITA)
    # median over 28 days of (d - 1) days + 2 h: days 14 and 15 → 13.5 days + 2 h
    assert (status, body) == (200, '[{"date":null,"value":1173600.0}]')
    production_ids = {
        d.id
        for d in world.deployments.values()
        if world.environments[d.environment_id].tier == "production"
    }
    asked = {int(c.path.split("/")[-2]) for c in stack.fake.calls_of("deployment_mrs")}
    assert asked == production_ids  # 28 calls, no staging deployment


async def test_staging_only_request_fetches_no_incidents(world, start_stack):
    build(world)
    stack = await start_stack(world, now=NOW)
    status, _ = await stack.get(URL + "deployment_frequency&environment_tiers[]=staging", RITA)
    assert status == 200
    assert stack.fake.calls_of("project_issues") == []


async def test_head_and_other_methods(world, start_stack):
    build(world)
    stack = await start_stack(world, now=NOW, pass_through="off")  # /other: the proxy's 404
    head = await stack.client.head(URL + "deployment_frequency", headers=RITA)
    assert head.status == 200
    post = await stack.client.post(URL + "deployment_frequency", headers=RITA)
    assert post.status == 405
    assert await post.text() == '{"error":"405 Not Allowed"}'
    other = await stack.client.get("/api/v4/projects/11/other", headers=RITA)
    assert (other.status, await other.text()) == (404, '{"error":"404 Not Found"}')
