"""The one line per request: method, path, parameter names, status, duration, cache layer and
upstream calls.

On a terminal (and wherever logging is not configured, as in tests) each request is one
structlog event, logged when it ends. In JSON mode, the production set-up, a request only
appends a tuple to a batch; the batch goes through structlog as one event whose renderer
writes one JSON object per request (`render_request_lines`), like nginx's buffered access
log. A cache hit is a few tens of microseconds, and a structlog call, its processors and a
flushed write per request cost about a third of that.

A batch is written when it is 50 ms old or 256 requests long, before any other event is
logged (so lines stay in order), when the app stops and at exit. A process killed with
SIGKILL loses at most the last 50 ms of request lines.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
import time
from collections.abc import MutableMapping
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

import structlog
from aiohttp import web
from yarl import URL

from proxy.telemetry.redaction import redacted_text
from proxy.upstream.calls import CallStats

FLUSH_DELAY = 0.05
MAX_PENDING = 256  # at 25 000 requests/s a batch every 10 ms: rendering one stalls ~0.3 ms

# timestamp, method, URL, status, seconds, cache layer, upstream calls, calls by kind
Record = tuple[float, str, URL, int, float, str, int, dict[str, int] | None]


class RequestLog:
    """Where observed requests are reported (see the module docstring)."""

    def __init__(self) -> None:
        self.batched = False  # JSON mode: set by `configure_logging`
        self.enabled = True  # False when the log level is above info
        self._logger: Any = structlog.get_logger("proxy.request")
        self._pending: list[Record] = []
        self._timer: asyncio.TimerHandle | None = None

    def configure(self, logger: Any, *, batched: bool, enabled: bool) -> None:
        self.flush()
        self._logger = logger
        self.batched = batched
        self.enabled = enabled

    def record(
        self,
        request: web.Request,
        status: int,
        seconds: float,
        cache: str,
        stats: CallStats | None,
    ) -> None:
        """One finished request (on the event loop's thread: batches are not locked)."""
        if not self.enabled:
            return
        calls = stats.total if stats is not None else 0
        by_kind = dict(stats.calls) if calls else None  # type: ignore[union-attr]
        if not self.batched:
            self._logger.info(
                "request",
                method=request.method,
                path=request.path,  # never the query string: it may carry tokens
                params=sorted(set(request.query)),
                status=status,
                duration_ms=round(seconds * 1000, 2),
                cache=cache,
                upstream_calls=calls,
                upstream_calls_by_kind=by_kind or {},
            )
            return
        pending = self._pending
        pending.append(
            (time.time(), request.method, request.rel_url, status, seconds, cache, calls, by_kind)
        )
        if len(pending) >= MAX_PENDING:
            self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        """Write the batch now: on the event loop's thread, or once the loop has stopped (at
        exit). Other threads' events do not flush (`flush_request_lines`)."""
        records, self._pending = self._pending, []
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        if records:
            self._logger.info("request", requests=records)


REQUEST_LOG = RequestLog()
atexit.register(REQUEST_LOG.flush)


def flush_request_lines(
    _: Any, __: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor, first in the general chain: batched request lines go out before
    any other event, so the output stays in order. Only on the main thread, which runs the
    event loop and owns the batch (events from worker threads may overtake request lines)."""
    if REQUEST_LOG._pending and threading.current_thread() is threading.main_thread():
        REQUEST_LOG.flush()
    return event


def render_request_lines(_: Any, method_name: str, event: MutableMapping[str, Any]) -> str:
    """The batch's lines, one JSON object per request (the request logger's only processor).

    Formatted by hand from known fields, strings through the C JSON string encoder after the
    same redaction as every other line (the path and parameter names are the caller's). The
    part that depends on the URL is built once per distinct URL in a batch: repeats are the
    common case. About 1 µs a line.
    """
    head = f'{{"event": "request", "level": "{method_name}", "timestamp": "'
    by_url: dict[tuple[str, URL], str] = {}
    lines = []
    second, second_text = -1, ""
    for stamp, method, url, status, seconds, cache, calls, by_kind in event["requests"]:
        request = by_url.get((method, url))
        if request is None:
            params = ", ".join(_json_text(name) for name in sorted(set(url.query)))
            request = by_url[method, url] = (
                f'"method": {_json_text(method)}, "path": {_json_text(url.path)}, '
                f'"params": [{params}]'
            )
        if int(stamp) != second:
            second = int(stamp)
            second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        kinds = (
            "{" + ", ".join(f"{_json_text(k)}: {int(n)}" for k, n in by_kind.items()) + "}"
            if by_kind
            else "{}"
        )
        lines.append(
            _LINE
            % (
                head,
                second_text,
                (stamp % 1) * 1_000_000,
                request,
                status,
                seconds * 1000,
                _CACHE_LITERALS.get(cache) or _json_text(cache),
                calls,
                kinds,
            )
        )
    return "\n".join(lines)


# head, date-time, microseconds, method/path/params, status, ms, cache, calls, calls by kind
_LINE = (
    '%s%s.%06dZ", %s, "status": %d, "duration_ms": %.2f, "cache": %s, '
    '"upstream_calls": %d, "upstream_calls_by_kind": %s}'
)
_CACHE_LITERALS = {name: f'"{name}"' for name in ("recent", "hit", "miss", "stale", "none")}


def _json_text(value: str) -> str:
    return encode_basestring_ascii(redacted_text(value))
