"""Deterministic benchmark worlds (seeded `random.Random`, relative to a given `today`).

Both the fake GitLab process and the benchmark process build the same world from the same
arguments, so the benchmark can compute the minimum number of upstream calls from its own copy
while the fake serves the other one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from proxy.demo.world import REPORTER, Environment, World

READER_TOKEN = "tok-rita"  # rita (user 12) is Reporter of the root group
READER_ID = 12
HISTORY_MARGIN_DAYS = 10  # history starts this many days before the window (margin fetches see it)


@dataclass(frozen=True)
class Window:
    """The requested [start, end] days: `days` days ending yesterday (a past, cacheable range)."""

    start: date
    end: date

    @classmethod
    def ending_yesterday(cls, today: date, days: int = 90) -> Window:
        end = today - timedelta(days=1)
        return cls(end - timedelta(days=days - 1), end)

    def query(self, metric: str, interval: str = "daily", tiers: tuple[str, ...] = ()) -> str:
        parts = [
            f"metric={metric}",
            f"start_date={self.start.isoformat()}",
            f"end_date={self.end.isoformat()}",
            f"interval={interval}",
        ]
        parts += [f"environment_tiers[]={tier}" for tier in tiers]
        return "&".join(parts)

    def shifted(self, days: int) -> Window:
        return Window(self.start + timedelta(days=days), self.end + timedelta(days=days))


def _at(day: date, seconds: int) -> datetime:
    return datetime.combine(day, time(0), UTC) + timedelta(seconds=seconds)


def _deploy_day(world: World, rng: random.Random, env: Environment, day: date, count: int) -> None:
    """`count` successful CI deployments spread over the working hours of `day` (UTC)."""
    for n in range(count):
        seconds = 7 * 3600 + (n * 11 * 3600) // max(count, 1) + rng.randrange(600)
        finished = _at(day, seconds)
        merged = [
            finished - timedelta(minutes=rng.randrange(20, 48 * 60))
            for _ in range(rng.randint(1, 3))
        ]
        world.deploy(env, finished, mrs=merged)


def _incidents(
    world: World, rng: random.Random, project_id: int, days: list[date], count: int
) -> None:
    """`count` incidents on random days; closed within three days unless that is after today."""
    limit = _at(days[-1] + timedelta(days=1), 0)
    for _ in range(count):
        day = rng.choice(days)
        created = _at(day, rng.randrange(86400))
        closed = created + timedelta(minutes=rng.randrange(15, 3 * 24 * 60))
        if closed > limit or rng.random() < 0.1:
            world.incident(project_id, created)
        else:
            world.incident(project_id, created, closed)


def history_days(today: date, window_days: int = 90) -> list[date]:
    """Every day with activity: the window plus a margin before it (nothing today)."""
    first = today - timedelta(days=window_days + HISTORY_MARGIN_DAYS)
    return [first + timedelta(days=n) for n in range((today - first).days)]


def cold_project_world(today: date, *, per_day: int = 10, seed: int = 2) -> World:
    """Issue 2: one project, production only, `per_day` deployments a day, 1–3 MRs each."""
    rng = random.Random(seed)
    world = World().add_cast()
    group = world.add_group(10, "acme")
    world.add_member(READER_ID, group, REPORTER)
    project = world.add_project(100, "app", group)
    production = world.add_environment(project, "production", "production", id=1000)
    days = history_days(today)
    for day in days:
        _deploy_day(world, rng, production, day, per_day)
    _incidents(world, rng, project.id, days, 8)
    return world


@dataclass(frozen=True)
class GroupShape:
    projects: int = 200
    subgroups: int = 5  # below the root
    subsubgroups: int = 3  # below each subgroup
    production_per_day: tuple[int, int] = (1, 2)
    staging_per_day: tuple[int, int] = (1, 2)
    incidents_per_project: tuple[int, int] = (0, 3)


ROOT_GROUP_ID = 1000
ROOT_GROUP_PATH = "big"


def group_world(today: date, shape: GroupShape = GroupShape(), *, seed: int = 3) -> World:
    """Issue 3: a root group with nested subgroups holding `shape.projects` projects.

    Projects are spread round-robin over the root, its subgroups and their subgroups; each has a
    production and a staging environment with a few deployments a day, and some incidents.
    """
    rng = random.Random(seed)
    world = World().add_cast()
    root = world.add_group(ROOT_GROUP_ID, ROOT_GROUP_PATH)
    world.add_member(READER_ID, root, REPORTER)
    containers = [root]
    next_group = ROOT_GROUP_ID + 1
    for s in range(shape.subgroups):
        sub = world.add_group(next_group, f"team{s}", parent=root)
        next_group += 1
        containers.append(sub)
        for t in range(shape.subsubgroups):
            containers.append(world.add_group(next_group, f"svc{t}", parent=sub))
            next_group += 1
    days = history_days(today)
    for n in range(shape.projects):
        owner = containers[n % len(containers)]
        project = world.add_project(10_000 + n, f"p{n}", owner)
        production = world.add_environment(project, "production", "production")
        staging = world.add_environment(project, "staging", "staging")
        for day in days:
            _deploy_day(world, rng, production, day, rng.randint(*shape.production_per_day))
            _deploy_day(world, rng, staging, day, rng.randint(*shape.staging_per_day))
        _incidents(world, rng, project.id, days, rng.randint(*shape.incidents_per_project))
    return world


def build(scenario: str, today: date, projects: int = 200) -> World:
    if scenario == "project":
        return cold_project_world(today)
    if scenario == "group":
        return group_world(today, GroupShape(projects=projects))
    raise ValueError(f"unknown scenario {scenario!r}")
