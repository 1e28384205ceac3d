"""The seconds-long memory of recent answers: per caller, per URL, short, and never stale."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from proxy.credentials import credential_key, mac_key
from proxy.demo.world import REPORTER, World

NOW = datetime(2021, 3, 1, tzinfo=UTC)
URL = (
    "/api/v4/projects/11/dora/metrics"
    "?metric=deployment_frequency&start_date=2021-01-01&end_date=2021-01-31"
)
RITA = {"PRIVATE-TOKEN": "tok-rita"}
MARIA = {"PRIVATE-TOKEN": "tok-maria"}


def build(world: World) -> None:
    group = world.add_group(10, "s1")
    world.add_member(12, group, REPORTER)
    world.add_member(11, group, REPORTER)
    project = world.add_project(11, "app", group)
    world.deploy_many(world.add_environment(project, "production", "production"), 3, "2021-01-05")


async def deliver(stack, event: dict, kind: str) -> int:
    """POST a GitLab webhook delivery with the stack's secret; its status."""
    hook = await stack.client.post(
        "/-/webhooks/gitlab",
        data=json.dumps(event),
        headers={"X-Gitlab-Token": "s3cret", "X-Gitlab-Event": kind},
    )
    return hook.status


async def layer(stack, headers) -> str:
    response = await stack.client.get(URL, headers=headers)
    assert response.status == 200
    return response.headers["X-Dora-Proxy-Cache"]


async def test_a_repeat_by_the_same_caller_is_answered_from_memory(world, start_stack):
    build(world)
    stack = await start_stack(world, now=NOW, recent_answer_ttl=5.0)
    assert await layer(stack, RITA) == "miss"
    assert await layer(stack, RITA) == "recent"
    # another caller with access proves it to GitLab first, then reads the shared answer cache
    stack.fake.reset_calls()
    assert await layer(stack, MARIA) == "hit"
    assert {c.kind for c in stack.fake.calls} == {"user", "project", "project_members"}


async def test_it_forgets_after_its_lifetime(world, start_stack):
    build(world)
    stack = await start_stack(world, now=NOW, recent_answer_ttl=0.2)
    assert await layer(stack, RITA) == "miss"
    assert await layer(stack, RITA) == "recent"
    await asyncio.sleep(0.3)
    assert await layer(stack, RITA) == "hit"


async def test_it_never_outlives_the_permission_decision(world, start_stack):
    build(world)
    stack = await start_stack(world, now=NOW, recent_answer_ttl=60.0, permission_ttl=0.0)
    assert await layer(stack, RITA) == "miss"
    world.members = [m for m in world.members if m.user_id != 12]  # rita loses her access
    response = await stack.client.get(URL, headers=RITA)
    assert response.status == 404


async def test_a_webhook_clears_it(world, start_stack):
    build(world)
    stack = await start_stack(world, now=NOW, recent_answer_ttl=60.0, webhook_secret="s3cret")
    assert await layer(stack, RITA) == "miss"
    assert await layer(stack, RITA) == "recent"
    event = {
        "object_kind": "deployment",
        "status": "success",
        "project": {"id": 11, "path_with_namespace": "s1/app"},
    }
    assert await deliver(stack, event, "Deployment Hook") == 200
    assert await layer(stack, RITA) == "miss"  # recomputed: the project's answers were dropped


async def test_stale_answers_are_not_remembered(world, start_stack):
    build(world)
    stack = await start_stack(world, now=NOW, recent_answer_ttl=60.0, webhook_secret="s3cret")
    assert await layer(stack, RITA) == "miss"
    # An incident event: the fresh answer and the incident days become unreachable ...
    event = {
        "object_kind": "issue",
        "object_attributes": {"type": "Incident", "action": "open"},
        "project": {"id": 11, "path_with_namespace": "s1/app"},
    }
    assert await deliver(stack, event, "Issue Hook") == 200
    # ... and re-reading incidents fails upstream: the stale copy is served, twice, never recalled
    stack.fake.faults.only_kinds = {"project_issues"}
    stack.fake.faults.status_codes = [502] * 50
    assert await layer(stack, RITA) == "stale"
    assert await layer(stack, RITA) == "stale"


def test_an_answer_computed_across_a_clear_is_not_remembered():
    """A webhook that lands while a request computes must win over that request's answer."""
    from proxy.recent import RecentAnswers

    recent: RecentAnswers[str] = RecentAnswers(ttl=60)
    generation = recent.generation  # the request starts
    recent.clear()  # an invalidation arrives meanwhile
    recent.put(("caller", "/url", "2021-03-01"), "old answer", 60, generation)
    assert recent.get(("caller", "/url", "2021-03-01")) is None
    recent.put(("caller", "/url", "2021-03-01"), "new answer", 60, recent.generation)
    assert recent.get(("caller", "/url", "2021-03-01")) == "new answer"


