"""HTTP handlers of the two DORA routes. Thin: read the request, ask the
service, write the response."""

from __future__ import annotations

from aiohttp import web

from proxy.credentials import credential_from
from proxy.service import Answer, DoraRequest, DoraService
from proxy.web.client_address import client_of
from proxy.web.routing import CACHE_STATUS

SERVICE = web.AppKey("service", DoraService)


async def dora_metrics(request: web.Request) -> web.StreamResponse:
    """GET /api/v4/{projects|groups}/{id}/dora/metrics."""
    container = "project" if request.match_info.route.name == "project_dora" else "group"
    answer = await request.app[SERVICE].answer(
        DoraRequest(
            container, request.match_info["id"], request.query, request.raw_path, client_of(request)
        ),
        credential_from(request.headers),
    )
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
