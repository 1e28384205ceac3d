"""What the fake records and how it misbehaves on purpose: every call received, and switchable
faults (latency, status bursts, 429 in GitLab's two shapes, resets, bad JSON, hangs)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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

    def matches(self, kind: str) -> bool:
        return self.only_kinds is None or kind in self.only_kinds


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