def test_a_recalled_answer_keeps_its_etag_without_hashing_again(monkeypatch):
    from proxy import service

    answer = service.Answer(b"[]", "miss", 60)
    etag = answer.etag
    monkeypatch.setattr(service.hashlib, "sha256", None)  # any new hashing would fail
    again = answer.recalled()
    assert (again.cache, again.etag, again.body) == ("recent", etag, b"[]")


# ---- the local day ---------------------------------------------------------------------------

BERLIN = ZoneInfo("Europe/Berlin")
DEFAULT_DATES = "/api/v4/projects/11/dora/metrics?metric=deployment_frequency"  # end_date: today
MIDNIGHT = datetime(2021, 3, 2, tzinfo=BERLIN)


class MovableClock:
    """Real time from a start the test chooses, and can move."""

    def __init__(self, moment: datetime) -> None:
        self.set(moment)

    def set(self, moment: datetime) -> None:
        self.offset = moment - datetime.now(UTC)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def build_around_midnight(world: World) -> None:
    build(world)
    production = next(e for e in world.environments.values() if e.tier == "production")
    world.deploy(production, "2021-03-01T09:00:00Z")  # 1 March in Berlin
    world.deploy(production, "2021-03-01T23:30:00Z")  # 00:30 on 2 March in Berlin


async def ask(stack) -> tuple[str, str]:
    """(X-Dora-Proxy-Cache, date of the last row) for the default-dated request."""
    response = await stack.client.get(DEFAULT_DATES, headers=RITA)
    assert response.status == 200
    return response.headers["X-Dora-Proxy-Cache"], (await response.json())[-1]["date"]


async def start_before_midnight(world, start_stack, clock: MovableClock):
    """A stack in Berlin whose answer for 1 March is computed and cached (not remembered)."""
    build_around_midnight(world)
    clock.set(datetime(2021, 3, 1, 23, 59, 50, tzinfo=BERLIN))
    stack = await start_stack(world, now=clock, time_zone="Europe/Berlin", recent_answer_ttl=5.0)
    assert await ask(stack) == ("miss", "2021-03-01")
    stack.app_service().recent.clear()
    return stack


async def test_an_answer_is_remembered_only_until_the_local_day_ends(world, start_stack):
    clock = MovableClock(datetime.now(UTC))
    stack = await start_before_midnight(world, start_stack, clock)
    clock.set(datetime(2021, 3, 1, 23, 59, 59, 750_000, tzinfo=BERLIN))
    assert await ask(stack) == ("hit", "2021-03-01")
    assert await ask(stack) == ("recent", "2021-03-01")  # the same day: from memory
    await asyncio.sleep((MIDNIGHT - clock()).total_seconds() + 0.02)
    # 2 March in Berlin (still 1 March in UTC): the default end_date moved on.
    assert await ask(stack) == ("miss", "2021-03-02")
    assert await ask(stack) == ("recent", "2021-03-02")


async def test_a_clock_moved_past_midnight_is_not_answered_from_memory(world, start_stack):
    clock = MovableClock(datetime.now(UTC))
    stack = await start_before_midnight(world, start_stack, clock)
    clock.set(datetime(2021, 3, 1, 23, 59, 59, 500_000, tzinfo=BERLIN))
    assert await ask(stack) == ("hit", "2021-03-01")
    clock.set(datetime(2021, 3, 2, 0, 0, 0, 500_000, tzinfo=BERLIN))
    assert await ask(stack) == ("miss", "2021-03-02")


# ---- the server secret -----------------------------------------------------------------------


async def test_a_server_secret_of_100_characters_works(world, start_stack):
    build(world)
    secret = ("0123456789abcdef-long-server-secret-" * 3)[:100]
    stack = await start_stack(world, now=NOW, recent_answer_ttl=5.0, server_secret=secret)
    assert await layer(stack, RITA) == "miss"
    assert await layer(stack, RITA) == "recent"
    assert await layer(stack, MARIA) == "hit"  # told apart from rita: her own permission check
    # All of it keys the MAC, not only the first 64 bytes.
    other = secret[:64] + "x" * 36
    assert credential_key(mac_key(secret.encode()), "private:tok-rita") != credential_key(
        mac_key(other.encode()), "private:tok-rita"
    )
