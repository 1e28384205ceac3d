"""structlog set-up: one JSON line per event on stdout (a console renderer on a terminal).

A redaction processor runs last before rendering, so a credential that slipped into an event
(a header dict, a query string) is masked whatever the call site did. Tracebacks are rendered
without frame locals: a local variable can hold a caller's token (structlog's dict tracebacks
show locals by default, and the redaction cannot know which local is a secret). The request
lines have their own batched path (proxy/telemetry/access_log.py).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog
from aiohttp.http_exceptions import HttpProcessingError

from proxy.telemetry.access_log import REQUEST_LOG, flush_request_lines, render_request_lines
from proxy.telemetry.redaction import redact, redacted_value


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog (and stdlib logging, for libraries) once at start-up."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    use_console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            flush_request_lines,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _DICT_TRACEBACKS if not use_console else _identity,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    REQUEST_LOG.configure(
        structlog.get_logger("proxy.request")
        if use_console
        else structlog.wrap_logger(
            structlog.WriteLogger(sys.stdout),
            processors=[render_request_lines],
            wrapper_class=structlog.make_filtering_bound_logger(numeric),
            cache_logger_on_first_use=True,
        ),
        batched=not use_console,
        enabled=numeric <= logging.INFO,
    )
    _route_library_records(use_console, max(numeric, logging.WARNING))
    # aiohttp's access log would print raw query strings (tokens); we log requests instead.
    logging.getLogger("aiohttp.access").disabled = True
    for name in ("aiohttp.server", "aiohttp.web"):
        library = logging.getLogger(name)
        if not any(isinstance(f, _LibraryRecords) for f in library.filters):
            library.addFilter(_LibraryRecords())


def _route_library_records(use_console: bool, level: int) -> None:
    """Libraries' stdlib records go to stderr: as JSON lines in JSON mode (a log pipeline must
    parse every line), as text on a terminal. Like `basicConfig`, only when the root logger has
    no handler yet (a test runner's own handlers stay)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    # With file descriptors exhausted asyncio logs a record per accept() attempt (hundreds of
    # MB of tracebacks): records are rate-limited per logger and message.
    handler.addFilter(RateLimitedRecords())
    if not use_console:
        handler.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=[
                    structlog.stdlib.add_logger_name,
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                ],
                processors=[
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    _DICT_TRACEBACKS,
                    redact,
                    structlog.processors.JSONRenderer(),
                ],
            )
        )
    root.addHandler(handler)
    root.setLevel(level)


class _LibraryRecords(logging.Filter):
    """aiohttp's own error records, made safe to print.

    A request its parser refuses (line too long, malformed header) is logged by aiohttp at ERROR
    with a traceback whose message quotes the raw request line, query string included: such a
    line may carry `?private_token=…`. It becomes one structured line with the status and the
    kind of refusal only. Any other record's text and traceback pass through the redaction.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            _http_log.info("request_refused", status=exc.code, reason=type(exc).__name__)
            return False
        record.msg = redacted_value(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = redacted_value(logging.Formatter().formatException(record.exc_info))
        return True


_http_log = structlog.get_logger("proxy.http")
LIBRARY_LINES_PER_INTERVAL = 10  # records per logger and message, per interval
LIBRARY_INTERVAL = 60.0  # seconds


class RateLimitedRecords(logging.Filter):
    """At most `LIBRARY_LINES_PER_INTERVAL` records per logger and message (its first 80
    characters) per `LIBRARY_INTERVAL` seconds; the first record let through after drops says
    how many were dropped."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._clock = clock
        self._windows: dict[tuple[str, str], list[float]] = {}  # [start, passed, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg)[:80])
        now = self._clock()
        window = self._windows.get(key)
        dropped = 0
        if window is None or now - window[0] >= LIBRARY_INTERVAL:
            if len(self._windows) > 1000:
                self._windows.clear()
            dropped = int(window[2]) if window is not None else 0
            window = self._windows[key] = [now, 0, 0]
        if window[1] >= LIBRARY_LINES_PER_INTERVAL:
            window[2] += 1
            return False
        window[1] += 1
        if dropped:
            record.msg = f"{record.getMessage()} ({dropped} similar records dropped)"
            record.args = None
        return True


_DICT_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def _identity(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return event
