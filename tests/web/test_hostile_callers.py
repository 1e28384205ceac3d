"""Hostile callers: work follows its callers, queues are bounded, junk tokens cost little.

Counts, not wall-clock times: upstream calls made after every caller had gone, `/user` calls
per junk token, statuses of a storm.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta

import aiohttp
from yarl import URL

from proxy.demo import DATA_KINDS
from proxy.demo.world import MAINTAINER, World
from tests.web.test_observability import scrape, value

NOW = datetime(2021, 3, 1, 12, 0, tzinfo=UTC)
MARIA = {"PRIVATE-TOKEN": "tok-maria"}
DATES = "start_date=2021-01-01&end_date=2021-01-31"
METRICS = ("deployment_frequency", "lead_time_for_changes", "change_failure_rate")


def busy_world(projects: int = 4, deployments: int = 30) -> World:
    """Projects with a deployment (and one MR) every day of January: lead time needs one MR
    call per deployment, so a cold computation makes many sequential upstream calls."""
    w = World().add_cast()
    group = w.add_group(10, "f")
    w.add_member(w.users[11], group, MAINTAINER)  # maria
    for n in range(projects):
        project = w.add_project(11 + n, f"app{n}", group)
        env = w.add_environment(project, "production", "production")
        for day in range(deployments):
            finished = datetime(2021, 1, 1, 10, tzinfo=UTC) + timedelta(days=day)
            w.deploy(env, finished, mrs=[finished - timedelta(hours=1)])
    return w


def lead_time(project: int) -> str:
    return f"/api/v4/projects/{project}/dora/metrics?metric=lead_time_for_changes&{DATES}"


async def get(stack, target: str, headers: dict[str, str] | None = None):
    url = URL(f"{stack.base_url}{target}", encoded=True)
    async with stack.client.session.get(url, headers=MARIA if headers is None else headers) as r:
        return r.status, await r.text(), r.headers


async def test_a_computation_nobody_waits_for_is_cancelled(start_stack) -> None:
    """Cold callers that disconnect: once all have gone, the upstream hears (almost) nothing
    more. Calls already sent may finish (at most one per worker); none is started after."""
    concurrency = 2
    stack = await start_stack(
        busy_world(), now=NOW, upstream_concurrency=concurrency, request_deadline=60.0
    )
    stack.fake.faults.latency = 0.1
    stack.fake.faults.only_kinds = set(DATA_KINDS)
    async with aiohttp.ClientSession() as session:

        async def ask(project: int) -> None:
            async with session.get(f"{stack.base_url}{lead_time(project)}", headers=MARIA):
                pass

        callers = [asyncio.ensure_future(ask(p)) for p in (11, 12, 13, 14)]
        while len(stack.fake.calls_of("deployment_mrs")) < 2:  # well into the computations
            await asyncio.sleep(0.01)
        for caller in callers:  # the clients give up: their connections close
            caller.cancel()
        await asyncio.gather(*callers, return_exceptions=True)
    service = stack.app_service()
    for _ in range(100):  # connection_lost reaches the handlers
        if not len(service.computations):
            break
        await asyncio.sleep(0.02)
    at_leave = len(stack.fake.data_calls())
    await asyncio.sleep(1.5)
    after = len(stack.fake.data_calls()) - at_leave
    assert after <= concurrency, f"{after} upstream calls after every caller had gone"
    assert len(service.computations) == 0
    assert service.computations.abandoned == 4
    # Counted as clients that went away (499), not as failures of ours (500).
    samples, _ = await scrape(stack)
    assert value(samples, "dora_proxy_http_requests_total", route="project_dora", status="499") == 4
    assert value(samples, "dora_proxy_http_requests_total", route="project_dora", status="500") == 0


async def test_a_computation_survives_while_one_caller_still_waits(start_stack) -> None:
    stack = await start_stack(busy_world(projects=1, deployments=5), now=NOW)
    stack.fake.faults.latency = 0.05
    stack.fake.faults.only_kinds = set(DATA_KINDS)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.1)) as session:
        staying = asyncio.ensure_future(get(stack, lead_time(11)))
        await asyncio.sleep(0.02)
        try:
            async with session.get(f"{stack.base_url}{lead_time(11)}", headers=MARIA):
                pass
        except TimeoutError:
            pass
    status, _, headers = await staying
    assert status == 200 and headers["X-Dora-Proxy-Cache"] == "miss"
    assert stack.app_service().computations.abandoned == 0


async def test_past_the_computation_bound_a_fast_503_with_retry_after(start_stack) -> None:
    """`max_computations` cold answers at once: a request joining one is served, a request
    needing one more is answered 503 at once, while the running one is still running."""
    stack = await start_stack(busy_world(), now=NOW, max_computations=1)
    stack.fake.faults.latency = 0.1
    stack.fake.faults.only_kinds = set(DATA_KINDS)
    first = asyncio.ensure_future(get(stack, lead_time(11)))
    while not stack.fake.data_calls():
        await asyncio.sleep(0.01)
    joining = asyncio.ensure_future(get(stack, lead_time(11)))
    status, body, headers = await get(stack, lead_time(12))
    assert (status, body) == (503, '{"message":"503 Service Unavailable"}')
    assert headers["Retry-After"] == "1"
    assert "(max_computations)" in headers["X-Dora-Proxy-Upstream-Error"]
    assert not first.done()
    assert not any("/projects/12/" in call.path for call in stack.fake.data_calls())
    assert [(await first)[0], (await joining)[0]] == [200, 200]
    assert (await get(stack, lead_time(12)))[0] == 200  # once it is free again


async def test_past_the_permission_queue_a_fast_503(start_stack) -> None:
    stack = await start_stack(
        busy_world(projects=1, deployments=1),
        now=NOW,
        permission_concurrency=1,
        permission_queue_limit=2,
        client_check_limit=0,
    )
    stack.fake.faults.latency = 0.2
    stack.fake.faults.only_kinds = {"user"}
    tokens = ["glpat-" + secrets.token_hex(10) for _ in range(10)]
    answers = await asyncio.gather(
        *(get(stack, lead_time(11), {"PRIVATE-TOKEN": token}) for token in tokens)
    )
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [401] * 3 + [503] * 7
    assert len(stack.fake.calls_of("user")) == 3
    for status, _, headers in answers:
        if status == 503:
            assert "permission check queue full" in headers["X-Dora-Proxy-Upstream-Error"]


async def test_permission_checks_do_not_queue_behind_data_fetches(start_stack) -> None:
    """One data worker, busy for a long cold computation: another caller's permission check
    (its own pool) is answered while that computation is still running."""
    stack = await start_stack(busy_world(), now=NOW, upstream_concurrency=1)
    stack.fake.faults.latency = 0.1  # every call, the permission check's too
    cold = asyncio.ensure_future(get(stack, lead_time(11)))
    while not stack.fake.calls_of("deployment_mrs"):  # thirty MR calls queued at once
        await asyncio.sleep(0.01)
    # rita cannot see the project: her answer needs /user and the project lookup only.
    status, _, _ = await get(stack, lead_time(12), {"PRIVATE-TOKEN": "tok-rita"})
    assert status == 404
    assert not cold.done(), "the permission check waited for the data fetches"
    assert (await cold)[0] == 200


async def test_a_junk_token_costs_one_user_call_whatever_it_asks(start_stack) -> None:
    stack = await start_stack(busy_world(projects=1, deployments=1), now=NOW)
    junk = {"PRIVATE-TOKEN": "glpat-" + secrets.token_hex(10)}
    for project in range(11, 31):  # twenty containers, most of them not even existing
        status, body, _ = await get(stack, lead_time(project), junk)
        assert (status, body) == (401, '{"message":"401 Unauthorized"}')
    assert len(stack.fake.calls_of("user")) == 1


async def test_a_junk_token_flood_from_one_client_is_bounded(start_stack) -> None:
    """Many random tokens at once from one address: at most one /user call per token, at
    most `client_check_limit` in flight and `client_check_queue` waiting, the rest answered
    429 at once; no 5xx."""
    stack = await start_stack(
        busy_world(projects=1, deployments=1),
        now=NOW,
        client_check_limit=4,
        client_check_queue=8,
    )
    stack.fake.faults.latency = 0.1
    stack.fake.faults.only_kinds = {"user"}
    tokens = ["glpat-" + secrets.token_hex(10) for _ in range(60)]
    answers = await asyncio.gather(
        *(get(stack, lead_time(11), {"PRIVATE-TOKEN": token}) for token in tokens)
    )
    statuses = [status for status, _, _ in answers]
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(429) >= 60 - 4 - 8 - 4  # the first few may finish before the last
    assert stack.fake.calls_of("user")
    user_calls = stack.fake.calls_of("user")
    assert len(user_calls) == statuses.count(401)
    assert len({call.token for call in user_calls}) == len(user_calls)  # one per token
    for status, body, headers in answers:
        if status == 429:
            assert body == '{"message":"429 Too Many Requests"}'
            assert headers["Retry-After"] == "1"
    # A legitimate caller from the same address, once the flood is answered, gets through.
    assert (await get(stack, lead_time(11)))[0] == 200


async def test_a_decision_never_outlives_the_user_record_it_used(start_stack) -> None:
    """An admin demoted at GitLab keeps access at most `permission_ttl` after the /user call
    that said "admin", even when a decision is made from that record near its end."""
    clock = [1000.0]
    stack = await start_stack(
        busy_world(projects=2, deployments=1), now=NOW, permission_ttl=60, recent_answer_ttl=0
    )
    permissions = stack.app_service().permissions
    permissions.cache._clock = lambda: clock[0]
    admin = {"PRIVATE-TOKEN": "tok-admin"}
    assert (await get(stack, lead_time(11), admin))[0] == 200  # /user read at t=1000
    clock[0] = 1050.0
    assert (await get(stack, lead_time(12), admin))[0] == 200  # decided from that record
    stack.world.users[1].is_admin = False  # demoted at GitLab
    clock[0] = 1061.0  # past the record's life, within the second decision's own ttl
    assert (await get(stack, lead_time(12), admin))[0] == 404  # private: not even visible


async def test_readiness_is_503_while_the_permission_queue_is_full(start_stack) -> None:
    """A full permission-check queue refuses every caller without a cached decision: the
    process says so (503 JSON naming the queue) until the queue drains, then 200 again."""
    stack = await start_stack(
        busy_world(projects=1, deployments=1),
        now=NOW,
        permission_concurrency=1,
        permission_queue_limit=2,
        client_check_limit=0,
    )
    assert (await stack.client.get("/-/readiness")).status == 200
    stack.fake.faults.latency = 0.3
    stack.fake.faults.only_kinds = {"user"}
    tokens = ["glpat-" + secrets.token_hex(10) for _ in range(3)]  # 1 worker + 2 waiting
    checks = [
        asyncio.ensure_future(get(stack, lead_time(11), {"PRIVATE-TOKEN": token}))
        for token in tokens
    ]
    while not [call for call in stack.fake.calls_of("user") if call.token in tokens]:
        await asyncio.sleep(0.01)  # the first check reached GitLab; the others queue behind
    for _ in range(20):  # their calls are submitted to the pool as their requests arrive
        response = await stack.client.get("/-/readiness")
        body = await response.json()
        if response.status != 200:
            break
        await asyncio.sleep(0.01)
    assert response.status == 503, body
    assert response.content_type == "application/json"
    assert body["status"] == "unavailable" and body["failed"] == ["permission_queue"]
    assert body["checks"]["permission_queue"].startswith("permission check queue full")
    assert not any(check.done() for check in checks)
    assert sorted(status for status, _, _ in await asyncio.gather(*checks)) == [401] * 3
    response = await stack.client.get("/-/readiness")
    assert response.status == 200
    assert (await response.json())["checks"]["permission_queue"] == "ok"


async def _from(address: str, stack, requests: list[tuple[str, str, object]]):
    """`requests` (method, target, JSON body or None) at once, from the client `address`."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(method: str, target: str, body: object):
            async with session.request(
                method, f"{stack.base_url}{target}", headers=MARIA, json=body
            ) as r:
                return r.status, await r.text(), r.headers

        return await asyncio.gather(*(one(*request) for request in requests))


