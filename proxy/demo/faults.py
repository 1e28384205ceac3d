"""What the fake records and how it misbehaves on purpose: every call received, and switchable
faults (latency, status bursts, 429 in GitLab's two shapes, resets, bad JSON, hangs)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from aiohttp import web

from proxy.demo.replies import REASONS

# The request could not be answered because the connection was dropped (Faults.reset_connections).
STATUS_RESET = 0


@dataclass
class Call:
    """One request the fake received. `status` is what was sent (0: connection dropped)."""

    method: str
    path: str
    query: dict[str, str]
    token: str | None = field(repr=False)
    status: int
    kind: str


@dataclass
class Faults:
    """Switchable misbehaviour; a test may change any field between (or during) requests."""

    latency: float = 0.0
    status_codes: list[int] = field(default_factory=list)
    retry_after: str | None = None
    reset_connections: int = 0
    malformed_json: int = 0
    hang: float = 0.0
    only_kinds: set[str] | None = None
    # Broken pagination on list answers (see `broken_pagination`): None, "same_link" (the next
    # link points at the page just served), "same_ids" (next pages repeat page 1's items under
    # new page numbers) or "endless" (every page has fresh ids and a next link).
    pagination: str | None = None
    # Rewrites a matching 200 answer's body (odd upstream data: types, shapes, bytes GitLab
    # would not send); the result is sent as it is.
    body: Callable[[bytes], bytes] | None = None
    _fresh_ids: int = 10_000_000

    def matches(self, kind: str) -> bool:
        return self.only_kinds is None or kind in self.only_kinds


def broken_pagination(faults: Faults, request: web.Request, response: web.Response) -> None:
    """Rewrite a list answer's pagination as `faults.pagination` asks (in place).

    What a cache or reverse proxy in front of GitLab that ignores the query string does
    ("same_link", "same_ids"), or an upstream whose listing never ends ("endless").
    """
    mode = faults.pagination
    if mode is None or response.status != 200 or not isinstance(response.body, bytes):
        return
    items = json.loads(response.body)
    if not isinstance(items, list):
        return
    page = int(request.query.get("page", "1") or 1)
    if mode == "same_link":
        target = page
    else:
        target = page + 1
        if mode == "endless":
            template = items[0] if items else {"id": 0}
            items = []
            for _ in range(int(request.query.get("per_page", "20") or 20)):
                faults._fresh_ids += 1
                items.append({**template, "id": faults._fresh_ids})
    query = [(k, v) for k, v in request.query.items() if k != "page"] + [("page", str(target))]
    link = f"{request.scheme}://{request.host}{request.path}?{urlencode(query)}"
    response.body = json.dumps(items).encode()
    response.headers["Link"] = f'<{link}>; rel="next"'
    response.headers["X-Next-Page"] = str(target)
    response.headers["X-Page"] = str(page)
    response.headers.pop("X-Total", None)
    response.headers.pop("X-Total-Pages", None)


def drop_connection(request: web.Request) -> web.Response:
    """Close the socket without answering; the client sees a reset / remote disconnect."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    # aiohttp cannot write to the aborted transport; the returned response is discarded.
    return web.Response(status=500)


def injected_status(faults: Faults, status: int) -> web.Response:
    if status == 429:
        if faults.retry_after is None:
            # GitLab's per-endpoint application limit: JSON body, no rate-limit headers.
            return web.json_response(
                {
                    "message": {
                        "error": (
                            "This endpoint has been requested too many times. Try again later."
                        )
                    }
                },
                status=429,
            )
        # Rack::Attack's instance-wide throttle: plain text plus RateLimit-* headers.
        headers = {
            "Retry-After": faults.retry_after,
            "RateLimit-Name": "throttle_authenticated_api",
            "RateLimit-Limit": "60",
            "RateLimit-Observed": "61",
            "RateLimit-Remaining": "0",
        }
        if faults.retry_after.isdigit():
            reset = int(time.time()) + int(faults.retry_after)
            headers["RateLimit-Reset"] = str(reset)
        return web.Response(status=429, text="Retry later\n", headers=headers)
    reason = REASONS.get(status, "Error")
    return web.json_response({"message": f"{status} {reason}"}, status=status)
