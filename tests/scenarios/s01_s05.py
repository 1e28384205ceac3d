"""Scenarios S1–S5 of spec §10: the REST spec's project, default dates, interval averaging,
groups, and the validation order."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta

from proxy.demo.world import GUEST, MAINTAINER, World

from .base import (
    BAD_INTERVAL,
    BAD_METRIC,
    BAD_TIERS,
    METRIC_MISSING,
    P401,
    RANGE_TOO_LONG,
    RITA,
    START_NOT_BEFORE_END,
    Case,
    Scenario,
    fan_out,
    group,
    project,
    token,
    top_group,
)

# ---- S1 — one project, production + staging -------------------------------------------------


def build_s1(w: World) -> None:
    g = top_group(w, 10, "s1")
    p = w.add_project(11, "app", g)
    w.add_member(w.users[11], g, MAINTAINER)  # maria
    w.add_member(w.users[13], g, GUEST)  # gus
    e1 = w.add_environment(p, "production", "production")
    e2 = w.add_environment(p, "staging", "staging")
    w.deploy(e1, "2021-01-01T10:00:00Z", mrs=["2021-01-01T09:59:57Z"], id=101)
    w.deploy(e1, "2021-01-02T09:00:00Z", mrs=["2021-01-02T08:59:57Z"], id=102)
    w.deploy(e1, "2021-01-02T11:00:00Z", mrs=["2021-01-02T10:59:55Z"], id=103)
    for dep_id in range(201, 301):
        w.deploy(e2, "2021-01-02T12:00:00Z", id=dep_id)
    w.incident(p, "2021-01-01T12:00:00Z", "2021-01-01T12:00:05Z")  # #1
    for _ in range(6):  # #2–#7
        w.incident(p, "2021-01-01T13:00:00Z")
    w.incident(p, "2021-01-02T12:00:00Z", "2021-01-02T12:00:06Z")  # #8
    for _ in range(7):  # #9–#15
        w.incident(p, "2021-01-02T13:00:00Z")


def _s1_cases() -> list[Case]:
    q = "start_date=2020-10-03&end_date=2021-01-03"
    both = "environment_tiers[]=production&environment_tiers[]=staging&"
    maria, gus = token("maria"), token("gus")
    rows = [
        ("S1.1", f"metric=deployment_frequency&{q}", maria, 200,
         '[{"date":"2021-01-01","value":1},{"date":"2021-01-02","value":2}]'),
        ("S1.2", f"metric=lead_time_for_changes&{q}", maria, 200,
         '[{"date":"2021-01-01","value":3.0},{"date":"2021-01-02","value":4.0}]'),
        ("S1.3", f"metric=time_to_restore_service&{q}", maria, 200,
         '[{"date":"2021-01-01","value":5.0},{"date":"2021-01-02","value":6.0}]'),
        ("S1.4", f"metric=change_failure_rate&{q}", maria, 200,
         '[{"date":"2021-01-01","value":7.0},{"date":"2021-01-02","value":4.0}]'),
        ("S1.5", f"metric=deployment_frequency&{both}{q}", maria, 200,
         '[{"date":"2021-01-01","value":1},{"date":"2021-01-02","value":102}]'),
        ("S1.6", f"metric=deployment_frequency&{q}", gus, 401, P401),
        ("S1.7", f"metric=change_failure_rate&{both}{q}", maria, 200,
         '[{"date":"2021-01-01","value":7.0},{"date":"2021-01-02","value":0.0784313725490196}]'),
        ("S1.8", f"metric=lead_time_for_changes&{both}{q}", maria, 200,
         '[{"date":"2021-01-01","value":3.0},{"date":"2021-01-02","value":4.0}]'),
        ("S1.9", f"metric=deployment_frequency&interval=monthly&{q}", maria, 200,
         '[{"date":"2021-01-01","value":1.0}]'),
        ("S1.10", f"metric=deployment_frequency&interval=all&{q}", maria, 200,
         '[{"date":null,"value":0.03225806451612903}]'),
        ("S1.11", f"metric=lead_time_for_changes&interval=all&{q}", maria, 200,
         '[{"date":null,"value":3.5}]'),
        ("S1.12", f"metric=time_to_restore_service&interval=monthly&{q}", maria, 200,
         '[{"date":"2021-01-01","value":5.5}]'),
        ("S1.13", f"metric=change_failure_rate&interval=all&{q}", maria, 200,
         '[{"date":null,"value":5.0}]'),
    ]  # fmt: skip
    paths = [project(11), group(10), project("s1%2Fapp"), group("s1")]
    return [case for row in rows for case in fan_out(row[0], paths, *row[1:])]


S1 = Scenario("S1", build_s1, tuple(_s1_cases()))


# ---- S2 — default dates, relative to T ------------------------------------------------------


def minus_months(day: date, months: int) -> date:
    """T minus N calendar months, day clamped to the target month's length (§1)."""
    index = day.year * 12 + (day.month - 1) - months
    year, month = divmod(index, 12)
    month += 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _at(day: date, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm, ss), tzinfo=UTC)


