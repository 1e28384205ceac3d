"""Scenarios S6–S10 of spec §10: authentication and visibility, then the daily-metrics model
spec's aggregation cases (deployment frequency, change failure rate, medians, groups)."""

from __future__ import annotations

from datetime import timedelta

from proxy.demo.world import DEVELOPER, GUEST, PLANNER, REPORTER, World, at

from .base import (
    ANONYMOUS,
    BOTH,
    GROUP_NOT_FOUND,
    METRIC_MISSING,
    P401,
    PROJECT_NOT_FOUND,
    RITA,
    Case,
    Scenario,
    group,
    project,
    token,
    top_group,
)

# ---- S6 — authentication, visibility and permission -----------------------------------------


def build_s6(w: World) -> None:
    g60 = w.add_group(60, "s6", visibility="public")
    g61 = w.add_group(61, "sub", parent=g60)
    p62 = w.add_project(62, "app", g61)
    p63 = w.add_project(63, "open", g60, visibility="public")
    e1 = w.add_environment(p62, "production", "production")
    e2 = w.add_environment(p63, "production", "production")
    w.deploy_many(e1, 1, "2021-06-01")
    w.deploy_many(e2, 2, "2021-06-02")
    w.add_member(w.users[12], g60, REPORTER)  # rita
    w.add_member(w.users[13], g60, GUEST)  # gus
    w.add_member(w.users[14], g60, PLANNER)  # pat
    w.add_member(w.users[15], p62, DEVELOPER)  # devon, project 62 only


def _s6_cases() -> list[Case]:
    q = "metric=deployment_frequency&start_date=2021-06-01&end_date=2021-06-30"
    a = '[{"date":"2021-06-01","value":1}]'
    b = '[{"date":"2021-06-01","value":1},{"date":"2021-06-02","value":2}]'
    root, gus, pat = token("admin"), token("gus"), token("pat")
    devon, nina = token("devon"), token("nina")
    rows = [
        ("S6.1", project(62), q, RITA, 200, a),
        ("S6.2", project("s6%2Fsub%2Fapp"), q, RITA, 200, a),
        ("S6.3", project(62), q, {"Authorization": "Bearer tok-rita"}, 200, a),
        ("S6.4", group(60), q, RITA, 200, b),
        ("S6.5", group("s6%2Fsub"), q, RITA, 200, a),
        ("S6.6", project(62), q, root, 200, a),
        ("S6.7", group(60), q, root, 200, b),
        ("S6.8", project(62), q, gus, 401, P401),
        ("S6.9", group(60), q, gus, 401, P401),
        ("S6.10", project(62), q, pat, 401, P401),
        ("S6.11", project(62), q, devon, 200, a),
        ("S6.12", group(60), q, devon, 401, P401),
        ("S6.13", project(62), q, nina, 404, PROJECT_NOT_FOUND),
        ("S6.14", project(63), q, nina, 401, P401),
        ("S6.15", group(61), q, nina, 404, GROUP_NOT_FOUND),
        ("S6.16", group(60), q, nina, 401, P401),
        ("S6.17", project(63), q, ANONYMOUS, 401, P401),
        ("S6.18", group(60), q, ANONYMOUS, 401, P401),
        ("S6.19", project(62), q, ANONYMOUS, 404, PROJECT_NOT_FOUND),
        ("S6.20", group(61), q, ANONYMOUS, 404, GROUP_NOT_FOUND),
        ("S6.21", project(999999), q, ANONYMOUS, 404, PROJECT_NOT_FOUND),
        ("S6.22", project(63), q, token("revoked"), 401, '{"message":"401 Unauthorized"}'),
        ("S6.23", project(63), q, {"JOB-TOKEN": "tok-rita"}, 401, P401),
        ("S6.24", project(999999), q, RITA, 404, PROJECT_NOT_FOUND),
        ("S6.25", group(999999), q, RITA, 404, GROUP_NOT_FOUND),
        ("S6.26", project("s6%2Fnope"), q, RITA, 404, PROJECT_NOT_FOUND),
        ("S6.27", project(999999), "metric=deployment_frequency&interval=bad", RITA, 404,
         PROJECT_NOT_FOUND),
        ("S6.28", project(999999), "", RITA, 400, METRIC_MISSING),
        ("S6.29", project(62), "metric=deployment_frequency&interval=bad", gus, 401, P401),
        ("S6.30", project(62), q, {"PRIVATE-TOKEN": "tok-gus", "Authorization": "Bearer tok-rita"},
         401, P401),
    ]  # fmt: skip
    return [Case(*row) for row in rows]


S6 = Scenario("S6", build_s6, tuple(_s6_cases()))


# ---- S7 — deployment frequency aggregation, one environment ---------------------------------


def build_s7(w: World) -> None:
    g = top_group(w, 70, "s7")
    p = w.add_project(71, "app", g)
    e1 = w.add_environment(p, "production", "production")
    for count, day in ((3, "2021-01-01"), (2, "2021-01-02"), (1, "2021-01-03")):
        w.deploy_many(e1, count, day)
    w.incident(p, "2021-01-04T08:00:00Z")


