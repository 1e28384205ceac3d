"""Routing without a middleware: every route's handler is wrapped by `observe.observed`, and
requests no route takes reach the catch-all `Unrouted` resource, so every answer is JSON, has
its request line and is counted (route label "unmatched").

Odd request targets are sent raw over a socket: an HTTP client library would normalise them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from proxy.app import create_app
from proxy.web.routing import Unrouted
from tests import conftest
from tests.web.test_observability import NOW, small_world

WEBHOOK_SECRET = "s3cret"
NOT_FOUND = {"error": "404 Not Found"}
NOT_ALLOWED = {"error": "405 Not Allowed"}
HTTP_REQUESTS = "dora_proxy_http_requests_total"

# (raw request line, path as logged, status, Allow header or None)
ODD_TARGETS = [
    ("OPTIONS * HTTP/1.1", "*", 404, None),
    ("GET http://gitlab.example.com/x HTTP/1.1", "/x", 404, None),  # absolute form
    ("GET // HTTP/1.1", "//", 404, None),
    (
        "GET /api/v4/projects/1/dora/metrics/ HTTP/1.1",
        "/api/v4/projects/1/dora/metrics/",
        404,
        None,
    ),
    ("GET /api/v4/projects//dora/metrics HTTP/1.1", "/api/v4/projects//dora/metrics", 404, None),
    ("GET /openapi.json/ HTTP/1.1", "/openapi.json/", 404, None),
    ("GET /a/../b HTTP/1.1", "/a/../b", 404, None),
    ("GET /%ZZ HTTP/1.1", "/%ZZ", 404, None),
    ("GET /-/webhooks/gitlab HTTP/1.1", "/-/webhooks/gitlab", 405, "POST"),
    ("DELETE /metrics HTTP/1.1", "/metrics", 405, "GET, HEAD"),
    ("POST /-/health HTTP/1.1", "/-/health", 405, "GET, HEAD"),
    (
        "PUT /api/v4/groups/1/dora/metrics HTTP/1.1",
        "/api/v4/groups/1/dora/metrics",
        405,
        "GET, HEAD",
    ),
]
# Targets whose path is empty: aiohttp's router never walks to the catch-all's index key "/".
EMPTY_PATH_TARGETS = [
    "GET http://gitlab.example.com HTTP/1.1",
    "CONNECT gitlab.example.com:443 HTTP/1.1",
]


async def raw(stack, request_line: str, headers: str = "Host: proxy\r\n") -> tuple:
    """Send one request exactly as written; (status, headers with lower-case names, body)."""
    server = stack.client.server
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        message = f"{request_line}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
        writer.write(message.encode("latin-1"))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    response_headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in header_lines)
    }
    return int(status_line.split()[1]), response_headers, body


async def unmatched_counts(stack) -> dict[str, float]:
    """dora_proxy_http_requests_total{route="unmatched"} by status, as a scrape sees it."""
    text = await (await stack.client.get("/metrics")).text()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name, sample.labels.get("route")) == (HTTP_REQUESTS, "unmatched"):
                counts[sample.labels["status"]] = sample.value
    return counts


def test_every_route_is_observed(tmp_path: Path) -> None:
    settings = conftest.test_settings("http://127.0.0.1:9", tmp_path, webhook_secret=WEBHOOK_SECRET)
    app = create_app(settings)
    routes = list(app.router.routes())
    names = {route.name for route in routes}
    assert {
        "project_dora",
        "group_dora",
        "health",
        "readiness",
        "liveness",
        "metrics",
        "openapi",
        "gitlab_webhook",
    } <= names
    unobserved = [
        (route.method, route.resource.canonical if route.resource else None)
        for route in routes
        if getattr(route.handler, "observed", False) is not True
    ]
    assert unobserved == []
    # The catch-all is there, tried last, and no middleware wraps the routes instead.
    resources = list(app.router.resources())
    assert isinstance(resources[-1], Unrouted)
    assert sum(isinstance(resource, Unrouted) for resource in resources) == 1
    assert [route.method for route in resources[-1]] == ["*"]
    assert list(app.middlewares) == []


async def test_odd_request_targets_get_json_a_line_and_a_count(start_stack) -> None:
    # pass-through off: the /api/v4/ targets below would otherwise be GitLab's to answer
    stack = await start_stack(
        small_world(), now=NOW, webhook_secret=WEBHOOK_SECRET, pass_through="off"
    )
    with structlog.testing.capture_logs() as events:
        for request_line, _, status, allow in ODD_TARGETS:
            got_status, headers, body = await raw(stack, request_line)
            assert got_status == status, request_line
            assert headers["content-type"] == "application/json", request_line
            assert json.loads(body) == (NOT_ALLOWED if status == 405 else NOT_FOUND)
            assert headers.get("allow") == allow, request_line
    logged = [(e["method"], e["path"], e["status"]) for e in events if e["event"] == "request"]
    assert logged == [
        (request_line.split()[0], path, status) for request_line, path, status, _ in ODD_TARGETS
    ]
    statuses = [status for *_, status, _ in ODD_TARGETS]
    assert await unmatched_counts(stack) == {
        "404": statuses.count(404),
        "405": statuses.count(405),
    }


async def test_a_request_without_host_header_gets_json(start_stack) -> None:
    stack = await start_stack(small_world(), now=NOW)
    status, headers, body = await raw(stack, "GET /x HTTP/1.0", headers="")
    assert (status, headers["content-type"], json.loads(body)) == (
        404,
        "application/json",
        NOT_FOUND,
    )
    assert await unmatched_counts(stack) == {"404": 1}


@pytest.mark.parametrize("request_line", EMPTY_PATH_TARGETS)
async def test_a_target_with_an_empty_path_is_refused_by_aiohttp(
    start_stack, request_line: str
) -> None:
    """A documented limit (README "Limits"): aiohttp's router tries no resource at all for an
    empty path, so the catch-all never sees these: aiohttp answers its own plain 404, without
    a request line or a count. The proxy stays up and the next request is served normally."""
    stack = await start_stack(small_world(), now=NOW)
    status, headers, _ = await raw(stack, request_line)
    assert (status, headers["content-type"]) == (404, "text/plain; charset=utf-8")
    status, headers, body = await raw(stack, "GET /x HTTP/1.1")
    assert (status, json.loads(body)) == (404, NOT_FOUND)
    assert await unmatched_counts(stack) == {"404": 1}
