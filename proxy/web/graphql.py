"""`GET|POST /api/graphql`: GitLab's DORA GraphQL answered here, everything else upstream.

The request is parsed (graphql-core) and planned by `proxy.graphql_dora.plan`:
- purely DORA: executed here against the DORA schema; each metric is one REST answer from the
  `DoraService` (same permission check, same caches);
- mixed: the DORA half here, the rest POSTed to the upstream's /api/graphql with the caller's
  credentials, both merged;
- anything else (other fields, mutations, introspection, batches, unparsable text): forwarded
  untouched through the pass-through (its mode applies: `off` answers 404, `read-only` refuses
  mutations with 405).
"""

from __future__ import annotations

import asyncio
import json
from datetime import date
from typing import Any

from aiohttp import web
from graphql import GraphQLError, OperationType, execute, parse, print_ast, validate
from multidict import MultiDict

from proxy import graphql_dora
from proxy.collect import Need
from proxy.credentials import Credential, credential_from
from proxy.dora import compute_daily_rows
from proxy.errors import (
    BadGateway,
    GatewayTimeout,
    NotFound,
    ProxyError,
    Unauthorized,
)
from proxy.facts import dumps
from proxy.graphql_dora import Access
from proxy.query import TIERS
from proxy.service import DoraRequest, DoraService
from proxy.upstream import CURRENT_STATS, CallStats, count_upstream_calls
from proxy.web.client_address import client_of
from proxy.web.handlers import SERVICE
from proxy.web.passthrough import (
    LOOP_DETECTED,
    PASS_THROUGH,
    PassThrough,
    forwarded_headers,
    looped,
    relay,
)
from proxy.web.routing import json_error

PATH = "/api/graphql"
CREDENTIAL_HEADERS = ("PRIVATE-TOKEN", "Authorization", "JOB-TOKEN", "Cookie")
MAX_NAME_LOOKUPS = 8  # concurrent project-name lookups of one request


class ServiceBackend:
    """`graphql_dora.Backend` over the DoraService, for one caller."""

    def __init__(
        self,
        service: DoraService,
        credential: Credential | None,
        passthrough: PassThrough,
        request: web.Request,
    ) -> None:
        self.service = service
        self.credential = credential
        self.client = client_of(request)
        self.passthrough = passthrough
        self.credential_headers = [
            (name, request.headers[name]) for name in CREDENTIAL_HEADERS if name in request.headers
        ]
        self._names = asyncio.Semaphore(MAX_NAME_LOOKUPS)

    def today(self) -> date:
        return self.service.today()

    async def access(self, container: str, full_path: str) -> Access | None:
        session = self.service.upstream.session(self.credential)
        try:
            info = await self.service.permissions.authorize(
                session, self.credential, container, full_path, self.client
            )
        except NotFound:
            return None
        except Unauthorized:
            return Access(0, full_path, False)  # visible (else NotFound), not a Reporter
        return Access(info.id, info.full_path, True)

    async def metric(
        self, container: str, full_path: str, params: list[tuple[str, str]]
    ) -> list[dict[str, Any]]:
        request_stats = CURRENT_STATS.get()
        answer = await self.service.answer(
            DoraRequest(container, full_path, MultiDict(params), client=self.client),
            self.credential,
        )
        _count_into(request_stats)
        return json.loads(answer.body)

    async def projects_with_rows(
        self, group_path: str, start: date, end: date
    ) -> list[tuple[int, str]]:
        service = self.service
        session = service.upstream.session(self.credential)
        info = await service.permissions.authorize(
            session, self.credential, "group", group_path, self.client
        )
        projects = await service.collector.group_projects(session, info)
        facts = await service.collector.group_facts(
            session, info, projects, start, end, Need(False, True, frozenset(TIERS))
        )
        tz = service.collector.policy.tz
        with_rows = {f.project_id for f in facts if compute_daily_rows(f, TIERS, start, end, tz)}
        return [(p.id, p.full_path) for p in projects if p.id in with_rows]

    async def project_name(self, project_id: int) -> str | None:
        """Not DORA data: asked of the upstream's REST API with the caller's credentials."""
        async with self._names:
            response = await self.passthrough.open(
                "GET", f"/api/v4/projects/{project_id}", self.credential_headers
            )
            try:
                if response.status != 200:
                    return None
                return (await response.json()).get("name")
            finally:
                response.release()


def _count_into(request_stats: CallStats | None) -> None:
    """`service.answer` counts its upstream calls in a `CallStats` of its own (set in this
    resolver's context): add them to the GraphQL request's, which its log line reads."""
    answer_stats = CURRENT_STATS.get()
    if request_stats is not None and answer_stats is not None and answer_stats is not request_stats:
        request_stats.calls.update(answer_stats.calls)
        CURRENT_STATS.set(request_stats)


