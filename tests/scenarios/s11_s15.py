"""Scenarios S11–S15 of spec §10: which deployments count, the finish-time source, lead time
and time to restore per row, and which incidents count."""

from __future__ import annotations

from datetime import timedelta

from proxy.demo.world import Environment, World, at

from .base import BOTH, RITA, Case, Scenario, project, top_group

# ---- S11 — which deployments count ----------------------------------------------------------


def build_s11(w: World) -> None:
    g = top_group(w, 110, "s11")
    p111 = w.add_project(111, "app", g)
    p112 = w.add_project(112, "other", g)  # not requested
    e1 = w.add_environment(p111, "production", "production")
    e2 = w.add_environment(p112, "production", "production")
    for finished in (
        "2021-02-09T23:59:59.999Z",  # d1
        "2021-02-10T00:00:00.000Z",  # d2
        "2021-02-10T12:00:00.000Z",  # d3
        "2021-02-10T23:59:59.999Z",  # d4
    ):
        w.deploy(e1, finished)
    w.deploy(e1, "2021-02-10T13:00:00Z", status="failed")  # d5
    w.deploy(e1, "2021-02-10T14:00:00Z", status="canceled")  # d6
    created = at("2021-02-10T15:00:00Z")
    for i, status in enumerate(("running", "created", "blocked", "skipped")):  # d7–d10
        dep = w.deploy(e1, created + timedelta(minutes=30 * i), status=status)
        dep.created_at = created + timedelta(minutes=30 * i)  # job never finished
    w.deploy(e1, "2021-02-11T00:00:00.000Z")  # d11
    w.deploy(e2, "2021-02-10T12:00:00Z")  # d12, other project


S11 = Scenario(
    "S11",
    build_s11,
    (
        Case("S11.1", project(111),
             "metric=deployment_frequency&start_date=2021-02-09&end_date=2021-02-11", RITA, 200,
             '[{"date":"2021-02-09","value":1},{"date":"2021-02-10","value":3},'
             '{"date":"2021-02-11","value":1}]'),
        Case("S11.2", project(111),
             "metric=lead_time_for_changes&start_date=2021-02-09&end_date=2021-02-11", RITA, 200,
             '[{"date":"2021-02-09","value":null},{"date":"2021-02-10","value":null},'
             '{"date":"2021-02-11","value":null}]'),
        Case("S11.3", project(111),
             "metric=deployment_frequency&start_date=2021-02-10&end_date=2021-02-11", RITA, 200,
             '[{"date":"2021-02-10","value":3},{"date":"2021-02-11","value":1}]'),
    ),
)  # fmt: skip


# ---- S12 — finish-time source, stopped environment, stored tier -----------------------------


def build_s12(w: World) -> None:
    g = top_group(w, 120, "s12")
    p = w.add_project(121, "app", g)
    e1 = w.add_environment(p, "production", "production", id=1, state="stopped")
    e2 = w.add_environment(p, "live", "staging", id=2)
    e3 = w.add_environment(p, "staging-copy", "production", id=3)
    # d1: the CI job finished before midnight, the deployment was updated after it
    w.deploy(e1, "2021-03-03T23:59:59Z", updated="2021-03-04T00:00:05Z")
    # d2: API deployment (`deployable: null`): its finish time is `updated_at`
    d2 = w.deploy(e1, "2021-03-02T10:00:00Z", api=True)
    d2.created_at = at("2021-03-01T10:00:00Z")
    w.deploy(e3, "2021-03-04T10:00:00Z")  # d3
    w.deploy(e2, "2021-03-05T10:00:00Z")  # d4


_S12_Q = "metric=deployment_frequency&start_date=2021-03-01&end_date=2021-03-05"
S12 = Scenario(
    "S12",
    build_s12,
    (
        Case("S12.1", project(121), _S12_Q, RITA, 200,
             '[{"date":"2021-03-02","value":1},{"date":"2021-03-03","value":1},'
             '{"date":"2021-03-04","value":1}]'),
        Case("S12.2", project(121), f"{_S12_Q}&environment_tiers[]=staging", RITA, 200,
             '[{"date":"2021-03-05","value":1}]'),
    ),
)  # fmt: skip


# ---- S13 — lead time per row ----------------------------------------------------------------


