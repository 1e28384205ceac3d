"""`create_app(settings)`: routes (each one observed) and the resources a request needs.

Resources are opened in one cleanup context (so they close only if start-up succeeded) and live
on the app under typed keys.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from proxy.cache import Storage, open_storage
from proxy.cache.guarded import GuardedStorage, warn_if_cache_exceeds_free_space
from proxy.cache.keys import CacheKeys, namespace_for
from proxy.clock import Clock, utc_now
from proxy.collect import FactsCollector, FactsPolicy
from proxy.explain import load_levels
from proxy.permissions import Permissions
from proxy.refresh import HotAnswers
from proxy.server_secret import load_server_secret
from proxy.service import AnswerPolicy, DoraService
from proxy.settings import Settings
from proxy.single_flight import StorageLock
from proxy.telemetry import dora_export
from proxy.telemetry.access_log import REQUEST_LOG
from proxy.telemetry.prometheus import TELEMETRY, Telemetry
from proxy.upstream import Upstream
from proxy.web import (
    dashboard,
    extensions,
    graphql,
    handlers,
    openapi,
    passthrough,
    probes,
    webhooks,
)
from proxy.web.client_address import CLIENT_ADDRESS, ClientAddress, parse_networks
from proxy.web.probes import (
    READINESS,
    READINESS_TIMEOUT,
    Readiness,
    UpstreamHealth,
    upstream_up_gauge,
)
from proxy.web.routing import add_route, add_unrouted

SETTINGS = web.AppKey("settings", Settings)
STORAGE = web.AppKey("storage", Storage)
UPSTREAM = web.AppKey("upstream", Upstream)

API_ROUTES = (
    ("project_dora", "/api/v4/projects/{id}/dora/metrics"),
    ("group_dora", "/api/v4/groups/{id}/dora/metrics"),
)
MAX_LINE_SIZE = 8190
MAX_FIELD_SIZE = 8190


DEFAULT_REDIS_NAMESPACE = "dora-proxy"


def open_settings_storage(settings: Settings, *, redis_namespace: str | None = None) -> Storage:
    """The configured cache: Redis when `cache_url` is set (keys under `redis_namespace:`),
    else the disk cache in `cache_dir`."""
    return open_storage(
        settings.cache_url or settings.cache_dir,
        size_limit=settings.cache_size_limit,
        namespace=redis_namespace or DEFAULT_REDIS_NAMESPACE,
    )


def recent_lifetimes(settings: Settings) -> tuple[float, float]:
    """(facts of recent days and environments, answers that include today): with webhooks they
    live `webhook_ttl`, a safety net for a missed delivery, since a webhook drops them as soon
    as a deployment or incident changes them (docs/decisions.md, "Freshness with webhooks")."""
    if settings.webhook_secret and settings.webhook_ttl > 0:
        return settings.webhook_ttl, settings.webhook_ttl
    return settings.facts_ttl_recent, settings.answer_ttl_current


def _membership_by_hooks(settings: Settings, storage: Storage, keys: CacheKeys) -> dict[str, Any]:
    """With system hooks delivered (and a receiver to take them), membership decisions are kept
    until the shared generation moves; see proxy/permissions.py."""
    if not (settings.system_hooks and settings.webhook_secret):
        return {}
    key = keys.membership_generation()

    async def generation() -> int:
        raw = await storage.get(key)
        return int(raw) if raw else 0

    return {
        "membership_ttl": settings.membership_ttl,
        "keepalive": settings.permission_keepalive,
        "generation": generation,
    }


def background_period(settings: Settings) -> float:
    """Seconds between background rounds: an eighth of `permission_ttl` when tokens are kept
    alive (a user record is re-read in the last two rounds of its life), else half a minute."""
    if settings.system_hooks and settings.permission_keepalive > 0:
        return max(1.0, min(settings.permission_ttl / 8, 30.0))
    return 30.0


def build_service(
    settings: Settings,
    clock: Clock = utc_now,
    *,
    telemetry: Telemetry | None = None,
    redis_namespace: str | None = None,
    batch: bool = False,
) -> DoraService:
    """Every long-lived resource of the proxy, wired together (also used by `cache warm`,
    a `batch` job: its requests have no deadline)."""
    telemetry = telemetry or Telemetry()
    storage = GuardedStorage(
        open_settings_storage(settings, redis_namespace=redis_namespace),
        timeout=settings.cache_timeout,
    )
    if not settings.cache_url:
        warn_if_cache_exceeds_free_space(settings.cache_dir, settings.cache_size_limit)
    upstream = Upstream(
        settings.upstream_url or "",
        timeout=settings.upstream_timeout,
        concurrency=settings.upstream_concurrency,
        max_retries=settings.upstream_max_retries,
        rate_limit_max_wait=settings.rate_limit_max_wait,
        observer=telemetry.upstream_call,
        max_pages=settings.upstream_max_pages,
        max_items=settings.upstream_max_items,
        queue_limit=settings.permission_queue_limit,
        check_concurrency=settings.permission_concurrency,
    )
    namespace = namespace_for(settings.upstream_url or "", settings.time_zone)
    secret = load_server_secret(settings.server_secret, settings.cache_dir)
    ttl_recent, ttl_current = recent_lifetimes(settings)
    collector = FactsCollector(
        storage,
        FactsPolicy(
            tz=settings.tz,
            ttl_settled=settings.facts_ttl_settled,
            ttl_recent=ttl_recent,
            settle_margin=settings.facts_settle_margin,
            ttl_listing=settings.facts_ttl_recent,
        ),
        namespace,
        clock,
        telemetry=telemetry,
    )
    return DoraService(
        upstream=upstream,
        permissions=Permissions(
            secret,
            settings.permission_ttl,
            settings.client_check_limit,
            settings.client_check_queue,
            **_membership_by_hooks(settings, storage, CacheKeys(namespace)),
        ),
        collector=collector,
        storage=storage,
        policy=AnswerPolicy(
            ttl_past=settings.answer_ttl_past,
            ttl_current=ttl_current,
            stale_ttl=max(settings.facts_ttl_settled, settings.answer_ttl_past),
            stale_on_error=settings.stale_on_error,
        ),
        keys=CacheKeys(namespace),
        deadline=None if batch else settings.request_deadline,
        clock=clock,
        telemetry=telemetry,
        recent_ttl=settings.recent_answer_ttl,
        max_computations=settings.max_computations,
        hot=(
            HotAnswers(settings.refresh_window)
            if settings.webhook_secret and settings.refresh_window > 0 and not batch
            else None
        ),
        # Replicas (or processes on one disk cache) compute a cold answer once; a holder that
        # died frees the lock within one short lease.
        replica_lock=StorageLock(
            storage, ttl=settings.request_deadline, on_outcome=telemetry.lock_outcome
        ),
    )


def create_app(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    redis_namespace: str | None = None,
) -> web.Application:
    """The proxy as an aiohttp application. `clock` is injectable for tests ("today");
    `redis_namespace` keeps proxies that share one Redis apart (default: they share)."""
    telemetry = Telemetry()
    app = web.Application(
        handler_args={
            "max_line_size": MAX_LINE_SIZE,
            "max_field_size": MAX_FIELD_SIZE,
            # A client that disconnects cancels its handler (aiohttp >= 3.9 keeps it running
            # by default), so its share of a computation is released at once.
            "handler_cancellation": True,
            # A connection that sends no request (first or next) is closed after this long.
            "keepalive_timeout": settings.idle_connection_timeout,
        },
    )
    app[SETTINGS] = settings
    app[TELEMETRY] = telemetry

    async def resources(app: web.Application) -> AsyncIterator[None]:
        service = build_service(
            settings, clock, telemetry=telemetry, redis_namespace=redis_namespace
        )
        app[STORAGE] = service.storage
        timeout = min(settings.upstream_timeout, READINESS_TIMEOUT)
        upstream_health = UpstreamHealth(
            settings.upstream_url or "", timeout, upstream_up_gauge(telemetry)
        )
        observer = service.upstream.observer

        def observe(kind: str, status: str, seconds: float) -> None:
            if observer is not None:
                observer(kind, status, seconds)
            upstream_health.observe(kind, status, seconds)

        service.upstream.observer = observe
        app[READINESS] = Readiness(
            service.storage, timeout, upstream_health, service.upstream.saturated
        )
        app[UPSTREAM] = service.upstream
        app[handlers.SERVICE] = service
        keepalive = (
            asyncio.ensure_future(service.run_background(background_period(settings)))
            if service.permissions.keepalive > 0 or service.hot is not None
            else None
        )
        try:
            yield
        finally:
            if keepalive is not None:
                keepalive.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await keepalive
            await upstream_health.close()
            await service.close()
            REQUEST_LOG.flush()

    app.cleanup_ctx.append(resources)
    app[CLIENT_ADDRESS] = ClientAddress(parse_networks(settings.trusted_proxies))
    dora_export.setup(app, settings, handlers.SERVICE)  # after `resources`: needs the service
    for name, path in API_ROUTES:
        add_route(app, "GET", path, handlers.dora_metrics, name)
    add_route(app, "GET", graphql.PATH, graphql.graphql_endpoint, "graphql")
    add_route(app, "POST", graphql.PATH, graphql.graphql_endpoint, "graphql")
    add_route(app, "GET", "/-/health", probes.health, "health")
    add_route(app, "GET", "/-/readiness", probes.readiness, "readiness")
    add_route(app, "GET", "/-/liveness", probes.liveness, "liveness")
    add_route(app, "GET", "/metrics", probes.metrics_endpoint, "metrics")
    add_route(app, "GET", openapi.PATH, openapi.openapi, "openapi")
    webhooks.setup(app, settings.webhook_secret)
    extensions.setup(app, load_levels(settings.dora_levels_file))
    dashboard.setup(app)
    forwarding = passthrough.setup(app, settings)
    # last: the router tries it after every other route
    add_unrouted(app, passthrough.handle if forwarding else None)
    return app
