"""`POST /-/webhooks/gitlab` through real HTTP: GitLab's events make the next query fresh.

Each test primes the cache, changes the fake GitLab's world (which a cached proxy cannot see),
delivers the event GitLab would send, and checks what the next queries answer and fetch. A fresh
answer is compared with the one a proxy with a cold cache gives for the same world.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from proxy.demo import DATA_KINDS
from proxy.demo.world import REPORTER, World, at
from proxy.web import webhooks

NOW = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)  # only 2024-03-15 is unsettled
SECRET = "hook-secret-4f9a2c"
RITA = {"PRIVATE-TOKEN": "tok-rita"}
WEBHOOK = "/-/webhooks/gitlab"
WEB_PATH = "acme/platform/web"

# Default window (ends today); web's answers, its two ancestor groups', and a sibling project's.
WEB = "/api/v4/projects/20/dora/metrics?metric={metric}"
ACME = "/api/v4/groups/acme/dora/metrics?metric={metric}"
PLATFORM = "/api/v4/groups/acme%2Fplatform/dora/metrics?metric={metric}"
API = "/api/v4/projects/21/dora/metrics?metric={metric}"


def acme_world() -> World:
    """acme (10) ⊃ acme/platform (11) ⊃ web (20); api (21) sits in acme. rita reports on acme.

    web has an incident (500) and a plain issue (502), both on 2024-03-01.
    """
    world = World().add_cast()
    acme = world.add_group(10, "acme")
    platform = world.add_group(11, "platform", parent=acme)
    world.add_member(12, acme, REPORTER)
    for project_id, path, group in ((20, "web", platform), (21, "api", acme)):
        project = world.add_project(project_id, path, group)
        production = world.add_environment(project, "production", "production", id=project_id * 10)
        world.deploy_many(production, 2, "2024-03-01")
        world.deploy_many(production, 1, "2024-03-15")
    world.incident(20, "2024-03-01T02:00:00Z", "2024-03-01T05:00:00Z", id=500)
    world.incident(20, "2024-03-01T10:00:00Z", "2024-03-01T11:00:00Z", issue_type="issue", id=502)
    return world


def deployment_event(project_id: int = 20, path: str = WEB_PATH, **fields: Any) -> dict:
    """A deployment event as GitLab sends it (fields of upstream-gitlab-api.md §9)."""
    return {
        "object_kind": "deployment",
        "status": "success",
        "status_changed_at": "2024-03-15 11:00:00 +0000",
        "deployment_id": 777,
        "deployable_id": 778,
        "deployable_url": None,
        "environment": "production",
        "environment_tier": "production",
        "environment_slug": "production",
        "project": {"id": project_id, "name": path.rsplit("/", 1)[-1], "path_with_namespace": path},
        **fields,
    }


def issue_event(
    *, kind: str = "issue", action: str = "open", changes: dict | None = None, **attributes: Any
) -> dict:
    """An issue or work-item event for web; `attributes` go into object_attributes."""
    return {
        "object_kind": kind,
        "event_type": kind,
        "project": {"id": 20, "name": "web", "path_with_namespace": WEB_PATH},
        "object_attributes": {
            "id": 900,
            "iid": 9,
            "project_id": 20,
            "action": action,
            **attributes,
        },
        "changes": changes or {},
    }


async def deliver(
    stack,
    payload: object,
    *,
    event: str | None = "Deployment Hook",
    token: str | None = SECRET,
    idempotency_key: str | None = None,
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if event is not None:
        headers["X-Gitlab-Event"] = event
    if token is not None:
        headers["X-Gitlab-Token"] = token
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    response = await stack.client.post(WEBHOOK, data=body, headers=headers)
    return response.status, json.loads(await response.read())


async def answer(stack, path: str) -> str:
    status, body = await stack.get(path, RITA)
    assert status == 200, (path, status, body)
    return body


async def answers(stack, metric: str) -> dict[str, str]:
    return {
        name: await answer(stack, path.format(metric=metric))
        for name, path in (("web", WEB), ("acme", ACME), ("platform", PLATFORM), ("api", API))
    }


async def cold_answers(start_stack, stack, metric: str) -> dict[str, str]:
    """What a proxy with an empty cache answers for the same world (same fake GitLab)."""
    cold = await start_stack(stack.world, now=NOW, fake=stack.fake)
    return await answers(cold, metric)


async def primed(start_stack, metric: str, **settings: Any):
    stack = await start_stack(acme_world(), now=NOW, webhook_secret=SECRET, **settings)
    before = await answers(stack, metric)
    return stack, before


# ---- deployments -------------------------------------------------------------------------------


async def test_a_deployment_event_makes_the_project_and_its_groups_fresh(start_stack) -> None:
    stack, before = await primed(start_stack, "deployment_frequency")
    stack.world.deploy(stack.world.environments[200], "2024-03-15T11:00:00Z")
    assert await answers(stack, "deployment_frequency") == before  # cached: the change is unseen

    stack.fake.reset_calls()
    assert await deliver(stack, deployment_event()) == (200, {"status": "ok"})
    assert stack.fake.calls == []  # a signal only: nothing is read upstream on delivery

    after = await answers(stack, "deployment_frequency")
    # Refetched: web's environments and its one unsettled day (with the one-day margin), no more.
    calls = stack.fake.data_calls()
    assert sorted(call.kind for call in calls) == ["deployments", "environments"]
    assert {call.path for call in calls} == {
        "/api/v4/projects/20/environments",
        "/api/v4/projects/20/deployments",
    }
    deployments = stack.fake.calls_of("deployments")[0]
    assert at(deployments.query["finished_after"]) == at("2024-03-14T00:00:00Z")
    assert at(deployments.query["finished_before"]) == at("2024-03-17T00:00:00Z")

    for name in ("web", "acme", "platform"):
        assert after[name] != before[name], name
    assert after["api"] == before["api"]
    assert after == await cold_answers(start_stack, stack, "deployment_frequency")


async def test_an_event_during_a_running_fetch_drops_what_that_fetch_stores(start_stack) -> None:
    """The fetch may have read GitLab before the deployment: its days must not outlive the event.

    Without background recomputation (`refresh_window` 0): its pass would read the days again
    itself, at a moment that depends on the machine's load."""
    stack, _ = await primed(start_stack, "deployment_frequency", refresh_window=0)
    assert await deliver(stack, deployment_event()) == (200, {"status": "ok"})
    stack.fake.reset_calls()
    stack.fake.faults.latency = 0.5
    stack.fake.faults.only_kinds = {"deployments"}
    running = asyncio.create_task(answer(stack, WEB.format(metric="deployment_frequency")))
    while not stack.fake.calls_of("deployments"):  # today's deployments are being fetched
        await asyncio.sleep(0.01)

    assert await deliver(stack, deployment_event()) == (200, {"status": "ok"})
    await running
    stack.fake.faults.latency = 0
    stack.fake.reset_calls()
    await answer(stack, WEB.format(metric="deployment_frequency"))
    assert [call.kind for call in stack.fake.data_calls()].count("deployments") == 1


