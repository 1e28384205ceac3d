"""structlog set-up: one JSON line per event on stdout (a console renderer on a terminal).

A redaction processor runs last before rendering, so a credential that slipped into an event
(a header dict, a query string) is masked whatever the call site did. Tracebacks are rendered
without frame locals: a local variable can hold a caller's token (structlog's dict tracebacks
show locals by default, and the redaction cannot know which local is a secret).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import re
import sys
import threading
import time
from collections.abc import MutableMapping
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, TextIO

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


class LineWriter:
    """structlog's logger in JSON mode: rendered lines written to a file in batches.

    Writing and flushing stdout once per line cost a cache hit about a tenth of its time, so
    info lines wait in memory for at most `flush_delay` seconds (or until `max_pending` lines):
    one write and one flush carry them all. A warning or an error is written at once, with every
    line before it, so the order of lines is kept. Lines are flushed when the app stops and at
    exit; a process killed with SIGKILL loses at most `flush_delay` of info lines. Outside an
    event loop (the CLI's commands, worker threads) every line is written at once.
    """

    def __init__(self, file: TextIO, flush_delay: float = 0.05, max_pending: int = 512) -> None:
        self._file = file
        self.flush_delay = flush_delay
        self.max_pending = max_pending
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._timer: asyncio.TimerHandle | None = None

    def msg(self, line: str) -> None:
        with self._lock:
            self._pending.append(line)
            if self._timer is not None and len(self._pending) < self.max_pending:
                return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or len(self._pending) >= self.max_pending:
            self.flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.flush_delay, self.flush)

    info = debug = msg

    def urgent(self, line: str) -> None:
        with self._lock:
            self._pending.append(line)
        self.flush()

    warning = warn = error = critical = exception = fatal = urgent

    def flush(self) -> None:
        with self._lock:
            lines, self._pending = self._pending, []
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if lines:
                try:
                    self._file.write("\n".join(lines) + "\n")
                    self._file.flush()
                except (OSError, ValueError):  # closed or broken stdout: nowhere left to log
                    pass


_WRITER: LineWriter | None = None


def flush_logs() -> None:
    """Write out buffered log lines now (the app calls this when it stops, and at exit)."""
    if _WRITER is not None:
        _WRITER.flush()


atexit.register(flush_logs)


def utc_timestamp(_cache: list[Any] = [None, ""]) -> str:  # noqa: B006 (per-second memo)
    """ISO 8601 UTC with microseconds; the date-time part is formatted once per second."""
    now = time.time()
    second = int(now)
    if second != _cache[0]:
        _cache[0], _cache[1] = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_cache[1]}.{int((now - second) * 1_000_000):06d}Z"


def _json_text(value: str) -> str:
    """A JSON string literal of `value`, redacted (the path and parameters are the caller's)."""
    if _could_hold_secret(value.lower()):
        value = _redact_text(value)
    return encode_basestring_ascii(value)


REQUEST_FIELDS = frozenset(
    {
        "event",
        "method",
        "path",
        "params",
        "status",
        "duration_ms",
        "cache",
        "upstream_calls",
        "upstream_calls_by_kind",
    }
)
_LEVELS = {"warn": "warning", "exception": "error"}
_JSON = structlog.processors.JSONRenderer()


def render_request_line(logger: Any, method_name: str, event: MutableMapping[str, Any]) -> str:
    """The request line's whole chain in one processor: level, time, redaction and JSON.

    Every request writes this line, so it is formatted by hand from its known fields (strings
    through the C JSON string encoder, after the same redaction as any other line); an event
    with other fields goes through the general processors instead. Measured on a cache hit:
    about 2.5 µs instead of 11 µs for add_log_level + TimeStamper + redact + JSONRenderer.
    """
    level = _LEVELS.get(method_name, method_name)
    if event.keys() != REQUEST_FIELDS:
        event["level"] = level
        event["timestamp"] = utc_timestamp()
        return _JSON(logger, method_name, redact(logger, method_name, event))
    by_kind = event["upstream_calls_by_kind"]
    kinds = _JSON(logger, method_name, _redact_value(by_kind)) if by_kind else "{}"
    return (
        f'{{"event": {_json_text(event["event"])}, "level": "{level}", '
        f'"timestamp": "{utc_timestamp()}", "method": {_json_text(event["method"])}, '
        f'"path": {_json_text(event["path"])}, '
        f'"params": [{", ".join(map(_json_text, event["params"]))}], '
        f'"status": {int(event["status"])}, "duration_ms": {float(event["duration_ms"])!r}, '
        f'"cache": {_json_text(event["cache"])}, "upstream_calls": {int(event["upstream_calls"])}, '
        f'"upstream_calls_by_kind": {kinds}}}'
    )


class _RequestLines:
    """Where the one-line-per-request log goes (see `request_log`)."""

    logger: Any = structlog.get_logger("proxy.request")


def request_log() -> Any:
    """The logger for the request line. Every request writes one, so in JSON mode it runs one
    processor (`render_request_line`) into the batched `LineWriter`; measured, the general
    chain and a flushed write per line cost a cache hit about a third of its time."""
    return _RequestLines.logger


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog (and stdlib logging, for libraries) once at start-up."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    global _WRITER
    use_console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    flush_logs()
    _WRITER = None if use_console else LineWriter(sys.stdout)
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
        logger_factory=(
            structlog.PrintLoggerFactory(sys.stdout) if _WRITER is None else lambda *_: _WRITER
        ),
        cache_logger_on_first_use=True,
    )
    _RequestLines.logger = (
        structlog.get_logger("proxy.request")
        if use_console
        else structlog.wrap_logger(
            _WRITER,
            processors=[render_request_line],
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
