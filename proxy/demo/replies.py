"""The fake's finished answers: GitLab's error bodies, raised from anywhere in a handler."""

from __future__ import annotations

from typing import Any

from aiohttp import web

REASONS = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    408: "Request Timeout",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class Reply(Exception):
    """Short-circuits a handler with a finished answer (error bodies, mostly)."""

    def __init__(
        self, status: int, body: Any, headers: dict[str, str] | None = None, *, text: bool = False
    ) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.text = text


def message(status: int, text: str | None = None) -> Reply:
    return Reply(status, {"message": text or f"{status} {REASONS.get(status, 'Error')}"})


def not_found(what: str = "") -> Reply:
    return message(404, f"404 {what} Not Found" if what else "404 Not found")


def bad_request(reason: str) -> Reply:
    return message(400, f"400 Bad request - {reason}")


def render(reply: Reply) -> web.Response:
    if reply.text:
        return web.Response(status=reply.status, text=str(reply.body), headers=reply.headers)
    return web.json_response(reply.body, status=reply.status, headers=reply.headers)