async def test_a_long_wait_for_a_running_fetch_does_not_delay_the_reply(
    start_stack, monkeypatch
) -> None:
    monkeypatch.setattr(webhooks, "INLINE_WAIT", 0.1)
    stack, _ = await primed(start_stack, "deployment_frequency")
    assert await deliver(stack, deployment_event()) == (200, {"status": "ok"})
    stack.fake.reset_calls()
    stack.fake.faults.latency = 1.0
    stack.fake.faults.only_kinds = {"deployments"}
    running = asyncio.create_task(answer(stack, WEB.format(metric="deployment_frequency")))
    while not stack.fake.calls_of("deployments"):
        await asyncio.sleep(0.01)

    started = time.monotonic()
    assert await deliver(stack, deployment_event()) == (200, {"status": "ok"})
    assert time.monotonic() - started < 0.8  # answered before the fetch ended
    background = stack.client.app[webhooks.RECEIVER].background
    assert len(background) == 1
    await running
    await asyncio.gather(*background)  # finishes once the fetch has stored its days

    stack.fake.faults.latency = 0
    stack.fake.reset_calls()
    await answer(stack, WEB.format(metric="deployment_frequency"))
    assert [call.kind for call in stack.fake.data_calls()].count("deployments") == 1


@pytest.mark.parametrize("status", ["running", "failed", "canceled"])
async def test_a_deployment_that_did_not_succeed_changes_nothing(start_stack, status) -> None:
    stack, before = await primed(start_stack, "deployment_frequency")
    stack.world.deploy(stack.world.environments[200], "2024-03-15T11:00:00Z")
    stack.fake.reset_calls()

    event = deployment_event(status=status)
    assert await deliver(stack, event) == (200, {"status": "ignored"})
    assert await answers(stack, "deployment_frequency") == before
    assert stack.fake.data_calls() == []


async def test_the_header_alone_or_the_object_kind_alone_names_the_event(start_stack) -> None:
    stack, before = await primed(start_stack, "deployment_frequency")
    stack.world.deploy(stack.world.environments[200], "2024-03-15T11:00:00Z")
    without_kind = {k: v for k, v in deployment_event().items() if k != "object_kind"}
    assert await deliver(stack, without_kind) == (200, {"status": "ok"})
    assert (await answers(stack, "deployment_frequency"))["web"] != before["web"]

    stack.world.deploy(stack.world.environments[210], "2024-03-15T11:30:00Z")
    event = deployment_event(21, "acme/api")
    assert await deliver(stack, event, event=None) == (200, {"status": "ok"})
    assert await answers(stack, "deployment_frequency") == await cold_answers(
        start_stack, stack, "deployment_frequency"
    )


