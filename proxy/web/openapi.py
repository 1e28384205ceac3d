"""`GET /-/openapi.json`: an OpenAPI 3.1 description of the proxy's own endpoints.

Why: clients, API gateways and fuzzers (the bad-input tests run one) need a machine-readable
contract, and GitLab's DORA route has none of its own. The document is the data file
`openapi.json` beside this module; the values with one home elsewhere (the version, the
metric, interval and tier names of proxy/query.py) stand there as `"$NAME"` placeholders filled
in at load. The handler serves only the paths the running app has actually registered
(the webhook receiver, for one, exists only when a webhook secret is configured), so the
document never promises a route that answers 404.

Error bodies are documented as GitLab sends them: step-1 parameter errors use the key `error`,
everything later `message` (gitlab-dora-semantics.md §2).
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

from aiohttp import web

from proxy import __version__
from proxy.query import INTERVALS, METRICS, TIERS

PATH = "/-/openapi.json"
_PLACEHOLDERS: dict[str, Any] = {
    "$VERSION": __version__,
    "$METRICS": list(METRICS),
    "$INTERVALS": list(INTERVALS),
    "$TIERS": list(TIERS),
}


def _filled(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _filled(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_filled(value) for value in node]
    if isinstance(node, str) and node in _PLACEHOLDERS:
        return copy.deepcopy(_PLACEHOLDERS[node])
    return node


def load_document() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("openapi.json").read_text(encoding="utf-8")
    return _filled(json.loads(text))


DOCUMENT = load_document()


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
