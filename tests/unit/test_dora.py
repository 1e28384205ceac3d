# ruff: noqa: E501  (expected bodies are copied verbatim from the spec, one scenario per line)
"""The spec's scenarios (§10) at the facts level: facts in, exact response bytes out.

Upstream filtering is not under test here: facts already hold only successful deployments,
only incidents (not plain issues) and only the requested project's data, so the scenarios'
failed deployments, plain issues and other projects' incidents simply do not appear.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from proxy.dora import (
    DailyRow,
    aggregate,
    compute_daily_rows,
    compute_metric,
    render,
)
from proxy.facts import Deployment, Environment, Incident, MergeRequest, ProjectFacts, parse_time
from proxy.query import INTERVALS, METRICS

UTC_ZONE = ZoneInfo("UTC")
BOTH = ("production", "staging")
_ids = itertools.count(1)


def at(text: str) -> datetime:
    return parse_time(text)


class Project:
    """A small builder that reads like the spec's fixture tables."""

    def __init__(self, project_id: int, *environments: Environment) -> None:
        self.project_id = project_id
        self.environments = environments
        self.deployments: list[Deployment] = []
        self.incidents: list[Incident] = []
        self.links: dict[int, tuple[MergeRequest, ...]] = {}

    def dep(self, env_id: int, finished: str, mrs: Iterable[str | None] = ()) -> Project:
        """One successful deployment; `mrs` are the linked MRs' merged_at (None = not merged)."""
        deployment = Deployment(next(_ids), env_id, at(finished))
        self.deployments.append(deployment)
        merge_requests = tuple(
            MergeRequest(next(_ids), at(m) if m is not None else None) for m in mrs
        )
        if merge_requests:
            self.links[deployment.id] = merge_requests
        return self

    def many(self, env_id: int, day: str, n: int, first_mr_seconds: int | None = None) -> Project:
        """The spec's "n× D": finished every 20 minutes from D T01:00:00Z."""
        start = at(f"{day}T01:00:00Z")
        for i in range(n):
            finished = start + timedelta(minutes=20 * i)
            mrs = ()
            if i == 0 and first_mr_seconds is not None:
                mrs = ((finished - timedelta(seconds=first_mr_seconds)).isoformat(),)
            self.dep(env_id, finished.isoformat(), mrs)
        return self

    def incident(self, created: str, closed: str | None = None, count: int = 1) -> Project:
        for _ in range(count):
            self.incidents.append(
                Incident(next(_ids), at(created), at(closed) if closed is not None else None)
            )
        return self

    def facts(self) -> ProjectFacts:
        return ProjectFacts(
            project_id=self.project_id,
            environments=self.environments,
            deployments=tuple(self.deployments),
            incidents=tuple(self.incidents),
            merge_requests=dict(self.links),
        )


def prod(env_id: int, name: str = "production", state: str = "available") -> Environment:
    return Environment(env_id, name, "production", state)


def staging(env_id: int, name: str = "staging") -> Environment:
    return Environment(env_id, name, "staging")


def body(
    projects: list[ProjectFacts],
    metric: str,
    start: str,
    end: str,
    interval: str = "daily",
    tiers: Iterable[str] = ("production",),
    tz: str = "UTC",
) -> bytes:
    result = compute_metric(
        projects,
        metric=metric,
        interval=interval,
        start_date=date.fromisoformat(start),
        end_date=date.fromisoformat(end),
        tiers=tuple(tiers),
        tz=ZoneInfo(tz),
    )
    return render(result)


# --- fixtures, one per scenario ---------------------------------------------------------------


def s1() -> list[ProjectFacts]:
    p = Project(11, prod(1), staging(2))
    p.dep(1, "2021-01-01T10:00:00Z", ["2021-01-01T09:59:57Z"])
    p.dep(1, "2021-01-02T09:00:00Z", ["2021-01-02T08:59:57Z"])
    p.dep(1, "2021-01-02T11:00:00Z", ["2021-01-02T10:59:55Z"])
    for _ in range(100):
        p.dep(2, "2021-01-02T12:00:00Z")
    p.incident("2021-01-01T12:00:00Z", "2021-01-01T12:00:05Z")
    p.incident("2021-01-01T13:00:00Z", count=6)
    p.incident("2021-01-02T12:00:00Z", "2021-01-02T12:00:06Z")
    p.incident("2021-01-02T13:00:00Z", count=7)
    return [p.facts()]


def s3() -> list[ProjectFacts]:
    p = Project(31, prod(1), staging(2))
    p.many(1, "2022-01-25", 2).many(1, "2022-01-28", 5).many(1, "2022-02-07", 9)
    p.many(1, "2022-03-01", 1)
    p.dep(1, "2022-01-19T23:59:59Z").dep(1, "2022-03-04T00:00:00Z")  # outside the window
    p.many(2, "2022-02-05", 1)
    return [p.facts()]


def s4() -> list[ProjectFacts]:
    return [
        Project(41, prod(1)).many(1, "2022-01-25", 2).facts(),
        Project(42, prod(2)).many(2, "2022-02-05", 1).facts(),
    ]


def s4_project_42() -> list[ProjectFacts]:
    return s4()[1:]


def s5() -> list[ProjectFacts]:
    return [Project(51, prod(1)).dep(1, "2021-03-01T10:00:00Z").facts()]


def s7() -> list[ProjectFacts]:
    p = Project(71, prod(1))
    p.many(1, "2021-01-01", 3).many(1, "2021-01-02", 2).many(1, "2021-01-03", 1)
    p.incident("2021-01-04T08:00:00Z")
    return [p.facts()]


def s8() -> list[ProjectFacts]:
    p = Project(81, prod(1), staging(2))
    p.many(1, "2021-01-01", 4).incident("2021-01-01T15:00:00Z", count=3)
    p.many(1, "2021-01-02", 2)
    p.many(2, "2021-01-03", 1)
    p.incident("2021-01-04T09:00:00Z")
    p.many(2, "2021-01-05", 1)
    p.incident("2020-12-20T12:00:00Z", "2021-01-06T12:00:00Z")
    return [p.facts()]


