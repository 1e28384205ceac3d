"""System hooks on (`system_hooks`): membership decisions kept until a hook says otherwise,
tokens re-checked in the background, and the revocation promise unchanged.

The clock of the permission decisions is a list the tests move; the background loop's round
(`Permissions.refresh_due`) is called directly where a test needs it at a given moment, and run
by the app's own loop in the last test.
"""

from __future__ import annotations

import asyncio

from tests.web.test_hostile_callers import MARIA, NOW, busy_world, get, lead_time

SECRET = "hook-secret"
TTL = 60.0


async def start(start_stack, *, system_hooks: bool = True, world=None, **settings):
    """A stack with system hooks on (or off), its decisions aging on a clock the test moves.
    `fake` and `cache_dir` in `settings` make it a second replica of another stack."""
    stack = await start_stack(
        world or busy_world(projects=2, deployments=1),
        now=NOW,
        webhook_secret=SECRET,
        system_hooks=system_hooks,
        permission_ttl=TTL,
        recent_answer_ttl=0,
        **settings,
    )
    clock = [1000.0]
    stack.app_service().permissions.cache._clock = lambda: clock[0]
    return stack, clock


def permission_calls(stack) -> dict[str, int]:
    kinds = ("user", "project", "project_members", "group", "group_members")
    return {kind: len(stack.fake.calls_of(kind)) for kind in kinds if stack.fake.calls_of(kind)}


async def system_hook(stack, event_name: str, **fields) -> tuple[int, str]:
    headers = {"X-Gitlab-Token": SECRET, "X-Gitlab-Event": "System Hook"}
    payload = {"event_name": event_name, **fields}
    response = await stack.client.post("/-/webhooks/gitlab", json=payload, headers=headers)
    return response.status, await response.text()


async def test_with_system_hooks_a_busy_caller_never_waits_for_a_permission_call(
    start_stack,
) -> None:
    """Every minute for ten minutes: with system hooks, after the first request none makes a
    permission call (the user is re-read in the background, membership is kept); without,
    every request past `permission_ttl` checks again."""
    for hooks in (True, False):
        stack, clock = await start(start_stack, system_hooks=hooks)
        permissions = stack.app_service().permissions
        assert (await get(stack, lead_time(11)))[0] == 200
        first = sum(permission_calls(stack).values())
        in_requests = 0
        for _ in range(10):
            clock[0] += 61
            before = sum(permission_calls(stack).values())
            await permissions.refresh_due()  # what the background loop does meanwhile
            background = sum(permission_calls(stack).values())
            assert (await get(stack, lead_time(11)))[0] == 200
            in_requests += sum(permission_calls(stack).values()) - background
            if hooks:
                assert background - before == 1  # one /user, off the request path
        if hooks:
            assert first == 3 and in_requests == 0, permission_calls(stack)
        else:
            assert in_requests >= 10 * 3, permission_calls(stack)


async def test_a_revoked_token_is_refused_within_permission_ttl(start_stack) -> None:
    stack, clock = await start(start_stack)
    permissions = stack.app_service().permissions
    assert (await get(stack, lead_time(11)))[0] == 200
    del stack.fake.world.tokens["tok-maria"]  # revoked at GitLab
    clock[0] += TTL / 2 + 1
    await permissions.refresh_due()  # the background re-read learns it
    status, body, _ = await get(stack, lead_time(11))
    assert (status, body) == (401, '{"message":"401 Unauthorized"}')


async def test_without_the_background_round_the_record_expires_and_is_read_again(
    start_stack,
) -> None:
    """The kept membership never stretches the user record: past `permission_ttl` a request
    reads /user itself (one call, not three) and a revoked token is refused."""
    stack, clock = await start(start_stack, permission_keepalive=0)
    assert (await get(stack, lead_time(11)))[0] == 200
    clock[0] += TTL + 1
    calls = permission_calls(stack)
    assert (await get(stack, lead_time(11)))[0] == 200
    after = permission_calls(stack)
    assert {k: after[k] - calls.get(k, 0) for k in after if after[k] != calls.get(k, 0)} == {
        "user": 1
    }
    del stack.fake.world.tokens["tok-maria"]
    clock[0] += TTL + 1
    assert (await get(stack, lead_time(11)))[0] == 401


