"""Single flight: concurrent callers asking for the same key share one computation.

`SingleFlight` merges callers inside one process; `StorageLock` extends that to every process
sharing the cache storage (replicas on one Redis, or processes on one disk cache).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from proxy.cache import keys
from proxy.cache.base import Storage, StorageError

T = TypeVar("T")
# Extra seconds a waiter allows past the lock's lifetime before it stops waiting.
_LOCK_MARGIN = 1.0


class SingleFlight:
    """The first caller of a key starts the work as a task; later callers await the same task.

    The work runs in its own task, shielded from each caller, so one caller giving up (client
    gone, deadline) does not fail the others. Work follows its callers: when the last one has
    gone, the task is cancelled, so nothing keeps calling the upstream for nobody (what it
    already stored stays cached; upstream calls still queued never start). Results are not
    kept after the task ends: caching is the storage's job.
    """

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._waiters: dict[asyncio.Task[Any], int] = {}
        self.abandoned = 0  # computations cancelled because every caller had gone

    def __len__(self) -> int:
        return len(self._tasks)

    def running(self, key: str) -> bool:
        return key in self._tasks

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._tasks[key] = task
            self._waiters[task] = 0
            task.add_done_callback(lambda done, key=key: self._finished(key, done))
        self._waiters[task] = self._waiters.get(task, 0) + 1
        try:
            return await asyncio.shield(task)
        finally:
            left = self._waiters.get(task, 1) - 1
            self._waiters[task] = left
            if left <= 0 and not task.done():
                self.abandoned += 1
                task.cancel()

    def _finished(self, key: str, task: asyncio.Task[Any]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        self._waiters.pop(task, None)
        if not task.cancelled():
            task.exception()  # mark retrieved: the callers saw it


class StorageLock:
    """Single flight across processes: one holder of `<key>|lock` in the shared storage computes.

    `SingleFlight` only merges callers inside one process. Replicas sharing a Redis (or
    processes sharing one disk cache) would each compute the same cold answer; here the caller
    that manages to `add` the lock key computes and stores the answer, and the others poll the
    storage until the answer appears. The lock is a short lease (`lease` seconds) that the
    holder renews while it works, so a holder that crashed delays the others by at most one
    lease; a live holder keeps it for up to `ttl`. When the lock disappears without an answer
    (holder failed or died, or the answer is not cacheable) a waiter takes over.

    `work` must store its result under `key` (the answer cache does); its result is returned to
    the holder only. `on_outcome` receives "acquired", "shared" (another process's answer was
    used), "took_over" or "timed_out" (waited `ttl` plus a margin, then computed anyway).
    """

    def __init__(
        self,
        storage: Storage,
        *,
        ttl: float,
        poll_interval: float = 0.05,
        lease: float = 1.0,
        on_outcome: Callable[[str], None] | None = None,
    ) -> None:
        self.storage = storage
        self.ttl = ttl
        self.lease = min(lease, ttl)
        self.poll_interval = poll_interval
        self.on_outcome = on_outcome

    async def run(self, key: str, work: Callable[[], Awaitable[bytes]]) -> bytes:
        lock_key = keys.lock_key(key)
        token = uuid.uuid4().hex.encode()
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.ttl + _LOCK_MARGIN
        outcome = "acquired"
        while True:
            if await self.storage.add(lock_key, token, self.lease):
                self._report(outcome)
                heartbeat = asyncio.ensure_future(self._renew(lock_key, token))
                try:
                    return await work()
                finally:
                    heartbeat.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await heartbeat
                    await self._release(lock_key, token)
            while True:
                await asyncio.sleep(self.poll_interval)
                answer = await self.storage.get(key)
                if answer is not None:
                    self._report("shared")
                    return answer
                if loop.time() >= give_up_at:
                    # The lock outlived its own lifetime (clock trouble, a wedged backend):
                    # computing twice beats waiting forever.
                    self._report("timed_out")
                    return await work()
                if await self.storage.get(lock_key) is None:
                    outcome = "took_over"
                    break

    async def _renew(self, lock_key: str, token: bytes) -> None:
        """Extend our lease while the work runs, never past `ttl` after taking the lock;
        stop if the lock is no longer ours."""
        loop = asyncio.get_running_loop()
        ends = loop.time() + self.ttl
        with contextlib.suppress(StorageError):
            while True:
                await asyncio.sleep(self.lease / 3)
                remaining = ends - loop.time()
                if remaining <= 0 or await self.storage.get(lock_key) != token:
                    return
                await self.storage.set(lock_key, token, min(self.lease, remaining))

    async def _release(self, lock_key: str, token: bytes) -> None:
        """Delete the lock if it is still ours (it may have expired and been re-taken).

        Read-then-delete is not atomic; the window is one round trip, and the worst case is
        one extra computation elsewhere, never a wrong answer.
        """
        with contextlib.suppress(StorageError):
            if await self.storage.get(lock_key) == token:
                await self.storage.delete(lock_key)

    def _report(self, outcome: str) -> None:
        if self.on_outcome is not None:
            self.on_outcome(outcome)
