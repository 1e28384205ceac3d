"""Extension endpoints under /-/api/v1/: the facts behind the DORA numbers and exact statistics.

Not GitLab's API (GitLab has no such routes), so the paths live under `/-/`. Each request goes
through the service's own pipeline (`DoraService.counted_facts`: the DORA API's permission
check, validation, facts collector and caches), then the pure `proxy.explain`. The window and
tier parameters are the DORA API's, with its defaults and its error bodies; `metric` is not
needed and `interval` is checked but has no effect (every answer covers the whole window).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from aiohttp import web
from multidict import MultiDict

from proxy.errors import GatewayTimeout
from proxy.explain import explain, facts_body, summary
from proxy.facts import dumps
from proxy.query import parse_query
from proxy.service import CountedFacts
from proxy.web.handlers import REQUEST_DEADLINE, SERVICE, credential_from
from proxy.web.routing import add_route, count_upstream_calls

PREFIX = "/-/api/v1"
LEVELS = web.AppKey("dora_levels", dict)
# Any value: the extension endpoints compute every metric; `metric` only satisfies parse_query.
_ANY_METRIC = ("metric", "deployment_frequency")


async def _counted(request: web.Request, container: str) -> CountedFacts:
    service = request.app[SERVICE]
    count_upstream_calls()
    # The caller's own `metric` is overridden (last one wins): these answers cover all four.
    unchecked = parse_query(MultiDict([*request.query.items(), _ANY_METRIC]), service.today())
    try:
        async with asyncio.timeout(request.app[REQUEST_DEADLINE]):
            return await service.counted_facts(
                container, request.match_info["id"], credential_from(request), unchecked
            )
    except TimeoutError:
        raise GatewayTimeout(detail="request deadline exceeded") from None


def _json(body: Any) -> web.Response:
    return web.Response(
        body=dumps(body),
        headers={
            "Content-Type": "application/json",
            "Cache-Control": "private, no-cache",
            "Vary": "PRIVATE-TOKEN, Authorization",
        },
    )


async def _off_loop(function: Callable[[], Any]) -> Any:
    """Pure CPU work (a large group's facts) off the event loop, as the DORA API does."""
    return await asyncio.get_running_loop().run_in_executor(None, function)


def _facts_handler(container: str) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        """GET /-/api/v1/{projects|groups}/{id}/dora/facts."""
        counted = await _counted(request, container)
        query = counted.query
        explained = await _off_loop(
            functools.partial(
                explain,
                counted.facts,
                counted.paths,
                tiers=query.environment_tiers,
                start_date=query.start_date,
                end_date=query.end_date,
                tz=request.app[SERVICE].collector.policy.tz,
            )
        )
        return _json(
            {
                "start_date": query.start_date.isoformat(),
                "end_date": query.end_date.isoformat(),
                "environment_tiers": list(query.environment_tiers),
                **facts_body(explained),
            }
        )

    return handler


def _summary_handler(container: str) -> Callable[[web.Request], Any]:
    async def handler(request: web.Request) -> web.Response:
        """GET /-/api/v1/{projects|groups}/{id}/dora/summary."""
        counted = await _counted(request, container)
        query = counted.query
        body = await _off_loop(
            functools.partial(
                summary,
                counted.facts,
                counted.paths,
                request.app[LEVELS],
                tiers=query.environment_tiers,
                start_date=query.start_date,
                end_date=query.end_date,
                tz=request.app[SERVICE].collector.policy.tz,
                per_project=container == "group",
            )
        )
        return _json(body)

    return handler


async def levels(request: web.Request) -> web.Response:
    """GET /-/api/v1/dora/levels: the performance thresholds in force (no token needed)."""
    return _json(request.app[LEVELS])


def setup(app: web.Application, levels_data: dict[str, Any]) -> None:
    """Register the extension routes; `levels_data` from `proxy.explain.load_levels`."""
    app[LEVELS] = levels_data
    for container in ("project", "group"):
        base = f"{PREFIX}/{container}s/{{id}}/dora"
        add_route(app, "GET", f"{base}/facts", _facts_handler(container), f"{container}_facts")
        add_route(
            app, "GET", f"{base}/summary", _summary_handler(container), f"{container}_summary"
        )
    add_route(app, "GET", f"{PREFIX}/dora/levels", levels, "dora_levels")