async def test_a_removed_member_is_refused_as_soon_as_the_hook_arrives(start_stack) -> None:
    stack, clock = await start(start_stack)
    assert (await get(stack, lead_time(11)))[0] == 200
    world = stack.fake.world
    world.members = [m for m in world.members if m.user_id != 11]  # maria leaves group f
    clock[0] += 5
    assert (await get(stack, lead_time(11)))[0] == 200  # kept: GitLab has not told us yet
    assert await system_hook(stack, "user_remove_from_group", group_id=10, user_id=11) == (
        200,
        '{"status":"ok"}',
    )
    status, body, _ = await get(stack, lead_time(11))
    assert (status, body) == (404, '{"message":"404 Project Not Found"}')


async def test_a_kept_decision_ends_at_membership_ttl_without_any_hook(start_stack) -> None:
    """GitLab sends no hook for a group transfer or a removed group share: `membership_ttl`
    bounds how long such a change goes unseen (no background round here)."""
    stack, clock = await start(start_stack, membership_ttl=300, permission_keepalive=0)
    assert (await get(stack, lead_time(11)))[0] == 200
    world = stack.fake.world
    world.members = [m for m in world.members if m.user_id != 11]
    clock[0] += 290
    assert (await get(stack, lead_time(11)))[0] == 200
    clock[0] += 11
    assert (await get(stack, lead_time(11)))[0] == 404


async def test_a_busy_callers_membership_is_decided_again_in_the_background(start_stack) -> None:
    """In its last quarter a kept decision of an active caller is decided again by the
    background round: the request after `membership_ttl` does not wait for it, and a change no
    hook reported is seen then."""
    stack, clock = await start(start_stack, membership_ttl=300)
    permissions = stack.app_service().permissions
    assert (await get(stack, lead_time(11)))[0] == 200
    clock[0] += 200
    await permissions.refresh_due()
    assert (
        len(stack.fake.calls_of("project_members")) + len(stack.fake.calls_of("group_members")) == 1
    )
    assert (await get(stack, lead_time(11)))[0] == 200
    clock[0] += 30  # in the last quarter
    await permissions.refresh_due()
    assert (
        len(stack.fake.calls_of("project_members")) + len(stack.fake.calls_of("group_members")) == 2
    )
    calls = len(stack.fake.calls)
    clock[0] += 80  # past the first decision's membership_ttl: the renewed one serves
    await permissions.refresh_due()
    background = len(stack.fake.calls)
    assert (await get(stack, lead_time(11)))[0] == 200
    assert len(stack.fake.calls) == background >= calls
    stack.fake.world.members = [m for m in stack.fake.world.members if m.user_id != 11]
    clock[0] += 230
    await permissions.refresh_due()
    assert (await get(stack, lead_time(11)))[0] == 404


async def test_a_demoted_admin_loses_what_the_admin_flag_gave_within_permission_ttl(
    start_stack,
) -> None:
    stack, clock = await start(start_stack)
    permissions = stack.app_service().permissions
    admin = {"PRIVATE-TOKEN": "tok-admin"}
    assert (await get(stack, lead_time(11), admin))[0] == 200
    stack.fake.world.users[1].is_admin = False
    clock[0] += TTL / 2 + 1
    await permissions.refresh_due()
    assert (await get(stack, lead_time(11), admin))[0] == 404


async def test_another_replica_drops_its_kept_decisions_within_a_second(start_stack) -> None:
    """The hook reaches one replica; the others see the shared generation move."""
    stack, _ = await start(start_stack)
    other, other_clock = await start(
        start_stack, world=stack.fake.world, fake=stack.fake, cache_dir=stack.settings.cache_dir
    )
    assert (await get(other, lead_time(11)))[0] == 200
    stack.fake.world.members = [m for m in stack.fake.world.members if m.user_id != 11]
    assert (await system_hook(stack, "user_remove_from_group", group_id=10, user_id=11))[0] == 200
    other_clock[0] += 1.5
    assert (await get(other, lead_time(11)))[0] == 404


