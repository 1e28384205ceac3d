"""Scenarios S16–S21 of spec §10: windows and partial months, group scope, the double-counted
incidents of two production environments, empty results, and the time zone."""

from __future__ import annotations

from proxy.demo.world import World

from .base import (
    BOTH,
    METRICS,
    RANGE_TOO_LONG,
    RITA,
    START_NOT_BEFORE_END,
    Case,
    Scenario,
    group,
    project,
    top_group,
)

# ---- S16 — windows, partial months and combined tiers ---------------------------------------


def build_s16(w: World) -> None:
    g = top_group(w, 160, "s16")
    p = w.add_project(161, "app", g)
    e1 = w.add_environment(p, "production", "production")
    e2 = w.add_environment(p, "staging", "staging")
    for count, day in (
        (20, "2020-01-01"),
        (19, "2021-01-01"),
        (18, "2021-03-01"),
        (17, "2021-04-01"),
        (16, "2021-04-02"),
        (15, "2021-04-03"),
        (14, "2021-04-04"),
        (13, "2021-04-05"),
        (12, "2021-04-06"),
        (11, "2021-05-06"),
    ):
        w.deploy_many(e1, count, day)
    w.incident(p, "2021-04-07T09:00:00Z")
    w.deploy_many(e2, 10, "2021-04-01")


_S16_W = "start_date=2021-02-01&end_date=2021-05-01"
_S16_DAILY = (
    '[{"date":"2021-03-01","value":18},{"date":"2021-04-01","value":17},'
    '{"date":"2021-04-02","value":16},{"date":"2021-04-03","value":15},'
    '{"date":"2021-04-04","value":14},{"date":"2021-04-05","value":13},'
    '{"date":"2021-04-06","value":12},{"date":"2021-04-07","value":0}]'
)
_S16_ROWS = [
    ("S16.1", f"metric=deployment_frequency&{_S16_W}", 200, _S16_DAILY),
    ("S16.2", f"metric=deployment_frequency&{_S16_W}&interval=monthly", 200,
     '[{"date":"2021-03-01","value":0.5806451612903226},{"date":"2021-04-01","value":2.9}]'),
    ("S16.3", f"metric=deployment_frequency&{_S16_W}&interval=all", 200,
     '[{"date":null,"value":1.1666666666666667}]'),
    ("S16.4", "metric=deployment_frequency&start_date=2021-04-03&end_date=2021-05-01", 200,
     '[{"date":"2021-04-03","value":15},{"date":"2021-04-04","value":14},'
     '{"date":"2021-04-05","value":13},{"date":"2021-04-06","value":12},'
     '{"date":"2021-04-07","value":0}]'),
    ("S16.5", "metric=deployment_frequency&start_date=2021-02-01&end_date=2021-04-03", 200,
     '[{"date":"2021-03-01","value":18},{"date":"2021-04-01","value":17},'
     '{"date":"2021-04-02","value":16},{"date":"2021-04-03","value":15}]'),
    ("S16.6", "metric=deployment_frequency&start_date=2021-04-01&end_date=2021-04-03", 200,
     '[{"date":"2021-04-01","value":17},{"date":"2021-04-02","value":16},'
     '{"date":"2021-04-03","value":15}]'),
    ("S16.7", "metric=deployment_frequency&start_date=2020-01-01&end_date=2021-05-01", 400,
     RANGE_TOO_LONG),
    ("S16.8", "metric=deployment_frequency&start_date=2021-04-01&end_date=2021-03-01", 400,
     START_NOT_BEFORE_END),
    ("S16.9", f"metric=deployment_frequency&{BOTH}&{_S16_W}", 200,
     _S16_DAILY.replace('{"date":"2021-04-01","value":17}', '{"date":"2021-04-01","value":27}')),
    ("S16.10", f"metric=deployment_frequency&{BOTH}&{_S16_W}&interval=monthly", 200,
     '[{"date":"2021-03-01","value":0.5806451612903226},'
     '{"date":"2021-04-01","value":3.2333333333333334}]'),
    ("S16.11",
     "metric=deployment_frequency&interval=monthly&start_date=2021-03-15&end_date=2021-04-05",
     200, '[{"date":"2021-04-01","value":15.0}]'),
    ("S16.12",
     "metric=deployment_frequency&interval=monthly&start_date=2020-12-15&end_date=2021-01-10",
     200, '[{"date":"2021-01-01","value":1.9}]'),
    ("S16.13", "metric=deployment_frequency&interval=all&start_date=2020-11-02&end_date=2021-05-01",
     200, '[{"date":null,"value":0.6850828729281768}]'),
]  # fmt: skip