# ---- incidents -------------------------------------------------------------------------------


def add_incident_today(world: World) -> None:
    world.incident(20, "2024-03-15T10:00:00Z", "2024-03-15T10:30:00Z", id=501)


def incident_becomes_issue(world: World) -> None:
    world.issues[500].issue_type = "issue"


def issue_becomes_incident(world: World) -> None:
    world.issues[502].issue_type = "incident"


INCIDENT_EVENTS = {
    "incident opened": (add_incident_today, "Issue Hook", issue_event(type="Incident")),
    "confidential work item incident": (
        add_incident_today,
        "Confidential Issue Hook",
        issue_event(kind="work_item", type="Incident", confidential=True),
    ),
    "older payload: issue_type": (
        add_incident_today,
        "Issue Hook",
        issue_event(action="close", issue_type="incident"),
    ),
    "work item of unnamed type": (add_incident_today, "Issue Hook", issue_event(kind="work_item")),
    "incident changed to issue": (
        incident_becomes_issue,
        "Issue Hook",
        issue_event(
            action="update",
            type="Issue",
            changes={"type": {"previous": "Incident", "current": "Issue"}},
        ),
    ),
    "issue changed to incident (older payload)": (
        issue_becomes_incident,
        "Issue Hook",
        issue_event(
            action="update",
            issue_type="incident",
            changes={"issue_type": {"previous": "issue", "current": "incident"}},
        ),
    ),
}


@pytest.mark.parametrize("name", list(INCIDENT_EVENTS))
async def test_an_incident_event_makes_incident_metrics_fresh(start_stack, name) -> None:
    change, event, payload = INCIDENT_EVENTS[name]
    stack, before = await primed(start_stack, "change_failure_rate")
    change(stack.world)
    stack.fake.reset_calls()

    assert await deliver(stack, payload, event=event) == (200, {"status": "ok"})
    after = await answers(stack, "change_failure_rate")
    # Only the incidents are read again; deployments stay cached.
    assert set(call.kind for call in stack.fake.data_calls()) <= {"project_issues", "group_issues"}
    assert stack.fake.data_calls()
    assert after["web"] != before["web"]
    assert after == await cold_answers(start_stack, stack, "change_failure_rate")


async def test_a_plain_issue_event_changes_nothing(start_stack) -> None:
    stack, before = await primed(start_stack, "change_failure_rate")
    add_incident_today(stack.world)  # unseen until an incident event arrives
    stack.fake.reset_calls()

    for payload in (
        issue_event(type="Issue"),
        issue_event(action="update", type="Task", changes={"title": {"previous": "a"}}),
        issue_event(kind="work_item", type="Task"),
    ):
        assert await deliver(stack, payload, event="Issue Hook") == (200, {"status": "ignored"})
    assert await answers(stack, "change_failure_rate") == before
    assert stack.fake.data_calls() == []


# ---- authentication, validation, de-duplication ------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [None, "", "wrong", SECRET + "x", SECRET[:-1], SECRET.upper(), "sécrét"],
    ids=["missing", "empty", "wrong", "longer", "shorter", "case", "non-ascii"],
)
async def test_a_wrong_or_missing_token_is_401_and_changes_nothing(start_stack, token) -> None:
    stack, before = await primed(start_stack, "deployment_frequency")
    stack.world.deploy(stack.world.environments[200], "2024-03-15T11:00:00Z")
    stack.fake.reset_calls()

    with structlog.testing.capture_logs() as logs:
        status, body = await deliver(stack, deployment_event(), token=token)
    assert (status, body) == (401, {"message": "401 Unauthorized"})
    assert await answers(stack, "deployment_frequency") == before
    assert stack.fake.data_calls() == []
    logged = repr(logs)
    assert SECRET not in logged and (not token or token.strip() not in logged)


MALFORMED = {
    "not json": b"deployment happened",
    "invalid utf-8": b'{"object_kind": "deployment\xff"}',
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "array": [deployment_event()],
    "string": "deployment",
    "push event": {**deployment_event(), "object_kind": "push"},
    "merge request event": {**deployment_event(), "object_kind": "merge_request"},
    "no project": {k: v for k, v in deployment_event().items() if k != "project"},
    "project id as text": deployment_event(project={"id": "20"}),
    "project id true": deployment_event(project={"id": True}),
    "project id zero": deployment_event(project={"id": 0}),
    "project path empty": deployment_event(project={"id": 20, "path_with_namespace": "/"}),
    "status not text": deployment_event(status=1),
    "issue without attributes": {**issue_event(type="Incident"), "object_attributes": None},
}