def s9() -> list[ProjectFacts]:
    p = Project(91, prod(1))
    for day, seconds in (("01", 100), ("02", 80), ("03", 60), ("04", 50)):
        finished = at(f"2021-01-{day}T12:00:00Z")
        p.dep(1, finished.isoformat(), [(finished - timedelta(seconds=seconds)).isoformat()])
        created = at(f"2021-01-{day}T08:00:00Z")
        p.incident(created.isoformat(), (created + timedelta(seconds=seconds)).isoformat())
    p.dep(1, "2021-01-05T12:00:00Z")
    return [p.facts()]


def s10() -> list[ProjectFacts]:
    projects = []
    for project_id, env_id, seconds in ((101, 1, (100, 80, 60)), (102, 2, (90, 70, 50))):
        p = Project(project_id, prod(env_id))
        for day, n, s in zip(("01", "02", "03"), (3, 2, 1), seconds, strict=True):
            p.many(env_id, f"2021-01-{day}", n, first_mr_seconds=s)
            created = at(f"2021-01-{day}T08:00:00Z")
            p.incident(created.isoformat(), (created + timedelta(seconds=s)).isoformat())
        if project_id == 101:
            p.incident("2021-01-04T09:00:00Z")
        projects.append(p.facts())
    return projects


def s11() -> list[ProjectFacts]:
    p = Project(111, prod(1))
    for finished in (
        "2021-02-09T23:59:59.999Z",
        "2021-02-10T00:00:00.000Z",
        "2021-02-10T12:00:00.000Z",
        "2021-02-10T23:59:59.999Z",
        "2021-02-11T00:00:00.000Z",
    ):
        p.dep(1, finished)
    return [p.facts()]


def s12() -> list[ProjectFacts]:
    p = Project(
        121,
        prod(1, state="stopped"),
        Environment(2, "live", "staging"),
        Environment(3, "staging-copy", "production"),
    )
    p.dep(1, "2021-03-03T23:59:59Z")  # deployable.finished_at wins over updated_at
    p.dep(1, "2021-03-02T10:00:00Z")  # API deployment: updated_at
    p.dep(3, "2021-03-04T10:00:00Z")
    p.dep(2, "2021-03-05T10:00:00Z")
    return [p.facts()]


def s13() -> list[ProjectFacts]:
    p = Project(131, prod(1), staging(2))
    p.dep(
        1,
        "2021-03-10T12:00:00Z",
        ["2021-03-09T12:00:00Z", "2021-03-08T12:00:00Z", "2021-03-05T12:00:00Z"],
    )
    p.dep(1, "2021-03-11T12:00:00Z", ["2021-03-11T11:59:59Z", "2021-03-11T11:59:56Z"])
    p.dep(1, "2021-03-12T12:00:00Z", ["2021-03-12T11:59:59Z", "2021-03-12T11:59:54Z"])
    p.dep(1, "2021-03-13T12:00:00Z", ["2021-03-13T12:00:30Z", None])
    p.dep(1, "2021-03-14T12:00:00Z", [None])
    p.dep(
        1,
        "2021-03-15T10:00:00Z",
        ["2021-03-15T09:59:50Z", "2021-03-15T09:59:40Z", "2021-03-15T09:59:30Z"],
    )
    p.dep(1, "2021-03-15T14:00:00Z", ["2021-03-15T13:43:20Z"])
    p.dep(1, "2021-03-16T12:00:00.700Z", ["2021-03-16T12:00:00.000Z"])
    p.dep(2, "2021-03-15T09:00:00Z", ["2021-03-15T08:00:00Z"])
    return [p.facts()]


def s14() -> list[ProjectFacts]:
    p = Project(141, prod(1), staging(2))
    p.incident("2021-04-13T12:00:00Z", "2021-04-20T12:00:00Z")
    p.incident("2021-04-15T12:00:00Z", "2021-04-20T12:00:00Z")
    p.incident("2021-04-17T12:00:00Z", "2021-04-20T12:00:00Z")
    p.incident("2021-04-19T12:00:00Z", "2021-04-20T12:00:00Z")
    p.incident("2021-04-10T12:00:00Z")
    p.incident("2021-04-18T12:00:00Z", "2021-04-21T00:30:00Z")
    p.incident("2021-04-11T12:00:00Z")  # reopened: closed_at cleared
    p.dep(2, "2021-04-20T10:00:00Z")
    return [p.facts()]


def s15() -> list[ProjectFacts]:
    p = Project(151, prod(1), staging(2))
    for created in (
        "2021-06-15T00:00:00.000Z",
        "2021-06-15T01:00:00Z",
        "2021-06-15T23:59:59.999Z",
        "2020-06-15T10:00:00Z",
        "2022-06-15T10:00:00Z",
    ):
        p.incident(created)
    return [p.facts()]


def s16() -> list[ProjectFacts]:
    p = Project(161, prod(1), staging(2))
    p.many(1, "2020-01-01", 20).many(1, "2021-01-01", 19).many(1, "2021-03-01", 18)
    for day, n in zip(range(1, 7), range(17, 11, -1), strict=True):
        p.many(1, f"2021-04-{day:02d}", n)
    p.many(1, "2021-05-06", 11)
    p.incident("2021-04-07T09:00:00Z")
    p.many(2, "2021-04-01", 10)
    return [p.facts()]


def s17_project() -> list[ProjectFacts]:
    p = Project(171, prod(1), staging(2))
    for day, n in (("01", 3), ("02", 3), ("03", 2), ("04", 2), ("05", 1), ("06", 1)):
        p.many(1, f"2021-01-{day}", n)
    p.incident("2021-01-07T10:00:00Z", count=48)
    p.many(2, "2021-01-08", 4)
    return [p.facts()]


def s17_group() -> list[ProjectFacts]:
    return [*s17_project(), Project(172, prod(3)).many(3, "2021-01-09", 4).facts()]


def s18_projects() -> dict[int, ProjectFacts]:
    projects = {}
    for n, project_id in enumerate((1801, 1802, 1803, 1804), start=1):
        p = Project(project_id, prod(n)).dep(n, f"2021-07-0{n}T10:00:00Z")
        if project_id == 1802:
            p.incident("2021-07-08T10:00:00Z")
        projects[project_id] = p.facts()
    return projects


def s18_group() -> list[ProjectFacts]:
    return list(s18_projects().values())


