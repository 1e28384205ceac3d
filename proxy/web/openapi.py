"""`GET /-/openapi.json`: an OpenAPI 3.1 description of the proxy's own endpoints.

Why: clients, API gateways and fuzzers (the bad-input tests run one) need a machine-readable
contract, and GitLab's DORA route has none of its own. The document is a plain dict here, kept
next to the code; the handler serves only the paths the running app has actually registered
(the webhook receiver, for one, exists only when a webhook secret is configured), so the
document never promises a route that answers 404.

Error bodies are documented as GitLab sends them: step-1 parameter errors use the key `error`,
everything later `message` (gitlab-dora-semantics.md §2).
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web

from proxy import __version__

PATH = "/-/openapi.json"

_TIERS = ["production", "staging", "testing", "development", "other"]
_METRICS = [
    "deployment_frequency",
    "lead_time_for_changes",
    "time_to_restore_service",
    "change_failure_rate",
]
_JSON = "application/json"


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json_body(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}, **extra}


def _dora_operation(container: str) -> dict[str, Any]:
    noun = "project" if container == "projects" else "group"
    scope = (
        "the project"
        if noun == "project"
        else "every project of the group and of its descendant groups"
    )
    not_found = "404 Project Not Found" if noun == "project" else "404 Group Not Found"
    return {
        "operationId": f"get{noun.title()}DoraMetrics",
        "summary": f"DORA metrics of a {noun}, as GitLab Ultimate answers them",
        "description": (
            f"One metric over {scope}, per day, per month or for the whole range. Checks run "
            "in GitLab's order: parameter presence and date syntax (400, key `error`), "
            f"credential (401/403 from GitLab), visibility (404 `{not_found}`), Reporter "
            "access (401), then parameter values (400, key `message`)."
        ),
        "tags": ["dora"],
        "security": [{}, {"privateToken": []}, {"bearerToken": []}],
        "parameters": [
            {
                "name": "id",
                "in": "path",
                "required": True,
                "description": (
                    f"Numeric {noun} id or URL-encoded full path (`grp%2Fsub%2Fproj`)."
                ),
                "schema": {"type": "string", "minLength": 1},
            },
            _ref("parameters", "metric"),
            _ref("parameters", "start_date"),
            _ref("parameters", "end_date"),
            _ref("parameters", "interval"),
            _ref("parameters", "environment_tiers_array"),
            _ref("parameters", "environment_tiers"),
        ],
        "responses": {
            "200": _json_body(
                {"$ref": "#/components/schemas/DoraMetrics"},
                "The metric per bucket, ascending by date.",
                headers={
                    "ETag": _ref("headers", "ETag"),
                    "Cache-Control": _ref("headers", "Cache-Control"),
                    "X-Dora-Proxy-Stale": _ref("headers", "X-Dora-Proxy-Stale"),
                },
            ),
            "304": {"description": "`If-None-Match` matched the current ETag."},
            "400": _ref("responses", "BadRequest"),
            "401": _ref("responses", "Unauthorized"),
            "403": _ref("responses", "Forbidden"),
            "404": _ref("responses", "NotFound"),
            "405": _ref("responses", "MethodNotAllowed"),
            "502": _ref("responses", "BadGateway"),
            "503": _ref("responses", "ServiceUnavailable"),
            "504": _ref("responses", "GatewayTimeout"),
        },
    }


def _upstream_error(status: str, description: str) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Dora-Proxy-Upstream-Error": _ref("headers", "UpstreamError")}
    if status.startswith("503"):
        headers["Retry-After"] = _ref("headers", "Retry-After")
    return _json_body(
        {
            "type": "object",
            "required": ["message"],
            "properties": {"message": {"const": status}},
            "additionalProperties": False,
        },
        description,
        headers=headers,
    )


def _graphql_operation(method: str) -> dict[str, Any]:
    """GitLab's GraphQL endpoint: DORA fields answered here, the rest passed upstream."""
    operation: dict[str, Any] = {
        "operationId": f"{method}GraphQL",
        "summary": "GitLab GraphQL; `dora { metrics }` and `dora { projects }` answered here.",
        "description": (
            "A document asking only for `project(fullPath:)`/`group(fullPath:)` "
            "`{ dora { metrics(startDate, endDate, interval, environmentTiers) { date "
            "deploymentFrequency leadTimeForChanges timeToRestoreService changeFailureRate } } }` "
            "(or `group { dora { projects(startDate, endDate) { nodes { id name fullPath } } } }`) "
            "is answered by the proxy with GitLab Ultimate's semantics. A document mixing DORA "
            "with other fields is split: the rest is sent to the upstream GitLab with the "
            "caller's credentials and both answers are merged. Any other document is forwarded "
            "untouched (setting `pass_through`)."
        ),
        "tags": ["dora"],
        "responses": {
            "200": _plain(
                "A GraphQL response: `data` and/or `errors` (validation failures of the DORA "
                "arguments are `errors[].message` with GitLab's REST message text).",
                {"type": "object", "properties": {"data": {}, "errors": {"type": "array"}}},
            ),
            "401": _plain("The upstream GitLab refused the credential."),
            "404": _plain("Not a DORA document and pass_through is off."),
            "405": _plain("A mutation while pass_through is read-only."),
            "502": _ref("responses", "BadGateway"),
            "504": _ref("responses", "GatewayTimeout"),
        },
    }
    if method == "get":
        operation["parameters"] = [
            {"name": name, "in": "query", "required": name == "query", "schema": {"type": "string"}}
            for name in ("query", "variables", "operationName")
        ]
    else:
        operation["requestBody"] = {
            "required": True,
            "content": {
                _JSON: {
                    "schema": {
                        "type": "object",
                        "required": ["query"],
                        "properties": {
                            "query": {"type": "string"},
                            "variables": {"type": ["object", "null"]},
                            "operationName": {"type": ["string", "null"]},
                        },
                    }
                }
            },
        }
    return operation