W_JAN = "start_date=2021-01-01&end_date=2021-01-31"

_S7_ROWS = [
    ("S7.1", f"metric=deployment_frequency&{W_JAN}",
     '[{"date":"2021-01-01","value":3},{"date":"2021-01-02","value":2},'
     '{"date":"2021-01-03","value":1},{"date":"2021-01-04","value":0}]'),
    ("S7.2", f"metric=deployment_frequency&{W_JAN}&interval=monthly",
     '[{"date":"2021-01-01","value":0.1935483870967742}]'),
    ("S7.3", f"metric=deployment_frequency&{W_JAN}&interval=all",
     '[{"date":null,"value":0.1935483870967742}]'),
    ("S7.4", "metric=deployment_frequency&interval=all&start_date=2021-01-01&end_date=2021-01-04",
     '[{"date":null,"value":1.5}]'),
    ("S7.5",
     "metric=deployment_frequency&interval=monthly&start_date=2021-01-01&end_date=2021-01-04",
     '[{"date":"2021-01-01","value":1.5}]'),
    ("S7.6", f"metric=change_failure_rate&{W_JAN}",
     '[{"date":"2021-01-01","value":0.0},{"date":"2021-01-02","value":0.0},'
     '{"date":"2021-01-03","value":0.0},{"date":"2021-01-04","value":1.0}]'),
]  # fmt: skip

S7 = Scenario(
    "S7", build_s7, tuple(Case(cid, project(71), q, RITA, 200, body) for cid, q, body in _S7_ROWS)
)


# ---- S8 — change failure rate, combined tiers -----------------------------------------------


def build_s8(w: World) -> None:
    g = top_group(w, 80, "s8")
    p = w.add_project(81, "app", g)
    e1 = w.add_environment(p, "production", "production")
    e2 = w.add_environment(p, "staging", "staging")
    w.deploy_many(e1, 4, "2021-01-01")
    for _ in range(3):
        w.incident(p, "2021-01-01T15:00:00Z")
    w.deploy_many(e1, 2, "2021-01-02")
    w.deploy_many(e2, 1, "2021-01-03")
    w.incident(p, "2021-01-04T09:00:00Z")
    w.deploy_many(e2, 1, "2021-01-05")
    w.incident(p, "2020-12-20T12:00:00Z", "2021-01-06T12:00:00Z")


_S8_ROWS = [
    ("S8.1", f"metric=change_failure_rate&{BOTH}&{W_JAN}",
     '[{"date":"2021-01-01","value":0.75},{"date":"2021-01-02","value":0.0},'
     '{"date":"2021-01-03","value":null},{"date":"2021-01-04","value":1.0},'
     '{"date":"2021-01-05","value":null},{"date":"2021-01-06","value":0.0}]'),
    ("S8.2", f"metric=change_failure_rate&interval=monthly&{BOTH}&{W_JAN}",
     '[{"date":"2021-01-01","value":0.5}]'),
    ("S8.3", f"metric=change_failure_rate&interval=all&{BOTH}&{W_JAN}",
     '[{"date":null,"value":0.5}]'),
    ("S8.4", f"metric=change_failure_rate&{W_JAN}",
     '[{"date":"2021-01-01","value":0.75},{"date":"2021-01-02","value":0.0},'
     '{"date":"2021-01-04","value":1.0},{"date":"2021-01-06","value":0.0}]'),
    ("S8.5", f"metric=change_failure_rate&interval=monthly&{W_JAN}",
     '[{"date":"2021-01-01","value":0.6666666666666666}]'),
    ("S8.6", f"metric=change_failure_rate&interval=all&{W_JAN}",
     '[{"date":null,"value":0.6666666666666666}]'),
    ("S8.7", f"metric=deployment_frequency&{W_JAN}",
     '[{"date":"2021-01-01","value":4},{"date":"2021-01-02","value":2},'
     '{"date":"2021-01-04","value":0},{"date":"2021-01-06","value":0}]'),
    ("S8.8", f"metric=deployment_frequency&interval=all&{W_JAN}",
     '[{"date":null,"value":0.1935483870967742}]'),
    ("S8.9", f"metric=time_to_restore_service&{W_JAN}",
     '[{"date":"2021-01-01","value":null},{"date":"2021-01-02","value":null},'
     '{"date":"2021-01-04","value":null},{"date":"2021-01-06","value":1468800.0}]'),
    ("S8.10", f"metric=change_failure_rate&environment_tiers[]=staging&{W_JAN}",
     '[{"date":"2021-01-03","value":null},{"date":"2021-01-05","value":null}]'),
    ("S8.11", f"metric=change_failure_rate&interval=all&environment_tiers[]=staging&{W_JAN}",
     '[{"date":null,"value":null}]'),
    ("S8.12",
     f"metric=change_failure_rate&interval=all&{BOTH}&start_date=2020-12-01&end_date=2021-01-31",
     '[{"date":null,"value":0.625}]'),
]  # fmt: skip