def s18_subgroup() -> list[ProjectFacts]:
    projects = s18_projects()
    return [projects[1802], projects[1803]]


def s19() -> list[ProjectFacts]:
    p = Project(191, prod(1, state="stopped"), prod(2, "production-eu"), staging(3))
    p.dep(1, "2021-08-02T10:00:00Z").dep(2, "2021-08-02T11:00:00Z")
    p.incident("2021-08-02T12:00:00Z", count=2)
    p.incident("2021-08-03T12:00:00Z")
    p.dep(2, "2021-08-04T08:00:00Z")
    p.incident("2021-08-04T09:00:00Z", "2021-08-04T10:00:00Z")
    return [p.facts()]


def s20() -> list[ProjectFacts]:
    p = Project(201, staging(1)).many(1, "2021-09-01", 2)
    p.incident("2021-09-02T10:00:00Z").incident("2021-09-03T10:00:00Z", "2021-09-04T10:00:00Z")
    return [p.facts()]


def s21() -> list[ProjectFacts]:
    p = Project(211, prod(1))
    p.dep(1, "2021-03-01T14:59:59.999Z").dep(1, "2021-03-01T15:00:00.000Z")
    p.dep(1, "2021-03-31T15:30:00Z")
    p.incident("2021-03-02T16:00:00Z")
    return [p.facts()]


def berlin_dst() -> list[ProjectFacts]:
    """Clocks go 02:00 CET → 03:00 CEST on 2021-03-28: that day has 23 hours."""
    p = Project(221, prod(1))
    p.dep(1, "2021-03-27T22:59:59Z")  # 23:59:59 CET on 03-27
    p.dep(1, "2021-03-27T23:00:00Z")  # 00:00:00 CET on 03-28
    p.dep(1, "2021-03-28T21:59:59Z")  # 23:59:59 CEST on 03-28 (a fixed +01:00 would agree)
    p.dep(1, "2021-03-28T22:00:00Z")  # 00:00:00 CEST on 03-29 (a fixed +01:00 says 03-28)
    return [p.facts()]


# --- scenario table ---------------------------------------------------------------------------

DF, LT, TTRS, CFR = METRICS
S1_Q = {"start": "2020-10-03", "end": "2021-01-03"}
S3_Q = {"start": "2022-01-20", "end": "2022-03-03"}
S8_W = S9_W = S10_W = S7_W = {"start": "2021-01-01", "end": "2021-01-31"}
S13_W = {"start": "2021-03-10", "end": "2021-03-31"}
S14_D = {"start": "2021-04-20", "end": "2021-04-21"}
S15_W = {"start": "2021-06-14", "end": "2021-06-16"}
S16_W = {"start": "2021-02-01", "end": "2021-05-01"}
S17_W = {"start": "2020-11-01", "end": "2021-02-01"}
S18_W = {"start": "2021-07-01", "end": "2021-07-31"}
S19_W = {"start": "2021-08-01", "end": "2021-08-31"}
S20_W = {"start": "2021-09-01", "end": "2021-09-30"}
S21_W = {"start": "2021-03-01", "end": "2021-04-30"}
NULL_ALL = '[{"date":null,"value":null}]'

S13_1 = (
    '[{"date":"2021-03-10","value":172800.0},{"date":"2021-03-11","value":2.0},'
    '{"date":"2021-03-12","value":4.0},{"date":"2021-03-13","value":0.0},'
    '{"date":"2021-03-14","value":null},{"date":"2021-03-15","value":25.0},'
    '{"date":"2021-03-16","value":1.0}]'
)
S16_1 = (
    '[{"date":"2021-03-01","value":18},{"date":"2021-04-01","value":17},'
    '{"date":"2021-04-02","value":16},{"date":"2021-04-03","value":15},'
    '{"date":"2021-04-04","value":14},{"date":"2021-04-05","value":13},'
    '{"date":"2021-04-06","value":12},{"date":"2021-04-07","value":0}]'
)
S17_1 = (
    '[{"date":"2021-01-01","value":3},{"date":"2021-01-02","value":3},'
    '{"date":"2021-01-03","value":2},{"date":"2021-01-04","value":2},'
    '{"date":"2021-01-05","value":1},{"date":"2021-01-06","value":1},'
    '{"date":"2021-01-07","value":0}]'
)
S10_3 = (
    '[{"date":"2021-01-01","value":95.0},{"date":"2021-01-02","value":75.0},'
    '{"date":"2021-01-03","value":55.0},{"date":"2021-01-04","value":null}]'
)
S9_1 = (
    '[{"date":"2021-01-01","value":100.0},{"date":"2021-01-02","value":80.0},'
    '{"date":"2021-01-03","value":60.0},{"date":"2021-01-04","value":50.0},'
    '{"date":"2021-01-05","value":null}]'
)


def case(
    scenario_id: str,
    fixture: Callable[[], list[ProjectFacts]],
    metric: str,
    expected: str,
    *,
    start: str,
    end: str,
    interval: str = "daily",
    tiers: Iterable[str] = ("production",),
    tz: str = "UTC",
) -> object:
    query = {"metric": metric, "start": start, "end": end, "interval": interval}
    query |= {"tiers": tuple(tiers), "tz": tz}
    return pytest.param(fixture, query, expected, id=scenario_id)


