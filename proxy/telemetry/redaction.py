"""Masking credentials in log events: the last processor before rendering, and the helpers
the request log uses for its own fields.

Keys that name a secret are masked whole; strings are searched for token-looking substrings
(`private_token=…`, `Bearer …`, `PRIVATE-TOKEN: …`) only when they contain one of the words
every such pattern needs, so the common case costs a `lower()` and three `in` tests.
"""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any

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


def redacted_text(value: str) -> str:
    if not _could_hold_secret(value.lower()):
        return value
    return _SECRET_IN_TEXT.sub(lambda m: (m.group(1) or m.group(2) or m.group(3)) + REDACTED, value)


def redacted_value(value: Any) -> Any:
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, str):
        return redacted_text(value)
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and _is_secret_key(k) else redacted_value(v)
            for k, v in value.items()
        }
    if isinstance(value, tuple) and hasattr(type(value), "_fields"):
        # A named tuple: its repr may be its only safe form (a field can be a secret that no
        # pattern recognises); rebuilding it field by field would also need positional args.
        return redacted_text(repr(value))
    if isinstance(value, list | tuple):
        return type(value)(redacted_value(v) for v in value)
    return value


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask credential-looking keys and token-looking substrings.

    It runs on every event of the general chain, so the common case is kept cheap: key
    decisions are memoised and scalars are passed through untouched. (Request lines in JSON
    mode have their own renderer, which redacts the caller's strings the same way.)
    """
    for key, value in event.items():
        if _is_secret_key(key):
            event[key] = REDACTED
        elif type(value) is str:
            if _could_hold_secret(value.lower()):
                event[key] = redacted_text(value)
        elif not isinstance(value, _SCALARS):
            event[key] = redacted_value(value)
    return event
