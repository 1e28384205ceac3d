"""After a webhook, the answers asked lately are computed again in the background
(`refresh_window`): the next request is a cache hit, identical to a fresh computation, and
waits for no upstream call. Counts of upstream calls and cache statuses, no timings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from yarl import URL

from proxy.demo.world import REPORTER
from tests.web.test_webhooks import ACME, API, SECRET, WEB, acme_world, deliver, deployment_event

NOW = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)
RITA = {"PRIVATE-TOKEN": "tok-rita"}
DF = "deployment_frequency"


async def ask(stack, target: str) -> tuple[str, str, int]:
    """(body, X-Dora-Proxy-Cache, upstream calls made while answering)."""
    before = len(stack.fake.calls)
    response = await stack.client.get(URL(target, encoded=True), headers=RITA)
    assert response.status == 200, await response.text()
    return (
        await response.text(),
        response.headers["X-Dora-Proxy-Cache"],
        (len(stack.fake.calls) - before),
    )


async def fresh(start_stack, stack, target: str) -> str:
    cold = await start_stack(stack.world, now=NOW, fake=stack.fake)
    return (await ask(cold, target))[0]


async def deploy_and_deliver(stack) -> None:
    stack.world.deploy(stack.world.environments[200], "2024-03-15T11:30:00Z")
    assert await deliver(stack, deployment_event()) == (200, {"status": "ok"})


async def test_a_webhook_recomputes_the_answers_it_touched_before_they_are_asked(
    start_stack,
) -> None:
    stack = await start_stack(acme_world(), now=NOW, webhook_secret=SECRET, recent_answer_ttl=0)
    targets = [
        WEB.format(metric=DF),
        ACME.format(metric=DF),
        WEB.format(metric="lead_time_for_changes"),
    ]
    before = {target: (await ask(stack, target))[0] for target in targets}
    await deploy_and_deliver(stack)
    await stack.app_service().refreshed()
    for target in targets:
        body, cache, calls = await ask(stack, target)
        assert (cache, calls) == ("hit", 0), target
        assert body == await fresh(start_stack, stack, target)
    assert before[targets[0]] != (await ask(stack, targets[0]))[0]  # the deployment counts


async def test_without_refresh_window_the_next_request_computes(start_stack) -> None:
    stack = await start_stack(
        acme_world(), now=NOW, webhook_secret=SECRET, recent_answer_ttl=0, refresh_window=0
    )
    await ask(stack, WEB.format(metric=DF))
    await deploy_and_deliver(stack)
    await stack.app_service().refreshed()
    _, cache, calls = await ask(stack, WEB.format(metric=DF))
    assert cache == "miss" and calls > 0


async def test_answers_the_change_does_not_touch_are_left_alone(start_stack) -> None:
    """api (21) is not web's project nor in its groups' answers... except acme's: only
    web's own and its ancestors' answers are computed again."""
    stack = await start_stack(acme_world(), now=NOW, webhook_secret=SECRET, recent_answer_ttl=0)
    await ask(stack, API.format(metric=DF))
    await ask(stack, WEB.format(metric=DF))
    stack.fake.reset_calls()
    await deploy_and_deliver(stack)
    await stack.app_service().refreshed()
    project_calls = {call.path for call in stack.fake.calls}
    assert not any("/projects/21/" in path for path in project_calls), project_calls
    _, cache, calls = await ask(stack, API.format(metric=DF))
    assert (cache, calls) == ("hit", 0)


async def test_an_answer_not_asked_within_the_window_is_not_recomputed(start_stack) -> None:
    clock = [0.0]
    stack = await start_stack(
        acme_world(), now=NOW, webhook_secret=SECRET, recent_answer_ttl=0, refresh_window=60
    )
    stack.app_service().hot._clock = lambda: clock[0]
    await ask(stack, WEB.format(metric=DF))
    clock[0] = 61.0
    stack.fake.reset_calls()
    await deploy_and_deliver(stack)
    await stack.app_service().refreshed()
    assert stack.fake.data_calls() == []


async def test_an_answer_about_to_expire_is_renewed_from_fresh_facts(start_stack) -> None:
    """The safety lifetime (`webhook_ttl`) is renewed in the background: the recent facts are
    read again (a deployment whose webhook was lost shows), and the next request is a hit."""
    stack = await start_stack(
        acme_world(), now=NOW, webhook_secret=SECRET, recent_answer_ttl=0, webhook_ttl=30.0
    )
    service = stack.app_service()
    for target in (WEB.format(metric=DF), ACME.format(metric=DF)):
        await ask(stack, target)
    stack.world.deploy(stack.world.environments[200], "2024-03-15T11:30:00Z")  # no webhook
    assert await service.renew_due(within=10.0) == 0  # 30 s left: not due yet
    stack.fake.reset_calls()
    assert await service.renew_due(within=60.0) >= 1
    await service.refreshed()
    assert stack.fake.data_calls(), "the recent facts were read again"
    for target in (WEB.format(metric=DF), ACME.format(metric=DF)):
        body, cache, calls = await ask(stack, target)
        assert (cache, calls) == ("hit", 0), target
        assert body == await fresh(start_stack, stack, target), target


async def start_with_a_window_clock(start_stack):
    """A stack whose remembered answers (`refresh_window` 60 s) age on a clock the test moves."""
    clock = [0.0]
    stack = await start_stack(
        acme_world(),
        now=NOW,
        webhook_secret=SECRET,
        recent_answer_ttl=0,
        webhook_ttl=30.0,
        refresh_window=60,
    )
    stack.app_service().hot._clock = lambda: clock[0]
    return stack, clock


async def test_a_renewal_leaves_answers_nobody_asks_for_anymore(start_stack) -> None:
    stack, clock = await start_with_a_window_clock(start_stack)
    service = stack.app_service()
    await ask(stack, WEB.format(metric=DF))
    clock[0] = 61.0
    stack.fake.reset_calls()
    assert await service.renew_due(within=3600.0) == 0
    assert stack.fake.calls == []


async def test_a_background_pass_does_not_count_as_asking(start_stack) -> None:
    """Answers recomputed by a pass stay remembered only `refresh_window` after a caller last
    asked: otherwise every answer once asked would be renewed forever."""
    stack, clock = await start_with_a_window_clock(start_stack)
    service = stack.app_service()
    await ask(stack, WEB.format(metric=DF))
    clock[0] = 50.0
    await deploy_and_deliver(stack)
    await service.refreshed()  # recomputed by the pass at t=50
    clock[0] = 61.0
    stack.fake.reset_calls()
    assert await service.renew_due(within=3600.0) == 0
    assert stack.fake.calls == []


async def test_a_projects_facts_are_renewed_once_per_half_lifetime(start_stack) -> None:
    """A group's answers come due at different moments: the first renewal reads its projects'
    recent facts again, the next ones within half of `webhook_ttl` only recompute from them."""
    stack = await start_stack(
        acme_world(), now=NOW, webhook_secret=SECRET, recent_answer_ttl=0, webhook_ttl=30.0
    )
    service = stack.app_service()
    await ask(stack, ACME.format(metric=DF))
    assert await service.renew_due(within=60.0) >= 2  # acme's projects
    await service.refreshed()
    stack.fake.reset_calls()
    counts = service.telemetry.cache_lookups.counts
    hits = counts.get(("answer", True), 0)
    assert await service.renew_due(within=60.0) == 0
    await service.refreshed()
    assert stack.fake.data_calls() == []
    # computed again (and stored) from the cached facts, not served from the cached answer
    assert counts.get(("answer", True), 0) == hits
    body, cache, calls = await ask(stack, ACME.format(metric=DF))
    assert (cache, calls) == ("hit", 0)
    assert body == await fresh(start_stack, stack, ACME.format(metric=DF))


async def test_a_caller_refused_in_a_background_pass_is_forgotten_at_once(start_stack) -> None:
    """A revoked token does not stay in memory for the rest of `refresh_window`, nor cost a
    `/user` call after every webhook: the first pass that is refused forgets its answers."""
    stack = await start_stack(acme_world(), now=NOW, webhook_secret=SECRET, recent_answer_ttl=0)
    service = stack.app_service()
    await ask(stack, WEB.format(metric=DF))
    await ask(stack, ACME.format(metric=DF))
    assert len(service.hot._answers) == 2
    del stack.fake.world.tokens["tok-rita"]  # revoked at GitLab
    service.permissions.cache.clear()  # as once `permission_ttl` has passed
    await deploy_and_deliver(stack)
    await service.refreshed()
    assert len(service.hot._answers) == 0
    stack.fake.reset_calls()
    await deploy_and_deliver(stack)
    await service.refreshed()
    assert [c.kind for c in stack.fake.calls] == []  # nothing is asked for a forgotten caller


async def test_an_answer_refused_in_a_background_pass_is_forgotten_alone(start_stack) -> None:
    """A caller refused one container (no longer a reporter on acme) keeps the answers of
    those it still sees."""
    world = acme_world()
    world.add_member(12, world.groups[11], REPORTER)  # rita also reports on acme/platform
    stack = await start_stack(world, now=NOW, webhook_secret=SECRET, recent_answer_ttl=0)
    service = stack.app_service()
    await ask(stack, WEB.format(metric=DF))
    await ask(stack, ACME.format(metric=DF))
    world.members = [m for m in world.members if (m.user_id, m.source_id) != (12, 10)]
    service.permissions.cache.clear()  # as once `permission_ttl` has passed
    await deploy_and_deliver(stack)
    await service.refreshed()
    assert [hot.container for hot in service.hot._answers.values()] == ["project"]


async def max_age(stack, target: str) -> int:
    response = await stack.client.get(URL(target, encoded=True), headers=RITA)
    assert response.status == 200, await response.text()
    return int(response.headers["Cache-Control"].rpartition("max-age=")[2])


async def test_a_renewal_just_before_mrs_settle_reads_them_as_settled(start_stack) -> None:
    """GitLab links MRs to a deployment within 10 minutes, so a lead time read before lives
    only until then. Renewed by the last round before that moment it would again live only
    the seconds left, expire before the next round, and be recomputed while its next caller
    waits: a round computes as of the end of its margin (`within`)."""
    finished = NOW - timedelta(minutes=10) + timedelta(seconds=5)
    stack = await start_stack(acme_world(), now=NOW, webhook_secret=SECRET, recent_answer_ttl=0)
    merged = finished - timedelta(hours=5)
    stack.world.deploy(stack.world.environments[200], finished, mrs=[merged])
    assert await deliver(stack, deployment_event()) == (200, {"status": "ok"})
    target = WEB.format(metric="lead_time_for_changes")
    assert await max_age(stack, target) == 5  # until the MR list has surely settled
    service = stack.app_service()
    await service.renew_due(within=15.0)
    await service.refreshed()
    body, cache, calls = await ask(stack, target)
    assert (cache, calls) == ("hit", 0)
    assert await max_age(stack, target) > 15  # outlives the next round
    assert body == await fresh(start_stack, stack, target)


async def test_an_answer_still_provisional_after_the_margin_lives_until_its_mrs_settle(
    start_stack,
) -> None:
    """Looking ahead decides which MR lists count as settled, not how long a provisional answer
    lives: that runs from now to the moment its lists settle (here 20 s, capped by the 12 s
    of `webhook_ttl`), or it would expire before anything renews it."""
    finished = NOW - timedelta(minutes=10) + timedelta(seconds=20)
    stack = await start_stack(
        acme_world(), now=NOW, webhook_secret=SECRET, recent_answer_ttl=0, webhook_ttl=12.0
    )
    stack.world.deploy(stack.world.environments[200], finished, mrs=[finished - timedelta(hours=5)])
    assert await deliver(stack, deployment_event()) == (200, {"status": "ok"})
    target = WEB.format(metric="lead_time_for_changes")
    assert await max_age(stack, target) == 12
    service = stack.app_service()
    await service.renew_due(within=15.0)  # due; its list settles 5 s after the margin
    await service.refreshed()
    assert await max_age(stack, target) == 12


async def test_by_default_an_answer_asked_hours_ago_is_still_recomputed(start_stack) -> None:
    """`refresh_window` is a working day: a dashboard opened in the morning and again after
    lunch finds its answer recomputed after the webhooks in between, not recomputed on its
    request (the CI-day benchmark's developers' dashboards)."""
    clock = [0.0]
    stack = await start_stack(acme_world(), now=NOW, webhook_secret=SECRET, recent_answer_ttl=0)
    stack.app_service().hot._clock = lambda: clock[0]
    await ask(stack, WEB.format(metric=DF))
    clock[0] = 4 * 3600.0
    await deploy_and_deliver(stack)
    await stack.app_service().refreshed()
    body, cache, calls = await ask(stack, WEB.format(metric=DF))
    assert (cache, calls) == ("hit", 0)
    assert body == await fresh(start_stack, stack, WEB.format(metric=DF))