def build_s13(w: World) -> None:
    g = top_group(w, 130, "s13")
    p = w.add_project(131, "app", g)
    e1 = w.add_environment(p, "production", "production")
    e2 = w.add_environment(p, "staging", "staging")
    plan: list[tuple[Environment, str, list[str | None]]] = [
        (e1, "2021-03-10T12:00:00Z",  # d1
         ["2021-03-09T12:00:00Z", "2021-03-08T12:00:00Z", "2021-03-05T12:00:00Z"]),
        (e1, "2021-03-11T12:00:00Z", ["2021-03-11T11:59:59Z", "2021-03-11T11:59:56Z"]),  # d2
        (e1, "2021-03-12T12:00:00Z", ["2021-03-12T11:59:59Z", "2021-03-12T11:59:54Z"]),  # d3
        (e1, "2021-03-13T12:00:00Z", ["2021-03-13T12:00:30Z", None]),  # d4
        (e1, "2021-03-14T12:00:00Z", [None]),  # d5
        (e1, "2021-03-15T10:00:00Z",  # d6
         ["2021-03-15T09:59:50Z", "2021-03-15T09:59:40Z", "2021-03-15T09:59:30Z"]),
        (e1, "2021-03-15T14:00:00Z", ["2021-03-15T13:43:20Z"]),  # d7
        (e1, "2021-03-16T12:00:00.700Z", ["2021-03-16T12:00:00.000Z"]),  # d8
        (e2, "2021-03-15T09:00:00Z", ["2021-03-15T08:00:00Z"]),  # d9
    ]  # fmt: skip
    for env, finished, mrs in plan:
        w.deploy(env, finished, mrs=list(mrs))
    # merged, but listed by no deployment: must not count
    w.add_merge_request(p.id, at("2021-03-09T12:00:00Z"))


_S13_W = "start_date=2021-03-10&end_date=2021-03-31"
_S13_DAILY = (
    '[{"date":"2021-03-10","value":172800.0},{"date":"2021-03-11","value":2.0},'
    '{"date":"2021-03-12","value":4.0},{"date":"2021-03-13","value":0.0},'
    '{"date":"2021-03-14","value":null},{"date":"2021-03-15","value":25.0},'
    '{"date":"2021-03-16","value":1.0}]'
)
_S13_ROWS = [
    ("S13.1", f"metric=lead_time_for_changes&{_S13_W}", _S13_DAILY),
    ("S13.2", f"metric=lead_time_for_changes&interval=monthly&{_S13_W}",
     '[{"date":"2021-03-01","value":3.0}]'),
    ("S13.3", f"metric=lead_time_for_changes&interval=all&{_S13_W}",
     '[{"date":null,"value":3.0}]'),
    ("S13.4", f"metric=lead_time_for_changes&{BOTH}&{_S13_W}",
     _S13_DAILY.replace('{"date":"2021-03-15","value":25.0}',
                        '{"date":"2021-03-15","value":1812.5}')),
    ("S13.5", f"metric=lead_time_for_changes&interval=all&{BOTH}&{_S13_W}",
     '[{"date":null,"value":4.0}]'),
    ("S13.6", f"metric=lead_time_for_changes&environment_tiers[]=staging&{_S13_W}",
     '[{"date":"2021-03-15","value":3600.0}]'),
]  # fmt: skip

S13 = Scenario(
    "S13",
    build_s13,
    tuple(Case(cid, project(131), q, RITA, 200, body) for cid, q, body in _S13_ROWS),
)


# ---- S14 — time to restore service per row --------------------------------------------------


def build_s14(w: World) -> None:
    g = top_group(w, 140, "s14")
    p141 = w.add_project(141, "app", g)
    p142 = w.add_project(142, "other", g)  # not requested
    w.add_environment(p141, "production", "production")
    e2 = w.add_environment(p141, "staging", "staging")
    w.add_environment(p142, "production", "production")
    w.incident(p141, "2021-04-13T12:00:00Z", "2021-04-20T12:00:00Z")  # #1, 7 d
    w.incident(p141, "2021-04-15T12:00:00Z", "2021-04-20T12:00:00Z")  # #2, 5 d
    w.incident(p141, "2021-04-17T12:00:00Z", "2021-04-20T12:00:00Z")  # #3, 3 d
    w.incident(p141, "2021-04-19T12:00:00Z", "2021-04-20T12:00:00Z")  # #4, 1 d
    w.incident(p141, "2021-04-10T12:00:00Z")  # #5, open
    w.incident(p141, "2021-04-16T00:00:00Z", "2021-04-20T06:00:00Z", issue_type="issue")  # #6
    w.incident(p142, "2021-04-14T12:00:00Z", "2021-04-20T12:00:00Z")  # #7, other project
    w.incident(p141, "2021-04-18T12:00:00Z", "2021-04-21T00:30:00Z")  # #8, closes D+1
    w.incident(p141, "2021-04-11T12:00:00Z")  # #9, reopened: open, closed_at null
    w.deploy(e2, "2021-04-20T10:00:00Z")