async def test_one_client_cannot_hold_every_forwarded_connection(start_stack) -> None:
    """Pass-through and forwarded GraphQL share 100 upstream connections: one client address
    gets `client_forward_limit` of them and `client_forward_queue` waiting; its next requests
    answer 429 JSON at once (counted), and another client address is still served."""
    stack = await start_stack(
        busy_world(projects=1, deployments=1),
        now=NOW,
        client_forward_limit=2,
        client_forward_queue=1,
    )
    stack.fake.faults.latency = 1.0
    passthrough = [("GET", "/api/v4/projects/11", None)] * 6
    graphql = [("POST", "/api/graphql", {"query": "{ currentUser { username } }"})] * 6
    for flood in (passthrough, graphql):
        greedy = asyncio.ensure_future(_from("127.0.0.1", stack, flood))
        for _ in range(200):  # until the greedy client's first two reached GitLab
            if len(stack.fake.calls) + len(stack.fake.graphql_calls) >= 2:
                break
            await asyncio.sleep(0.01)
        ((other, _, _),) = await _from("127.0.0.2", stack, flood[:1])
        assert other == 200
        assert not greedy.done(), "the other client waited for the greedy one"
        answers = await greedy
        statuses = sorted(status for status, _, _ in answers)
        assert statuses == [200] * 3 + [429] * 3
        for status, body, headers in answers:
            if status == 429:
                assert body == '{"message":"429 Too Many Requests"}'
                assert headers["Retry-After"] == "1"
        stack.fake.reset_calls()
        stack.fake.graphql_calls.clear()
    samples, _ = await scrape(stack)
    assert value(samples, "dora_proxy_forwarded_refused_total") == 6


