"""A cache that fails is a degraded cache, not a bug: `GuardedStorage` wraps the real storage.

Every operation gets a deadline (`timeout`; a frozen Redis or a wedged disk must not hold a
request), and failures trip a circuit breaker: after `trip_after` failures in a row the backend
is not called at all for `open_for` seconds (then one operation tries it again). Meanwhile a
read is a miss, a write is dropped, and `add` (the replica lock) says "yours", so requests are
answered uncached from the upstream. `incr` (webhook generations) still raises `StorageError`:
a lost invalidation must not look like a success.

A failure is logged once per `log_interval` (with how many were not logged), never once per
request: a dead Redis under load would otherwise write thousands of lines a second.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog

from proxy.cache.base import Storage, StorageError
from proxy.cache.disk import headroom

log = structlog.get_logger("proxy.cache")
T = TypeVar("T")

FAILURES = (StorageError, TimeoutError, OSError)


class GuardedStorage:
    """`Storage` around another one, for the request path: bounded and never raising on reads."""

    def __init__(
        self,
        inner: Storage,
        *,
        timeout: float = 1.0,
        trip_after: int = 3,
        open_for: float = 5.0,
        log_interval: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.timeout = timeout
        self.trip_after = trip_after
        self.open_for = open_for
        self.log_interval = log_interval
        self._clock = clock
        self._failures_in_row = 0
        self._open_until = 0.0
        self._last_logged = -float("inf")
        self._last_recovered = -float("inf")
        self._unlogged = 0
        self.reason: str | None = None  # the last failure while degraded; None when healthy
        self.failures = 0  # operations that failed or were skipped, since start

    # ---- state --------------------------------------------------------------------------
    @property
    def degraded(self) -> str | None:
        """Why the cache is not in use right now (None: healthy)."""
        return self.reason

    def retry_after(self) -> int:
        """Seconds until the breaker tries the backend again (at least 1)."""
        return max(1, int(self._open_until - self._clock()) + 1)

    def _is_open(self) -> bool:
        return self._failures_in_row >= self.trip_after and self._clock() < self._open_until

    def _failed(self, operation: str, exc: BaseException) -> None:
        self.failures += 1
        self._failures_in_row += 1
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, TimeoutError):
            reason = f"no answer within {self.timeout:g}s"
        self.reason = f"{self.name} cache {operation} failed ({reason})"[:300]
        if self._failures_in_row >= self.trip_after:
            self._open_until = self._clock() + self.open_for
        now = self._clock()
        if now - self._last_logged >= self.log_interval:
            log.warning(
                "cache_degraded",
                backend=self.name,
                reason=self.reason,
                not_logged_since_last=self._unlogged,
                action="answering uncached",
            )
            self._last_logged = now
            self._unlogged = 0
        else:
            self._unlogged += 1

    def _succeeded(self) -> None:
        if self.reason is not None:
            # Rate-limited too: a full disk fails writes while reads succeed, and that must
            # not turn into two lines per request.
            now = self._clock()
            if now - self._last_recovered >= self.log_interval:
                log.info("cache_recovered", backend=self.name)
                self._last_recovered = now
        self.reason = None
        self._failures_in_row = 0

    async def _guard(self, operation: str, call: Callable[[], Awaitable[T]], fallback: T) -> T:
        if self._is_open():
            self.failures += 1
            self._unlogged += 1
            return fallback
        try:
            async with asyncio.timeout(self.timeout):
                result = await call()
        except FAILURES as exc:
            self._failed(operation, exc)
            return fallback
        self._succeeded()
        return result

    # ---- Storage --------------------------------------------------------------------------
    async def get(self, key: str) -> bytes | None:
        return await self._guard("get", lambda: self.inner.get(key), None)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return await self._guard("get_many", lambda: self.inner.get_many(keys), [None] * len(keys))

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        await self._guard("set", lambda: self.inner.set(key, value, ttl), None)

    async def set_many(self, items: Sequence[tuple[str, bytes, float | None]]) -> None:
        await self._guard("set_many", lambda: self.inner.set_many(items), None)

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        # Without a working backend there is no lock to share: this caller computes.
        return await self._guard("add", lambda: self.inner.add(key, value, ttl), True)

    async def delete(self, key: str) -> None:
        await self._guard("delete", lambda: self.inner.delete(key), None)

    async def incr(self, key: str) -> int:
        missing = -1
        value = await self._guard("incr", lambda: self.inner.incr(key), missing)
        if value == missing:
            raise StorageError(self.reason or f"{self.name} cache unavailable")
        return value

    async def clear(self) -> int:
        return await self.inner.clear()

    async def stats(self) -> dict[str, int | str]:
        return await self.inner.stats()

    async def check_writable(self) -> None:
        """The backend's own round trip, within the deadline; the outcome feeds the breaker."""
        try:
            async with asyncio.timeout(self.timeout):
                await self.inner.check_writable()
        except FAILURES as exc:
            self._failed("check", exc)
            raise StorageError(self.reason or "cache unavailable") from None
        self._succeeded()

    async def close(self) -> None:
        await self.inner.close()

    def __getattr__(self, name: str) -> Any:  # backend extras (tests, cache stats)
        return getattr(self.inner, name)


def warn_if_cache_exceeds_free_space(directory: Path, size_limit: int) -> None:
    """Warn at start when `cache_size_limit` (plus the WAL and the reserve the disk cache keeps,
    `headroom`) cannot fit: the disk would fill before eviction."""
    try:
        usage = shutil.disk_usage(directory)
    except OSError:
        return
    used = sum(f.stat().st_size for f in directory.glob("cache.db*") if f.is_file())
    extra = headroom(directory)
    if size_limit + extra > usage.free + used:
        log.warning(
            "cache_size_limit_exceeds_free_space",
            directory=str(directory),
            cache_size_limit=size_limit,
            headroom_bytes=extra,
            free_bytes=usage.free,
            advice="lower cache_size_limit below the free space, or give the cache more room",
        )
