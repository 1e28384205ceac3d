"""Every request observed: errors rendered as GitLab-shaped JSON, one log line, the metrics.

Each route's handler is wrapped by `observed` (no aiohttp middleware: a middleware adds two
layers of coroutines to every request, a tenth of a cache hit's time). Requests no route
takes reach `Unrouted`, a catch-all resource the router tries last, so they too get GitLab's
JSON 404 or 405, their log line and their metrics.

Errors become responses in one place only: `ProxyError`s carry their own status and body;
anything else is logged with its traceback and answers a generic 500 without details.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable
from time import perf_counter

import structlog
from aiohttp import web
from yarl import URL

from proxy.errors import GatewayTimeout, ProxyError
from proxy.facts import dumps
from proxy.telemetry.access_log import REQUEST_LOG
from proxy.telemetry.prometheus import TELEMETRY, UNMATCHED, Telemetry
from proxy.upstream.calls import CURRENT_STATS

log = structlog.get_logger("proxy.request")
CACHE_STATUS = web.RequestKey("cache_status", str)
# Which upstream call made a 5xx answer fail. The bodies are fixed by the spec, so the detail
# travels in this header (and the log): method and upstream path only, never a credential.
UPSTREAM_ERROR_HEADER = "X-Dora-Proxy-Upstream-Error"
_NOT_HEADER_SAFE = re.compile(r"[^\x20-\x7e]")
_MAX_HEADER_DETAIL = 300

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(
    status: int, body: dict[str, object], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=dumps(body), content_type="application/json", headers=headers
    )


# Probes and scrapes hit every few seconds; their lines would drown the requests that matter.
QUIET_ROUTES = frozenset({"health", "liveness", "readiness", "metrics"})


def observed(handler: Handler, route: str, telemetry: Telemetry) -> Handler:
    """`handler` (registered as `route`) with errors rendered as JSON (`error_response`), then
    its metrics and its request line, timed once for both. The route's name is bound here, not
    looked up per request: it labels the metrics and decides whether the request is logged."""
    logged = route not in QUIET_ROUTES
    count = telemetry.requests.observe
    record = REQUEST_LOG.record

    @functools.wraps(handler)
    async def observe(request: web.Request) -> web.StreamResponse:
        started = perf_counter()
        status = 500
        try:
            try:
                response = await handler(request)
            except Exception as exc:  # errors become responses here, the only place
                response = error_response(request, exc)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        except asyncio.CancelledError:
            status = 499  # the client went away first (nginx's "client closed request")
            raise
        finally:
            seconds = perf_counter() - started
            count(route, status, seconds)
            if logged:
                record(
                    request, status, seconds, request.get(CACHE_STATUS, "none"), CURRENT_STATS.get()
                )

    observe.observed = True  # type: ignore[attr-defined]  # checked by the tests
    return observe


class Unrouted(web.Resource):
    """Every path, tried after all other resources (the router's index key is "/")."""

    def __init__(self) -> None:
        super().__init__(name=UNMATCHED)

    @property
    def canonical(self) -> str:
        return "/"

    def url_for(self, **kwargs: str) -> URL:
        raise RuntimeError("requests no route takes have no URL")

    def add_prefix(self, prefix: str) -> None:
        raise RuntimeError("the catch-all resource belongs to the root app")

    def get_info(self) -> dict[str, str]:  # type: ignore[override]
        return {}

    def raw_match(self, path: str) -> bool:
        return True

    def _match(self, path: str) -> dict[str, str]:
        return {}


def add_route(app: web.Application, method: str, path: str, handler: Handler, name: str) -> None:
    """Register `handler` for `method` and `path`, observed (every route goes through here).
    A GET route answers HEAD too, as aiohttp's `add_get` does."""
    if method == "GET":
        app.router.add_get(path, observed(handler, name, app[TELEMETRY]), name=name)
    else:
        app.router.add_route(method, path, observed(handler, name, app[TELEMETRY]), name=name)


def add_unrouted(app: web.Application, forward: Handler | None = None) -> None:
    """Register the catch-all last: JSON 404, or 405 when another route has the path.

    With `forward` (the pass-through), a path under /api/v4/ that no route has under any
    method goes there instead (observed as route "passthrough")."""
    resource = Unrouted()
    app.router.register_resource(resource)
    refuse = observed(not_routed, UNMATCHED, app[TELEMETRY])
    if forward is None:
        resource.add_route("*", refuse)
        return
    passed = observed(forward, PASSTHROUGH_ROUTE, app[TELEMETRY])
    api_routes: list[web.AbstractResource] = []  # the routes under /api/v4/, once frozen

    async def unrouted(request: web.Request) -> web.StreamResponse:
        if request.path.startswith(API_PREFIX):
            if not api_routes:
                api_routes.extend(
                    r
                    for r in request.app.router.resources()
                    if not isinstance(r, Unrouted) and r.canonical.startswith(API_PREFIX)
                )
            # Only a route under /api/v4/ can own this path (a 405 rather than forwarding).
            for resource in api_routes:
                if (await resource.resolve(request))[1]:
                    return await refuse(request)
            return await passed(request)
        return await refuse(request)

    unrouted.observed = True  # type: ignore[attr-defined]  # both branches are
    resource.add_route("*", unrouted)


PASSTHROUGH_ROUTE = "passthrough"
API_PREFIX = "/api/v4/"


async def _allowed_methods(request: web.Request) -> set[str]:
    """The methods other routes accept for this path (empty: no route has it)."""
    allowed: set[str] = set()
    for resource in request.app.router.resources():
        if not isinstance(resource, Unrouted):
            allowed |= (await resource.resolve(request))[1]
    return allowed


async def not_routed(request: web.Request) -> web.Response:
    """GitLab's catch-all bodies under /api/v4; the same JSON elsewhere (clients of the proxy
    parse JSON, and an unknown path is no reason to answer text)."""
    allowed = await _allowed_methods(request)
    if not allowed:
        return json_error(404, {"error": "404 Not Found"})
    methods = "GET, HEAD" if request.path.startswith("/api/v4/") else ", ".join(sorted(allowed))
    return json_error(405, {"error": "405 Not Allowed"}, {"Allow": methods})


def _failure_detail(exc: ProxyError) -> str | None:
    """The error's detail; a deadline names the upstream call(s) it was still waiting for."""
    detail = exc.detail
    stats = CURRENT_STATS.get()
    if isinstance(exc, GatewayTimeout) and stats is not None and stats.in_flight:
        waiting = ", ".join(sorted(set(stats.in_flight))[:3])
        detail = f"{waiting}: {detail or 'request deadline exceeded'}"
    return detail


def header_safe(text: str) -> str:
    """Printable ASCII only (no CR/LF, no unicode from a caller's path), bounded length."""
    safe = _NOT_HEADER_SAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return safe[:_MAX_HEADER_DETAIL]


def error_response(request: web.Request, exc: Exception) -> web.Response:
    """The JSON answer for an exception a handler raised (re-raises what it does not handle).

    Called from `observed`'s except block (so `log.exception` sees the traceback)."""
    if isinstance(exc, ProxyError):
        headers = dict(exc.headers)
        if exc.status >= 500:
            detail = _failure_detail(exc)
            log.warning(
                "upstream_failure",
                method=request.method,
                path=request.path,
                status=exc.status,
                detail=detail,
            )
            if detail:
                headers[UPSTREAM_ERROR_HEADER] = header_safe(detail)
        return json_error(exc.status, exc.body, headers)
    if isinstance(exc, web.HTTPException):
        raise exc  # aiohttp's own answers (413 on an oversized body, ...)
    log.exception("unhandled_error", method=request.method, path=request.path)
    return json_error(500, {"message": "500 Internal Server Error"})
