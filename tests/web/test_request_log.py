"""The one line per request in JSON mode, the production set-up: batched, in order, redacted.

`configure_logging("info", "json")` writes to `sys.stdout`, here an in-memory stream, and every
request goes through real HTTP (the proxy on a TestServer in front of the fake GitLab). The
batch is written 50 ms after its first request, when it is `MAX_PENDING` long, before any
other event, and when the app stops (proxy/telemetry/access_log.py).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import structlog

from proxy.telemetry import access_log as request_log
from proxy.telemetry.access_log import FLUSH_DELAY, REQUEST_LOG
from proxy.telemetry.logs import configure_logging
from tests.web.test_observability import NOW, PAST, RITA, small_world

REQUEST_KEYS = {
    "event",
    "level",
    "timestamp",
    "method",
    "path",
    "params",
    "status",
    "duration_ms",
    "cache",
    "upstream_calls",
    "upstream_calls_by_kind",
}
BAD_PARAMETER = "/api/v4/projects/20/dora/metrics?metric=bogus&start_date=2024-01-01&interval=daily"
UNKNOWN = "/nothing/here?b=2&a=1&b=3"
# Days no other request asks for: their deployments are fetched, and no stale copy exists.
NOVEMBER = (
    "/api/v4/projects/20/dora/metrics?metric=deployment_frequency"
    "&start_date=2023-11-01&end_date=2023-11-30"
)


def _forget_cached_loggers() -> None:
    """Module-level loggers bound while JSON logging was configured keep that configuration
    (cache_logger_on_first_use): make them look the configuration up again, so later tests'
    `capture_logs` sees their events."""
    for name, module in list(sys.modules.items()):
        if name == "proxy" or name.startswith("proxy."):
            for value in vars(module).values():
                if isinstance(value, structlog._config.BoundLoggerLazyProxy):
                    value.__dict__.pop("bind", None)


def configure(level: str, out: io.StringIO, monkeypatch: pytest.MonkeyPatch) -> None:
    """JSON logging to `out`; the stdlib loggers it changes are restored after the test."""
    monkeypatch.setattr(sys, "stdout", out)
    for name in ("aiohttp.access", "aiohttp.server", "aiohttp.web"):
        library = logging.getLogger(name)
        monkeypatch.setattr(library, "disabled", library.disabled)
        monkeypatch.setattr(library, "filters", list(library.filters))
    configure_logging(level, "json")


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """stdout as a string, JSON logging at info as `dora-proxy serve` sets it up."""
    out = io.StringIO()
    configure("info", out, monkeypatch)
    yield out
    REQUEST_LOG.configure(structlog.get_logger("proxy.request"), batched=False, enabled=True)
    structlog.reset_defaults()
    _forget_cached_loggers()


def lines(out: io.StringIO) -> list[dict]:
    """Every line written so far, parsed (each must be one JSON object)."""
    return [json.loads(line) for line in out.getvalue().splitlines()]


def request_lines(out: io.StringIO) -> list[dict]:
    return [line for line in lines(out) if line["event"] == "request"]


def parse_timestamp(text: str) -> datetime:
    assert text.endswith("Z"), text
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


async def test_one_json_line_per_request_with_every_field(json_logs, start_stack) -> None:
    stack = await start_stack(small_world(), now=NOW)
    before = datetime.now(UTC)
    miss = await stack.client.get(PAST, headers=RITA)
    assert (miss.status, miss.headers["X-Dora-Proxy-Cache"]) == (200, "miss")
    kinds = Counter(call.kind for call in stack.fake.calls)
    recent = await stack.client.get(PAST, headers=RITA)
    assert recent.headers["X-Dora-Proxy-Cache"] == "recent"
    stack.app_service().recent.clear()
    hit = await stack.client.get(PAST, headers=RITA)
    assert hit.headers["X-Dora-Proxy-Cache"] == "hit"
    assert (await stack.client.get(BAD_PARAMETER, headers=RITA)).status == 400
    assert (await stack.client.get(UNKNOWN)).status == 404
    for probe in ("/-/health", "/-/liveness", "/-/readiness", "/metrics"):
        assert (await stack.client.get(probe)).status == 200
    REQUEST_LOG.flush()
    after = datetime.now(UTC)

    logged = lines(json_logs)
    assert all(line["event"] == "request" for line in logged), logged
    assert [set(line) for line in logged] == [REQUEST_KEYS] * 5
    assert [(line["method"], line["path"], line["status"], line["cache"]) for line in logged] == [
        ("GET", "/api/v4/projects/20/dora/metrics", 200, "miss"),
        ("GET", "/api/v4/projects/20/dora/metrics", 200, "recent"),
        ("GET", "/api/v4/projects/20/dora/metrics", 200, "hit"),
        ("GET", "/api/v4/projects/20/dora/metrics", 400, "none"),
        ("GET", "/nothing/here", 404, "none"),
    ]
    assert [line["params"] for line in logged] == [
        ["end_date", "metric", "start_date"],
        ["end_date", "metric", "start_date"],
        ["end_date", "metric", "start_date"],
        ["interval", "metric", "start_date"],
        ["a", "b"],
    ]
    first, *others = logged
    # Only the miss went upstream, and its calls are the ones the fake GitLab received.
    assert first["upstream_calls"] == sum(kinds.values()) > 0
    assert first["upstream_calls_by_kind"] == dict(kinds)
    assert sum(first["upstream_calls_by_kind"].values()) == first["upstream_calls"]
    assert [(line["upstream_calls"], line["upstream_calls_by_kind"]) for line in others] == [
        (0, {})
    ] * 4
    for line in logged:
        assert line["level"] == "info"
        assert before - timedelta(milliseconds=1) <= parse_timestamp(line["timestamp"]) <= after
        assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert first["duration_ms"] > 0


async def test_lines_are_batched_then_written_after_50_ms(json_logs, start_stack) -> None:
    stack = await start_stack(small_world(), now=NOW)
    assert (await stack.client.get(PAST, headers=RITA)).status == 200
    REQUEST_LOG.flush()
    assert len(request_lines(json_logs)) == 1
    json_logs.seek(0)
    json_logs.truncate()

    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(5):  # answered from memory: a millisecond or so each
        assert (await stack.client.get(PAST, headers=RITA)).status == 200
    if loop.time() - started < FLUSH_DELAY * 0.8:  # else the timer may rightly have fired
        assert json_logs.getvalue() == "", "written at once, not batched"
    await asyncio.sleep(FLUSH_DELAY + 0.01)
    assert [line["cache"] for line in request_lines(json_logs)] == ["recent"] * 5


async def test_the_batch_is_written_when_the_app_stops(
    json_logs, start_stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(request_log, "FLUSH_DELAY", 60.0)  # only the stop can write it
    stack = await start_stack(small_world(), now=NOW)
    for _ in range(3):
        assert (await stack.client.get(PAST, headers=RITA)).status == 200
    assert json_logs.getvalue() == ""
    await stack.client.close()
    assert [line["status"] for line in request_lines(json_logs)] == [200] * 3


async def test_a_full_batch_is_written_at_once(
    json_logs, start_stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(request_log, "FLUSH_DELAY", 60.0)
    monkeypatch.setattr(request_log, "MAX_PENDING", 3)
    stack = await start_stack(small_world(), now=NOW)
    for _ in range(2):
        assert (await stack.client.get(UNKNOWN)).status == 404
    assert json_logs.getvalue() == ""
    assert (await stack.client.get(UNKNOWN)).status == 404
    assert [line["status"] for line in request_lines(json_logs)] == [404] * 3
    assert (await stack.client.get(UNKNOWN)).status == 404  # a new batch begins
    assert len(request_lines(json_logs)) == 3


async def test_no_secret_from_the_url_reaches_the_output(json_logs, start_stack) -> None:
    stack = await start_stack(small_world(), now=NOW)
    targets = {
        # refused: a token in the query string (only the parameter's name is logged)
        "/api/v4/projects/20/dora/metrics?metric=deployment_frequency"
        "&private_token=glpat-secret1": 400,
        # an encoded "?" puts a token-looking text into the path itself
        "/api/v4/projects/x%3Faccess_token%3Dglpat-secret2/dora/metrics"
        "?metric=deployment_frequency": 404,
        "/nothing/private_token=glpat-secret3": 404,
        # a parameter *name* that carries a credential
        "/api/v4/projects/20/dora/metrics?metric=deployment_frequency"
        "&Bearer%20glpat-secret4=1": 200,
        "/x?job_token%3Dglpat-secret5=1": 404,
    }
    for target, status in targets.items():
        assert (await stack.get(target, RITA))[0] == status, target
    bad = await stack.client.get(PAST, headers={"PRIVATE-TOKEN": "glpat-secret6"})
    assert bad.status == 401
    REQUEST_LOG.flush()

    output = json_logs.getvalue()
    logged = request_lines(json_logs)
    assert [line["status"] for line in logged] == [*targets.values(), 401]
    for secret in ("glpat-secret", "tok-rita"):
        assert secret not in output
    assert logged[0]["params"] == ["metric", "private_token"]
    assert logged[1]["path"] == "/api/v4/projects/x?access_token=[redacted]"
    assert logged[2]["path"] == "/nothing/private_token=[redacted]"
    assert logged[3]["params"] == ["Bearer [redacted]", "metric"]
    assert logged[4]["params"] == ["job_token=[redacted]"]


async def test_request_lines_stay_in_order_with_other_events(
    json_logs, start_stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(request_log, "FLUSH_DELAY", 60.0)  # only the warning can flush them
    stack = await start_stack(small_world(), now=NOW, upstream_max_retries=0)
    assert (await stack.client.get(PAST, headers=RITA)).status == 200
    assert (await stack.client.get(UNKNOWN)).status == 404
    stack.fake.faults.only_kinds = {"deployments"}
    stack.fake.faults.status_codes = [502] * 5
    assert (await stack.client.get(NOVEMBER, headers=RITA)).status == 502
    events = [line["event"] for line in lines(json_logs)]
    assert events == ["request", "request", "upstream_failure"]
    REQUEST_LOG.flush()

    logged = lines(json_logs)
    assert [(line["event"], line.get("status")) for line in logged] == [
        ("request", 200),
        ("request", 404),
        ("upstream_failure", 502),
        ("request", 502),  # the failed request's own line comes after its warning
    ]
    assert logged[2]["level"] == "warning"
    assert logged[2]["path"] == "/api/v4/projects/20/dora/metrics"


async def test_no_request_lines_above_info(start_stack, monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    configure("warning", out, monkeypatch)
    try:
        stack = await start_stack(small_world(), now=NOW, upstream_max_retries=0)
        assert (await stack.client.get(PAST, headers=RITA)).status == 200
        assert (await stack.client.get(PAST, headers=RITA)).status == 200
        assert (await stack.client.get(UNKNOWN)).status == 404
        stack.fake.faults.only_kinds = {"deployments"}
        stack.fake.faults.status_codes = [502] * 5
        assert (await stack.client.get(NOVEMBER, headers=RITA)).status == 502
        await asyncio.sleep(FLUSH_DELAY + 0.01)
        REQUEST_LOG.flush()
        # The warning is written (the output is live), and nothing else.
        assert [line["event"] for line in lines(out)] == ["upstream_failure"]
    finally:
        REQUEST_LOG.configure(structlog.get_logger("proxy.request"), batched=False, enabled=True)
        structlog.reset_defaults()
        _forget_cached_loggers()


async def test_unconfigured_logging_gives_the_same_fields_per_event(json_logs, start_stack) -> None:
    """Without JSON mode (tests, a terminal) each request is one event with the same fields."""
    targets = [(PAST, RITA), (PAST, RITA), (BAD_PARAMETER, RITA), (UNKNOWN, None)]
    stack = await start_stack(small_world(), now=NOW)
    for target, headers in targets:
        await stack.get(target, headers)
    REQUEST_LOG.flush()
    batched = request_lines(json_logs)

    REQUEST_LOG.configure(structlog.get_logger("proxy.request"), batched=False, enabled=True)
    structlog.reset_defaults()
    _forget_cached_loggers()
    stack = await start_stack(small_world(), now=NOW)
    with structlog.testing.capture_logs() as events:
        for target, headers in targets:
            await stack.get(target, headers)
    assert len(batched) == len(events) == len(targets)
    for line, event in zip(batched, events, strict=True):
        assert event["event"] == "request" and event["log_level"] == "info"
        assert set(event) == REQUEST_KEYS - {"level", "timestamp"} | {"log_level"}
        for key in REQUEST_KEYS - {"event", "level", "timestamp", "duration_ms"}:
            assert event[key] == line[key], key