async def graphql_endpoint(request: web.Request) -> web.StreamResponse:
    """GET /api/graphql?query=... and POST /api/graphql."""
    passthrough = request.app[PASS_THROUGH]
    body = await request.read() if request.method == "POST" else b""
    payload = _payload(request, body)
    document = None
    if payload is not None:
        try:
            document = parse(payload["query"])
        except (GraphQLError, RecursionError):  # nested past Python's stack: GitLab's to refuse
            document = None
    if document is None:
        return await _forward(request, passthrough, body, mutation=False)
    plan = graphql_dora.plan(document, payload.get("operationName"))
    if plan.kind == "forward":
        mutation = plan.operation is not None and plan.operation.operation != OperationType.QUERY
        return await _forward(request, passthrough, body, mutation=mutation)
    if plan.kind == "split" and not passthrough.enabled:
        return json_error(404, {"error": "404 Not Found"})
    count_upstream_calls()
    service = request.app[SERVICE]
    backend = ServiceBackend(service, credential_from(request.headers), passthrough, request)
    variables = payload.get("variables")
    try:
        async with asyncio.timeout(passthrough.deadline):
            local = await _execute(plan.local, backend, variables, payload.get("operationName"))
            if plan.kind == "split" and "data" in local:
                remote = await _remote(request, passthrough, plan.remote, payload)
                if isinstance(remote, web.StreamResponse):
                    return remote
                local = graphql_dora.merge(remote, local)
    except TimeoutError:
        raise GatewayTimeout(detail="request deadline exceeded") from None
    return web.Response(body=dumps(local), content_type="application/json")


def _payload(request: web.Request, body: bytes) -> dict[str, Any] | None:
    """{query, variables, operationName} when well-formed; None sends the request upstream as
    it came (batches, bad JSON: the upstream's own answer is the right one)."""
    if request.method == "POST":
        try:
            payload = json.loads(body)
        except ValueError:
            return None
    else:
        payload = {key: request.query.get(key) for key in ("query", "variables", "operationName")}
        if isinstance(payload["variables"], str):
            try:
                payload["variables"] = json.loads(payload["variables"])
            except ValueError:
                return None
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        return None
    if payload.get("variables") is not None and not isinstance(payload["variables"], dict):
        return None
    return payload


async def _execute(
    document: Any, backend: ServiceBackend, variables: Any, operation_name: str | None
) -> dict[str, Any]:
    errors = validate(graphql_dora.SCHEMA, document)
    if errors:
        return {"errors": [error.formatted for error in errors]}
    result = await execute(  # type: ignore[misc]
        graphql_dora.SCHEMA,
        document,
        root_value=graphql_dora.Root(),
        context_value=backend,
        variable_values=variables,
        operation_name=operation_name,
    )
    for error in result.errors or ():
        original = error.original_error
        # A credential the upstream refuses, or an upstream in trouble, fails the request as
        # the REST routes do (401, 502, 503, 504), not as a null field.
        if isinstance(original, ProxyError) and not isinstance(original, NotFound | Unauthorized):
            raise original
    return result.formatted


async def _remote(
    request: web.Request, passthrough: PassThrough, document: Any, payload: dict[str, Any]
) -> dict[str, Any] | web.StreamResponse:
    """The upstream's answer to the non-DORA half (its own response if not a GraphQL one)."""
    if document is None:
        return {"data": {}}
    if looped(request):
        return json_error(508, LOOP_DETECTED)
    body = json.dumps(
        {
            "query": print_ast(document),
            "variables": payload.get("variables") or {},
            "operationName": payload.get("operationName"),
        }
    ).encode()
    headers = [
        (name, value)
        for name, value in forwarded_headers(request)
        if name.lower() not in ("content-length", "content-type", "content-encoding")
    ]
    headers.append(("Content-Type", "application/json"))
    response = await passthrough.open("POST", PATH, headers, body)
    try:
        if response.status != 200 or response.content_type != "application/json":
            return await relay(
                request, response, passthrough.public_base(request), passthrough.upstream
            )
        try:
            answer = await response.json()
        except ValueError:
            raise BadGateway(detail="POST /api/graphql: upstream answered invalid JSON") from None
    finally:
        response.release()
    if not isinstance(answer, dict):
        raise BadGateway(detail="POST /api/graphql: upstream answered no GraphQL object")
    return answer


async def _forward(
    request: web.Request, passthrough: PassThrough, body: bytes, *, mutation: bool
) -> web.StreamResponse:
    """The document as it came, to the upstream (pass-through rules)."""
    if not passthrough.enabled:
        return json_error(404, {"error": "404 Not Found"})
    if passthrough.mode == "read-only" and mutation:
        return json_error(405, {"error": "405 Not Allowed"}, {"Allow": "GET, HEAD"})
    if looped(request):
        return json_error(508, LOOP_DETECTED)
    data = body if request.method == "POST" else None
    response = await passthrough.open(
        request.method, request.raw_path, forwarded_headers(request), data
    )
    try:
        return await relay(
            request, response, passthrough.public_base(request), passthrough.upstream
        )
    finally:
        response.release()


__all__ = ["PATH", "ServiceBackend", "graphql_endpoint"]