async def _junk_flood(stack, count: int, forwarded_for=None) -> list[int]:
    async def one(n: int) -> int:
        headers = {"PRIVATE-TOKEN": "glpat-" + secrets.token_hex(10)}
        if forwarded_for is not None:
            headers["X-Forwarded-For"] = forwarded_for(n)
        return (await get(stack, lead_time(11), headers))[0]

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_check_limit(
    start_stack,
) -> None:
    """Behind a reverse proxy every request comes from one peer: with `trusted_proxies`, the
    per-client check limit counts the address the reverse proxy appends, so one user's flood
    does not refuse another user's first request."""
    stack = await start_stack(
        busy_world(projects=1, deployments=1),
        now=NOW,
        trusted_proxies="127.0.0.0/8",
        client_check_limit=1,
        client_check_queue=1,
    )
    stack.fake.faults.latency = 0.3
    stack.fake.faults.only_kinds = {"user"}
    flood = asyncio.ensure_future(_junk_flood(stack, 12, lambda n: "198.51.100.7"))
    await asyncio.sleep(0.1)  # the flooder's turn and waiting room are taken
    maria = {**MARIA, "X-Forwarded-For": "203.0.113.9, 127.0.0.1"}  # one more trusted hop
    assert (await get(stack, lead_time(11), maria))[0] == 200
    statuses = await flood
    assert statuses.count(429) >= 12 - 1 - 1 - 2, statuses


