"""Errors a client can see, each carrying its exact status and JSON body.

    ProxyError                   (status, body dict, headers)
     ├── BadRequest              400  parameter problems (key "error" or "message", see spec §2)
     ├── Unauthorized            401  missing permission
     ├── UpstreamRejected        401/403 the upstream's own body for a rejected credential
     ├── NotFound                404  unknown/invisible container, unknown route
     ├── MethodNotAllowed        405
     ├── BadGateway              502  upstream down or answering nonsense
     ├── TooManyRequests         429  one client's permission checks beyond its cap (+ Retry-After)
     ├── ServiceUnavailable      503  upstream rate limit beyond our cap, queue full (+ Retry-After)
     └── GatewayTimeout          504  overall deadline exceeded

Raise anywhere; `observe.observed` renders them. Messages are case-exact constants copied from
`gitlab-dora-semantics.md`; none ever contains a credential.
"""

from __future__ import annotations

from collections.abc import Mapping

PERMISSION_DENIED = "You do not have permission to access dora metrics."
PROJECT_NOT_FOUND = "404 Project Not Found"
GROUP_NOT_FOUND = "404 Group Not Found"
RANGE_TOO_LONG = "Date range must be shorter than 180 days."
START_NOT_BEFORE_END = "The start date must be earlier than the end date."
BAD_INTERVAL = "The interval must be one of all,monthly,daily."
BAD_METRIC = (
    "The metric must be one of deployment_frequency,lead_time_for_changes,"
    "time_to_restore_service,change_failure_rate."
)
BAD_TIERS = "The environment tiers must be from production, staging, testing, development, other."
TOKEN_IN_QUERY = (
    "Tokens are not accepted in the query string (they end up in access logs); "
    "send them in the PRIVATE-TOKEN or Authorization: Bearer header."
)


class ProxyError(Exception):
    """Base of every error answered to a client; `body` is sent as compact JSON."""

    status: int = 500

    def __init__(
        self,
        body: Mapping[str, object],
        headers: Mapping[str, str] | None = None,
        *,
        detail: str | None = None,
    ) -> None:
        super().__init__(detail or str(dict(body)))
        self.body = dict(body)
        self.headers = dict(headers or {})
        self.detail = detail  # for logs only: which upstream call failed, never a credential

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, body={self.body!r})"


class BadRequest(ProxyError):
    status = 400


class Unauthorized(ProxyError):
    status = 401

    def __init__(self, body: Mapping[str, object] | None = None, **kwargs: object) -> None:
        super().__init__(body or {"message": PERMISSION_DENIED}, **kwargs)  # type: ignore[arg-type]


class UpstreamRejected(ProxyError):
    """The upstream refused the credential (401) or its scope (403): body passed through."""

    def __init__(self, status: int, body: Mapping[str, object], headers=None) -> None:
        super().__init__(body, headers)
        self.status = status


class NotFound(ProxyError):
    status = 404


class MethodNotAllowed(ProxyError):
    status = 405


class BadGateway(ProxyError):
    status = 502

    def __init__(self, detail: str | None = None) -> None:
        super().__init__({"message": "502 Bad Gateway"}, detail=detail)


class ServiceUnavailable(ProxyError):
    status = 503

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(
            {"message": "503 Service Unavailable"},
            {"Retry-After": str(max(1, int(retry_after)))},
            detail=detail,
        )


class TooManyRequests(ProxyError):
    """One client has too many uncached permission checks in flight (+ Retry-After)."""

    status = 429

    def __init__(self, retry_after: int, detail: str | None = None) -> None:
        super().__init__(
            {"message": "429 Too Many Requests"},
            {"Retry-After": str(max(1, int(retry_after)))},
            detail=detail,
        )


class GatewayTimeout(ProxyError):
    status = 504

    def __init__(self, detail: str | None = None) -> None:
        super().__init__({"message": "504 Gateway Timeout"}, detail=detail)
