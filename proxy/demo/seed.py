"""A realistic, deterministic GitLab instance for `dora-proxy demo`.

Why: the demo must show all four DORA metrics with believable numbers, every environment tier and
the edge cases the proxy handles (a stopped production environment, two production environments
in one project, an archived project, failed and API deployments, open and closed incidents,
confidential incidents, plain issues that must not count). Everything comes from
`random.Random(42)` and `today`, so two builds on the same day are identical.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from proxy.demo.world import GUEST, REPORTER, Environment, Project, World

# username → token (send as `PRIVATE-TOKEN: <token>` or `Authorization: Bearer <token>`).
DEMO_TOKENS: dict[str, str] = {
    "demo-admin": "demo-admin",  # administrator: sees every group and project
    "demo-reporter": "demo-reporter",  # Reporter of `acme`: may read DORA metrics everywhere
    "demo-guest": "demo-guest",  # Guest of `acme`: sees the projects, gets 401 on metrics
    "demo-outsider": "demo-outsider",  # member of nothing: private containers answer 404
}
DEMO_TOKEN_HELP: dict[str, str] = {
    "demo-admin": "administrator: sees every group and project",
    "demo-reporter": "Reporter of acme: may read DORA metrics of every group and project",
    "demo-guest": "Guest of acme: sees the projects but gets 401 on DORA metrics",
    "demo-outsider": "member of nothing: private groups and projects answer 404",
}

# group id → full path
DEMO_GROUPS: dict[int, str] = {
    10: "acme",
    11: "acme/platform",
    12: "acme/web",
}

# project id → path_with_namespace (all private)
DEMO_PROJECTS: dict[int, str] = {
    101: "acme/platform/api",  # production, staging, qa (testing), review/login (development)
    102: "acme/platform/billing",  # two production envs (us, eu), staging; some API deployments
    103: "acme/web/storefront",  # production, stopped production-legacy, staging, dev, sandbox
    104: "acme/web/docs",  # production and pages-preview (other)
    105: "acme/legacy-crm",  # archived; production deployments in the first months only
}

_HISTORY_DAYS = 184  # a little over six months, ending yesterday


@dataclass(frozen=True)
class _EnvPlan:
    """How busy an environment is: deployments per working day and the share that fail."""

    project_id: int
    name: str
    tier: str
    per_day: tuple[int, int]
    failure_rate: float = 0.1
    state: str = "available"
    api_share: float = 0.0
    # active only between these fractions of the history (0 = oldest day, 1 = yesterday)
    active: tuple[float, float] = (0.0, 1.0)


_PLANS: tuple[_EnvPlan, ...] = (
    _EnvPlan(101, "production", "production", (0, 3), 0.12),
    _EnvPlan(101, "staging", "staging", (1, 4), 0.15),
    _EnvPlan(101, "qa", "testing", (0, 2), 0.2),
    _EnvPlan(101, "review/login", "development", (0, 2), 0.2, state="stopped", active=(0, 0.5)),
    _EnvPlan(102, "production-us", "production", (0, 2), 0.08, api_share=0.2),
    _EnvPlan(102, "production-eu", "production", (0, 2), 0.08, api_share=0.2),
    _EnvPlan(102, "staging", "staging", (1, 3), 0.1, api_share=0.2),
    _EnvPlan(103, "production", "production", (0, 4), 0.1, active=(0.35, 1.0)),
    _EnvPlan(
        103, "production-legacy", "production", (0, 2), 0.15, state="stopped", active=(0, 0.35)
    ),
    _EnvPlan(103, "staging", "staging", (1, 4), 0.12),
    _EnvPlan(103, "development", "development", (1, 3), 0.25),
    _EnvPlan(103, "sandbox", "other", (0, 1), 0.3),
    _EnvPlan(104, "production", "production", (0, 1), 0.05),
    _EnvPlan(104, "pages-preview", "other", (0, 2), 0.05),
    _EnvPlan(105, "production", "production", (0, 1), 0.2, active=(0, 0.45)),
)

# project id → (chance of an incident per day, active fraction of the history)
_INCIDENT_RATES: dict[int, tuple[float, tuple[float, float]]] = {
    101: (0.08, (0.0, 1.0)),
    102: (0.05, (0.0, 1.0)),
    103: (0.1, (0.0, 1.0)),
    104: (0.02, (0.0, 1.0)),
    105: (0.06, (0.0, 0.45)),
}


def build_demo_world(today: date) -> World:
    """The demo instance as it looks on `today` (history ends at yesterday 23:59 UTC)."""
    rng = random.Random(42)
    world = World()
    users = {
        name: world.add_user(uid, name, token, is_admin=name == "demo-admin")
        for uid, (name, token) in enumerate(DEMO_TOKENS.items(), start=1)
    }
    acme = world.add_group(10, "acme")
    platform = world.add_group(11, "platform", parent=acme)
    web = world.add_group(12, "web", parent=acme)
    world.add_member(users["demo-reporter"], acme, REPORTER)
    world.add_member(users["demo-guest"], acme, GUEST)

    projects: dict[int, Project] = {
        101: world.add_project(101, "api", platform),
        102: world.add_project(102, "billing", platform),
        103: world.add_project(103, "storefront", web),
        104: world.add_project(104, "docs", web),
        105: world.add_project(105, "legacy-crm", acme, archived=True),
    }
    envs: list[tuple[_EnvPlan, Environment]] = []
    for index, plan in enumerate(_PLANS):
        env = world.add_environment(
            projects[plan.project_id], plan.name, plan.tier, id=1000 + index, state=plan.state
        )
        envs.append((plan, env))

    first_day = today - timedelta(days=_HISTORY_DAYS)
    horizon = datetime.combine(today, time(0), tzinfo=UTC)  # nothing happens from today on
    for offset in range(_HISTORY_DAYS):
        day = first_day + timedelta(days=offset)
        progress = offset / (_HISTORY_DAYS - 1)
        if day.weekday() < 5:
            _deploy_day(world, rng, envs, day, progress)
        _incident_day(world, rng, projects, day, progress, horizon)
    return world


def _deploy_day(
    world: World,
    rng: random.Random,
    envs: list[tuple[_EnvPlan, Environment]],
    day: date,
    progress: float,
) -> None:
    """A working day's deployments, created in time order so ids grow with time as in GitLab."""
    planned: list[tuple[datetime, _EnvPlan, Environment]] = []
    for plan, env in envs:
        if not plan.active[0] <= progress <= plan.active[1]:
            continue
        for _ in range(rng.randint(*plan.per_day)):
            minute = rng.randint(8 * 60, 18 * 60)
            finished = datetime.combine(day, time(0), tzinfo=UTC) + timedelta(
                minutes=minute, seconds=rng.randint(0, 59)
            )
            planned.append((finished, plan, env))
    planned.sort(key=lambda item: (item[0], item[2].id))
    for finished, plan, env in planned:
        roll = rng.random()
        if roll < plan.failure_rate:
            status = "failed"
        elif roll < plan.failure_rate + 0.02:
            status = "canceled"
        else:
            status = "success"
        api = rng.random() < plan.api_share
        merged: list[datetime] = []
        if status == "success" and plan.tier in ("production", "staging"):
            for _ in range(rng.randint(1, 3)):
                # Mostly minutes to hours, sometimes a few days before the deployment.
                lead_minutes = min(int(rng.expovariate(1 / 600)) + 5, 6 * 24 * 60)
                merged.append(finished - timedelta(minutes=lead_minutes))
            merged.sort()
        world.deploy(env, finished, status=status, mrs=merged, api=api)


