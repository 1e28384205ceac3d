"""DORA values on /metrics: gauges equal the API's answers, refreshed in the background."""

from __future__ import annotations

import asyncio
import json
import time

from proxy.demo.world import REPORTER
from proxy.telemetry.dora_export import EXPORT, parse_targets
from tests.team_world import METRICS, NOW, build_team

TOKEN = "tok-rita"
GAUGES = {
    "deployment_frequency": "gitlab_dora_deployment_frequency",
    "lead_time_for_changes": "gitlab_dora_lead_time_for_changes_seconds",
    "time_to_restore_service": "gitlab_dora_time_to_restore_service_seconds",
    "change_failure_rate": "gitlab_dora_change_failure_rate",
}
# NOW is 2024-04-01: the default 30-day window.
WINDOW = "start_date=2024-03-02&end_date=2024-04-01&interval=all&environment_tiers[]=production"


def samples(text: str) -> dict[tuple[str, str, str], float]:
    """{(gauge, kind, target): value} from the exposition text."""
    found = {}
    for line in text.splitlines():
        if line.startswith("gitlab_dora_") and "{" in line:
            name, rest = line.split("{", 1)
            labels, value = rest.rsplit("} ", 1)
            pairs = dict(part.split("=", 1) for part in labels.split(","))
            found[name, pairs["kind"].strip('"'), pairs["target"].strip('"')] = float(value)
    return found


async def wait_for_rounds(stack, rounds: int) -> None:
    export = stack.client.app[EXPORT]
    deadline = time.monotonic() + 15
    while export.rounds < rounds:
        assert time.monotonic() < deadline, "the export never refreshed"
        await asyncio.sleep(0.05)


def quiet_project(world) -> None:
    """Deployments but no incident: time to restore is null, change failure rate 0."""
    project = world.add_project(43, "quiet", 40)
    world.add_member(12, project, REPORTER)
    production = world.add_environment(project, "production", "production")
    world.deploy_many(production, 3, "2024-03-20")


async def test_gauges_equal_the_apis_answers_and_null_is_left_out(world, start_stack, capsys):
    build_team(world)
    quiet_project(world)
    stack = await start_stack(
        world,
        now=NOW,
        export="project:team/api,group:team,project:team/quiet,project:team/nope",
        export_token=TOKEN,
        export_interval=3600.0,
    )
    await wait_for_rounds(stack, 1)
    status, text = await stack.get("/metrics")
    assert status == 200
    exported = samples(text)
    for kind, target in (("project", "team/api"), ("group", "team"), ("project", "team/quiet")):
        ref = target.replace("/", "%2F")
        for metric in METRICS:
            status, body = await stack.get(
                f"/api/v4/{kind}s/{ref}/dora/metrics?metric={metric}&{WINDOW}",
                {"PRIVATE-TOKEN": TOKEN},
            )
            value = json.loads(body)[0]["value"]
            key = (GAUGES[metric], kind, target)
            if value is None:
                assert key not in exported
            else:
                assert exported[key] == value
    assert ("gitlab_dora_time_to_restore_service_seconds", "project", "team/quiet") not in exported
    assert exported["gitlab_dora_change_failure_rate", "project", "team/quiet"] == 0
    # The container that does not exist: no samples, one log line, the token never logged.
    assert not any(target == "team/nope" for _, _, target in exported)
    output = capsys.readouterr().out
    assert output.count("dora_export_failed") == 1
    assert "404 Project Not Found" in output
    assert TOKEN not in output


async def test_a_scrape_never_waits_on_gitlab_and_failures_are_logged_once(
    world, start_stack, capsys
):
    build_team(world)
    stack = await start_stack(
        world,
        now=NOW,
        export="project:team/api",
        export_token=TOKEN,
        export_interval=0.05,
        permission_ttl=0.0,
        answer_ttl_current=0.0,
        recent_answer_ttl=0.0,
        stale_on_error=False,
    )
    await wait_for_rounds(stack, 1)
    before = samples((await stack.get("/metrics"))[1])
    assert ("gitlab_dora_deployment_frequency", "project", "team/api") in before
    export = stack.client.app[EXPORT]
    export.deadline = 0.3  # from the next round on (the first ones had request_deadline, 20 s)
    await wait_for_rounds(stack, export.rounds + 2)  # the round running now may be a 20 s one
    stack.fake.faults.hang = 5.0  # GitLab stops answering

    rounds = export.rounds
    await wait_for_rounds(stack, rounds + 3)  # three rounds, each cut at its deadline
    started = time.monotonic()
    status, text = await stack.get("/metrics")
    assert status == 200 and time.monotonic() - started < 0.5
    values = {k: v for k, v in samples(text).items() if k[0] in GAUGES.values()}
    assert values == {k: v for k, v in before.items() if k[0] in GAUGES.values()}  # kept
    stack.fake.faults.hang = 0.0
    output = capsys.readouterr().out
    assert output.count("dora_export_failed") == 1
    assert TOKEN not in output


async def test_without_export_setting_no_dora_gauge_is_exposed(world, start_stack):
    stack = await start_stack(world, now=NOW)
    _, text = await stack.get("/metrics")
    assert "gitlab_dora_" not in text
    assert EXPORT not in stack.client.app


def test_targets_parse_in_order_without_repeats() -> None:
    parsed = parse_targets("project:a/b, group:c ,project:a/b,project:42")
    assert [(t.kind, t.path) for t in parsed] == [
        ("project", "a/b"),
        ("group", "c"),
        ("project", "42"),
    ]
