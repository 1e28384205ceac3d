"""Upstream faults: each one injected in the fake GitLab, answered with a clear JSON error.

Transient failures (5xx, dropped connections, timeouts, malformed JSON) are retried with backoff;
a 429 is waited out within `rate_limit_max_wait` per request. What is left answers the spec's
exact bodies (502/503/504), names the failing upstream call in `X-Dora-Proxy-Upstream-Error`
and the log, and leaves nothing partial in the cache. Retries and waits never block the loop.

Settings are small (2 retries, 0.4 s upstream timeout) so the whole file runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from pathlib import Path

import diskcache
import structlog
from yarl import URL

from proxy.cache.disk import BytesOnlyDisk
from proxy.demo import STATUS_RESET
from proxy.demo.world import MAINTAINER, World

NOW = datetime(2021, 3, 1, 12, 0, tzinfo=UTC)
MARIA = {"PRIVATE-TOKEN": "tok-maria"}
DATES = "start_date=2021-01-01&end_date=2021-01-31"
FREQUENCY = f"/api/v4/projects/11/dora/metrics?metric=deployment_frequency&{DATES}"
LEAD_TIME = f"/api/v4/projects/11/dora/metrics?metric=lead_time_for_changes&{DATES}"
FREQUENCY_BODY = (
    '[{"date":"2021-01-01","value":1},{"date":"2021-01-02","value":1},'
    '{"date":"2021-01-03","value":1}]'
)
LEAD_TIME_BODY = (
    '[{"date":"2021-01-01","value":3600.0},{"date":"2021-01-02","value":7200.0},'
    '{"date":"2021-01-03","value":1800.0}]'
)
BAD_GATEWAY = '{"message":"502 Bad Gateway"}'
UNAVAILABLE = '{"message":"503 Service Unavailable"}'
TIMEOUT = '{"message":"504 Gateway Timeout"}'
HEADER = "X-Dora-Proxy-Upstream-Error"
FAST = {
    "upstream_max_retries": 2,
    "upstream_timeout": 0.4,
    "rate_limit_max_wait": 1.5,
    "request_deadline": 10.0,
}


def world() -> World:
    w = World().add_cast()
    group = w.add_group(10, "f")
    project = w.add_project(11, "app", group)
    w.add_member(w.users[11], group, MAINTAINER)  # maria
    env = w.add_environment(project, "production", "production")
    w.deploy(env, "2021-01-01T10:00:00Z", mrs=["2021-01-01T09:00:00Z"])
    w.deploy(env, "2021-01-02T10:00:00Z", mrs=["2021-01-02T08:00:00Z"])
    w.deploy(env, "2021-01-03T10:00:00Z", mrs=["2021-01-03T09:30:00Z"])
    return w


async def start(start_stack, **overrides):
    return await start_stack(world(), now=NOW, **{**FAST, **overrides})


async def fetch(stack, target: str, headers: dict[str, str] | None = None):
    url = URL(f"{stack.base_url}{target}", encoded=True)
    async with stack.client.session.get(url, headers=MARIA if headers is None else headers) as r:
        assert r.content_type == "application/json", await r.text()
        return r.status, await r.text(), r.headers


def answer_keys(cache_dir: Path) -> list[str]:
    """Answer entries in the disk cache, read with the proxy's own pickle-refusing Disk."""
    with contextlib.closing(diskcache.Cache(str(cache_dir), disk=BytesOnlyDisk)) as cache:
        return [key for key in cache.iterkeys() if "|answer|" in key]


async def test_baseline_without_faults(start_stack) -> None:
    stack = await start(start_stack)
    assert (await fetch(stack, FREQUENCY))[:2] == (200, FREQUENCY_BODY)
    assert (await fetch(stack, LEAD_TIME))[:2] == (200, LEAD_TIME_BODY)


async def test_a_burst_of_5xx_is_retried(start_stack) -> None:
    stack = await start(start_stack)
    stack.fake.faults.status_codes = [502, 503]
    assert (await fetch(stack, FREQUENCY))[:2] == (200, FREQUENCY_BODY)
    assert [c.status for c in stack.fake.calls[:3]] == [502, 503, 200]


async def test_persistent_5xx_answers_502_naming_the_call(start_stack) -> None:
    stack = await start(start_stack)
    stack.fake.faults.status_codes = [500] * 20
    stack.fake.faults.only_kinds = {"deployments"}
    with structlog.testing.capture_logs() as logs:
        status, body, headers = await fetch(stack, FREQUENCY)
    assert (status, body) == (502, BAD_GATEWAY)
    assert headers[HEADER] == "GET /projects/11/deployments: upstream answered 500"
    assert len(stack.fake.calls_of("deployments")) == 1 + FAST["upstream_max_retries"]
    failures = [e for e in logs if e["event"] == "upstream_failure"]
    assert [e["detail"] for e in failures] == [headers[HEADER]]
    assert sum(e["event"] == "upstream_retry" for e in logs) == FAST["upstream_max_retries"]