S16 = Scenario(
    "S16",
    build_s16,
    tuple(Case(cid, project(161), q, RITA, status, body) for cid, q, status, body in _S16_ROWS),
)


# ---- S17 — group excludes other groups' projects and staging rows ---------------------------


def build_s17(w: World) -> None:
    g170 = top_group(w, 170, "s17")
    g175 = w.add_group(175, "s17-elsewhere")  # rita has no access
    p171 = w.add_project(171, "app", g170)
    p172 = w.add_project(172, "svc", g170)
    p173 = w.add_project(173, "foreign", g175)
    e1 = w.add_environment(p171, "production", "production")
    e2 = w.add_environment(p171, "staging", "staging")
    e3 = w.add_environment(p172, "production", "production")
    e4 = w.add_environment(p173, "production", "production")
    for count, day in (
        (3, "2021-01-01"),
        (3, "2021-01-02"),
        (2, "2021-01-03"),
        (2, "2021-01-04"),
        (1, "2021-01-05"),
        (1, "2021-01-06"),
    ):
        w.deploy_many(e1, count, day)
    for _ in range(48):
        w.incident(p171, "2021-01-07T10:00:00Z")
    w.deploy_many(e2, 4, "2021-01-08")
    w.deploy_many(e3, 4, "2021-01-09")
    w.deploy_many(e4, 5, "2021-01-10")


_S17_W = "start_date=2020-11-01&end_date=2021-02-01"
_S17_DAILY = (
    '[{"date":"2021-01-01","value":3},{"date":"2021-01-02","value":3},'
    '{"date":"2021-01-03","value":2},{"date":"2021-01-04","value":2},'
    '{"date":"2021-01-05","value":1},{"date":"2021-01-06","value":1},'
    '{"date":"2021-01-07","value":0}]'
)
S17 = Scenario(
    "S17",
    build_s17,
    (
        Case("S17.1", project(171), f"metric=deployment_frequency&{_S17_W}", RITA, 200,
             _S17_DAILY),
        Case("S17.2", project(171), f"metric=deployment_frequency&interval=all&{_S17_W}", RITA,
             200, '[{"date":null,"value":0.12903225806451613}]'),
        Case("S17.3", project(171), f"metric=change_failure_rate&interval=all&{_S17_W}", RITA,
             200, '[{"date":null,"value":4.0}]'),
        Case("S17.4", group(170), f"metric=deployment_frequency&{_S17_W}", RITA, 200,
             _S17_DAILY[:-1] + ',{"date":"2021-01-09","value":4}]'),
        Case("S17.5", group(170), f"metric=deployment_frequency&interval=all&{_S17_W}", RITA,
             200, '[{"date":null,"value":0.17204301075268819}]'),
        Case("S17.6", group(170), f"metric=change_failure_rate&interval=all&{_S17_W}", RITA,
             200, '[{"date":null,"value":3.0}]'),
        Case("S17.7", group(170), f"metric=change_failure_rate&{_S17_W}", RITA, 200,
             '[{"date":"2021-01-01","value":0.0},{"date":"2021-01-02","value":0.0},'
             '{"date":"2021-01-03","value":0.0},{"date":"2021-01-04","value":0.0},'
             '{"date":"2021-01-05","value":0.0},{"date":"2021-01-06","value":0.0},'
             '{"date":"2021-01-07","value":48.0},{"date":"2021-01-09","value":0.0}]'),
    ),
)  # fmt: skip


# ---- S18 — group scope: subgroups, archived, shared projects --------------------------------