async def test_a_forwarded_for_header_from_an_untrusted_peer_is_ignored(start_stack) -> None:
    """Without `trusted_proxies`, X-Forwarded-For cannot buy a flooder fresh limits: every
    request counts against the peer address."""
    stack = await start_stack(
        busy_world(projects=1, deployments=1), now=NOW, client_check_limit=1, client_check_queue=1
    )
    stack.fake.faults.latency = 0.3
    stack.fake.faults.only_kinds = {"user"}
    statuses = await _junk_flood(stack, 12, lambda n: f"198.51.100.{n}")
    assert statuses.count(429) >= 12 - 1 - 1 - 2, statuses
    assert len(stack.fake.calls_of("user")) == statuses.count(401)


async def test_graphql_dora_checks_take_turns_per_client(start_stack) -> None:
    """The GraphQL DORA route runs the same permission check, so it takes the same per-client
    turns: a junk-token flood through /api/graphql is refused past the waiting room instead of
    costing one /user call per token."""
    stack = await start_stack(
        busy_world(projects=1, deployments=1), now=NOW, client_check_limit=1, client_check_queue=1
    )
    stack.fake.faults.latency = 0.3
    stack.fake.faults.only_kinds = {"user"}
    query = (
        '{ project(fullPath: "f/app0") { dora { metrics(startDate: "2021-01-01", '
        'endDate: "2021-01-31") { date deploymentFrequency } } } }'
    )

    async def one() -> int:
        headers = {"PRIVATE-TOKEN": "glpat-" + secrets.token_hex(10)}
        response = await stack.client.post("/api/graphql", json={"query": query}, headers=headers)
        await response.read()
        return response.status

    statuses = await asyncio.gather(*(one() for _ in range(12)))
    assert len(stack.fake.calls_of("user")) <= 1 + 1 + 2, statuses
    assert statuses.count(429) >= 12 - 1 - 1 - 2, statuses


async def test_one_tokens_many_cold_checks_take_one_turn(start_stack) -> None:
    """The per-client turns bound what anyone can trigger at will (`/user` for tokens never
    seen, anonymous lookups), not a vouched-for user's checks: one token asking about many
    projects at once reads `/user` once, takes one turn, and is never refused."""
    stack = await start_stack(
        busy_world(projects=8, deployments=1), now=NOW, client_check_limit=1, client_check_queue=1
    )
    stack.fake.faults.latency = 0.05
    stack.fake.faults.only_kinds = {"user", "project", "project_members"}
    targets = [lead_time(project) for project in range(11, 19) for _ in range(3)]
    statuses = [status for status, _, _ in await asyncio.gather(*(get(stack, t) for t in targets))]
    assert statuses == [200] * len(targets)
    assert len(stack.fake.calls_of("user")) == 1
