"""The `Storage` protocol every cache backend implements, and the checks they share.

A storage is a plain async mapping from `str` keys to `bytes` values with lifetimes: it decides
nothing about what to cache or for how long (that is `policy`), and it never serialises Python
objects. Refusing anything but `str`/`bytes` at this boundary is what keeps pickle out of the
cache (diskcache pickles other types, see upstream-gitlab-api.md §8).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol, runtime_checkable


class StorageError(Exception):
    """The backend failed or refused to open; the message never contains a credential."""


@runtime_checkable
class Storage(Protocol):
    """Async key/value store shared by all request handlers (and, for Redis, all replicas).

    Backend failures raise `StorageError`; a key that is not `str` or a value that is not `bytes`
    raises `TypeError`; a non-positive ttl raises `ValueError`.
    """

    name: str  # "disk" or "redis"

    async def get(self, key: str) -> bytes | None:
        """The value, or None if absent, expired or undecodable (the latter logged and dropped)."""
        ...

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        """`get` for many keys at once, in order: one round trip (Redis) or one pass without
        yielding (disk), not N. A group's lead time reads one MR list per deployment."""
        ...

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Store `value`, replacing any old one; `ttl` seconds of life, None for no expiry."""
        ...

    async def set_many(self, items: Sequence[tuple[str, bytes, float | None]]) -> None:
        """`set` for many (key, value, ttl) at once: one transaction or round trip, not N.

        The facts layer stores a whole run of days per fetch; one by one, a group of hundreds of
        projects spent most of its time in single-row writes.
        """
        ...

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Store only if absent (atomically, across processes/replicas); True if it was stored."""
        ...

    async def delete(self, key: str) -> None:
        """Remove `key`; a missing key is not an error."""
        ...

    async def incr(self, key: str) -> int:
        """Atomically add 1 to the integer at `key` (created at 0) and return the new value.

        The counter reads back through `get` as ASCII digits (b"3"), like Redis's INCR.
        """
        ...

    async def clear(self) -> int:
        """Remove everything in this storage's namespace; the count removed, or -1 if unknown."""
        ...

    async def stats(self) -> dict[str, int | str]:
        """`backend` and `entries` always; `bytes` when known; backend-specific extras."""
        ...

    async def check_writable(self) -> None:
        """Raise `StorageError` unless a write, read and delete round trip works (readiness)."""
        ...

    async def close(self) -> None:
        """Release connections; later calls raise `StorageError`."""
        ...


def check_key(key: object) -> str:
    """Refuse anything but a plain `str` key (other types would be pickled by diskcache)."""
    if type(key) is not str:
        raise TypeError(f"cache keys must be str, not {type(key).__name__}")
    return key


def check_value(value: object) -> bytes:
    """Refuse anything but plain `bytes` values (encode JSON before storing)."""
    if type(value) is not bytes:
        raise TypeError(f"cache values must be bytes, not {type(value).__name__}")
    return value


def check_ttl(ttl: float | None) -> float | None:
    """A lifetime is None (forever) or a finite number of seconds greater than zero."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"ttl must be a number of seconds or None, not {type(ttl).__name__}")
    if not (ttl > 0 and math.isfinite(ttl)):
        raise ValueError(f"ttl must be a positive finite number of seconds, got {ttl!r}")
    return float(ttl)


def check_required_ttl(ttl: float) -> float:
    """Like `check_ttl`, for operations (locks) where living forever is a bug."""
    checked = check_ttl(ttl)
    if checked is None:
        raise ValueError("ttl is required here")
    return checked
