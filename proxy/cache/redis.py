"""Cache shared by replicas in Redis, under a `<namespace>:` key prefix.

Values are the caller's bytes, stored as they are (no pickle, no serialiser of our own); each
write carries its lifetime in the same command (SET ... PX), so no key is ever left without one
by a crash between two commands. Redis URLs may carry a password, so messages name the server
by host:port only, never by URL.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from urllib.parse import parse_qs, urlsplit

import redis.asyncio
import redis.exceptions
import structlog

from proxy.cache.base import StorageError, check_key, check_required_ttl, check_ttl, check_value

log = structlog.get_logger(__name__)

_SCHEMES = ("redis", "rediss", "unix")
_SCAN_BATCH = 500
_MAX_CONNECTIONS = 64  # per process; more concurrent commands wait for a free connection
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


class RedisStorage:
    """`Storage` in a Redis server (standalone; the namespace keeps other users' keys apart)."""

    name = "redis"

    def __init__(self, url: str, *, namespace: str = "dora-proxy", timeout: float = 5.0) -> None:
        self._location, secrets = _describe(url)
        self._secrets = secrets
        self._prefix = f"{namespace}:"
        self._namespace = namespace
        try:
            # A blocking pool: a burst of concurrent reads (a group's per-deployment entries)
            # waits up to `timeout` for a free connection instead of failing at the default
            # pool's limit with "Too many connections".
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                url,
                max_connections=_MAX_CONNECTIONS,
                timeout=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
            )
            self._client: redis.asyncio.Redis | None = redis.asyncio.Redis.from_pool(pool)
        except (ValueError, TypeError, redis.exceptions.RedisError):
            # The parser's message may quote the URL; do not chain it.
            raise StorageError(f"invalid redis URL for {self._location}") from None

    async def get(self, key: str) -> bytes | None:
        client = self._opened()
        full = self._key(key)
        try:
            with self._errors():
                return await client.get(full)
        except _WrongType:
            log.warning("cache.undecodable", backend=self.name, key=key, reason="not a string")
            with self._errors():
                await client.unlink(full)
            return None

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        client = self._opened()
        with self._errors():
            # MGET answers nil for a key holding another type: absent, as for `get`.
            return list(await client.mget([self._key(key) for key in keys]))

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        client = self._opened()
        full, value, ttl = self._key(key), check_value(value), check_ttl(ttl)
        with self._errors():
            await client.set(full, value, px=None if ttl is None else _milliseconds(ttl))

    async def set_many(self, items: Sequence[tuple[str, bytes, float | None]]) -> None:
        client = self._opened()
        checked = [(self._key(k), check_value(v), check_ttl(t)) for k, v, t in items]
        if not checked:
            return
        with self._errors():
            async with client.pipeline(transaction=False) as pipe:
                for full, value, ttl in checked:
                    pipe.set(full, value, px=None if ttl is None else _milliseconds(ttl))
                await pipe.execute()

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        client = self._opened()
        full, value, ttl = self._key(key), check_value(value), check_required_ttl(ttl)
        with self._errors():
            return bool(await client.set(full, value, px=_milliseconds(ttl), nx=True))

    async def delete(self, key: str) -> None:
        client = self._opened()
        full = self._key(key)
        with self._errors():
            await client.unlink(full)

    async def incr(self, key: str) -> int:
        client = self._opened()
        full = self._key(key)
        try:
            with self._errors():
                return int(await client.incr(full))
        except _WrongType:
            raise ValueError(f"cache value at {key!r} is not an integer") from None

    async def clear(self) -> int:
        client = self._opened()
        removed = 0
        with self._errors():
            batch: list[bytes] = []
            async for full in client.scan_iter(match=self._match_all(), count=_SCAN_BATCH):
                batch.append(full)
                if len(batch) >= _SCAN_BATCH:
                    removed += await client.unlink(*batch)
                    batch.clear()
            if batch:
                removed += await client.unlink(*batch)
        return removed

    async def stats(self) -> dict[str, int | str]:
        client = self._opened()
        with self._errors():
            entries = 0
            async for _ in client.scan_iter(match=self._match_all(), count=_SCAN_BATCH):
                entries += 1
            memory = await client.info("memory")
        return {
            "backend": self.name,
            "entries": entries,
            "namespace": self._namespace,
            # Whole server, not just our namespace: Redis cannot tell cheaply.
            "server_used_memory": int(memory.get("used_memory", -1)),
            "server_maxmemory": int(memory.get("maxmemory", -1)),
            "server_maxmemory_policy": str(memory.get("maxmemory_policy", "unknown")),
        }

    async def check_writable(self) -> None:
        client = self._opened()
        full = self._key(f"-/check-writable/{uuid.uuid4().hex}")
        token = os.urandom(16)
        with self._errors():
            try:
                await client.set(full, token, px=60_000)
                if await client.get(full) != token:
                    raise StorageError(f"redis at {self._location} read back a different value")
            finally:
                await client.unlink(full)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _opened(self) -> redis.asyncio.Redis:
        if self._client is None:
            raise StorageError("redis cache is closed")
        return self._client

    def _key(self, key: str) -> str:
        return self._prefix + check_key(key)

    def _match_all(self) -> str:
        return _GLOB_SPECIAL.sub(r"\\\1", self._prefix) + "*"

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate redis-py errors into StorageError naming only host:port."""
        try:
            yield
        except redis.exceptions.ResponseError as exc:
            if str(exc).startswith(("WRONGTYPE", "value is not an integer")):
                raise _WrongType from None
            raise StorageError(self._message(exc)) from None
        except redis.exceptions.RedisError as exc:
            raise StorageError(self._message(exc)) from None

    def _message(self, exc: Exception) -> str:
        text = str(exc)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return f"redis at {self._location}: {type(exc).__name__}: {text}"


class _WrongType(Exception):
    """The key holds something other than a string (or a non-integer for INCR)."""


def _milliseconds(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000))


def _describe(url: str) -> tuple[str, tuple[str, ...]]:
    """host:port (or socket path) for messages, and the URL's secrets to scrub from them."""
    if not isinstance(url, str):
        raise TypeError("redis URL must be a str")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise StorageError("invalid redis URL (not shown: it may contain a password)") from None
    if parts.scheme not in _SCHEMES:
        raise StorageError(
            f"redis URL scheme must be one of {', '.join(_SCHEMES)}, not {parts.scheme!r}"
        )
    location = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{port or 6379}"
    query = parse_qs(parts.query)
    candidates = [
        parts.password,
        parts.username,
        *query.get("password", ()),
        *query.get("username", ()),
    ]
    secrets = tuple(s for s in candidates if s)
    return location, secrets
