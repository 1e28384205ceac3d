"""How long today's facts and answers live, with and without webhooks (issue 16).

With `webhook_secret` set, a deployment reaches the answers through its webhook, so facts of
recent days and answers that include today live `webhook_ttl` (a safety net for a missed
delivery). Without webhooks they live `facts_ttl_recent` / `answer_ttl_current`. An answer built
from a deployment's MR list read before GitLab had time to link its MRs (10 minutes) lives only
until then, whatever the setting. Lifetimes are kept by the storage on the wall clock, so these
tests use lifetimes of about a second and wait them out.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tests.web.test_webhooks import SECRET, WEB, acme_world, deliver, deployment_event

NOW = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)
RITA = {"PRIVATE-TOKEN": "tok-rita"}
SHORT = 0.6  # seconds: the short lifetimes below
NO_MEMORY = {"recent_answer_ttl": 0.0}  # every request reaches the answer cache


async def answer(stack, metric: str = "deployment_frequency") -> str:
    status, body = await stack.get(WEB.format(metric=metric), RITA)
    assert status == 200, body
    return body


async def fresh(start_stack, stack, metric: str = "deployment_frequency", now=NOW) -> str:
    """What a proxy with an empty cache answers for the same world at the same moment."""
    cold = await start_stack(stack.world, now=now, fake=stack.fake)
    return await answer(cold, metric)


async def test_with_webhooks_a_late_deployment_shows_after_its_webhook_not_before(
    start_stack,
) -> None:
    stack = await start_stack(
        acme_world(),
        now=NOW,
        webhook_secret=SECRET,
        webhook_ttl=60.0,
        facts_ttl_recent=SHORT,
        answer_ttl_current=SHORT,
        **NO_MEMORY,
    )
    warmed = await answer(stack)
    stack.world.deploy(stack.world.environments[200], "2024-03-15T11:30:00Z")
    await asyncio.sleep(SHORT + 0.4)  # past facts_ttl_recent and answer_ttl_current
    stack.fake.reset_calls()
    assert await answer(stack) == warmed  # still the warm answer: it lives webhook_ttl
    assert stack.fake.data_calls() == []

    assert await deliver(stack, deployment_event()) == (200, {"status": "ok"})
    after = await answer(stack)
    assert after != warmed
    assert after == await fresh(start_stack, stack)


async def test_without_webhooks_a_late_deployment_shows_within_the_recent_ttls(
    start_stack,
) -> None:
    stack = await start_stack(
        acme_world(),
        now=NOW,
        webhook_ttl=60.0,  # ignored: no webhook_secret
        facts_ttl_recent=SHORT,
        answer_ttl_current=SHORT,
        **NO_MEMORY,
    )
    warmed = await answer(stack)
    stack.world.deploy(stack.world.environments[200], "2024-03-15T11:30:00Z")
    assert await answer(stack) == warmed  # within the TTLs: the cached answer
    await asyncio.sleep(SHORT + 0.4)
    after = await answer(stack)
    assert after != warmed
    assert after == await fresh(start_stack, stack)


async def test_a_lead_time_read_before_mrs_are_linked_lives_only_until_then(start_stack) -> None:
    """GitLab links MRs to a deployment asynchronously and sends no webhook when it does."""
    finished = NOW - timedelta(minutes=10) + timedelta(seconds=SHORT)
    moment = {"now": NOW}
    stack = await start_stack(
        acme_world(),
        now=lambda: moment["now"],
        webhook_secret=SECRET,
        webhook_ttl=60.0,
        **NO_MEMORY,
    )
    deployment = stack.world.deploy(stack.world.environments[200], finished)
    assert await deliver(stack, deployment_event()) == (200, {"status": "ok"})
    early = await answer(stack, "lead_time_for_changes")  # no MR linked yet

    linked = stack.world.add_merge_request(20, finished - timedelta(hours=5))
    deployment.merge_request_ids.append(linked.id)  # linked later, without a webhook
    assert await answer(stack, "lead_time_for_changes") == early  # cached until 10 min old

    await asyncio.sleep(SHORT + 0.4)
    moment["now"] = NOW + timedelta(seconds=SHORT + 0.4)
    later = await answer(stack, "lead_time_for_changes")
    assert later != early
    assert later == await fresh(start_stack, stack, "lead_time_for_changes", moment["now"])


async def test_a_settled_day_counts_for_facts_ttl_settled_after_its_own_fetch(start_stack) -> None:
    """Settled days share one cache entry per month; adding a day later to that entry must not
    extend the life of the days fetched before it."""
    moment = {"now": NOW}
    stack = await start_stack(
        acme_world(),
        now=lambda: moment["now"],
        facts_ttl_settled=3600.0,
        answer_ttl_past=0.0,  # every request reads the facts
        **NO_MEMORY,
    )
    first = (
        "/api/v4/projects/20/dora/metrics?metric=deployment_frequency"
        "&start_date=2024-03-01&end_date=2024-03-05"
    )
    second = first.replace("2024-03-01", "2024-03-06").replace("2024-03-05", "2024-03-10")

    async def deployment_calls(path: str) -> int:
        stack.fake.reset_calls()
        status, body = await stack.get(path, RITA)
        assert status == 200, body
        return len(stack.fake.calls_of("deployments"))

    assert await deployment_calls(first) == 1
    moment["now"] = NOW + timedelta(minutes=50)
    assert await deployment_calls(second) == 1  # merged into March's entry
    assert await deployment_calls(first) == 0
    moment["now"] = NOW + timedelta(minutes=61)
    assert await deployment_calls(first) == 1  # its days were fetched 61 minutes ago
    assert await deployment_calls(second) == 0  # these 11 minutes ago
