"""The extension endpoints against the DORA API they explain, over real HTTP."""

from __future__ import annotations

import json

import pytest

from proxy.errors import BAD_TIERS, RANGE_TOO_LONG, START_NOT_BEFORE_END
from tests.team_world import METRICS, NOW, WINDOW, build_team

RITA = {"PRIVATE-TOKEN": "tok-rita"}


async def api_all(stack, container: str, ref: str, query: str) -> dict[str, object]:
    values = {}
    for metric in METRICS:
        status, body = await stack.get(
            f"/api/v4/{container}/{ref}/dora/metrics?metric={metric}&interval=all&{query}", RITA
        )
        assert status == 200, body
        values[metric] = json.loads(body)[0]["value"]
    return values


@pytest.mark.parametrize(("container", "ref"), [("projects", "41"), ("groups", "team")])
async def test_facts_counts_equal_the_metrics_they_explain(world, start_stack, container, ref):
    build_team(world)
    stack = await start_stack(world, now=NOW)
    status, body = await stack.get(f"/-/api/v1/{container}/{ref}/dora/facts?{WINDOW}", RITA)
    assert status == 200, body
    facts = json.loads(body)
    api = await api_all(stack, container, ref, WINDOW)
    days = 60  # 2024-02-01 .. 2024-03-31
    assert len(facts["deployments"]) / days == api["deployment_frequency"]
    assert {d["tier"] for d in facts["deployments"]} == {"production"}
    created = [i for i in facts["incidents"] if i["created_in_window"]]
    assert len(created) / len(facts["deployments"]) == api["change_failure_rate"]
    assert len(facts["merge_requests"]) == 2 * len(facts["deployments"])
    mr = facts["merge_requests"][0]
    assert mr["iid"] is not None and mr["web_url"].startswith("http://gitlab.example.com/")
    assert mr["lead_time_seconds"] > 0
    deployment = facts["deployments"][0]
    # The job's page on the upstream GitLab (the fake's job ids are 5 000 000 + deployment id).
    assert deployment["web_url"] == (
        f"{stack.fake.url}/{deployment['project']}/-/jobs/{5_000_000 + deployment['id']}"
    )
    incident = facts["incidents"][0]
    assert incident["web_url"].endswith(f"/-/issues/{incident['iid']}")


@pytest.mark.parametrize(("container", "ref"), [("projects", "team%2Fweb"), ("groups", "40")])
async def test_summary_values_are_the_apis(world, start_stack, container, ref):
    build_team(world)
    stack = await start_stack(world, now=NOW)
    query = f"{WINDOW}&environment_tiers[]=production&environment_tiers[]=staging"
    status, body = await stack.get(f"/-/api/v1/{container}/{ref}/dora/summary?{query}", RITA)
    assert status == 200, body
    summary = json.loads(body)
    api = await api_all(stack, container, ref, query)
    assert {m: summary["metrics"][m]["value"] for m in METRICS} == api
    assert summary["environment_tiers"] == ["production", "staging"]
    lead = summary["metrics"]["lead_time_for_changes"]
    assert lead["median"] <= lead["p75"] <= lead["p90"]
    assert all(
        summary["metrics"][m]["level"] in {"elite", "high", "medium", "low"} for m in METRICS
    )
    if container == "groups":
        projects = {p["full_path"]: p["values"] for p in summary["projects"]}
        assert set(projects) == {"team/api", "team/web"}
        for path, values in projects.items():
            assert values == await api_all(stack, "projects", path.replace("/", "%2F"), query)