async def test_unrelated_system_hooks_are_ignored_and_keep_decisions(start_stack) -> None:
    stack, _ = await start(start_stack)
    assert (await get(stack, lead_time(11)))[0] == 200
    calls = permission_calls(stack)
    for event in ("key_create", "user_failed_login", "project_create", "repository_update"):
        assert await system_hook(stack, event) == (200, '{"status":"ignored"}')
    assert (await get(stack, lead_time(11)))[0] == 200
    assert permission_calls(stack) == calls


async def test_the_app_runs_the_background_round_itself(start_stack) -> None:
    stack = await start_stack(
        busy_world(projects=1, deployments=1),
        now=NOW,
        webhook_secret=SECRET,
        system_hooks=True,
        permission_ttl=0.4,
        recent_answer_ttl=0,
    )
    assert (await get(stack, lead_time(11), MARIA))[0] == 200
    await asyncio.sleep(1.5)  # real time: the loop runs every second at least
    assert len(stack.fake.calls_of("user")) >= 2


async def test_only_proven_tokens_are_kept_for_background_checks(start_stack) -> None:
    """A junk-token flood must not fill the keep-alive list (each entry costs a `/user` call
    per round): a token is kept only once GitLab vouched for it."""
    import secrets

    stack, _ = await start(start_stack)
    permissions = stack.app_service().permissions
    for _ in range(20):
        junk = {"PRIVATE-TOKEN": "glpat-" + secrets.token_hex(10)}
        assert (await get(stack, lead_time(11), junk))[0] == 401
    assert (await get(stack, lead_time(11), {"PRIVATE-TOKEN": "tok-nobody"}))[0] in (401, 404)
    assert len(permissions._active) == 0
    assert (await get(stack, lead_time(11)))[0] == 200
    assert len(permissions._active) == 1
    users = len(stack.fake.calls_of("user"))
    await permissions.refresh_due()
    await permissions.refresh_due()
    assert len(stack.fake.calls_of("user")) == users  # maria's record is young: nothing due


async def test_a_background_round_makes_a_bounded_number_of_checks(
    start_stack, monkeypatch
) -> None:
    """However many tokens are active, one round re-reads at most MAX_CHECKS_PER_ROUND users
    (the most recently active first); the rest are checked on their next request."""
    import proxy.permissions

    monkeypatch.setattr(proxy.permissions, "MAX_CHECKS_PER_ROUND", 1)
    stack, clock = await start(start_stack)
    permissions = stack.app_service().permissions
    assert (await get(stack, lead_time(11), {"PRIVATE-TOKEN": "tok-admin"}))[0] == 200
    clock[0] += 1
    assert (await get(stack, lead_time(11)))[0] == 200  # maria, most recent
    users = len(stack.fake.calls_of("user"))
    clock[0] += TTL / 2 + 2
    assert await permissions.refresh_due() == 1
    assert len(stack.fake.calls_of("user")) == users + 1
    assert stack.fake.calls_of("user")[-1].token == "tok-maria"


async def test_nothing_is_kept_while_the_shared_generation_cannot_be_read(start_stack) -> None:
    """A system hook's change reaches other replicas through the cache: while it cannot be
    read, decisions last `permission_ttl` as without system hooks."""
    stack, clock = await start(start_stack)
    permissions = stack.app_service().permissions

    async def broken() -> int:
        raise ConnectionError("cache down")

    permissions._generation_source = broken
    assert (await get(stack, lead_time(11)))[0] == 200
    clock[0] += TTL + 1
    before = permission_calls(stack)
    assert (await get(stack, lead_time(11)))[0] == 200
    after = permission_calls(stack)
    assert after.get("group_members", 0) + after.get("project_members", 0) > before.get(
        "group_members", 0
    ) + before.get("project_members", 0)
