"""A small team for the dashboard and extension tests: group `team` with two projects whose
deployments, merge requests and incidents make every metric non-trivial over Feb–Mar 2024."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from proxy.demo.world import DEVELOPER, GUEST, REPORTER, World

NOW = datetime(2024, 4, 1, 12, tzinfo=UTC)
WINDOW = "start_date=2024-02-01&end_date=2024-03-31"
METRICS = (
    "deployment_frequency",
    "lead_time_for_changes",
    "time_to_restore_service",
    "change_failure_rate",
)


def build_team(world: World) -> None:
    """rita: Reporter of the group; gus: Guest; devon: Developer of team/web only."""
    group = world.add_group(40, "team")
    world.add_member(12, group, REPORTER)
    world.add_member(13, group, GUEST)
    api = world.add_project(41, "api", group)
    web = world.add_project(42, "web", group)
    world.add_member(15, web, DEVELOPER)
    start = datetime(2024, 2, 1, tzinfo=UTC)
    for project, every in ((api, 2), (web, 3)):
        production = world.add_environment(project, "production", "production")
        staging = world.add_environment(project, "staging", "staging")
        for n in range(0, 60, every):
            day = start + timedelta(days=n, hours=10)
            world.deploy(
                production,
                day,
                mrs=[day - timedelta(hours=3 + n % 7), day - timedelta(hours=30 + n)],
            )
            world.deploy(staging, day - timedelta(hours=1))
        for n in (4, 17, 33, 50):
            created = start + timedelta(days=n, hours=9 + project.id % 3)
            world.incident(project, created, created + timedelta(hours=n % 5 + 1, minutes=n))
    world.incident(api, start + timedelta(days=58), None)  # still open
