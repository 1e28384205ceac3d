"""Cache storages behind one small interface, and the policies that decide lifetimes."""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path

from proxy.cache.base import Storage, StorageError

__all__ = ["Storage", "StorageError", "open_storage"]

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def open_storage(
    location: str | os.PathLike[str],
    *,
    size_limit: int = 2**30,
    namespace: str = "dora-proxy",
    executor: concurrent.futures.Executor | None = None,
) -> Storage:
    """A Redis storage for a redis://, rediss:// or unix:// URL, else a disk storage there.

    `size_limit` (bytes) and `executor` apply to disk, `namespace` to Redis. Redis connects
    lazily: call `check_writable()` to know it is reachable.
    """
    if isinstance(location, str) and location.startswith(_REDIS_SCHEMES):
        from proxy.cache.redis import RedisStorage  # redis is an optional dependency

        return RedisStorage(location, namespace=namespace)
    from proxy.cache.disk import DiskStorage

    return DiskStorage(Path(location), size_limit=size_limit, executor=executor)