def s2(today: date) -> Scenario:
    """S2 for T = `today` (UTC): the fixture and every expected body depend on T."""
    t = today
    t1, t2, t3, t4 = (minus_months(t, n) for n in (1, 2, 3, 4))
    t3_1d = t3 - timedelta(days=1)
    t_1d = t - timedelta(days=1)
    n_days = (t - t3).days + 1

    def build(w: World) -> None:
        g = top_group(w, 20, "s2")
        p = w.add_project(21, "app", g)
        e1 = w.add_environment(p, "production", "production")
        for finished in (
            _at(t4, 12),
            _at(t3_1d, 12),
            _at(t3, 12),
            _at(t2, 12),
            _at(t2, 12, 20),
            _at(t1, 12),
            _at(t_1d, 12),
            _at(t, 0),
            _at(t, 0, 0, 1),
        ):
            w.deploy(e1, finished)

    def daily(pairs: list[tuple[date, int]]) -> str:
        return "[" + ",".join(f'{{"date":"{d.isoformat()}","value":{v}}}' for d, v in pairs) + "]"

    l_pairs = [(t3, 1), (t2, 2), (t1, 1), (t_1d, 1), (t, 2)]
    body_l = daily(l_pairs)
    df = "metric=deployment_frequency"
    p21 = project(21)
    cases = [
        Case("S2.1", p21, df, RITA, 200, body_l),
        Case("S2.2", group(20), df, RITA, 200, body_l),
        Case("S2.3", p21, f"{df}&interval=all", RITA, 200,
             f'[{{"date":null,"value":{7 / n_days!r}}}]'),
        Case("S2.4", p21, f"{df}&start_date=&end_date=", RITA, 200, body_l),
        Case("S2.5", p21, f"{df}&end_date={t3}", RITA, 400, START_NOT_BEFORE_END),
        Case("S2.6", p21, f"{df}&end_date={t4}", RITA, 400, START_NOT_BEFORE_END),
        Case("S2.7", p21, f"{df}&end_date={t3 + timedelta(days=180)}", RITA, 200, body_l),
        Case("S2.8", p21, f"{df}&end_date={t3 + timedelta(days=181)}", RITA, 400, RANGE_TOO_LONG),
        Case("S2.9", p21, f"{df}&start_date={t - timedelta(days=180)}", RITA, 200,
             daily([(t4, 1), (t3_1d, 1), *l_pairs])),
        Case("S2.10", p21, f"{df}&start_date={t - timedelta(days=181)}", RITA, 400, RANGE_TOO_LONG),
        Case("S2.11", p21, f"{df}&start_date={t}", RITA, 400, START_NOT_BEFORE_END),
        Case("S2.12", p21, f"{df}&start_date={t + timedelta(days=1)}", RITA, 400,
             START_NOT_BEFORE_END),
    ]  # fmt: skip
    return Scenario("S2", build, tuple(cases))


def today_utc() -> date:
    """T for S2: the proxy under test runs in UTC."""
    return datetime.now(UTC).date()


# ---- S3 — deployment frequency per interval, project ----------------------------------------

Q_2022 = "start_date=2022-01-20&end_date=2022-03-03"