SCENARIOS = [
    # S1: one project, production + staging (S1.6 is a permission case, not computation).
    case("S1.1", s1, DF, '[{"date":"2021-01-01","value":1},{"date":"2021-01-02","value":2}]', **S1_Q),
    case("S1.2", s1, LT, '[{"date":"2021-01-01","value":3.0},{"date":"2021-01-02","value":4.0}]', **S1_Q),
    case("S1.3", s1, TTRS, '[{"date":"2021-01-01","value":5.0},{"date":"2021-01-02","value":6.0}]', **S1_Q),
    case("S1.4", s1, CFR, '[{"date":"2021-01-01","value":7.0},{"date":"2021-01-02","value":4.0}]', **S1_Q),
    case("S1.5", s1, DF, '[{"date":"2021-01-01","value":1},{"date":"2021-01-02","value":102}]', tiers=BOTH, **S1_Q),
    case("S1.7", s1, CFR, '[{"date":"2021-01-01","value":7.0},{"date":"2021-01-02","value":0.0784313725490196}]', tiers=BOTH, **S1_Q),
    case("S1.8", s1, LT, '[{"date":"2021-01-01","value":3.0},{"date":"2021-01-02","value":4.0}]', tiers=BOTH, **S1_Q),
    case("S1.9", s1, DF, '[{"date":"2021-01-01","value":1.0}]', interval="monthly", **S1_Q),
    case("S1.10", s1, DF, '[{"date":null,"value":0.03225806451612903}]', interval="all", **S1_Q),
    case("S1.11", s1, LT, '[{"date":null,"value":3.5}]', interval="all", **S1_Q),
    case("S1.12", s1, TTRS, '[{"date":"2021-01-01","value":5.5}]', interval="monthly", **S1_Q),
    case("S1.13", s1, CFR, '[{"date":null,"value":5.0}]', interval="all", **S1_Q),
    # S3: deployment frequency per interval; window edges 01-19T23:59:59Z and 03-04 excluded.
    case("S3.1", s3, DF, '[{"date":"2022-01-25","value":2},{"date":"2022-01-28","value":5},{"date":"2022-02-07","value":9},{"date":"2022-03-01","value":1}]', **S3_Q),
    case("S3.2", s3, DF, '[{"date":"2022-01-01","value":0.5833333333333334},{"date":"2022-02-01","value":0.32142857142857145},{"date":"2022-03-01","value":0.3333333333333333}]', interval="monthly", **S3_Q),
    case("S3.3", s3, DF, '[{"date":null,"value":0.3953488372093023}]', interval="all", **S3_Q),
    case("S3.4", s3, DF, '[{"date":"2022-02-05","value":1}]', tiers=("staging",), **S3_Q),
    case("S3.7", s3, DF, '[{"date":"2022-02-01","value":0.03571428571428571}]', interval="monthly", tiers=("staging",), **S3_Q),
    case("S3.8", s3, DF, '[{"date":null,"value":0.4186046511627907}]', interval="all", tiers=BOTH, **S3_Q),
    # S4: group of two projects.
    case("S4.1", s4, DF, '[{"date":"2022-01-25","value":2},{"date":"2022-02-05","value":1}]', **S3_Q),
    case("S4.2", s4, DF, '[{"date":"2022-01-01","value":0.16666666666666666},{"date":"2022-02-01","value":0.03571428571428571}]', interval="monthly", **S3_Q),
    case("S4.3", s4, DF, '[{"date":null,"value":0.06976744186046512}]', interval="all", **S3_Q),
    case("S4.4", s4_project_42, DF, '[{"date":null,"value":0.023255813953488372}]', interval="all", **S3_Q),
    # S5: the computed answers among the validation cases.
    case("S5.9", s5, DF, '[{"date":null,"value":0.0055248618784530384}]', interval="all", start="2021-01-01", end="2021-06-30"),
    case("S5.28", s5, DF, '[{"date":"2021-03-01","value":1}]', tiers=("production", "production"), start="2021-03-01", end="2021-03-31"),
    case("S5.30", s5, DF, "[]", **S3_Q),
    # S7: one environment; the incident-only day shows 0.
    case("S7.1", s7, DF, '[{"date":"2021-01-01","value":3},{"date":"2021-01-02","value":2},{"date":"2021-01-03","value":1},{"date":"2021-01-04","value":0}]', **S7_W),
    case("S7.2", s7, DF, '[{"date":"2021-01-01","value":0.1935483870967742}]', interval="monthly", **S7_W),
    case("S7.3", s7, DF, '[{"date":null,"value":0.1935483870967742}]', interval="all", **S7_W),
    case("S7.4", s7, DF, '[{"date":null,"value":1.5}]', interval="all", start="2021-01-01", end="2021-01-04"),
    case("S7.5", s7, DF, '[{"date":"2021-01-01","value":1.5}]', interval="monthly", start="2021-01-01", end="2021-01-04"),
    case("S7.6", s7, CFR, '[{"date":"2021-01-01","value":0.0},{"date":"2021-01-02","value":0.0},{"date":"2021-01-03","value":0.0},{"date":"2021-01-04","value":1.0}]', **S7_W),
    # S8: change failure rate with combined tiers.
    case("S8.1", s8, CFR, '[{"date":"2021-01-01","value":0.75},{"date":"2021-01-02","value":0.0},{"date":"2021-01-03","value":null},{"date":"2021-01-04","value":1.0},{"date":"2021-01-05","value":null},{"date":"2021-01-06","value":0.0}]', tiers=BOTH, **S8_W),
    case("S8.2", s8, CFR, '[{"date":"2021-01-01","value":0.5}]', interval="monthly", tiers=BOTH, **S8_W),
    case("S8.3", s8, CFR, '[{"date":null,"value":0.5}]', interval="all", tiers=BOTH, **S8_W),
    case("S8.4", s8, CFR, '[{"date":"2021-01-01","value":0.75},{"date":"2021-01-02","value":0.0},{"date":"2021-01-04","value":1.0},{"date":"2021-01-06","value":0.0}]', **S8_W),
    case("S8.5", s8, CFR, '[{"date":"2021-01-01","value":0.6666666666666666}]', interval="monthly", **S8_W),
    case("S8.6", s8, CFR, '[{"date":null,"value":0.6666666666666666}]', interval="all", **S8_W),
    case("S8.7", s8, DF, '[{"date":"2021-01-01","value":4},{"date":"2021-01-02","value":2},{"date":"2021-01-04","value":0},{"date":"2021-01-06","value":0}]', **S8_W),
    case("S8.8", s8, DF, '[{"date":null,"value":0.1935483870967742}]', interval="all", **S8_W),
    case("S8.9", s8, TTRS, '[{"date":"2021-01-01","value":null},{"date":"2021-01-02","value":null},{"date":"2021-01-04","value":null},{"date":"2021-01-06","value":1468800.0}]', **S8_W),
    case("S8.10", s8, CFR, '[{"date":"2021-01-03","value":null},{"date":"2021-01-05","value":null}]', tiers=("staging",), **S8_W),
    case("S8.11", s8, CFR, NULL_ALL, interval="all", tiers=("staging",), **S8_W),
    case("S8.12", s8, CFR, '[{"date":null,"value":0.625}]', interval="all", tiers=BOTH, start="2020-12-01", end="2021-01-31"),
    # S9: lead time and time to restore give the same numbers.
    *(
        case(f"S9.{n}-{metric}", s9, metric, expected, interval=interval, **S9_W)
        for metric in (LT, TTRS)
        for n, interval, expected in (
            (1, "daily", S9_1),
            (2, "monthly", '[{"date":"2021-01-01","value":70.0}]'),
            (3, "all", '[{"date":null,"value":70.0}]'),
        )
    ),
    # S10: two projects pooled; several environments per day are separate values.
    case("S10.1", s10, DF, '[{"date":"2021-01-01","value":6},{"date":"2021-01-02","value":4},{"date":"2021-01-03","value":2},{"date":"2021-01-04","value":0}]', **S10_W),
    case("S10.2", s10, DF, '[{"date":null,"value":0.3870967741935484}]', interval="all", **S10_W),
    case("S10.3", s10, LT, S10_3, **S10_W),
    case("S10.4", s10, LT, '[{"date":"2021-01-01","value":75.0}]', interval="monthly", **S10_W),
    case("S10.5", s10, LT, '[{"date":null,"value":75.0}]', interval="all", **S10_W),
    case("S10.6", s10, TTRS, S10_3, **S10_W),
    case("S10.7", s10, TTRS, '[{"date":null,"value":75.0}]', interval="all", **S10_W),
    case("S10.8", s10, CFR, '[{"date":"2021-01-01","value":0.3333333333333333},{"date":"2021-01-02","value":0.5},{"date":"2021-01-03","value":1.0},{"date":"2021-01-04","value":1.0}]', **S10_W),
    case("S10.9", s10, CFR, '[{"date":null,"value":0.5833333333333334}]', interval="all", **S10_W),
    # S11: inclusive day boundaries.
    case("S11.1", s11, DF, '[{"date":"2021-02-09","value":1},{"date":"2021-02-10","value":3},{"date":"2021-02-11","value":1}]', start="2021-02-09", end="2021-02-11"),
    case("S11.2", s11, LT, '[{"date":"2021-02-09","value":null},{"date":"2021-02-10","value":null},{"date":"2021-02-11","value":null}]', start="2021-02-09", end="2021-02-11"),
    case("S11.3", s11, DF, '[{"date":"2021-02-10","value":3},{"date":"2021-02-11","value":1}]', start="2021-02-10", end="2021-02-11"),
    # S12: stopped environment counts; the tier comes from the environment, not its name.
    case("S12.1", s12, DF, '[{"date":"2021-03-02","value":1},{"date":"2021-03-03","value":1},{"date":"2021-03-04","value":1}]', start="2021-03-01", end="2021-03-05"),
    case("S12.2", s12, DF, '[{"date":"2021-03-05","value":1}]', tiers=("staging",), start="2021-03-01", end="2021-03-05"),
    # S13: lead time per row: rounding, clamping, null merged_at, pair medians.
    case("S13.1", s13, LT, S13_1, **S13_W),
    case("S13.2", s13, LT, '[{"date":"2021-03-01","value":3.0}]', interval="monthly", **S13_W),
    case("S13.3", s13, LT, '[{"date":null,"value":3.0}]', interval="all", **S13_W),
    case("S13.4", s13, LT, S13_1.replace('"value":25.0', '"value":1812.5'), tiers=BOTH, **S13_W),
    case("S13.5", s13, LT, '[{"date":null,"value":4.0}]', interval="all", tiers=BOTH, **S13_W),
    case("S13.6", s13, LT, '[{"date":"2021-03-15","value":3600.0}]', tiers=("staging",), **S13_W),
    # S14: time to restore service per row.
    case("S14.1", s14, TTRS, '[{"date":"2021-04-20","value":345600.0},{"date":"2021-04-21","value":217800.0}]', **S14_D),
    case("S14.2", s14, TTRS, '[{"date":null,"value":281700.0}]', interval="all", **S14_D),
    case("S14.3", s14, TTRS, '[{"date":"2021-04-20","value":null}]', tiers=("staging",), **S14_D),
    case("S14.4", s14, CFR, '[{"date":"2021-04-20","value":0.0},{"date":"2021-04-21","value":0.0}]', **S14_D),
    case("S14.5", s14, DF, '[{"date":"2021-04-20","value":0},{"date":"2021-04-21","value":0}]', **S14_D),
    case("S14.6", s14, TTRS, '[{"date":"2021-04-10","value":null},{"date":"2021-04-11","value":null},{"date":"2021-04-13","value":null},{"date":"2021-04-15","value":null},{"date":"2021-04-17","value":null},{"date":"2021-04-18","value":null},{"date":"2021-04-19","value":null},{"date":"2021-04-20","value":345600.0},{"date":"2021-04-21","value":217800.0}]', start="2021-04-10", end="2021-04-21"),
    case("S14.7", s14, CFR, '[{"date":null,"value":7.0}]', interval="all", start="2021-04-10", end="2021-04-21"),
    # S15: incidents counted for change failure rate.
    case("S15.1", s15, CFR, '[{"date":"2021-06-15","value":3.0}]', **S15_W),
    case("S15.2", s15, DF, '[{"date":"2021-06-15","value":0}]', **S15_W),
    case("S15.3", s15, DF, '[{"date":null,"value":0.0}]', interval="all", **S15_W),
    case("S15.4", s15, LT, '[{"date":"2021-06-15","value":null}]', **S15_W),
    case("S15.5", s15, CFR, "[]", tiers=("staging",), **S15_W),
    case("S15.6", s15, CFR, NULL_ALL, interval="all", tiers=("staging",), **S15_W),
    case("S15.7", s15, CFR, "[]", interval="monthly", tiers=("staging",), **S15_W),
    # S16: windows, partial months, combined tiers.
    case("S16.1", s16, DF, S16_1, **S16_W),
    case("S16.2", s16, DF, '[{"date":"2021-03-01","value":0.5806451612903226},{"date":"2021-04-01","value":2.9}]', interval="monthly", **S16_W),
    case("S16.3", s16, DF, '[{"date":null,"value":1.1666666666666667}]', interval="all", **S16_W),
    case("S16.4", s16, DF, '[{"date":"2021-04-03","value":15},{"date":"2021-04-04","value":14},{"date":"2021-04-05","value":13},{"date":"2021-04-06","value":12},{"date":"2021-04-07","value":0}]', start="2021-04-03", end="2021-05-01"),
    case("S16.5", s16, DF, '[{"date":"2021-03-01","value":18},{"date":"2021-04-01","value":17},{"date":"2021-04-02","value":16},{"date":"2021-04-03","value":15}]', start="2021-02-01", end="2021-04-03"),
    case("S16.6", s16, DF, '[{"date":"2021-04-01","value":17},{"date":"2021-04-02","value":16},{"date":"2021-04-03","value":15}]', start="2021-04-01", end="2021-04-03"),
    case("S16.9", s16, DF, S16_1.replace('"value":17}', '"value":27}'), tiers=BOTH, **S16_W),
    case("S16.10", s16, DF, '[{"date":"2021-03-01","value":0.5806451612903226},{"date":"2021-04-01","value":3.2333333333333334}]', interval="monthly", tiers=BOTH, **S16_W),
    case("S16.11", s16, DF, '[{"date":"2021-04-01","value":15.0}]', interval="monthly", start="2021-03-15", end="2021-04-05"),
    case("S16.12", s16, DF, '[{"date":"2021-01-01","value":1.9}]', interval="monthly", start="2020-12-15", end="2021-01-10"),
    case("S16.13", s16, DF, '[{"date":null,"value":0.6850828729281768}]', interval="all", start="2020-11-02", end="2021-05-01"),
    # S17: project vs group; other groups' projects are simply not in the facts.
    case("S17.1", s17_project, DF, S17_1, **S17_W),
    case("S17.2", s17_project, DF, '[{"date":null,"value":0.12903225806451613}]', interval="all", **S17_W),
    case("S17.3", s17_project, CFR, '[{"date":null,"value":4.0}]', interval="all", **S17_W),
    case("S17.4", s17_group, DF, S17_1[:-1] + ',{"date":"2021-01-09","value":4}]', **S17_W),
    case("S17.5", s17_group, DF, '[{"date":null,"value":0.17204301075268819}]', interval="all", **S17_W),
    case("S17.6", s17_group, CFR, '[{"date":null,"value":3.0}]', interval="all", **S17_W),
    case("S17.7", s17_group, CFR, '[{"date":"2021-01-01","value":0.0},{"date":"2021-01-02","value":0.0},{"date":"2021-01-03","value":0.0},{"date":"2021-01-04","value":0.0},{"date":"2021-01-05","value":0.0},{"date":"2021-01-06","value":0.0},{"date":"2021-01-07","value":48.0},{"date":"2021-01-09","value":0.0}]', **S17_W),
    # S18: group scope (which projects are targets is decided upstream; here the pooled rows).
    case("S18.1", s18_group, DF, '[{"date":"2021-07-01","value":1},{"date":"2021-07-02","value":1},{"date":"2021-07-03","value":1},{"date":"2021-07-04","value":1},{"date":"2021-07-08","value":0}]', **S18_W),
    case("S18.2", s18_group, CFR, '[{"date":null,"value":0.25}]', interval="all", **S18_W),
    case("S18.3", s18_subgroup, DF, '[{"date":"2021-07-02","value":1},{"date":"2021-07-03","value":1},{"date":"2021-07-08","value":0}]', **S18_W),
    case("S18.4", s18_subgroup, CFR, '[{"date":null,"value":0.5}]', interval="all", **S18_W),
    # S19: quirk Q4, incidents counted per production environment; primary = stopped id 1.
    case("S19.1", s19, CFR, '[{"date":"2021-08-02","value":2.0},{"date":"2021-08-03","value":1.0},{"date":"2021-08-04","value":2.0}]', **S19_W),
    case("S19.2", s19, CFR, '[{"date":null,"value":2.3333333333333335}]', interval="all", **S19_W),
    case("S19.3", s19, DF, '[{"date":"2021-08-02","value":2},{"date":"2021-08-03","value":0},{"date":"2021-08-04","value":1}]', **S19_W),
    case("S19.4", s19, TTRS, '[{"date":"2021-08-02","value":null},{"date":"2021-08-03","value":null},{"date":"2021-08-04","value":3600.0}]', **S19_W),
    # S20: no production environment: incidents never count; empty results.
    case("S20.1", s20, DF, '[{"date":"2021-09-01","value":2}]', tiers=("staging",), **S20_W),
    case("S20.2", s20, CFR, '[{"date":"2021-09-01","value":null}]', tiers=("staging",), **S20_W),
    case("S20.3", s20, CFR, NULL_ALL, interval="all", tiers=("staging",), **S20_W),
    case("S20.4", s20, TTRS, NULL_ALL, interval="all", tiers=("staging",), **S20_W),
    *(
        case(f"S20.5-{metric}-{interval}", s20, metric, "[]", interval=interval, **S20_W)
        for metric in METRICS
        for interval in ("daily", "monthly")
    ),
    *(case(f"S20.6-{metric}", s20, metric, NULL_ALL, interval="all", **S20_W) for metric in METRICS),
    # S21: days are decided in the configured zone.
    case("S21.1", s21, DF, '[{"date":"2021-03-01","value":2},{"date":"2021-03-02","value":0},{"date":"2021-03-31","value":1}]', **S21_W),
    case("S21.2", s21, DF, '[{"date":"2021-03-01","value":0.0967741935483871}]', interval="monthly", **S21_W),
    case("S21.3", s21, DF, '[{"date":"2021-03-01","value":1},{"date":"2021-03-02","value":1},{"date":"2021-03-03","value":0},{"date":"2021-04-01","value":1}]', tz="Asia/Tokyo", **S21_W),
    case("S21.4", s21, DF, '[{"date":"2021-03-01","value":0.06451612903225806},{"date":"2021-04-01","value":0.03333333333333333}]', interval="monthly", tz="Asia/Tokyo", **S21_W),
    *(
        case(f"S21.5-{tz}", s21, DF, '[{"date":null,"value":0.04918032786885246}]', interval="all", tz=tz, **S21_W)
        for tz in ("UTC", "Asia/Tokyo")
    ),
    # Not in the spec: a 23-hour day must be cut with the zone's rules, not a fixed offset.
    case("DST-Berlin", berlin_dst, DF, '[{"date":"2021-03-27","value":1},{"date":"2021-03-28","value":2},{"date":"2021-03-29","value":1}]', tz="Europe/Berlin", start="2021-03-20", end="2021-03-31"),
]  # fmt: skip


