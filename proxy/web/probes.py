"""Operator endpoints: `/-/health`, `/-/liveness`, `/-/readiness` and `GET /metrics`.

Probes and scrapes are quiet (no request log line, proxy/web/routing.py) and never touch the
upstream through the proxy's bounded thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import aiohttp
from aiohttp import web
from prometheus_client import Gauge
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from proxy.cache.base import Storage, StorageError
from proxy.telemetry.prometheus import TELEMETRY, Telemetry

READINESS_TIMEOUT = 3.0  # seconds per readiness check, whatever upstream_timeout says


async def metrics_endpoint(request: web.Request) -> web.Response:
    """Prometheus text exposition format 0.0.4."""
    body = request.app[TELEMETRY].render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_PLAIN_0_0_4
    return response


# ---- probes -----------------------------------------------------------------------------------

UPSTREAM_PROBE_EVERY = 5.0  # seconds between two anonymous probes of GitLab, at most


class UpstreamHealth:
    """GitLab's health as this process last saw it: reported, never a reason to leave the pool.

    Seen passively on every upstream call (`observe`: a 5xx, a timeout or a refused connection
    is "down", any other answer "up"), and actively by an anonymous `GET <upstream>/api/v4/user`
    (GitLab answers 401 at once, touching no data) that `/-/readiness` starts in the background
    at most every `UPSTREAM_PROBE_EVERY` seconds, so no probe ever waits for GitLab. Plain
    aiohttp, not the upstream thread pool: a pool busy with slow real requests must not make
    the probe fail.
    """

    def __init__(self, upstream_url: str, timeout: float, up: Gauge | None = None) -> None:
        self.url = upstream_url.rstrip("/") + "/api/v4/user"
        self.timeout = timeout
        self.state = "unknown"  # "ok", or why not
        self._up = up
        self._checked_at = -float("inf")
        self._task: asyncio.Task[None] | None = None

    def observe(self, kind: str, status: str, seconds: float) -> None:
        """An upstream call's outcome (`Upstream`'s observer; runs in worker threads)."""
        if status.isdigit():
            self._set("ok" if int(status) < 500 else f"answered {status}")
        elif status in ("timeout", "connection_error"):
            self._set("timed out" if status == "timeout" else "unreachable")

    def _set(self, state: str) -> None:
        self.state = state
        if self._up is not None:
            self._up.set(1 if state == "ok" else 0)

    def refresh(self) -> None:
        """Start a probe unless one runs or the last one is recent (never waits)."""
        loop = asyncio.get_running_loop()
        if self._task is not None and not self._task.done():
            return
        if loop.time() - self._checked_at < UPSTREAM_PROBE_EVERY:
            return
        self._checked_at = loop.time()
        self._task = asyncio.ensure_future(self._probe())

    async def wait(self) -> str:
        """The state after the probe in flight (tests, start-up); bounded by the timeout."""
        self.refresh()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=self.timeout + 1)
        return self.state

    async def _probe(self) -> None:
        self._set(await self._check())

    async def _check(self) -> str:
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

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


class Readiness:
    """Can this process answer DORA requests? Only what is true of this process counts.

    - `cache`: a write/read/delete round trip within the timeout. A failing cache does not make
      the process unready (requests are answered uncached, see proxy/cache/guarded.py): it is
      reported as degraded.
    - `permission_queue`: permission checks' upstream calls waiting for a worker of their pool,
      against `permission_queue_limit`. A full queue answers every caller without a cached
      decision 503 at once: the process is unready (503, naming the queue) until it drains,
      so a load balancer sends new callers to another replica meanwhile.

    GitLab's own health is not a readiness check: every replica shares one GitLab, so a GitLab
    blip would take them all out of the load balancer at once. It is reported by `/-/health`
    and the `dora_proxy_upstream_up` gauge instead (`UpstreamHealth`).

    The whole check answers within `timeout` even when the backend ignores cancellation (a
    frozen Redis): the round trip runs as its own task and is abandoned, not awaited, past it.
    """

    def __init__(
        self,
        storage: Storage,
        timeout: float,
        upstream: UpstreamHealth,
        saturated: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.storage = storage
        self.timeout = timeout
        self.upstream = upstream
        self.saturated = saturated

    async def check(self) -> tuple[bool, dict[str, str]]:
        """(ready, each check's result: "ok" or a short reason, never a credential)."""
        self.upstream.refresh()
        cache = await self._cache()
        queue = self.saturated() or "ok"
        return queue == "ok", {"cache": cache, "permission_queue": queue}

    async def _cache(self) -> str:
        task = asyncio.ensure_future(self.storage.check_writable())
        done, _ = await asyncio.wait({task}, timeout=self.timeout)
        if task not in done:
            task.cancel()
            task.add_done_callback(_quiet)
            return f"degraded: no answer within {self.timeout:g}s"
        try:
            task.result()
        except StorageError as exc:
            return f"degraded: {exc}"
        except Exception as exc:  # a backend bug must not make the probe a 500
            return f"degraded: {type(exc).__name__}"
        return "ok"


def _quiet(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


READINESS = web.AppKey("readiness", Readiness)


def upstream_up_gauge(telemetry: Telemetry) -> Gauge:
    return Gauge(
        "dora_proxy_upstream_up",
        "1 when the last anonymous probe of GitLab (at most every 5 s, while probes or scrapes "
        "come) got an answer below 500, else 0. Not part of readiness.",
        registry=telemetry.registry,
    )


async def health(request: web.Request) -> web.Response:
    """The process is up and serving (always 200 while it is); GitLab's last known state as
    detail, for people, not for load balancers."""
    readiness = request.app.get(READINESS)
    if readiness is None:
        return web.json_response({"status": "ok"})
    return web.json_response({"status": "ok", "upstream": readiness.upstream.state})


async def readiness(request: web.Request) -> web.Response:
    """200 when this process can serve (with what is degraded, if anything); 503 otherwise."""
    ready, checks = await request.app[READINESS].check()
    degraded = sorted(name for name, result in checks.items() if result.startswith("degraded"))
    body: dict[str, object] = {
        "status": "ok" if ready and not degraded else ("degraded" if ready else "unavailable"),
        "checks": checks,
        "upstream": request.app[READINESS].upstream.state,
    }
    if degraded:
        body["degraded"] = degraded
    if not ready:
        body["failed"] = sorted(n for n, r in checks.items() if r != "ok" and n not in degraded)
        return web.json_response(body, status=503)
    return web.json_response(body)


async def liveness(request: web.Request) -> web.Response:
    """The event loop runs handlers: answering at all is the proof (a blocked loop times out)."""
    await asyncio.sleep(0)
    return web.json_response({"status": "ok"})