S8 = Scenario(
    "S8", build_s8, tuple(Case(cid, project(81), q, RITA, 200, body) for cid, q, body in _S8_ROWS)
)


# ---- S9 — lead time and time to restore, one environment ------------------------------------


def build_s9(w: World) -> None:
    g = top_group(w, 90, "s9")
    p = w.add_project(91, "app", g)
    e1 = w.add_environment(p, "production", "production")
    for day, seconds in (("01", 100), ("02", 80), ("03", 60), ("04", 50)):
        finished = at(f"2021-01-{day}T12:00:00Z")
        w.deploy(e1, finished, mrs=[finished - timedelta(seconds=seconds)])
        created = at(f"2021-01-{day}T08:00:00Z")
        w.incident(p, created, created + timedelta(seconds=seconds))
    w.deploy(e1, "2021-01-05T12:00:00Z")


def _s9_cases() -> list[Case]:
    rows = [
        ("S9.1", "", '[{"date":"2021-01-01","value":100.0},{"date":"2021-01-02","value":80.0},'
         '{"date":"2021-01-03","value":60.0},{"date":"2021-01-04","value":50.0},'
         '{"date":"2021-01-05","value":null}]'),
        ("S9.2", "interval=monthly&", '[{"date":"2021-01-01","value":70.0}]'),
        ("S9.3", "interval=all&", '[{"date":null,"value":70.0}]'),
    ]  # fmt: skip
    return [
        Case(f"{cid}[{metric}]", project(91), f"metric={metric}&{interval}{W_JAN}", RITA, 200, body)
        for cid, interval, body in rows
        for metric in ("lead_time_for_changes", "time_to_restore_service")
    ]


S9 = Scenario("S9", build_s9, tuple(_s9_cases()))


# ---- S10 — several environments per day, group ----------------------------------------------


def build_s10(w: World) -> None:
    g = top_group(w, 100, "s10")
    p101 = w.add_project(101, "one", g)
    p102 = w.add_project(102, "two", g)
    e1 = w.add_environment(p101, "production", "production")
    e2 = w.add_environment(p102, "production", "production")
    plan = (  # (day, env, project, deployments, lead-time seconds of the first, TTRS seconds)
        ("01", e1, p101, 3, 100, 100),
        ("02", e1, p101, 2, 80, 80),
        ("03", e1, p101, 1, 60, 60),
        ("01", e2, p102, 3, 90, 90),
        ("02", e2, p102, 2, 70, 70),
        ("03", e2, p102, 1, 50, 50),
    )
    for day, env, proj, count, lead, restore in plan:
        start = at(f"2021-01-{day}T01:00:00Z")
        for i in range(count):  # "n× D": every 20 minutes from 01:00
            finished = start + timedelta(minutes=20 * i)
            w.deploy(env, finished, mrs=[finished - timedelta(seconds=lead)] if i == 0 else [])
        created = at(f"2021-01-{day}T08:00:00Z")
        w.incident(proj, created, created + timedelta(seconds=restore))
    w.incident(p101, "2021-01-04T09:00:00Z")


_S10_MEDIANS = (
    '[{"date":"2021-01-01","value":95.0},{"date":"2021-01-02","value":75.0},'
    '{"date":"2021-01-03","value":55.0},{"date":"2021-01-04","value":null}]'
)
_S10_ROWS = [
    ("S10.1", f"metric=deployment_frequency&{W_JAN}",
     '[{"date":"2021-01-01","value":6},{"date":"2021-01-02","value":4},'
     '{"date":"2021-01-03","value":2},{"date":"2021-01-04","value":0}]'),
    ("S10.2", f"metric=deployment_frequency&interval=all&{W_JAN}",
     '[{"date":null,"value":0.3870967741935484}]'),
    ("S10.3", f"metric=lead_time_for_changes&{W_JAN}", _S10_MEDIANS),
    ("S10.4", f"metric=lead_time_for_changes&interval=monthly&{W_JAN}",
     '[{"date":"2021-01-01","value":75.0}]'),
    ("S10.5", f"metric=lead_time_for_changes&interval=all&{W_JAN}",
     '[{"date":null,"value":75.0}]'),
    ("S10.6", f"metric=time_to_restore_service&{W_JAN}", _S10_MEDIANS),
    ("S10.7", f"metric=time_to_restore_service&interval=all&{W_JAN}",
     '[{"date":null,"value":75.0}]'),
    ("S10.8", f"metric=change_failure_rate&{W_JAN}",
     '[{"date":"2021-01-01","value":0.3333333333333333},{"date":"2021-01-02","value":0.5},'
     '{"date":"2021-01-03","value":1.0},{"date":"2021-01-04","value":1.0}]'),
    ("S10.9", f"metric=change_failure_rate&interval=all&{W_JAN}",
     '[{"date":null,"value":0.5833333333333334}]'),
]  # fmt: skip

S10 = Scenario(
    "S10",
    build_s10,
    tuple(Case(cid, group(100), q, RITA, 200, body) for cid, q, body in _S10_ROWS),
)
