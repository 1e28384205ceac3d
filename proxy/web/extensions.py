"""Extension endpoints under /-/api/v1/: the facts behind the DORA numbers and exact statistics.

Not GitLab's API (GitLab has no such routes), so the paths live under `/-/`. Each request goes
through the service's own pipeline (`DoraService.counted_facts`: the DORA API's permission
check, validation, facts collector and caches), then the pure `proxy.explain`. The window and
tier parameters are the DORA API's, with its defaults and its error bodies; `metric` is not
needed and `interval` is checked but has no effect (every answer covers the whole window).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

from aiohttp import web
from multidict import MultiDict

from proxy.cache.lifetimes import put
from proxy.collect import provisional_for
from proxy.credentials import credential_from
from proxy.errors import GatewayTimeout
from proxy.explain import explain, facts_body, summary
from proxy.facts import dumps
from proxy.query import parse_query
from proxy.service import CountedFacts
from proxy.upstream import count_upstream_calls
from proxy.web.handlers import SERVICE
from proxy.web.routing import CACHE_STATUS, add_route

PREFIX = "/-/api/v1"
LEVELS = web.AppKey("dora_levels", dict)
LEVELS_ID = web.AppKey("dora_levels_id", str)
# Any value: the extension endpoints compute every metric; `metric` only satisfies parse_query.
_ANY_METRIC = ("metric", "deployment_frequency")


Build = Callable[[CountedFacts, ZoneInfo], dict[str, Any]]


async def _answer(request: web.Request, container: str, kind: str, build: Build) -> web.Response:
    """Permission and validation as the DORA API, then the answer from the answer cache (key:
    the DORA answer's, webhook generation included) or computed from the facts and stored."""
    service = request.app[SERVICE]
    count_upstream_calls()
    # The caller's own `metric` is overridden (last one wins): these answers cover all four.
    unchecked = parse_query(MultiDict([*request.query.items(), _ANY_METRIC]), service.today())
    credential = credential_from(request.headers)
    try:
        async with asyncio.timeout(service.deadline):
            info, query = await service.checked(
                container, request.match_info["id"], credential, unchecked
            )
            key, ttl = await service.extension_key(kind, container, info, query)
            body = await service.storage.get(key)
            request[CACHE_STATUS] = "hit" if body is not None else "miss"
            if body is None:
                started = service.clock()
                counted = await service.counted_facts(container, info, query, credential)
                tz = service.collector.policy.tz
                # Pure CPU work (a large group's facts) off the event loop, as the DORA API.
                loop = asyncio.get_running_loop()
                body = await loop.run_in_executor(None, lambda: dumps(build(counted, tz)))
                # MR lists of deployments younger than 10 minutes may still change (collect.py)
                provisional = provisional_for(counted.facts, started, service.clock())
                await put(
                    service.storage,
                    key,
                    body,
                    ttl if provisional is None else min(ttl, provisional),
                )
    except TimeoutError:
        raise GatewayTimeout(detail="request deadline exceeded") from None
    return web.Response(
        body=body,
        headers={
            "Content-Type": "application/json",
            "Cache-Control": "private, no-cache",
            "Vary": "PRIVATE-TOKEN, Authorization",
            "X-Dora-Proxy-Cache": request[CACHE_STATUS],
        },
    )


def _facts(counted: CountedFacts, tz: ZoneInfo) -> dict[str, Any]:
    query = counted.query
    explained = explain(
        counted.facts,
        counted.paths,
        tiers=query.environment_tiers,
        start_date=query.start_date,
        end_date=query.end_date,
        tz=tz,
        web_base=counted.web_base,
    )
    return {
        "start_date": query.start_date.isoformat(),
        "end_date": query.end_date.isoformat(),
        "environment_tiers": list(query.environment_tiers),
        **facts_body(explained),
    }


def _facts_handler(container: str) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        """GET /-/api/v1/{projects|groups}/{id}/dora/facts."""
        return await _answer(request, container, "facts", _facts)

    return handler


def _summary_handler(container: str) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        """GET /-/api/v1/{projects|groups}/{id}/dora/summary."""
        levels = request.app[LEVELS]

        def build(counted: CountedFacts, tz: ZoneInfo) -> dict[str, Any]:
            query = counted.query
            return summary(
                counted.facts,
                counted.paths,
                levels,
                tiers=query.environment_tiers,
                start_date=query.start_date,
                end_date=query.end_date,
                tz=tz,
                per_project=container == "group",
            )

        # The levels in force are part of the key: a new thresholds file is never hidden.
        return await _answer(request, container, f"summary:{request.app[LEVELS_ID]}", build)

    return handler


async def levels(request: web.Request) -> web.Response:
    """GET /-/api/v1/dora/levels: the performance thresholds in force (no token needed)."""
    return web.Response(
        body=dumps(request.app[LEVELS]),
        headers={"Content-Type": "application/json", "Cache-Control": "no-cache"},
    )


def setup(app: web.Application, levels_data: dict[str, Any]) -> None:
    """Register the extension routes; `levels_data` from `proxy.explain.load_levels`."""
    app[LEVELS] = levels_data
    app[LEVELS_ID] = hashlib.sha256(json.dumps(levels_data, sort_keys=True).encode()).hexdigest()[
        :12
    ]
    for container in ("project", "group"):
        base = f"{PREFIX}/{container}s/{{id}}/dora"
        add_route(app, "GET", f"{base}/facts", _facts_handler(container), f"{container}_facts")
        add_route(
            app, "GET", f"{base}/summary", _summary_handler(container), f"{container}_summary"
        )
    add_route(app, "GET", f"{PREFIX}/dora/levels", levels, "dora_levels")