@pytest.mark.parametrize(("fixture", "query", "expected"), SCENARIOS)
def test_scenario_body(
    fixture: Callable[[], list[ProjectFacts]], query: dict, expected: str
) -> None:
    assert body(fixture(), **query) == expected.encode()


# --- rows -------------------------------------------------------------------------------------


def row_values(
    rows: list[DailyRow],
) -> list[tuple[int, str, int, int | None, int | None, int | None]]:
    return [
        (
            r.environment_id,
            r.day.isoformat(),
            r.deployment_frequency,
            r.lead_time_for_changes_in_seconds,
            r.time_to_restore_service_in_seconds,
            r.incidents_count,
        )
        for r in rows
    ]


def rows_of(facts: ProjectFacts, start: str, end: str, tiers=BOTH, tz=UTC_ZONE) -> list[DailyRow]:
    return compute_daily_rows(facts, tiers, date.fromisoformat(start), date.fromisoformat(end), tz)


def test_s1_rebuilt_rows_ordered_by_environment_then_day() -> None:
    (facts,) = s1()
    rows = rows_of(facts, **S1_Q)
    assert rows == [
        DailyRow(11, 1, "production", date(2021, 1, 1), 1, 3, 5, 7),
        DailyRow(11, 1, "production", date(2021, 1, 2), 2, 4, 6, 8),
        DailyRow(11, 2, "staging", date(2021, 1, 2), 100, None, None, None),
    ]
    assert len({*rows, *rows}) == 3  # hashable and equal like any frozen dataclass