_S14_D = "start_date=2021-04-20&end_date=2021-04-21"
_S14_ROWS = [
    ("S14.1", f"metric=time_to_restore_service&{_S14_D}",
     '[{"date":"2021-04-20","value":345600.0},{"date":"2021-04-21","value":217800.0}]'),
    ("S14.2", f"metric=time_to_restore_service&{_S14_D}&interval=all",
     '[{"date":null,"value":281700.0}]'),
    ("S14.3", f"metric=time_to_restore_service&environment_tiers[]=staging&{_S14_D}",
     '[{"date":"2021-04-20","value":null}]'),
    ("S14.4", f"metric=change_failure_rate&{_S14_D}",
     '[{"date":"2021-04-20","value":0.0},{"date":"2021-04-21","value":0.0}]'),
    ("S14.5", f"metric=deployment_frequency&{_S14_D}",
     '[{"date":"2021-04-20","value":0},{"date":"2021-04-21","value":0}]'),
    ("S14.6", "metric=time_to_restore_service&start_date=2021-04-10&end_date=2021-04-21",
     '[{"date":"2021-04-10","value":null},{"date":"2021-04-11","value":null},'
     '{"date":"2021-04-13","value":null},{"date":"2021-04-15","value":null},'
     '{"date":"2021-04-17","value":null},{"date":"2021-04-18","value":null},'
     '{"date":"2021-04-19","value":null},{"date":"2021-04-20","value":345600.0},'
     '{"date":"2021-04-21","value":217800.0}]'),
    ("S14.7", "metric=change_failure_rate&interval=all&start_date=2021-04-10&end_date=2021-04-21",
     '[{"date":null,"value":7.0}]'),
]  # fmt: skip

S14 = Scenario(
    "S14",
    build_s14,
    tuple(Case(cid, project(141), q, RITA, 200, body) for cid, q, body in _S14_ROWS),
)


# ---- S15 — incidents counted for change failure rate ----------------------------------------


def build_s15(w: World) -> None:
    g = top_group(w, 150, "s15")
    p151 = w.add_project(151, "app", g)
    p152 = w.add_project(152, "other", g)  # not requested
    w.add_environment(p151, "production", "production")
    w.add_environment(p151, "staging", "staging")
    w.add_environment(p152, "production", "production")
    for created in (
        "2021-06-15T00:00:00.000Z",
        "2021-06-15T01:00:00Z",
        "2021-06-15T23:59:59.999Z",
        "2020-06-15T10:00:00Z",  # a year before
        "2022-06-15T10:00:00Z",  # a year after
    ):
        w.incident(p151, created)
    w.incident(p151, "2021-06-15T10:00:00Z", issue_type="issue")
    w.incident(p152, "2021-06-15T10:00:00Z")


_S15_W = "start_date=2021-06-14&end_date=2021-06-16"
_S15_ROWS = [
    ("S15.1", f"metric=change_failure_rate&{_S15_W}", '[{"date":"2021-06-15","value":3.0}]'),
    ("S15.2", f"metric=deployment_frequency&{_S15_W}", '[{"date":"2021-06-15","value":0}]'),
    ("S15.3", f"metric=deployment_frequency&interval=all&{_S15_W}",
     '[{"date":null,"value":0.0}]'),
    ("S15.4", f"metric=lead_time_for_changes&{_S15_W}", '[{"date":"2021-06-15","value":null}]'),
    ("S15.5", f"metric=change_failure_rate&environment_tiers[]=staging&{_S15_W}", "[]"),
    ("S15.6", f"metric=change_failure_rate&interval=all&environment_tiers[]=staging&{_S15_W}",
     '[{"date":null,"value":null}]'),
    ("S15.7",
     f"metric=change_failure_rate&interval=monthly&environment_tiers[]=staging&{_S15_W}", "[]"),
]  # fmt: skip

S15 = Scenario(
    "S15",
    build_s15,
    tuple(Case(cid, project(151), q, RITA, 200, body) for cid, q, body in _S15_ROWS),
)
