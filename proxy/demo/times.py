"""The fake's own timestamp helpers, written apart from the proxy's on purpose: a bug in the
product's parsing must not be mirrored here, where it would go unseen."""

from __future__ import annotations

from datetime import UTC, datetime


def parse_time(value: str) -> datetime:
    """GitLab's accepted ISO 8601 forms (`Z`, a numeric offset, or none meaning UTC) → aware UTC."""
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def format_time(value: datetime) -> str:
    """As GitLab renders instants: UTC, milliseconds, `Z` (e.g. 2024-05-01T10:00:00.000Z)."""
    utc = value.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}Z"