def build_s3(w: World) -> None:
    g = top_group(w, 30, "s3")
    p = w.add_project(31, "app", g)
    e1 = w.add_environment(p, "production", "production")
    e2 = w.add_environment(p, "staging", "staging")
    for count, day in ((2, "2022-01-25"), (5, "2022-01-28"), (9, "2022-02-07"), (1, "2022-03-01")):
        w.deploy_many(e1, count, day)
    w.deploy(e1, "2022-01-19T23:59:59Z")  # outside the window
    w.deploy(e1, "2022-03-04T00:00:00Z")  # outside the window
    w.deploy(e1, "2022-02-10T10:00:00Z", status="failed")
    w.deploy_many(e2, 1, "2022-02-05")


_S3_DAILY = (
    '[{"date":"2022-01-25","value":2},{"date":"2022-01-28","value":5},'
    '{"date":"2022-02-07","value":9},{"date":"2022-03-01","value":1}]'
)
_S3_STAGING = '[{"date":"2022-02-05","value":1}]'

_S3_ROWS = [
    ("S3.1", f"metric=deployment_frequency&{Q_2022}", _S3_DAILY),
    ("S3.2", f"metric=deployment_frequency&interval=monthly&{Q_2022}",
     '[{"date":"2022-01-01","value":0.5833333333333334},{"date":"2022-02-01",'
     '"value":0.32142857142857145},{"date":"2022-03-01","value":0.3333333333333333}]'),
    ("S3.3", f"metric=deployment_frequency&interval=all&{Q_2022}",
     '[{"date":null,"value":0.3953488372093023}]'),
    ("S3.4", f"metric=deployment_frequency&environment_tiers[]=staging&{Q_2022}", _S3_STAGING),
    ("S3.5", f"metric=deployment_frequency&environment_tiers=staging&{Q_2022}", _S3_STAGING),
    ("S3.6", f"metric=deployment_frequency&environment_tier=staging&{Q_2022}", _S3_DAILY),
    ("S3.7", f"metric=deployment_frequency&interval=monthly&environment_tiers[]=staging&{Q_2022}",
     '[{"date":"2022-02-01","value":0.03571428571428571}]'),
    ("S3.8", "metric=deployment_frequency&interval=all&environment_tiers[]=production"
     f"&environment_tiers[]=staging&{Q_2022}",
     '[{"date":null,"value":0.4186046511627907}]'),
]  # fmt: skip

S3 = Scenario(
    "S3",
    build_s3,
    tuple(Case(cid, project(31), q, RITA, 200, body) for cid, q, body in _S3_ROWS),
)


# ---- S4 — deployment frequency per interval, group ------------------------------------------


def build_s4(w: World) -> None:
    g = top_group(w, 40, "s4")
    p41 = w.add_project(41, "one", g)
    p42 = w.add_project(42, "two", g)
    e1 = w.add_environment(p41, "production", "production")
    e2 = w.add_environment(p42, "production", "production")
    w.deploy_many(e1, 2, "2022-01-25")
    w.deploy_many(e2, 1, "2022-02-05")


_S4_ALL = '[{"date":null,"value":0.06976744186046512}]'
S4 = Scenario(
    "S4",
    build_s4,
    (
        Case("S4.1", group(40), f"metric=deployment_frequency&{Q_2022}", RITA, 200,
             '[{"date":"2022-01-25","value":2},{"date":"2022-02-05","value":1}]'),
        Case("S4.2", group(40), f"metric=deployment_frequency&interval=monthly&{Q_2022}", RITA,
             200, '[{"date":"2022-01-01","value":0.16666666666666666},'
             '{"date":"2022-02-01","value":0.03571428571428571}]'),
        Case("S4.3", group(40), f"metric=deployment_frequency&interval=all&{Q_2022}", RITA, 200,
             _S4_ALL),
        Case("S4.4", project(42), f"metric=deployment_frequency&interval=all&{Q_2022}", RITA,
             200, '[{"date":null,"value":0.023255813953488372}]'),
        Case("S4.5", group(40),
             f"metric=deployment_frequency&interval=all&group_project_ids[]=42&{Q_2022}", RITA,
             200, _S4_ALL),
    ),
)  # fmt: skip


# ---- S5 — validation and order of checks ----------------------------------------------------


def build_s5(w: World) -> None:
    g = top_group(w, 50, "s5")
    w.add_member(w.users[13], g, GUEST)  # gus
    p = w.add_project(51, "app", g)
    e1 = w.add_environment(p, "production", "production")
    w.deploy(e1, "2021-03-01T10:00:00Z")


