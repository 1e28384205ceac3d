"""GraphQL DORA (spec §11): G1–G19 on the S16/S17 fixtures, then the document forms (aliases,
variables, fragments, several metrics, tiers), the split of mixed documents, errors, and the
pass-through of everything else. Real HTTP: the proxy app in front of the fake GitLab, whose
own /api/graphql answers the non-DORA fields.

Full paths are the fixtures' own: S16's project 161 is `s16/app` (the spec's `g160/p161`),
S17's group 170 is `s17` with projects `s17/app` (171) and `s17/svc` (172).
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest
import structlog

from proxy.demo.graphql_routes import NOT_ALLOWED
from proxy.demo.world import GUEST
from proxy.telemetry.access_log import REQUEST_LOG
from tests.scenarios.s16_s21 import S16, S17

RITA = {"PRIVATE-TOKEN": "tok-rita"}
G1_ARGS = 'startDate: "2021-02-01", endDate: "2021-05-01"'
W = 'startDate: "2020-11-01", endDate: "2021-02-01"'
RANGE_TOO_LONG = "Date range must be shorter than 180 days."
START_NOT_BEFORE_END = "The start date must be earlier than the end date."
BAD_METRIC = (
    "The metric must be one of deployment_frequency,lead_time_for_changes,"
    "time_to_restore_service,change_failure_rate."
)


async def post(stack, query: str, variables=None, headers=RITA, **extra) -> tuple[int, str]:
    payload: dict[str, Any] = {"query": query, **extra}
    if variables is not None:
        payload["variables"] = variables
    response = await stack.client.post("/api/graphql", json=payload, headers=headers)
    return response.status, await response.text()


async def answer(stack, query: str, variables=None, headers=RITA) -> dict[str, Any]:
    status, text = await post(stack, query, variables, headers)
    assert status == 200, text
    return json.loads(text)


def project_metrics(path: str, args: str, fields: str = "date deploymentFrequency") -> str:
    return f'{{ project(fullPath: "{path}") {{ dora {{ metrics({args}) {{ {fields} }} }} }} }}'


def group_metrics(path: str, args: str, fields: str = "date deploymentFrequency") -> str:
    return f'{{ group(fullPath: "{path}") {{ dora {{ metrics({args}) {{ {fields} }} }} }} }}'


def daily(start: str, end: str, values: dict[str, float], field="deploymentFrequency") -> list:
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return [{"date": d.isoformat(), field: values.get(d.isoformat())} for d in days]


def metrics_of(body: dict[str, Any], root: str = "project") -> Any:
    return body["data"][root]["dora"]["metrics"]


S16_APRIL = {
    "2021-04-01": 17.0,
    "2021-04-02": 16.0,
    "2021-04-03": 15.0,
    "2021-04-04": 14.0,
    "2021-04-05": 13.0,
    "2021-04-06": 12.0,
    "2021-04-07": 0.0,
}
G1_VALUES = {"2021-03-01": 18.0, **S16_APRIL}
S17_VALUES = {
    "2021-01-01": 3.0,
    "2021-01-02": 3.0,
    "2021-01-03": 2.0,
    "2021-01-04": 2.0,
    "2021-01-05": 1.0,
    "2021-01-06": 1.0,
    "2021-01-07": 0.0,
}


@pytest.fixture
async def s16(start_stack):
    world = S16.world()
    world.add_member(world.users[13], world.groups[160], GUEST)  # gus: Guest (G10)
    return await start_stack(world)


@pytest.fixture
async def s17(start_stack):
    return await start_stack(S17.world())


# ---- G1–G11: S16 --------------------------------------------------------------------------------
async def test_g1_daily_rows_filled_with_nulls(s16) -> None:
    status, text = await post(s16, project_metrics("s16/app", G1_ARGS))
    assert status == 200
    rows = metrics_of(json.loads(text))
    assert len(rows) == 90
    assert rows == daily("2021-02-01", "2021-05-01", G1_VALUES)
    # the raw text: integral Floats written with a decimal point
    assert '{"date":"2021-03-01","deploymentFrequency":18.0}' in text
    assert '{"date":"2021-04-07","deploymentFrequency":0.0}' in text
    assert '{"date":"2021-02-01","deploymentFrequency":null}' in text


async def test_g2_monthly_filled_from_the_start_month(s16) -> None:
    rows = metrics_of(
        await answer(s16, project_metrics("s16/app", f"{G1_ARGS}, interval: MONTHLY"))
    )
    assert rows == [
        {"date": "2021-02-01", "deploymentFrequency": None},
        {"date": "2021-03-01", "deploymentFrequency": 0.5806451612903226},
        {"date": "2021-04-01", "deploymentFrequency": 2.9},
        {"date": "2021-05-01", "deploymentFrequency": None},
    ]


async def test_g3_all_is_one_row_dated_null(s16) -> None:
    rows = metrics_of(await answer(s16, project_metrics("s16/app", f"{G1_ARGS}, interval: ALL")))
    assert rows == [{"date": None, "deploymentFrequency": 1.1666666666666667}]


async def test_g4_window_starting_mid_april(s16) -> None:
    args = 'startDate: "2021-04-03", endDate: "2021-05-01"'
    rows = metrics_of(await answer(s16, project_metrics("s16/app", args)))
    assert len(rows) == 29
    assert rows == daily(
        "2021-04-03",
        "2021-05-01",
        {k: v for k, v in S16_APRIL.items() if k >= "2021-04-03"},
    )


async def test_g5_window_ending_on_april_3(s16) -> None:
    args = 'startDate: "2021-02-01", endDate: "2021-04-03"'
    rows = metrics_of(await answer(s16, project_metrics("s16/app", args)))
    assert len(rows) == 62
    assert rows == daily(
        "2021-02-01",
        "2021-04-03",
        {"2021-03-01": 18.0, "2021-04-01": 17.0, "2021-04-02": 16.0, "2021-04-03": 15.0},
    )


async def test_g6_three_days(s16) -> None:
    args = 'startDate: "2021-04-01", endDate: "2021-04-03"'
    rows = metrics_of(await answer(s16, project_metrics("s16/app", args)))
    assert [row["deploymentFrequency"] for row in rows] == [17.0, 16.0, 15.0]


@pytest.mark.parametrize(
    ("case", "args", "message"),
    [
        ("G7", 'startDate: "2020-01-01", endDate: "2021-05-01"', RANGE_TOO_LONG),
        ("G8", 'startDate: "2021-04-01", endDate: "2021-03-01"', START_NOT_BEFORE_END),
    ],
)
async def test_g7_g8_validation_errors_carry_the_rest_message(s16, case, args, message) -> None:
    body = await answer(s16, project_metrics("s16/app", args))
    assert body["data"] == {"project": {"dora": {"metrics": None}}}, case
    [error] = body["errors"]
    assert error["message"] == message
    assert error["path"] == ["project", "dora", "metrics"]


async def test_g9_production_and_staging(s16) -> None:
    args = f"{G1_ARGS}, environmentTiers: [PRODUCTION, STAGING]"
    rows = metrics_of(await answer(s16, project_metrics("s16/app", args)))
    assert rows == daily("2021-02-01", "2021-05-01", {**G1_VALUES, "2021-04-01": 27.0})


async def test_g10_a_guest_gets_null_metrics_without_error(s16) -> None:
    body = await answer(
        s16, project_metrics("s16/app", G1_ARGS), headers={"PRIVATE-TOKEN": "tok-gus"}
    )
    assert body == {"data": {"project": {"dora": {"metrics": None}}}}


async def test_g11_without_date_no_filling(s16) -> None:
    rows = metrics_of(await answer(s16, project_metrics("s16/app", G1_ARGS, "deploymentFrequency")))
    assert [row["deploymentFrequency"] for row in rows] == [
        18.0,
        17.0,
        16.0,
        15.0,
        14.0,
        13.0,
        12.0,
        0.0,
    ]
    assert all(list(row) == ["deploymentFrequency"] for row in rows)


# ---- G12–G19: S17 -------------------------------------------------------------------------------
async def test_g12_project_daily_filled(s17) -> None:
    rows = metrics_of(await answer(s17, project_metrics("s17/app", W)))
    assert len(rows) == 93
    assert rows == daily("2020-11-01", "2021-02-01", S17_VALUES)


async def test_g13_project_without_date(s17) -> None:
    rows = metrics_of(await answer(s17, project_metrics("s17/app", W, "deploymentFrequency")))
    assert [r["deploymentFrequency"] for r in rows] == [3.0, 3.0, 2.0, 2.0, 1.0, 1.0, 0.0]


async def test_g14_two_metrics_all(s17) -> None:
    fields = "date deploymentFrequency changeFailureRate"
    _status, text = await post(s17, project_metrics("s17/app", f"{W}, interval: ALL", fields))
    assert metrics_of(json.loads(text)) == [
        {"date": None, "deploymentFrequency": 0.12903225806451613, "changeFailureRate": 4.0}
    ]
    assert '"changeFailureRate":4.0' in text


async def test_g15_group_daily_filled(s17) -> None:
    rows = metrics_of(await answer(s17, group_metrics("s17", W)), "group")
    assert rows == daily("2020-11-01", "2021-02-01", {**S17_VALUES, "2021-01-09": 4.0})


async def test_g16_group_without_date(s17) -> None:
    rows = metrics_of(await answer(s17, group_metrics("s17", W, "deploymentFrequency")), "group")
    assert [r["deploymentFrequency"] for r in rows] == [3.0, 3.0, 2.0, 2.0, 1.0, 1.0, 0.0, 4.0]


async def test_g17_group_two_metrics_all(s17) -> None:
    fields = "date deploymentFrequency changeFailureRate"
    _status, text = await post(s17, group_metrics("s17", f"{W}, interval: ALL", fields))
    assert metrics_of(json.loads(text), "group") == [
        {"date": None, "deploymentFrequency": 0.17204301075268819, "changeFailureRate": 3.0}
    ]
    assert '"changeFailureRate":3.0' in text


async def test_g18_group_projects_with_rows_in_the_window(s17) -> None:
    query = (
        '{ group(fullPath: "s17") { dora { projects(startDate: "2021-01-07", '
        'endDate: "2021-01-08") { nodes { id name fullPath } } } } }'
    )
    body = await answer(s17, query)
    assert body == {
        "data": {
            "group": {
                "dora": {
                    "projects": {
                        "nodes": [
                            {"id": "gid://gitlab/Project/171", "name": "app", "fullPath": "s17/app"}
                        ]
                    }
                }
            }
        }
    }


async def test_g19_group_projects_range_too_long(s17) -> None:
    query = (
        '{ group(fullPath: "s17") { dora { projects(startDate: "2020-01-09", '
        'endDate: "2021-02-01") { nodes { fullPath } } } } }'
    )
    body = await answer(s17, query)
    assert body["data"] == {"group": {"dora": {"projects": None}}}
    [error] = body["errors"]
    assert error["message"] == "maximum date range is 180 days."
    assert error["path"] == ["group", "dora", "projects"]


# ---- document forms -----------------------------------------------------------------------------
async def test_aliases_everywhere(s16) -> None:
    query = (
        '{ app: project(fullPath: "s16/app") { d: dora { m: metrics(startDate: "2021-04-01", '
        'endDate: "2021-04-02") { day: date df: deploymentFrequency } } } }'
    )
    body = await answer(s16, query)
    assert body == {
        "data": {
            "app": {
                "d": {"m": [{"day": "2021-04-01", "df": 17.0}, {"day": "2021-04-02", "df": 16.0}]}
            }
        }
    }


async def test_variables_with_enums_and_dates(s16) -> None:
    query = """
      query Dora($path: ID!, $start: Date!, $end: Date, $interval: DoraMetricBucketingInterval,
                 $tiers: [DeploymentTier!]) {
        project(fullPath: $path) {
          dora { metrics(startDate: $start, endDate: $end, interval: $interval,
                         environmentTiers: $tiers) { date deploymentFrequency } }
        }
      }"""
    variables = {
        "path": "s16/app",
        "start": "2021-02-01",
        "end": "2021-05-01",
        "interval": "MONTHLY",
        "tiers": ["PRODUCTION", "STAGING"],
    }
    rows = metrics_of(await answer(s16, query, variables))
    assert rows[2] == {"date": "2021-04-01", "deploymentFrequency": 3.2333333333333334}  # S16.10
    status, text = await post(s16, query, {**variables, "start": "01/02/2021"})
    assert status == 200
    assert "start" in json.loads(text)["errors"][0]["message"]


async def test_named_and_inline_fragments_and_typenames(s16) -> None:
    query = """
      query { __typename
        project(fullPath: "s16/app") { ...P } }
      fragment P on Project { __typename dora { __typename ... on Dora {
        metrics(startDate: "2021-03-31", endDate: "2021-04-01") { ...Row } } } }
      fragment Row on DoraMetric { __typename date ... on DoraMetric { deploymentFrequency } }
    """
    body = await answer(s16, query)
    assert body == {
        "data": {
            "__typename": "Query",
            "project": {
                "__typename": "Project",
                "dora": {
                    "__typename": "Dora",
                    "metrics": [
                        {
                            "__typename": "DoraMetric",
                            "date": "2021-03-31",
                            "deploymentFrequency": None,
                        },
                        {
                            "__typename": "DoraMetric",
                            "date": "2021-04-01",
                            "deploymentFrequency": 17.0,
                        },
                    ],
                },
            },
        }
    }


async def test_four_metrics_in_one_query_each_a_rest_answer(s16) -> None:
    fields = "date deploymentFrequency leadTimeForChanges timeToRestoreService changeFailureRate"
    rows = metrics_of(
        await answer(s16, project_metrics("s16/app", f"{G1_ARGS}, interval: ALL", fields))
    )
    expected = {"date": None}
    for field, metric in (
        ("deploymentFrequency", "deployment_frequency"),
        ("leadTimeForChanges", "lead_time_for_changes"),
        ("timeToRestoreService", "time_to_restore_service"),
        ("changeFailureRate", "change_failure_rate"),
    ):
        _status, text = await s16.get(
            f"/api/v4/projects/161/dora/metrics?metric={metric}&interval=all"
            "&start_date=2021-02-01&end_date=2021-05-01",
            RITA,
        )
        value = json.loads(text)[0]["value"]
        expected[field] = None if value is None else float(value)
    assert rows == [expected]


async def test_graphql_reuses_the_rest_answers_cache(s16) -> None:
    query = project_metrics("s16/app", G1_ARGS)
    await answer(s16, query)
    s16.fake.reset_calls()
    response = await s16.client.get(
        "/api/v4/projects/161/dora/metrics?metric=deployment_frequency&start_date=2021-02-01&end_date=2021-05-01",
        headers=RITA,
    )
    assert response.headers["X-Dora-Proxy-Cache"] == "hit"
    assert s16.fake.data_calls() == []


async def test_get_with_query_string(s16) -> None:
    query = project_metrics("s16/app", 'startDate: "2021-04-01", endDate: "2021-04-02"')
    response = await s16.client.get(f"/api/graphql?{urlencode({'query': query})}", headers=RITA)
    assert response.status == 200
    assert metrics_of(await response.json()) == [
        {"date": "2021-04-01", "deploymentFrequency": 17.0},
        {"date": "2021-04-02", "deploymentFrequency": 16.0},
    ]


async def test_default_dates_are_rest_defaults(start_stack) -> None:
    from datetime import UTC, datetime

    stack = await start_stack(S16.world(), now=datetime(2021, 5, 1, 12, tzinfo=UTC))
    query = '{ project(fullPath: "s16/app") { dora { metrics { date deploymentFrequency } } } }'
    rows = metrics_of(await answer(stack, query))
    assert rows[0]["date"] == "2021-02-01" and rows[-1]["date"] == "2021-05-01"


# ---- errors -------------------------------------------------------------------------------------
async def test_date_without_a_metric_is_the_metric_error(s16) -> None:
    body = await answer(s16, project_metrics("s16/app", G1_ARGS, "date"))
    assert body["data"] == {"project": {"dora": {"metrics": None}}}
    assert [e["message"] for e in body["errors"]] == [BAD_METRIC]


async def test_an_unknown_argument_value_fails_validation(s16) -> None:
    status, text = await post(s16, project_metrics("s16/app", f"{G1_ARGS}, interval: WEEKLY"))
    body = json.loads(text)
    assert status == 200 and "data" not in body
    assert "WEEKLY" in body["errors"][0]["message"]


async def test_invisible_project_and_anonymous_caller_get_null(s16) -> None:
    body = await answer(s16, project_metrics("s16/nothing", G1_ARGS))
    assert body == {"data": {"project": None}}
    body = await answer(s16, project_metrics("s16/app", G1_ARGS), headers={})
    assert body == {"data": {"project": None}}
    body = await answer(
        s16, project_metrics("s16/app", G1_ARGS), headers={"PRIVATE-TOKEN": "tok-nina"}
    )
    assert body == {"data": {"project": None}}


async def test_a_revoked_token_is_a_401(s16) -> None:
    status, text = await post(
        s16, project_metrics("s16/app", G1_ARGS), headers={"PRIVATE-TOKEN": "tok-revoked"}
    )
    assert (status, json.loads(text)) == (401, {"message": "401 Unauthorized"})


async def test_upstream_down_is_a_502(s16) -> None:
    await s16.fake.close()
    status, text = await post(s16, project_metrics("s16/app", G1_ARGS))
    assert (status, json.loads(text)) == (502, {"message": "502 Bad Gateway"})


# ---- mixed documents and forwarding -------------------------------------------------------------
async def test_a_mixed_document_is_split_and_merged(s16) -> None:
    query = """
      query Mixed($path: ID!) {
        me: currentUser { username }
        project(fullPath: $path) {
          name
          fullPath
          dora { metrics(startDate: "2021-04-01", endDate: "2021-04-02") {
            date deploymentFrequency } }
        }
      }"""
    body = await answer(s16, query, {"path": "s16/app"})
    assert body == {
        "data": {
            "me": {"username": "rita"},
            "project": {
                "name": "app",
                "fullPath": "s16/app",
                "dora": {
                    "metrics": [
                        {"date": "2021-04-01", "deploymentFrequency": 17.0},
                        {"date": "2021-04-02", "deploymentFrequency": 16.0},
                    ]
                },
            },
        }
    }
    [sent] = s16.fake.graphql_calls
    assert "dora" not in sent["query"] and "name" in sent["query"]
    assert sent["authenticated"] and sent["variables"] == {"path": "s16/app"}


async def test_a_mixed_document_with_fragments_keeps_each_half_valid(s16) -> None:
    query = """
      query($start: Date, $path: ID!) { project(fullPath: $path) { ...Both } }
      fragment Both on Project { id name dora { metrics(startDate: $start, endDate: "2021-04-01") {
        date deploymentFrequency } } }
    """
    body = await answer(s16, query, {"path": "s16/app", "start": "2021-03-31"})
    assert body == {
        "data": {
            "project": {
                "id": "gid://gitlab/Project/161",
                "name": "app",
                "dora": {
                    "metrics": [
                        {"date": "2021-03-31", "deploymentFrequency": None},
                        {"date": "2021-04-01", "deploymentFrequency": 17.0},
                    ]
                },
            }
        }
    }
    [sent] = s16.fake.graphql_calls
    assert "$start" not in sent["query"]  # an unused variable would fail upstream validation


async def test_errors_of_both_halves_are_kept_with_paths(s16) -> None:
    query = """{
      project(fullPath: "s16/app") { name
        dora { metrics(startDate: "2020-01-01", endDate: "2021-05-01") { deploymentFrequency } } }
      other: project(fullPath: "s16/nothing") { name }
    }"""
    body = await answer(s16, query)
    assert body["data"] == {"project": {"name": "app", "dora": {"metrics": None}}, "other": None}
    assert body["errors"] == [
        {
            "message": RANGE_TOO_LONG,
            "locations": [{"line": 3, "column": 16}],
            "path": ["project", "dora", "metrics"],
        }
    ]
    # an upstream field error comes back with its path, next to ours
    query = """{ project(fullPath: "s16/app") { repositorySize
        dora { metrics(startDate: "2021-04-01", endDate: "2021-03-01") { date } } } }"""
    body = await answer(s16, query)
    assert body["data"] == {"project": {"repositorySize": None, "dora": {"metrics": None}}}
    assert [(e["message"], e["path"]) for e in body["errors"]] == [
        (NOT_ALLOWED, ["project", "repositorySize"]),
        (START_NOT_BEFORE_END, ["project", "dora", "metrics"]),
    ]


async def test_a_mixed_document_the_upstream_refuses_returns_its_errors(s16) -> None:
    query = '{ project(fullPath: "s16/app") { noSuchField dora { metrics { date } } } }'
    body = await answer(s16, query)
    assert "data" not in body
    assert "noSuchField" in body["errors"][0]["message"]


async def test_a_document_without_dora_is_forwarded_untouched(s16) -> None:
    raw = b'{"query":"query Me { currentUser { username } }","operationName":"Me","variables":{}}'
    response = await s16.client.post(
        "/api/graphql", data=raw, headers={**RITA, "Content-Type": "application/json"}
    )
    assert (response.status, await response.json()) == (
        200,
        {"data": {"currentUser": {"username": "rita"}}},
    )
    [sent] = s16.fake.graphql_calls
    assert sent["query"] == "query Me { currentUser { username } }"
    # introspection and a mutation likewise
    body = await answer(s16, "{ __schema { queryType { name } } }")
    assert body == {"data": {"__schema": {"queryType": {"name": "Query"}}}}
    body = await answer(s16, 'mutation { echo(text: "hi") }')
    assert body == {"data": {"echo": "hi"}}
    assert len(s16.fake.graphql_calls) == 3


async def test_pass_through_off_answers_dora_only(start_stack) -> None:
    stack = await start_stack(S16.world(), pass_through="off")
    rows = metrics_of(
        await answer(
            stack, project_metrics("s16/app", 'startDate: "2021-04-01", endDate: "2021-04-02"')
        )
    )
    assert rows == [
        {"date": "2021-04-01", "deploymentFrequency": 17.0},
        {"date": "2021-04-02", "deploymentFrequency": 16.0},
    ]
    status, text = await post(stack, "{ currentUser { username } }")
    assert (status, json.loads(text)) == (404, {"error": "404 Not Found"})
    assert stack.fake.graphql_calls == []


async def test_read_only_forwards_queries_and_refuses_mutations(start_stack) -> None:
    stack = await start_stack(S16.world(), pass_through="read-only")
    assert (await answer(stack, "{ currentUser { username } }"))["data"] == {
        "currentUser": {"username": "rita"}
    }
    status, text = await post(stack, 'mutation { echo(text: "hi") }')
    assert (status, json.loads(text)) == (405, {"error": "405 Not Allowed"})


async def test_the_request_log_line_counts_the_upstream_calls_of_every_metric(s16) -> None:
    fields = "date deploymentFrequency changeFailureRate"
    with structlog.testing.capture_logs() as events:
        await answer(s16, project_metrics("s16/app", G1_ARGS, fields))
        REQUEST_LOG.flush()
    [line] = [e for e in events if e["event"] == "request" and e["path"] == "/api/graphql"]
    kinds = line["upstream_calls_by_kind"]
    assert kinds["deployments"] >= 1 and kinds["project_issues"] >= 1 and kinds["user"] == 1
    assert line["upstream_calls"] == sum(kinds.values())


@pytest.mark.parametrize(
    "query",
    [
        "{ project(fullPath: " + '"s16/app") { dora { metrics { date } } ',  # unbalanced
        "{ a " * 3000 + "}" * 3000,  # nested past Python's recursion limit
        "query { project(fullPath: 1) { dora { metrics(interval: 3) { date } } } }",
    ],
)
async def test_malformed_documents_never_answer_500(s16, query: str) -> None:
    status, text = await post(s16, query)
    assert status in (200, 400), text
    assert json.loads(text)["errors"]


async def test_anonymous_on_a_public_project_sees_it_without_metrics(start_stack) -> None:
    world = S16.world()
    world.groups[160].visibility = "public"
    world.projects[161].visibility = "public"
    stack = await start_stack(world)
    body = await answer(stack, project_metrics("s16/app", G1_ARGS), headers={})
    assert body == {"data": {"project": {"dora": {"metrics": None}}}}