def test_s8_rebuilt_rows_include_incident_days_before_the_window_when_asked() -> None:
    (facts,) = s8()
    assert row_values(rows_of(facts, "2020-12-01", "2021-01-31")) == [
        (1, "2020-12-20", 0, None, None, 1),
        (1, "2021-01-01", 4, None, None, 3),
        (1, "2021-01-02", 2, None, None, 0),
        (1, "2021-01-04", 0, None, None, 1),
        (1, "2021-01-06", 0, None, 1468800, 0),
        (2, "2021-01-03", 1, None, None, None),
        (2, "2021-01-05", 1, None, None, None),
    ]


def test_s19_rows_double_count_incidents_and_primary_is_stopped_lowest_id() -> None:
    (facts,) = s19()
    assert row_values(rows_of(facts, **S19_W)) == [
        (1, "2021-08-02", 1, None, None, 2),
        (1, "2021-08-03", 0, None, None, 1),
        (1, "2021-08-04", 0, None, 3600, 1),
        (2, "2021-08-02", 1, None, None, 2),
        (2, "2021-08-04", 1, None, 3600, 1),
    ]


def test_primary_is_chosen_among_all_environments_not_only_requested_tiers() -> None:
    """Asking for staging only must not promote anything: incidents stay off staging rows."""
    (facts,) = s19()
    rows = rows_of(facts, **S19_W, tiers=("staging",))
    assert rows == []
    p = (
        Project(5, staging(1), prod(9))
        .dep(1, "2021-08-03T10:00:00Z")
        .incident("2021-08-03T12:00:00Z")
    )
    assert row_values(rows_of(p.facts(), **S19_W, tiers=("staging",))) == [
        (1, "2021-08-03", 1, None, None, None)
    ]
    assert row_values(rows_of(p.facts(), **S19_W, tiers=("production",))) == [
        (9, "2021-08-03", 0, None, None, 1)
    ]