@pytest.mark.parametrize("name", list(MALFORMED))
async def test_a_malformed_payload_is_400_and_changes_nothing(start_stack, name) -> None:
    stack, before = await primed(start_stack, "change_failure_rate")
    stack.world.deploy(stack.world.environments[200], "2024-03-15T11:00:00Z")
    add_incident_today(stack.world)
    stack.fake.reset_calls()

    event = "Issue Hook" if name == "issue without attributes" else "Deployment Hook"
    status, body = await deliver(stack, MALFORMED[name], event=event)
    assert status == 400
    assert list(body) == ["error"] and body["error"]
    assert await answers(stack, "change_failure_rate") == before
    assert stack.fake.data_calls() == []


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("Push Hook", deployment_event()),  # header and object_kind disagree
        ("Issue Hook", deployment_event()),
        ("Deployment Hook", issue_event(type="Incident")),
        (None, {k: v for k, v in deployment_event().items() if k != "object_kind"}),
        ("Push Hook", {**deployment_event(), "object_kind": 7}),
    ],
    ids=["push header", "issue header", "deployment header", "neither", "kind not text"],
)
async def test_an_unknown_or_inconsistent_event_is_400(start_stack, event, payload) -> None:
    stack, before = await primed(start_stack, "change_failure_rate")
    add_incident_today(stack.world)
    status, body = await deliver(stack, payload, event=event)
    assert status == 400 and "error" in body
    assert await answers(stack, "change_failure_rate") == before


async def test_without_a_configured_secret_the_receiver_does_not_exist(start_stack) -> None:
    """It answers like any unknown path, so an unconfigured proxy reveals nothing about it."""
    stack = await start_stack(acme_world(), now=NOW)
    body = json.dumps(deployment_event()).encode()

    async def post(path: str, token: str | None) -> tuple[int, str, bytes]:
        headers = {"X-Gitlab-Event": "Deployment Hook"}
        if token is not None:
            headers["X-Gitlab-Token"] = token
        response = await stack.client.post(path, data=body, headers=headers)
        return response.status, response.content_type, await response.read()

    unknown = await post("/-/webhooks/elsewhere", None)
    assert unknown[0] == 404
    for token in (None, "", "anything"):
        assert await post(WEBHOOK, token) == unknown
    assert stack.fake.calls == []


async def test_a_redelivery_with_the_same_idempotency_key_is_processed_once(start_stack) -> None:
    stack, before = await primed(start_stack, "deployment_frequency")
    production = stack.world.environments[200]
    stack.world.deploy(production, "2024-03-15T11:00:00Z")
    assert await deliver(stack, deployment_event(), idempotency_key="k-1") == (
        200,
        {"status": "ok"},
    )
    once = await answers(stack, "deployment_frequency")
    assert once["web"] != before["web"]

    stack.world.deploy(production, "2024-03-15T11:30:00Z")
    stack.fake.reset_calls()
    duplicate = await deliver(stack, deployment_event(), idempotency_key="k-1")
    assert duplicate == (200, {"status": "duplicate"})
    assert await answers(stack, "deployment_frequency") == once
    assert stack.fake.data_calls() == []

    assert await deliver(stack, deployment_event(), idempotency_key="k-2") == (
        200,
        {"status": "ok"},
    )
    assert await answers(stack, "deployment_frequency") == await cold_answers(
        start_stack, stack, "deployment_frequency"
    )


async def test_a_refused_delivery_does_not_use_up_its_idempotency_key(start_stack) -> None:
    stack, before = await primed(start_stack, "deployment_frequency")
    stack.world.deploy(stack.world.environments[200], "2024-03-15T11:00:00Z")
    refused = await deliver(stack, b"{", idempotency_key="k-1")
    assert refused[0] == 400
    assert await deliver(stack, deployment_event(), idempotency_key="k-1") == (
        200,
        {"status": "ok"},
    )
    assert (await answers(stack, "deployment_frequency"))["web"] != before["web"]


# ---- the stale copies survive ------------------------------------------------------------------


async def test_after_invalidation_an_upstream_failure_still_serves_the_older_answer(
    start_stack,
) -> None:
    stack, before = await primed(start_stack, "deployment_frequency", upstream_max_retries=0)
    assert await deliver(stack, deployment_event()) == (200, {"status": "ok"})
    stack.fake.faults.status_codes = [502] * 20
    stack.fake.faults.only_kinds = set(DATA_KINDS)

    response = await stack.client.get(WEB.format(metric="deployment_frequency"), headers=RITA)
    assert response.status == 200
    assert (await response.read()).decode() == before["web"]
    assert response.headers["X-Dora-Proxy-Stale"] == "true"
    assert response.headers["Warning"] == '110 - "Response is Stale"'
    assert stack.fake.faults.status_codes != [502] * 20  # the upstream was asked and failed
