"""Group requests: how they fetch (few calls, one bound), and how they fail (never partially)."""

from __future__ import annotations

from datetime import UTC, datetime

from proxy.demo.world import REPORTER, World

RITA = {"PRIVATE-TOKEN": "tok-rita"}
WINDOW = "start_date=2021-01-01&end_date=2021-01-31"
NOW = datetime(2021, 3, 1, tzinfo=UTC)


def build_group(world: World, projects: int = 5, *, incidents: bool = True) -> None:
    top = world.add_group(300, "top")
    sub = world.add_group(301, "sub", parent=top)
    other = world.add_group(399, "other")
    world.add_member(12, top, REPORTER)
    for n in range(projects):
        project = world.add_project(3000 + n, f"p{n}", top if n % 2 else sub)
        env = world.add_environment(project, "production", "production")
        world.add_environment(project, "staging", "staging")
        world.deploy_many(env, 2, f"2021-01-{10 + n:02d}")
        if incidents:
            world.incident(project, f"2021-01-{10 + n:02d}T12:00:00Z")
    foreign = world.add_project(3999, "shared", other)
    world.share_project(foreign, top)
    world.deploy_many(world.add_environment(foreign, "production", "production"), 9, "2021-01-05")


async def test_group_fetches_projects_once_and_incidents_in_one_stream(world, start_stack):
    build_group(world)
    stack = await start_stack(world, now=NOW)
    status, body = await stack.get(
        f"/api/v4/groups/top/dora/metrics?metric=change_failure_rate&interval=all&{WINDOW}", RITA
    )
    assert (status, body) == (200, '[{"date":null,"value":0.5}]')  # 5 incidents / 10 deployments

    listing = stack.fake.calls_of("group_projects")
    assert len(listing) == 1
    assert listing[0].query["include_subgroups"].lower() == "true"
    assert listing[0].query["with_shared"].lower() == "false"
    assert listing[0].query["per_page"] == "100"
    assert "archived" not in listing[0].query
    issues = stack.fake.calls_of("group_issues")
    assert len(issues) == 1 and issues[0].query["non_archived"].lower() == "false"
    assert stack.fake.calls_of("project_issues") == []
    assert len(stack.fake.calls_of("deployments")) == 5  # one stream per project, not per env
    assert len(stack.fake.calls_of("environments")) == 5


async def test_group_without_incidents_still_uses_one_issues_stream(world, start_stack):
    build_group(world, incidents=False)
    stack = await start_stack(world, now=NOW)
    status, _ = await stack.get(
        f"/api/v4/groups/300/dora/metrics?metric=deployment_frequency&{WINDOW}", RITA
    )
    assert status == 200
    assert len(stack.fake.calls_of("group_issues")) == 1
    assert stack.fake.calls_of("project_issues") == []


async def test_repeated_group_query_makes_no_data_calls(world, start_stack):
    build_group(world)
    stack = await start_stack(world, now=NOW)
    url = f"/api/v4/groups/300/dora/metrics?metric=lead_time_for_changes&{WINDOW}"
    first = await stack.get(url, RITA)
    stack.fake.reset_calls()
    assert await stack.get(url, RITA) == first
    assert stack.fake.data_calls() == []


async def test_one_failing_project_fails_the_group_with_502_and_caches_nothing(world, start_stack):
    build_group(world)
    stack = await start_stack(world, now=NOW, upstream_max_retries=1)
    url = f"/api/v4/groups/300/dora/metrics?metric=deployment_frequency&{WINDOW}"
    stack.fake.faults.only_kinds = {"deployments"}
    stack.fake.faults.status_codes = [500] * 50
    response = await stack.client.get(url, headers=RITA)
    assert response.status == 502
    assert await response.text() == '{"message":"502 Bad Gateway"}'

    stack.fake.faults.status_codes = []
    status, body = await stack.get(url, RITA)
    assert status == 200
    assert body.count('"value":2') == 5  # every project's day is there: nothing partial kept


async def test_group_past_its_deadline_answers_504(world, start_stack):
    build_group(world)
    stack = await start_stack(world, now=NOW, request_deadline=0.5)
    stack.fake.faults.only_kinds = {"deployments"}
    stack.fake.faults.latency = 2.0
    status, body = await stack.get(
        f"/api/v4/groups/300/dora/metrics?metric=deployment_frequency&{WINDOW}", RITA
    )
    assert (status, body) == (504, '{"message":"504 Gateway Timeout"}')


async def test_issues_feature_disabled_counts_as_no_incidents(world, start_stack):
    """upstream-gitlab-api.md §1.10: a 403 on issues means no incidents, not an error."""
    top = world.add_group(300, "top")
    world.add_member(12, top, REPORTER)
    project = world.add_project(3000, "p0", top, issues_enabled=False)
    world.deploy_many(world.add_environment(project, "production", "production"), 2, "2021-01-10")
    stack = await start_stack(world, now=NOW)
    status, body = await stack.get(
        f"/api/v4/projects/3000/dora/metrics?metric=change_failure_rate&{WINDOW}", RITA
    )
    assert (status, body) == (200, '[{"date":"2021-01-10","value":0.0}]')
    assert [c.status for c in stack.fake.calls_of("project_issues")] == [403]


async def test_the_issue_stream_goes_before_the_projects_calls(world, start_stack):
    """Its pages are fetched first (queued behind the projects' calls they took ~1 s each in a
    cold 200-project group); its days are stored while the projects' calls run (issue 16)."""
    build_group(world, projects=8)
    for n in range(8):
        for day in range(3):
            world.incident(world.projects[3000 + n], f"2021-01-{12 + day:02d}T08:00:00Z")
    stack = await start_stack(world, now=NOW)
    url = f"/api/v4/groups/300/dora/metrics?metric=change_failure_rate&interval=all&{WINDOW}"
    assert await stack.get(url, RITA) == (200, '[{"date":null,"value":2.0}]')
    kinds = [call.kind for call in stack.fake.data_calls()]
    assert kinds.count("group_issues") == 1
    first_project_call = min(kinds.index("environments"), kinds.index("deployments"))
    assert kinds.index("group_issues") < first_project_call


async def test_a_failing_issue_stream_fails_the_group_before_any_project_call(world, start_stack):
    build_group(world)
    stack = await start_stack(world, now=NOW, upstream_max_retries=1)
    stack.fake.faults.only_kinds = {"group_issues"}
    stack.fake.faults.status_codes = [500] * 10
    url = f"/api/v4/groups/300/dora/metrics?metric=change_failure_rate&{WINDOW}"
    response = await stack.client.get(url, headers=RITA)
    assert response.status == 502
    assert response.headers["X-Dora-Proxy-Upstream-Error"].startswith("GET /groups/300/issues")
    assert {call.kind for call in stack.fake.data_calls()} == {"group_projects", "group_issues"}