@pytest.mark.parametrize(
    ("deployment", "merged", "expected"),
    [
        pytest.param(1, ["2021-03-11T11:59:59Z", "2021-03-11T11:59:56Z"], 2, id="S13-2.5-to-2"),
        pytest.param(1, ["2021-03-11T11:59:59Z", "2021-03-11T11:59:54Z"], 4, id="S13-3.5-to-4"),
        pytest.param(1, ["2021-03-11T12:00:00Z", "2021-03-11T11:59:59Z"], 0, id="0.5-to-0"),
        pytest.param(1, ["2021-03-11T11:59:58.500Z"], 2, id="1.5-to-2"),
        pytest.param(2, ["2021-03-11T12:00:00.000Z"], 1, id="S13-0.7-to-1"),
        pytest.param(1, ["2021-03-11T12:00:30Z", None], 0, id="S13-negative-to-0"),
        pytest.param(1, [None], None, id="S13-null-merged-at"),
        # Float sums would land a hair under 2.5 here; the median must stay an exact tie.
        pytest.param(1, ["2021-03-11T11:59:58.999Z", "2021-03-11T11:59:56.001Z"], 2, id="ms-tie"),
    ],
)
def test_lead_time_row_rounding(deployment: int, merged: list[str | None], expected: int) -> None:
    finished = {1: "2021-03-11T12:00:00Z", 2: "2021-03-11T12:00:00.700Z"}[deployment]
    facts = Project(1, prod(1)).dep(1, finished, merged).facts()
    (row,) = rows_of(facts, "2021-03-10", "2021-03-12")
    assert row.lead_time_for_changes_in_seconds == expected


def test_s13_lead_time_median_is_over_pairs_not_per_deployment() -> None:
    (facts,) = s13()
    rows = {(r.environment_id, r.day.isoformat()): r for r in rows_of(facts, **S13_W)}
    assert rows[1, "2021-03-15"].lead_time_for_changes_in_seconds == 25
    assert rows[1, "2021-03-15"].deployment_frequency == 2
    assert rows[2, "2021-03-15"].lead_time_for_changes_in_seconds == 3600


def test_merge_requests_not_fetched_means_no_lead_time() -> None:
    (facts,) = s1()
    unfetched = ProjectFacts(
        facts.project_id, facts.environments, facts.deployments, facts.incidents, None
    )
    assert body([unfetched], LT, **S1_Q) == (
        b'[{"date":"2021-01-01","value":null},{"date":"2021-01-02","value":null}]'
    )


