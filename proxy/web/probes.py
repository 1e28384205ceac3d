"""Operator endpoints: `/-/health`, `/-/liveness`, `/-/readiness` and `GET /metrics`.

Probes and scrapes are quiet (no request log line, proxy/web/routing.py) and never touch the
upstream through the proxy's bounded thread pool.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from proxy.cache.base import Storage, StorageError
from proxy.telemetry.prometheus import TELEMETRY

READINESS_TIMEOUT = 3.0  # seconds per readiness check, whatever upstream_timeout says


async def health(request: web.Request) -> web.Response:
    """The process is up and serving."""
    return web.json_response({"status": "ok"})


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text exposition format 0.0.4."""
    body = request.app[TELEMETRY].render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_PLAIN_0_0_4
    return response


# ---- probes -----------------------------------------------------------------------------------


class Readiness:
    """Can this replica answer DORA requests: upstream reachable and cache writable.

    Upstream: an anonymous `GET <upstream>/api/v4/user` (one of the eleven endpoints the proxy
    may call; without a credential GitLab answers 401 at once, touching no data). Any answer
    below 500 within the timeout counts as reachable: the proxy has no token of its own, so
    401 is the expected answer. A 5xx (GitLab or its front proxy failing), a timeout or a
    connection error counts as unreachable. Plain aiohttp, not the upstream thread pool: a
    pool busy with slow real requests must not make the probe fail, and a probe is not retried.
    """

    def __init__(self, upstream_url: str, storage: Storage, timeout: float) -> None:
        self.url = upstream_url.rstrip("/") + "/api/v4/user"
        self.storage = storage
        self.timeout = timeout

    async def check(self) -> dict[str, str]:
        """Each check's result: "ok" or a short reason (never a credential: there is none)."""
        upstream, cache = await asyncio.gather(self._upstream(), self._cache())
        return {"upstream": upstream, "cache": cache}

    async def _upstream(self) -> str:
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(self.url, allow_redirects=False) as response,
            ):
                status = response.status
        except TimeoutError:
            return f"no answer within {self.timeout:g}s"
        except aiohttp.ClientError as exc:
            return f"unreachable: {type(exc).__name__}"
        if status >= 500:
            return f"answered {status}"
        return "ok"

    async def _cache(self) -> str:
        try:
            async with asyncio.timeout(self.timeout):
                await self.storage.check_writable()
        except TimeoutError:
            return f"no answer within {self.timeout:g}s"
        except StorageError as exc:
            return f"not writable: {exc}"
        return "ok"


READINESS = web.AppKey("readiness", Readiness)


async def readiness(request: web.Request) -> web.Response:
    """200 when every check passes; 503 naming the failed ones otherwise."""
    checks = await request.app[READINESS].check()
    failed = sorted(name for name, result in checks.items() if result != "ok")
    if failed:
        return web.json_response(
            {"status": "unavailable", "failed": failed, "checks": checks}, status=503
        )
    return web.json_response({"status": "ok", "checks": checks})


async def liveness(request: web.Request) -> web.Response:
    """The event loop runs handlers: answering at all is the proof (a blocked loop times out)."""
    await asyncio.sleep(0)
    return web.json_response({"status": "ok"})
