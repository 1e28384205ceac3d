"""Lifetime helpers shared by the answer and facts layers."""

from __future__ import annotations

from proxy.cache.base import Storage


async def put(storage: Storage, key: str, value: bytes, ttl: float) -> None:
    """Store with a lifetime; a lifetime of 0 (configured "do not cache") stores nothing."""
    if ttl > 0:
        await storage.set(key, value, ttl)


async def put_many(storage: Storage, items: list[tuple[str, bytes, float]]) -> None:
    """`put` for many entries in one storage round trip."""
    kept = [(key, value, ttl) for key, value, ttl in items if ttl > 0]
    if kept:
        await storage.set_many(kept)