def test_deployments_of_unknown_environments_and_repeated_facts_are_ignored() -> None:
    p = Project(1, prod(1)).dep(1, "2021-01-01T10:00:00Z").dep(77, "2021-01-01T11:00:00Z")
    p.incident("2021-01-01T12:00:00Z")
    facts = p.facts()
    doubled = ProjectFacts(
        facts.project_id,
        facts.environments,
        facts.deployments * 2,
        facts.incidents * 2,
        facts.merge_requests,
    )
    assert row_values(rows_of(doubled, "2021-01-01", "2021-01-02")) == [
        (1, "2021-01-01", 1, None, None, 1)
    ]


def test_ttrs_row_median_rounds_ties_to_even() -> None:
    p = Project(1, prod(1))
    p.incident("2021-01-01T10:00:00Z", "2021-01-01T10:00:01Z")
    p.incident("2021-01-01T10:00:00Z", "2021-01-01T10:00:04Z")
    (row,) = rows_of(p.facts(), "2021-01-01", "2021-01-02")
    assert (row.deployment_frequency, row.time_to_restore_service_in_seconds) == (0, 2)
    assert row.incidents_count == 2


# --- aggregation and rendering ----------------------------------------------------------------


def _row(
    day: str, df: int = 0, lt: int | None = None, inc: int | None = None, ttrs: int | None = None
) -> DailyRow:
    return DailyRow(1, 1, "production", date.fromisoformat(day), df, lt, ttrs, inc)


def test_aggregate_types_and_shape() -> None:
    rows = [_row("2021-01-02", 3, 100, 1, 60), _row("2021-01-01", 1, 90, 0, 30)]
    start, end = date(2021, 1, 1), date(2021, 1, 31)
    daily = aggregate(rows, DF, "daily", start, end)
    assert daily == [{"date": "2021-01-01", "value": 1}, {"date": "2021-01-02", "value": 3}]
    assert all(type(element["value"]) is int for element in daily)
    assert list(daily[0]) == ["date", "value"]
    for metric in METRICS:
        for interval in INTERVALS:
            for element in aggregate(rows, metric, interval, start, end):
                if (metric, interval) != (DF, "daily"):
                    assert type(element["value"]) is float, (metric, interval)
    assert aggregate(rows, LT, "all", start, end) == [{"date": None, "value": 95.0}]


def test_aggregate_keeps_only_rows_inside_the_window() -> None:
    rows = [_row("2020-12-31", 5), _row("2021-01-01", 1), _row("2021-01-03", 7)]
    result = aggregate(rows, DF, "all", date(2021, 1, 1), date(2021, 1, 2))
    assert result == [{"date": None, "value": 0.5}]


@pytest.mark.parametrize(
    ("incidents", "deployments", "expected"),
    [
        pytest.param((1,), (0,), 1.0, id="Q3-1-over-0"),
        pytest.param((0,), (0,), 0.0, id="Q3-0-over-0"),
        pytest.param((None,), (3,), None, id="Q3-no-production-row"),
        pytest.param((7, None), (1, 0), 7.0, id="Q3-over-1"),
    ],
)
def test_change_failure_rate_ratio_of_sums(
    incidents: tuple[int | None, ...], deployments: tuple[int, ...], expected: float | None
) -> None:
    rows = [_row("2021-01-01", df, inc=inc) for inc, df in zip(incidents, deployments, strict=True)]
    (element,) = aggregate(rows, CFR, "all", date(2021, 1, 1), date(2021, 1, 2))
    assert element["value"] == expected
    assert expected is None or type(element["value"]) is float


def test_render_is_compact_with_floats_in_repr_form() -> None:
    assert render([{"date": "2021-01-01", "value": 3.0}]) == b'[{"date":"2021-01-01","value":3.0}]'
    assert render([{"date": None, "value": None}]) == b'[{"date":null,"value":null}]'
    assert render([{"date": "2021-01-01", "value": 7}]) == b'[{"date":"2021-01-01","value":7}]'
    assert render([]) == b"[]"


def test_unknown_metric_or_interval_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        body(s7(), "bogus", **S7_W)
    with pytest.raises(ValueError):
        body(s7(), DF, interval="weekly", **S7_W)
    with pytest.raises(ValueError):
        aggregate([], "bogus", "all", date(2021, 1, 1), date(2021, 1, 2))


def _busy_group(project_count: int) -> list[ProjectFacts]:
    """3 environments deploying every day for 181 days per project (~540 rows a project)."""
    start = datetime(2021, 1, 1, 10, tzinfo=UTC)
    projects = []
    for project_id in range(project_count):
        envs = (prod(3 * project_id), prod(3 * project_id + 1), staging(3 * project_id + 2))
        deployments, links, incidents = [], {}, []
        for day in range(181):
            finished = start + timedelta(days=day)
            merged = (MergeRequest(day, finished - timedelta(seconds=day)),)
            for env in envs:
                deployment = Deployment(next(_ids), env.id, finished)
                deployments.append(deployment)
                links[deployment.id] = merged
            if day % 3 == 0:
                incidents.append(Incident(day, finished, finished + timedelta(hours=1)))
        projects.append(ProjectFacts(project_id, envs, tuple(deployments), tuple(incidents), links))
    return projects


def _best_seconds(projects: list[ProjectFacts], repeats: int = 3) -> float:
    best = math.inf
    for _ in range(repeats):
        began = time.perf_counter()
        result = compute_metric(
            projects,
            metric=LT,
            interval="daily",
            start_date=date(2021, 1, 1),
            end_date=date(2021, 6, 30),
            tiers=BOTH,
            tz=ZoneInfo("Europe/Berlin"),
        )
        best = min(best, time.perf_counter() - began)
        assert len(result) == 181
    return best


def test_a_group_four_times_larger_costs_about_four_times_more() -> None:
    """Guards against quadratic loops over rows or projects: growing the group 4× must cost
    about 4× (linear), not 16× (quadratic). A ratio of two runs on the same machine, best of
    three each, so a busy machine does not fail it (speed itself is a benchmark's business)."""
    small, large = _busy_group(10), _busy_group(40)
    ratio = _best_seconds(large) / _best_seconds(small)
    assert ratio < 9.0, f"4x the projects cost {ratio:.1f}x the time"
