"""One middleware: errors rendered as GitLab-shaped JSON, and the request log line + metrics.

Errors become responses in one place only: `ProxyError`s carry their own status and body;
aiohttp's routing errors under /api/v4 get GitLab's catch-all bodies; anything else is logged
with its traceback and answers a generic 500 without details.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from .errors import GatewayTimeout, ProxyError
from .facts import dumps
from .log import request_log
from .observability import TELEMETRY
from .upstream import CURRENT_STATS, CallStats

log = structlog.get_logger("proxy.request")
# Probes and scrapes hit every few seconds; their lines would drown the requests that matter.
QUIET_PATHS = frozenset({"/-/health", "/-/liveness", "/-/readiness", "/metrics"})
CACHE_STATUS = web.RequestKey("cache_status", str)
UPSTREAM_STATS = web.RequestKey("upstream_stats", CallStats)
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


def count_upstream_calls(request: web.Request) -> CallStats:
    """Count the upstream calls made from here on for this request (for its log line).

    Called by a handler about to need the upstream, not for every request: a repeated request
    answered from memory never reaches GitLab and should not pay for the bookkeeping. The
    context variable lives in the request's task, so it ends with the request."""
    stats = CallStats()
    CURRENT_STATS.set(stats)
    request[UPSTREAM_STATS] = stats
    return stats


_NO_CALLS = CallStats()


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The only middleware: errors rendered as JSON (`error_response`), then one JSON line per
    request (method, path, status, duration, cache, upstream calls) and the request metrics,
    timed once for both. One layer, because every layer costs each request."""
    started = time.perf_counter()
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
    finally:
        seconds = time.perf_counter() - started
        request.app[TELEMETRY].request_done(request, status, seconds)
        path = request.path
        if path not in QUIET_PATHS:
            stats = request.get(UPSTREAM_STATS, _NO_CALLS)
            request_log().info(
                "request",
                method=request.method,
                path=path,  # never the query string: it may carry tokens
                params=sorted(set(request.query.keys())),
                status=status,
                duration_ms=round(seconds * 1000, 2),
                cache=request.get(CACHE_STATUS, "none"),
                upstream_calls=stats.total,
                upstream_calls_by_kind=dict(stats.calls),
            )


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

    Called from `observe`'s except block (so `log.exception` sees the traceback)."""
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
        # GitLab's catch-all bodies under /api/v4; the same JSON elsewhere (clients of the
        # proxy parse JSON, and an unknown path is no reason to answer text).
        if exc.status == 405:
            allow = (
                "GET, HEAD"
                if request.path.startswith("/api/v4/")
                else exc.headers.get("Allow", "GET")
            )
            return json_error(405, {"error": "405 Not Allowed"}, {"Allow": allow})
        if exc.status == 404:
            return json_error(404, {"error": "404 Not Found"})
        raise exc
    log.exception("unhandled_error", method=request.method, path=request.path)
    return json_error(500, {"message": "500 Internal Server Error"})
