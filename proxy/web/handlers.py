"""HTTP handlers: the two DORA routes and the health probe. Thin: parse, call, respond."""

from __future__ import annotations

import asyncio

from aiohttp import web

from proxy.errors import GatewayTimeout
from proxy.query import parse_query
from proxy.service import Answer, DoraService
from proxy.upstream.client import Credential
from proxy.web.routing import CACHE_STATUS, count_upstream_calls

SERVICE = web.AppKey("service", DoraService)
REQUEST_DEADLINE = web.AppKey("request_deadline", float)


def credential_from(request: web.Request) -> Credential | None:
    """PRIVATE-TOKEN wins over Authorization: Bearer (GitLab's precedence).

    JOB-TOKEN, Basic auth and cookies are not credentials here: such a caller is anonymous.
    """
    token = request.headers.get("PRIVATE-TOKEN", "").strip()
    if token:
        return Credential(token, "private")
    scheme, _, value = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return Credential(value.strip(), "bearer")
    return None


async def dora_metrics(request: web.Request) -> web.StreamResponse:
    """GET /api/v4/{projects|groups}/{id}/dora/metrics."""
    service = request.app[SERVICE]
    credential = credential_from(request)
    answer, recent_key = service.recall(credential, request.raw_path)
    if answer is None:
        count_upstream_calls()
        container = "project" if request.match_info.route.name == "project_dora" else "group"
        unchecked = parse_query(request.query, service.today())
        try:
            async with asyncio.timeout(request.app[REQUEST_DEADLINE]):
                answer = await service.metrics(
                    container, request.match_info["id"], credential, unchecked
                )
        except TimeoutError:
            raise GatewayTimeout(detail="request deadline exceeded") from None
        service.remember(recent_key, answer)
    request[CACHE_STATUS] = answer.cache
    return _respond(request, answer)


def _respond(request: web.Request, answer: Answer) -> web.Response:
    headers = answer.headers
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and answer.etag in _etags(if_none_match):
        return web.Response(status=304, headers=headers)
    return web.Response(body=answer.body, headers=headers)


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


async def health(request: web.Request) -> web.Response:
    """The process is up and serving."""
    return web.json_response({"status": "ok"})
