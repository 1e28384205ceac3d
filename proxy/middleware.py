"""Two middlewares: the request log line, and errors rendered as GitLab-shaped JSON.

Errors become responses in one place only: `ProxyError`s carry their own status and body;
aiohttp's routing errors under /api/v4 get GitLab's catch-all bodies; anything else is logged
with its traceback and answers a generic 500 without details.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from .errors import ProxyError
from .facts import dumps
from .upstream import CURRENT_STATS, CallStats

log = structlog.get_logger("proxy.request")
CACHE_STATUS = web.RequestKey("cache_status", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(
    status: int, body: dict[str, object], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status, body=dumps(body), content_type="application/json", headers=headers
    )


@web.middleware
async def request_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    """One JSON line per request: method, path, status, duration, cache, upstream calls."""
    stats = CallStats()
    token = CURRENT_STATS.set(stats)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        CURRENT_STATS.reset(token)
        if not request.path.startswith("/-/health"):
            log.info(
                "request",
                method=request.method,
                path=request.path,  # never the query string: it may carry tokens
                params=sorted(set(request.query.keys())),
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                cache=request.get(CACHE_STATUS, "none"),
                upstream_calls=stats.total,
                upstream_calls_by_kind=dict(stats.calls),
            )


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProxyError as exc:
        if exc.status >= 500:
            log.warning("upstream_failure", status=exc.status, detail=exc.detail)
        return json_error(exc.status, exc.body, exc.headers)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/v4/"):
            raise
        if exc.status == 405:
            return json_error(405, {"error": "405 Not Allowed"}, {"Allow": "GET, HEAD"})
        if exc.status == 404:
            return json_error(404, {"error": "404 Not Found"})
        raise
    except Exception:
        log.exception("unhandled_error", method=request.method, path=request.path)
        return json_error(500, {"message": "500 Internal Server Error"})