async def test_dropped_connections(start_stack) -> None:
    stack = await start(start_stack)
    stack.fake.faults.reset_connections = 1
    assert (await fetch(stack, FREQUENCY))[:2] == (200, FREQUENCY_BODY)
    assert stack.fake.calls[0].status == STATUS_RESET

    stack = await start(start_stack)
    stack.fake.faults.reset_connections = 10
    stack.fake.faults.only_kinds = {"environments"}
    status, body, headers = await fetch(stack, FREQUENCY)
    assert (status, body) == (502, BAD_GATEWAY)
    assert headers[HEADER] == "GET /projects/11/environments: connection failed"


async def test_malformed_json(start_stack) -> None:
    stack = await start(start_stack)
    stack.fake.faults.malformed_json = 1
    assert (await fetch(stack, FREQUENCY))[:2] == (200, FREQUENCY_BODY)

    stack = await start(start_stack)
    stack.fake.faults.malformed_json = 10
    stack.fake.faults.only_kinds = {"user"}
    status, body, headers = await fetch(stack, FREQUENCY)
    assert (status, body) == (502, BAD_GATEWAY)
    assert headers[HEADER] == "GET /user: malformed JSON"


async def test_json_of_the_wrong_shape_is_a_bad_gateway_not_a_crash(start_stack) -> None:
    """An injected 200 carries `{"message": ...}`: valid JSON where GitLab sends other data."""
    for kind, call in (
        ("user", "GET /user: unexpected answer (KeyError)"),
        ("project", "GET /projects/11: unexpected answer (KeyError)"),
        ("project_members", "GET /projects/11/members/all/11: unexpected answer"),
        ("environments", "GET /projects/11/environments: expected a list"),
        ("deployments", "GET /projects/11/deployments: expected a list"),
    ):
        stack = await start(start_stack)
        stack.fake.faults.status_codes = [200]
        stack.fake.faults.only_kinds = {kind}
        status, body, headers = await fetch(stack, FREQUENCY)
        assert (status, body) == (502, BAD_GATEWAY), kind
        assert headers[HEADER].startswith(call), headers[HEADER]


async def test_a_4xx_on_a_data_call_is_a_bad_gateway(start_stack) -> None:
    stack = await start(start_stack)
    stack.fake.faults.status_codes = [404]
    stack.fake.faults.only_kinds = {"deployments"}
    status, body, headers = await fetch(stack, FREQUENCY)
    assert (status, body) == (502, BAD_GATEWAY)
    assert headers[HEADER] == "GET /projects/11/deployments: upstream answered 404"


async def test_upstream_timeout_answers_504(start_stack) -> None:
    stack = await start(start_stack, upstream_timeout=0.2, upstream_max_retries=1)
    stack.fake.faults.hang = 1.0
    stack.fake.faults.only_kinds = {"project"}
    started = time.monotonic()
    status, body, headers = await fetch(stack, FREQUENCY)
    assert (status, body) == (504, TIMEOUT)
    assert headers[HEADER] == "GET /projects/11: timed out"
    assert len(stack.fake.calls_of("project")) == 2
    assert time.monotonic() - started < 1.5


async def test_request_deadline_answers_504_naming_the_call_in_flight(start_stack) -> None:
    stack = await start(start_stack, upstream_timeout=5.0, request_deadline=0.4)
    stack.fake.faults.latency = 1.0
    stack.fake.faults.only_kinds = {"deployments"}
    started = time.monotonic()
    status, body, headers = await fetch(stack, FREQUENCY)
    assert (status, body) == (504, TIMEOUT)
    assert headers[HEADER] == "GET /projects/11/deployments: request deadline exceeded"
    assert time.monotonic() - started < 1.5


async def test_rate_limit_within_the_bound_is_waited_out_without_blocking_the_loop(
    start_stack,
) -> None:
    stack = await start(start_stack)
    stack.fake.faults.status_codes = [429]
    stack.fake.faults.retry_after = "1"
    started = time.monotonic()
    request = asyncio.ensure_future(fetch(stack, FREQUENCY))
    await asyncio.sleep(0.3)
    before = time.monotonic()
    async with stack.client.get("/-/health") as health:
        assert health.status == 200
    assert time.monotonic() - before < 0.3, "the event loop answered while a request waited"
    assert not request.done()
    assert (await request)[:2] == (200, FREQUENCY_BODY)
    assert time.monotonic() - started >= 1.0
    assert [c.status for c in stack.fake.calls[:2]] == [429, 200]