@pytest.mark.parametrize(
    ("path", "headers", "status", "body"),
    [
        ("projects/42", {"PRIVATE-TOKEN": "tok-devon"}, 200, None),
        (
            "groups/40",
            {"PRIVATE-TOKEN": "tok-devon"},
            401,
            "You do not have permission to access dora metrics.",
        ),
        (
            "projects/41",
            {"PRIVATE-TOKEN": "tok-gus"},
            401,
            "You do not have permission to access dora metrics.",
        ),
        ("projects/41", {"PRIVATE-TOKEN": "tok-nina"}, 404, "404 Project Not Found"),
        ("groups/40", {}, 404, "404 Group Not Found"),
        ("projects/999999", RITA, 404, "404 Project Not Found"),
        ("groups/999999", RITA, 404, "404 Group Not Found"),
        ("projects/41", {"PRIVATE-TOKEN": "tok-revoked"}, 401, "401 Unauthorized"),
    ],
)
@pytest.mark.parametrize("endpoint", ["facts", "summary"])
async def test_permission_and_404_rules_are_the_apis(
    world, start_stack, path, headers, status, body, endpoint
):
    build_team(world)
    stack = await start_stack(world, now=NOW)
    got, text = await stack.get(f"/-/api/v1/{path}/dora/{endpoint}?{WINDOW}", headers)
    same, api_text = await stack.get(
        f"/api/v4/{path}/dora/metrics?metric=deployment_frequency&{WINDOW}", headers
    )
    assert got == same == status
    if body is not None:
        assert json.loads(text) == json.loads(api_text) == {"message": body}


@pytest.mark.parametrize(
    ("query", "body"),
    [
        (
            "start_date=2024-03-01&end_date=2024-02-01",
            {"message": START_NOT_BEFORE_END},
        ),
        ("start_date=nope", {"error": "start_date is invalid"}),
        (
            "start_date=2023-01-01&end_date=2024-03-01",
            {"message": RANGE_TOO_LONG},
        ),
        ("environment_tiers[]=prod", {"message": BAD_TIERS}),
        ("private_token=tok-rita", None),
    ],
)
async def test_bad_parameters_get_the_apis_errors(world, start_stack, query, body):
    build_team(world)
    stack = await start_stack(world, now=NOW)
    status, text = await stack.get(f"/-/api/v1/projects/41/dora/summary?{query}", RITA)
    api_status, api_text = await stack.get(
        f"/api/v4/projects/41/dora/metrics?metric=deployment_frequency&{query}", RITA
    )
    assert (status, json.loads(text)) == (api_status, json.loads(api_text))
    assert status == 400
    if body is not None:
        assert json.loads(text) == body


async def test_a_second_request_is_served_from_the_facts_cache(world, start_stack):
    build_team(world)
    stack = await start_stack(world, now=NOW)
    await api_all(stack, "projects", "41", WINDOW)
    before = len(stack.fake.data_calls())
    status, _ = await stack.get(f"/-/api/v1/projects/41/dora/facts?{WINDOW}", RITA)
    assert status == 200
    assert len(stack.fake.data_calls()) == before  # the API's requests filled every fact


async def test_levels_endpoint_serves_the_thresholds_in_force(world, start_stack, tmp_path):
    own = json.loads((__import__("proxy.explain", fromlist=["x"]).LEVELS_FILE).read_text())
    own["year"] = 1999
    path = tmp_path / "levels.json"
    path.write_text(json.dumps(own))
    stack = await start_stack(world, now=NOW, dora_levels_file=path)
    status, body = await stack.get("/-/api/v1/dora/levels")
    assert status == 200
    assert json.loads(body)["year"] == 1999


@pytest.mark.parametrize("endpoint", ["facts", "summary"])
async def test_an_answer_is_cached_like_the_apis_after_the_permission_check(
    world, start_stack, endpoint
):
    build_team(world)
    stack = await start_stack(world, now=NOW)
    url = f"/-/api/v1/groups/40/dora/{endpoint}?{WINDOW}"
    first = await stack.client.get(url, headers=RITA)
    assert (first.status, first.headers["X-Dora-Proxy-Cache"]) == (200, "miss")
    calls = len(stack.fake.data_calls())
    again = await stack.client.get(url, headers=RITA)
    assert (again.status, again.headers["X-Dora-Proxy-Cache"]) == (200, "hit")
    assert await again.read() == await first.read()
    assert len(stack.fake.data_calls()) == calls
    # A cached answer is never served to a caller who may not read the group.
    status, body = await stack.get(url, {"PRIVATE-TOKEN": "tok-devon"})
    assert (status, json.loads(body)) == (
        401,
        {"message": "You do not have permission to access dora metrics."},
    )
