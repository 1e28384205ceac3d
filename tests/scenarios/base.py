"""The shape of an acceptance scenario (spec §10) and small helpers shared by its encodings.

A scenario is an upstream state (a builder applied to a `World` that already holds the cast) plus
requests with their exact expected answers. Bodies are copied from the spec verbatim: the spec's
strings, not a re-computation, are what the proxy must send.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from proxy.demo.world import REPORTER, Group, World

API = "/api/v4"

P401 = '{"message":"You do not have permission to access dora metrics."}'
RANGE_TOO_LONG = '{"message":"Date range must be shorter than 180 days."}'
START_NOT_BEFORE_END = '{"message":"The start date must be earlier than the end date."}'
BAD_INTERVAL = '{"message":"The interval must be one of all,monthly,daily."}'
BAD_METRIC = (
    '{"message":"The metric must be one of deployment_frequency,lead_time_for_changes,'
    'time_to_restore_service,change_failure_rate."}'
)
BAD_TIERS = (
    '{"message":"The environment tiers must be from production, staging, testing, '
    'development, other."}'
)
METRIC_MISSING = '{"error":"metric is missing"}'
PROJECT_NOT_FOUND = '{"message":"404 Project Not Found"}'
GROUP_NOT_FOUND = '{"message":"404 Group Not Found"}'

METRICS = (
    "deployment_frequency",
    "lead_time_for_changes",
    "time_to_restore_service",
    "change_failure_rate",
)
BOTH = "environment_tiers[]=production&environment_tiers[]=staging"


@dataclass(frozen=True)
class Case:
    """One request to the proxy and its exact expected answer."""

    id: str  # "S1.1", fan-out variants "S1.1[groups/s1]"
    path: str  # "/api/v4/projects/11/dora/metrics", raw (keeps %2F)
    query: str  # raw query string as written in the spec, "" for none
    headers: dict[str, str]
    status: int
    body: str  # exact body text

    @property
    def target(self) -> str:
        """Path plus query, as sent on the wire."""
        return f"{self.path}?{self.query}" if self.query else self.path


@dataclass(frozen=True)
class Scenario:
    """An upstream state and the requests checked against it."""

    name: str
    build: Callable[[World], None]
    cases: tuple[Case, ...]
    time_zone: str = "UTC"

    def world(self) -> World:
        """A fresh World with the cast and this scenario's fixture."""
        world = World().add_cast()
        self.build(world)
        return world


def project(ref: int | str) -> str:
    """`/api/v4/projects/<ref>/dora/metrics`; a path ref is given already URL-encoded."""
    return f"{API}/projects/{ref}/dora/metrics"


def group(ref: int | str) -> str:
    return f"{API}/groups/{ref}/dora/metrics"


def token(user: str) -> dict[str, str]:
    """The default credential form of §10.0: `PRIVATE-TOKEN: tok-<user>`."""
    return {"PRIVATE-TOKEN": f"tok-{user}"}


RITA = token("rita")
ANONYMOUS: dict[str, str] = {}


def label(path: str) -> str:
    """`/api/v4/groups/s1/dora/metrics` → `groups/s1` (suffix of fan-out case ids)."""
    return path.removeprefix(f"{API}/").removesuffix("/dora/metrics")


def fan_out(
    case_id: str,
    paths: Iterable[str],
    query: str,
    headers: dict[str, str],
    status: int,
    body: str,
) -> list[Case]:
    """One Case per path for a spec row that is sent to several containers."""
    return [Case(f"{case_id}[{label(path)}]", path, query, headers, status, body) for path in paths]


def top_group(world: World, id: int, path: str, *, visibility: str = "private") -> Group:
    """The scenario's top group, with rita as Reporter (the §10.0 default)."""
    grp = world.add_group(id, path, visibility=visibility)
    world.add_member(world.users[12], grp, REPORTER)
    return grp
