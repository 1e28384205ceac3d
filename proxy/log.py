"""structlog set-up: one JSON line per event on stdout (a console renderer on a terminal).

A redaction processor runs last before rendering, so a credential that slipped into an event
(a header dict, a query string) is masked whatever the call site did. Tracebacks are rendered
without frame locals: a local variable can hold a caller's token (structlog's dict tracebacks
show locals by default, and the redaction cannot know which local is a secret).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from aiohttp.http_exceptions import HttpProcessingError

_SECRET_KEYS = re.compile(
    r"(token|authorization|x-gitlab-token|cookie|secret|password)",
    re.IGNORECASE,
)
_SECRET_IN_TEXT = re.compile(
    r"((?:private_token|access_token|job_token)=)[^&\s]+"
    r"|((?:Bearer|Basic)\s+)\S+"
    r"|((?:private-token|job-token|x-gitlab-token)['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+",
    re.IGNORECASE,
)
REDACTED = "[redacted]"


_SCALARS = (int, float, bool, type(None))
_secret_key_memo: dict[str, bool] = {}  # event keys are few and fixed: decide each once


def _is_secret_key(key: str) -> bool:
    known = _secret_key_memo.get(key)
    if known is None:
        known = _SECRET_KEYS.search(key) is not None
        if len(_secret_key_memo) < 4096:
            _secret_key_memo[key] = known
    return known


def _could_hold_secret(lowered: str) -> bool:
    # Every pattern of _SECRET_IN_TEXT contains one of these words: most strings skip the regex.
    return "token" in lowered or "bearer" in lowered or "basic" in lowered


def _redact_text(value: str) -> str:
    if not _could_hold_secret(value.lower()):
        return value
    return _SECRET_IN_TEXT.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + REDACTED, value)


def _redact_value(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, str):
        return _redact_text(value)
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and _is_secret_key(k) else _redact_value(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_redact_value(v) for v in value)
    return value


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask credential-looking keys and token-looking substrings.

    It runs on every log line (one per request), so the common case is kept cheap: key
    decisions are memoised and scalars are passed through untouched.
    """
    for key, value in event.items():
        if _is_secret_key(key):
            event[key] = REDACTED
        elif type(value) is str:
            if _could_hold_secret(value.lower()):
                event[key] = _redact_text(value)
        elif not isinstance(value, _SCALARS):
            event[key] = _redact_value(value)
    return event


class _RequestLines:
    """Where the one-line-per-request log goes (see `request_log`)."""

    logger: Any = structlog.get_logger("proxy.request")


def request_log() -> Any:
    """The logger for the request line. Every request writes one, so in JSON mode it runs a
    lean chain (level, time, redaction, JSON: no context merging, no traceback rendering)
    straight to stdout; measured, the general chain cost a cache hit a third of its time."""
    return _RequestLines.logger


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
    _RequestLines.logger = (
        structlog.get_logger("proxy.request")
        if use_console
        else structlog.wrap_logger(
            structlog.WriteLogger(sys.stdout),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                redact,
                structlog.processors.JSONRenderer(),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(numeric),
            cache_logger_on_first_use=True,
        )
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
    # aiohttp's access log would print raw query strings (tokens); our middleware logs instead.
    logging.getLogger("aiohttp.access").disabled = True
    for name in ("aiohttp.server", "aiohttp.web"):
        library = logging.getLogger(name)
        if not any(isinstance(f, _LibraryRecords) for f in library.filters):
            library.addFilter(_LibraryRecords())


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
        record.msg = _redact_value(record.getMessage())
        record.args = None
        if record.exc_info:
            record.exc_text = _redact_value(logging.Formatter().formatException(record.exc_info))
        return True


_http_log = structlog.get_logger("proxy.http")


_DICT_TRACEBACKS = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def _identity(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    return event