def build_s18(w: World) -> None:
    g180 = top_group(w, 180, "s18")
    g181 = w.add_group(181, "sub", parent=g180)
    g182 = w.add_group(182, "deep", parent=g181)
    g189 = w.add_group(189, "elsewhere")  # rita has no access
    layout = (
        (1801, "app", g180, False, "2021-07-01"),
        (1802, "svc", g181, False, "2021-07-02"),
        (1803, "lib", g182, False, "2021-07-03"),
        (1804, "old", g180, True, "2021-07-04"),
        (1805, "shared", g189, False, "2021-07-05"),
        (1806, "other", g189, False, "2021-07-06"),
    )
    for pid, path, grp, archived, day in layout:
        proj = w.add_project(pid, path, grp, archived=archived)
        env = w.add_environment(proj, "production", "production")
        w.deploy(env, f"{day}T10:00:00Z")
    w.share_project(1805, g180)
    w.incident(1805, "2021-07-07T10:00:00Z")
    w.incident(1802, "2021-07-08T10:00:00Z")


_S18_W = "start_date=2021-07-01&end_date=2021-07-31"
S18 = Scenario(
    "S18",
    build_s18,
    (
        Case("S18.1", group(180), f"metric=deployment_frequency&{_S18_W}", RITA, 200,
             '[{"date":"2021-07-01","value":1},{"date":"2021-07-02","value":1},'
             '{"date":"2021-07-03","value":1},{"date":"2021-07-04","value":1},'
             '{"date":"2021-07-08","value":0}]'),
        Case("S18.2", group(180), f"metric=change_failure_rate&interval=all&{_S18_W}", RITA, 200,
             '[{"date":null,"value":0.25}]'),
        Case("S18.3", group("s18%2Fsub"), f"metric=deployment_frequency&{_S18_W}", RITA, 200,
             '[{"date":"2021-07-02","value":1},{"date":"2021-07-03","value":1},'
             '{"date":"2021-07-08","value":0}]'),
        Case("S18.4", group(181), f"metric=change_failure_rate&interval=all&{_S18_W}", RITA, 200,
             '[{"date":null,"value":0.5}]'),
    ),
)  # fmt: skip


# ---- S19 — two production environments: incidents counted per environment -------------------


def build_s19(w: World) -> None:
    g = top_group(w, 190, "s19")
    p = w.add_project(191, "app", g)
    e1 = w.add_environment(p, "production", "production", id=1, state="stopped")  # primary
    e2 = w.add_environment(p, "production-eu", "production", id=2)
    w.add_environment(p, "staging", "staging", id=3)
    w.deploy(e1, "2021-08-02T10:00:00Z")
    w.deploy(e2, "2021-08-02T11:00:00Z")
    w.incident(p, "2021-08-02T12:00:00Z")  # #1
    w.incident(p, "2021-08-02T12:00:00Z")  # #2
    w.incident(p, "2021-08-03T12:00:00Z")  # #3
    w.deploy(e2, "2021-08-04T08:00:00Z")
    w.incident(p, "2021-08-04T09:00:00Z", "2021-08-04T10:00:00Z")  # #4


_S19_W = "start_date=2021-08-01&end_date=2021-08-31"
S19 = Scenario(
    "S19",
    build_s19,
    (
        Case("S19.1", project(191), f"metric=change_failure_rate&{_S19_W}", RITA, 200,
             '[{"date":"2021-08-02","value":2.0},{"date":"2021-08-03","value":1.0},'
             '{"date":"2021-08-04","value":2.0}]'),
        Case("S19.2", project(191), f"metric=change_failure_rate&interval=all&{_S19_W}", RITA,
             200, '[{"date":null,"value":2.3333333333333335}]'),
        Case("S19.3", project(191), f"metric=deployment_frequency&{_S19_W}", RITA, 200,
             '[{"date":"2021-08-02","value":2},{"date":"2021-08-03","value":0},'
             '{"date":"2021-08-04","value":1}]'),
        Case("S19.4", project(191), f"metric=time_to_restore_service&{_S19_W}", RITA, 200,
             '[{"date":"2021-08-02","value":null},{"date":"2021-08-03","value":null},'
             '{"date":"2021-08-04","value":3600.0}]'),
    ),
)  # fmt: skip


# ---- S20 — no production environment; empty results -----------------------------------------