async def test_rate_limit_beyond_the_bound_answers_503_at_once(start_stack) -> None:
    stack = await start(start_stack)
    stack.fake.faults.status_codes = [429] * 5
    stack.fake.faults.retry_after = "120"
    stack.fake.faults.only_kinds = {"environments"}
    started = time.monotonic()
    status, body, headers = await fetch(stack, FREQUENCY)
    assert (status, body) == (503, UNAVAILABLE)
    assert headers["Retry-After"] == "120"
    assert headers[HEADER].startswith("GET /projects/11/environments: rate limited upstream")
    assert time.monotonic() - started < 0.5, "the caller is not held"


async def test_rate_limit_cap_is_per_request_not_per_wait(start_stack) -> None:
    """Three 0.4 s waits would each be under the 1 s cap, but not together."""
    stack = await start(start_stack, rate_limit_max_wait=1.0, upstream_max_retries=5)
    stack.fake.faults.status_codes = [429] * 3
    stack.fake.faults.retry_after = "0.4"
    status, body, headers = await fetch(stack, FREQUENCY)
    assert (status, body) == (503, UNAVAILABLE)
    assert headers["Retry-After"] == "1"
    assert [c.status for c in stack.fake.calls] == [429, 429, 429]


async def test_rate_limit_without_retry_after_backs_off(start_stack) -> None:
    """GitLab's per-endpoint limit: a JSON 429 without any rate-limit header."""
    stack = await start(start_stack)
    stack.fake.faults.status_codes = [429]
    assert (await fetch(stack, FREQUENCY))[:2] == (200, FREQUENCY_BODY)

    stack = await start(start_stack, rate_limit_max_wait=1.0)
    stack.fake.faults.status_codes = [429] * 10
    status, body, headers = await fetch(stack, FREQUENCY)
    assert (status, body) == (503, UNAVAILABLE)
    assert int(headers["Retry-After"]) >= 1


async def test_unusable_retry_after_is_not_a_crash(start_stack) -> None:
    async def one(value: str) -> tuple[int, str]:
        stack = await start(start_stack)
        stack.fake.faults.status_codes = [429]
        stack.fake.faults.retry_after = value
        return (await fetch(stack, FREQUENCY))[:2]

    values = ("soon", "Wed, 21 Oct 2015 07:28:00", "inf", "nan", "-5", "1e400")
    answers = await asyncio.gather(*(one(value) for value in values))
    assert answers == [(200, FREQUENCY_BODY)] * len(values)


async def test_a_failure_midway_caches_no_answer(start_stack, tmp_path) -> None:
    """Environments and deployments arrive, then every merge-request list fails."""
    stack = await start(start_stack, cache_dir=tmp_path / "cache")
    stack.fake.faults.status_codes = [500] * 100
    stack.fake.faults.only_kinds = {"deployment_mrs"}
    status, body, headers = await fetch(stack, LEAD_TIME)
    assert (status, body) == (502, BAD_GATEWAY)
    assert "/merge_requests: upstream answered 500" in headers[HEADER]
    assert stack.fake.calls_of("deployments"), "the failure came midway"
    assert answer_keys(tmp_path / "cache") == []

    stack.fake.faults.status_codes = []
    stack.fake.reset_calls()
    assert (await fetch(stack, LEAD_TIME))[:2] == (200, LEAD_TIME_BODY)
    assert stack.fake.calls_of("deployment_mrs"), "the merge requests were fetched again"
    assert answer_keys(tmp_path / "cache"), "the complete answer is cached"
    stack.fake.reset_calls()
    assert (await fetch(stack, LEAD_TIME))[:2] == (200, LEAD_TIME_BODY)
    assert stack.fake.data_calls() == []


async def test_error_headers_never_carry_credentials_or_raw_bytes(start_stack) -> None:
    stack = await start(start_stack)
    stack.fake.faults.status_codes = [500] * 20
    stack.fake.faults.only_kinds = {"project"}
    path = "/api/v4/projects/f%2F%C3%A9%09app/dora/metrics?metric=deployment_frequency"
    status, body, headers = await fetch(stack, path)
    assert (status, body) == (502, BAD_GATEWAY)
    assert headers[HEADER] == "GET /projects/f%2F%C3%A9%09app: upstream answered 500"
    assert "tok-maria" not in str(dict(headers))