def _plain(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "content": {_JSON: {"schema": schema or {"type": "object"}}},
    }


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "gitlab-dora-proxy",
        "version": __version__,
        "summary": "GitLab Ultimate's DORA metrics REST API for every GitLab tier.",
        "description": (
            "Answers `GET /api/v4/{projects|groups}/:id/dora/metrics` exactly as GitLab "
            "Ultimate would, computed from the caller's own view of a GitLab instance through "
            "its REST API. The caller's `PRIVATE-TOKEN` or `Authorization: Bearer` credential "
            "is forwarded to GitLab unchanged; tokens in the query string are refused."
        ),
        "license": {"name": "MIT", "identifier": "MIT"},
    },
    "tags": [
        {"name": "dora", "description": "GitLab-compatible DORA metrics."},
        {"name": "operations", "description": "Probes, metrics, this document, webhooks."},
    ],
    "paths": {
        "/api/v4/projects/{id}/dora/metrics": {"get": _dora_operation("projects")},
        "/api/v4/groups/{id}/dora/metrics": {"get": _dora_operation("groups")},
        "/api/graphql": {"get": _graphql_operation("get"), "post": _graphql_operation("post")},
        "/-/health": {
            "get": {
                "operationId": "getHealth",
                "summary": "The process is up and serving.",
                "tags": ["operations"],
                "security": [{}],
                "responses": {
                    "200": _plain(
                        "Up.",
                        {
                            "type": "object",
                            "properties": {"status": {"const": "ok"}},
                            "required": ["status"],
                        },
                    )
                },
            }
        },
        "/-/liveness": {
            "get": {
                "operationId": "getLiveness",
                "summary": "Liveness probe: the event loop answers.",
                "tags": ["operations"],
                "security": [{}],
                "responses": {"200": _plain("Alive.")},
            }
        },
        "/-/readiness": {
            "get": {
                "operationId": "getReadiness",
                "summary": "Readiness probe: the cache and the upstream GitLab are reachable.",
                "tags": ["operations"],
                "security": [{}],
                "responses": {"200": _plain("Ready."), "503": _plain("Not ready.")},
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "summary": "Prometheus metrics (text exposition format).",
                "tags": ["operations"],
                "security": [{}],
                "responses": {
                    "200": {
                        "description": "Metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        PATH: {
            "get": {
                "operationId": "getOpenApi",
                "summary": "This document.",
                "tags": ["operations"],
                "security": [{}],
                "responses": {"200": _plain("OpenAPI 3.1 document.")},
            }
        },
        "/-/webhooks/gitlab": {
            "post": {
                "operationId": "postGitLabWebhook",
                "summary": "GitLab deployment and issue events; drops stale cache entries.",
                "description": (
                    "Present only when a webhook secret is configured. Authenticated by "
                    "`X-Gitlab-Token` (compared in constant time, never logged)."
                ),
                "tags": ["operations"],
                "security": [{"gitlabWebhookToken": []}],
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": {"type": "object"}}},
                },
                "responses": {
                    "200": _plain(
                        "Accepted.",
                        {
                            "type": "object",
                            "properties": {"status": {"enum": ["ok", "ignored", "duplicate"]}},
                        },
                    ),
                    "400": _plain("Malformed or unknown payload; nothing changed."),
                    "401": _plain("Missing or wrong X-Gitlab-Token."),
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "privateToken": {
                "type": "apiKey",
                "in": "header",
                "name": "PRIVATE-TOKEN",
                "description": (
                    "A GitLab personal, project or group access token; wins over "
                    "Authorization when both are sent. Forwarded to GitLab unchanged."
                ),
            },
            "bearerToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "A GitLab OAuth or personal access token.",
            },
            "gitlabWebhookToken": {"type": "apiKey", "in": "header", "name": "X-Gitlab-Token"},
        },
        "parameters": {
            "metric": {
                "name": "metric",
                "in": "query",
                "required": True,
                "description": "Exactly one metric (case-sensitive).",
                "schema": {"type": "string", "enum": _METRICS},
            },
            "start_date": {
                "name": "start_date",
                "in": "query",
                "description": (
                    "First day, `YYYY-MM-DD` or `YYYYMMDD` (a `T…` time suffix is ignored). "
                    "Default: today minus 3 calendar months."
                ),
                "schema": {"type": "string", "format": "date"},
            },
            "end_date": {
                "name": "end_date",
                "in": "query",
                "description": (
                    "Last day, same syntax. Default: today. `end_date - start_date` must be "
                    "between 1 and 180 days."
                ),
                "schema": {"type": "string", "format": "date"},
            },
            "interval": {
                "name": "interval",
                "in": "query",
                "description": "Bucket size (case-sensitive).",
                "schema": {"type": "string", "enum": ["all", "monthly", "daily"]},
            },
            "environment_tiers_array": {
                "name": "environment_tiers[]",
                "in": "query",
                "description": "Environment tiers (GitLab's form). Default: production.",
                "style": "form",
                "explode": True,
                "schema": {"type": "array", "items": {"type": "string", "enum": _TIERS}},
            },
            "environment_tiers": {
                "name": "environment_tiers",
                "in": "query",
                "description": "Scalar form, accepted too; united with `environment_tiers[]`.",
                "style": "form",
                "explode": True,
                "schema": {"type": "array", "items": {"type": "string", "enum": _TIERS}},
            },
        },
        "headers": {
            "ETag": {"description": "Strong validator of the body.", "schema": {"type": "string"}},
            "Cache-Control": {
                "description": "`private`: answers depend on the caller's access.",
                "schema": {"type": "string"},
            },
            "X-Dora-Proxy-Stale": {
                "description": "`true` when an expired answer is served because GitLab failed.",
                "schema": {"type": "string", "enum": ["true"]},
            },
            "Retry-After": {
                "description": "Seconds to wait before asking again.",
                "schema": {"type": "integer", "minimum": 1},
            },
            "UpstreamError": {
                "description": (
                    "Which upstream GitLab call failed and how, e.g. "
                    "`GET /projects/11/deployments: upstream answered 500`. Never a credential."
                ),
                "schema": {"type": "string"},
            },
        },
        "schemas": {
            "DoraMetrics": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["date", "value"],
                    "additionalProperties": False,
                    "properties": {
                        "date": {
                            "type": ["string", "null"],
                            "format": "date",
                            "description": "Day, first day of the month, or null for `all`.",
                        },
                        "value": {
                            "type": ["number", "null"],
                            "description": (
                                "Integer for daily deployment frequency, else a float; null "
                                "when the bucket has no value."
                            ),
                        },
                    },
                },
            },
            "ParameterError": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
                "additionalProperties": False,
                "examples": [{"error": "metric is missing"}],
            },
            "Message": {
                "type": "object",
                "required": ["message"],
                "properties": {"message": {}},
                "examples": [{"message": "You do not have permission to access dora metrics."}],
            },
            "Error": {
                "type": "object",
                "properties": {"error": {}, "message": {}},
                "minProperties": 1,
            },
        },
        "responses": {
            "BadRequest": _json_body(
                {
                    "oneOf": [
                        {"$ref": "#/components/schemas/ParameterError"},
                        {"$ref": "#/components/schemas/Message"},
                    ]
                },
                "A parameter is missing or invalid, or a token was sent in the query string.",
            ),
            "Unauthorized": _json_body(
                {"$ref": "#/components/schemas/Message"},
                "Below Reporter on the container, anonymous, or a credential GitLab rejected "
                "(GitLab's own body).",
            ),
            "Forbidden": _json_body(
                {"$ref": "#/components/schemas/Error"},
                "GitLab accepted the credential but not its scope (GitLab's own body).",
            ),
            "NotFound": _json_body(
                {"$ref": "#/components/schemas/Error"},
                "Container not found or not visible to the caller; or an unknown route.",
            ),
            "MethodNotAllowed": _json_body(
                {"$ref": "#/components/schemas/ParameterError"}, "Only GET and HEAD."
            ),
            "BadGateway": _upstream_error(
                "502 Bad Gateway",
                "GitLab unreachable, dropped the connection, kept failing (5xx) or answered "
                "something malformed.",
            ),
            "ServiceUnavailable": _upstream_error(
                "503 Service Unavailable",
                "GitLab rate-limits the proxy for longer than it will wait.",
            ),
            "GatewayTimeout": _upstream_error(
                "504 Gateway Timeout", "GitLab or the whole request took too long."
            ),
        },
    },
}


def document_for(app: web.Application) -> dict[str, Any]:
    """The document restricted to the (path, method) pairs `app` has registered."""
    registered: set[tuple[str, str]] = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is not None:
            registered.add((resource.canonical, route.method.lower()))
    document = copy.deepcopy(DOCUMENT)
    paths: dict[str, Any] = {}
    for path, operations in document["paths"].items():
        kept = {m: op for m, op in operations.items() if (path, m) in registered}
        if kept:
            paths[path] = kept
    document["paths"] = paths
    return document


async def openapi(request: web.Request) -> web.Response:
    """GET /-/openapi.json."""
    return web.json_response(document_for(request.app))