def build_s20(w: World) -> None:
    g = top_group(w, 200, "s20")
    p = w.add_project(201, "app", g)
    e1 = w.add_environment(p, "staging", "staging")
    w.deploy_many(e1, 2, "2021-09-01")
    w.incident(p, "2021-09-02T10:00:00Z")
    w.incident(p, "2021-09-03T10:00:00Z", "2021-09-04T10:00:00Z")


def _s20_cases() -> list[Case]:
    w_ = "start_date=2021-09-01&end_date=2021-09-30"
    staging = "environment_tiers[]=staging"
    p201 = project(201)
    cases = [
        Case("S20.1", p201, f"metric=deployment_frequency&{staging}&{w_}", RITA, 200,
             '[{"date":"2021-09-01","value":2}]'),
        Case("S20.2", p201, f"metric=change_failure_rate&{staging}&{w_}", RITA, 200,
             '[{"date":"2021-09-01","value":null}]'),
        Case("S20.3", p201, f"metric=change_failure_rate&interval=all&{staging}&{w_}", RITA,
             200, '[{"date":null,"value":null}]'),
        Case("S20.4", p201, f"metric=time_to_restore_service&interval=all&{staging}&{w_}", RITA,
             200, '[{"date":null,"value":null}]'),
    ]  # fmt: skip
    for metric in METRICS:
        cases.append(Case(f"S20.5[{metric},daily]", p201, f"metric={metric}&{w_}", RITA, 200, "[]"))
        cases.append(
            Case(
                f"S20.5[{metric},monthly]",
                p201,
                f"metric={metric}&interval=monthly&{w_}",
                RITA,
                200,
                "[]",
            )
        )
    for metric in METRICS:
        cases.append(
            Case(
                f"S20.6[{metric}]",
                p201,
                f"metric={metric}&interval=all&{w_}",
                RITA,
                200,
                '[{"date":null,"value":null}]',
            )
        )
    return cases


S20 = Scenario("S20", build_s20, tuple(_s20_cases()))


# ---- S21 — time zone ------------------------------------------------------------------------


def build_s21(w: World) -> None:
    g = top_group(w, 210, "s21")
    p = w.add_project(211, "app", g)
    e1 = w.add_environment(p, "production", "production")
    w.deploy(e1, "2021-03-01T14:59:59.999Z")
    w.deploy(e1, "2021-03-01T15:00:00.000Z")
    w.deploy(e1, "2021-03-31T15:30:00Z")
    w.incident(p, "2021-03-02T16:00:00Z")


_S21_Q = "metric=deployment_frequency&start_date=2021-03-01&end_date=2021-04-30"
_S21_ALL = '[{"date":null,"value":0.04918032786885246}]'

S21_UTC = Scenario(
    "S21-UTC",
    build_s21,
    (
        Case("S21.1", project(211), _S21_Q, RITA, 200,
             '[{"date":"2021-03-01","value":2},{"date":"2021-03-02","value":0},'
             '{"date":"2021-03-31","value":1}]'),
        Case("S21.2", project(211), f"{_S21_Q}&interval=monthly", RITA, 200,
             '[{"date":"2021-03-01","value":0.0967741935483871}]'),
        Case("S21.5[UTC]", project(211), f"{_S21_Q}&interval=all", RITA, 200, _S21_ALL),
    ),
)  # fmt: skip

S21_TOKYO = Scenario(
    "S21-Tokyo",
    build_s21,
    (
        Case("S21.3", project(211), _S21_Q, RITA, 200,
             '[{"date":"2021-03-01","value":1},{"date":"2021-03-02","value":1},'
             '{"date":"2021-03-03","value":0},{"date":"2021-04-01","value":1}]'),
        Case("S21.4", project(211), f"{_S21_Q}&interval=monthly", RITA, 200,
             '[{"date":"2021-03-01","value":0.06451612903225806},'
             '{"date":"2021-04-01","value":0.03333333333333333}]'),
        Case("S21.5[Asia/Tokyo]", project(211), f"{_S21_Q}&interval=all", RITA, 200, _S21_ALL),
    ),
    time_zone="Asia/Tokyo",
)  # fmt: skip