def _incident_day(
    world: World,
    rng: random.Random,
    projects: dict[int, Project],
    day: date,
    progress: float,
    horizon: datetime,
) -> None:
    """Incidents (and the odd plain issue, which must not count) opened on `day`."""
    for project_id, (rate, active) in _INCIDENT_RATES.items():
        if not active[0] <= progress <= active[1]:
            continue
        if rng.random() < 0.08:
            created = _moment(rng, day)
            done = created + timedelta(days=rng.randint(1, 20))
            world.incident(
                projects[project_id],
                created,
                done if done < horizon else None,
                issue_type="issue",
            )
        if rng.random() >= rate:
            continue
        created = _moment(rng, day)
        roll = rng.random()
        closed: datetime | None
        if roll < 0.6:
            closed = created + timedelta(minutes=rng.randint(20, 12 * 60))
        elif roll < 0.9:
            closed = created + timedelta(days=rng.randint(1, 5), minutes=rng.randint(0, 600))
        else:
            closed = None
        if closed is not None and closed >= horizon:
            closed = None
        world.incident(projects[project_id], created, closed, confidential=rng.random() < 0.1)


def _moment(rng: random.Random, day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC) + timedelta(
        minutes=rng.randint(0, 24 * 60 - 1)
    )


__all__ = ["DEMO_GROUPS", "DEMO_PROJECTS", "DEMO_TOKENS", "DEMO_TOKEN_HELP", "build_demo_world"]