def _s5_cases() -> list[Case]:
    q = Q_2022
    gus = token("gus")
    df = "metric=deployment_frequency"
    march = "start_date=2021-03-01&end_date=2021-03-31"
    rows = [
        ("S5.1", f"{df}&start_date=2021-03-03&end_date=2022-03-03", RITA, 400, RANGE_TOO_LONG),
        ("S5.2", f"{df}&start_date=2022-03-03&end_date=2021-03-03", RITA, 400,
         START_NOT_BEFORE_END),
        ("S5.3", f"{df}&interval=unknown&{q}", RITA, 400, BAD_INTERVAL),
        ("S5.4", f"metric=unknown&{q}", RITA, 400, BAD_METRIC),
        ("S5.5", "", RITA, 400, METRIC_MISSING),
        ("S5.6", f"{df}&environment_tiers[]=unknown&{q}", RITA, 400, BAD_TIERS),
        ("S5.7", f"{df}&{q}", gus, 401, P401),
        ("S5.8", f"{df}&start_date=2022-03-03&end_date=2022-03-03", RITA, 400,
         START_NOT_BEFORE_END),
        ("S5.9", f"{df}&interval=all&start_date=2021-01-01&end_date=2021-06-30", RITA, 200,
         '[{"date":null,"value":0.0055248618784530384}]'),
        ("S5.10", f"{df}&start_date=2021-01-01&end_date=2021-07-01", RITA, 400, RANGE_TOO_LONG),
        ("S5.11", "metric=unknown&interval=unknown&start_date=2021-01-01&end_date=2021-12-31",
         RITA, 400, RANGE_TOO_LONG),
        ("S5.12", f"{df}&interval=unknown&start_date=2022-03-03&end_date=2022-03-01", RITA, 400,
         START_NOT_BEFORE_END),
        ("S5.13", f"metric=unknown&interval=unknown&{q}", RITA, 400, BAD_INTERVAL),
        ("S5.14", f"metric=unknown&environment_tiers[]=unknown&{q}", RITA, 400, BAD_METRIC),
        ("S5.15", f"{df}&environment_tiers[]=production&environment_tiers[]=bogus&{q}", RITA,
         400, BAD_TIERS),
        ("S5.16", f"{df}&interval=DAILY&{q}", RITA, 400, BAD_INTERVAL),
        ("S5.17", f"metric=Deployment_frequency&{q}", RITA, 400, BAD_METRIC),
        ("S5.18", f"{df}&environment_tiers[]=Production&{q}", RITA, 400, BAD_TIERS),
        ("S5.19", f"{df}&interval=unknown&{q}", gus, 401, P401),
        ("S5.20", "start_date=2022-01-20", gus, 400, METRIC_MISSING),
        ("S5.21", f"{df}&start_date=2021-02-30&end_date=2021-03-31", RITA, 400,
         '{"error":"start_date is invalid"}'),
        ("S5.22", f"{df}&start_date=2021-03-01&end_date=foo", RITA, 400,
         '{"error":"end_date is invalid"}'),
        ("S5.23", "start_date=foo", RITA, 400,
         '{"error":"metric is missing, start_date is invalid"}'),
        ("S5.24", f"metric=&{q}", RITA, 400, BAD_METRIC),
        ("S5.25", f"{df}&interval=&{q}", RITA, 400, BAD_INTERVAL),
        ("S5.26", f"{df}&environment_tiers[]=&{q}", RITA, 400, BAD_TIERS),
        ("S5.27", f"metric[]=deployment_frequency&{q}", RITA, 400,
         '{"error":"metric is invalid"}'),
        ("S5.28", f"{df}&environment_tiers[]=production&environment_tiers[]=production&{march}",
         RITA, 200, '[{"date":"2021-03-01","value":1}]'),
        ("S5.29", f"{df}&foo=bar&{march}", RITA, 200, '[{"date":"2021-03-01","value":1}]'),
        ("S5.30", f"{df}&{q}", RITA, 200, "[]"),
    ]  # fmt: skip
    paths = [project(51), group(50)]
    return [case for row in rows for case in fan_out(row[0], paths, *row[1:])]


S5 = Scenario("S5", build_s5, tuple(_s5_cases()))
