"""Recent answers: a few seconds of memory in front of everything else, per caller and URL.

Dashboards and CI jobs repeat the very same request; for those, even a cache hit's work (query
parsing, permission lookup, two storage reads, hashing) is most of the cost. This keeps the
finished answer in process memory for `ttl` seconds (a couple of seconds by default), keyed by
a MAC of the caller's credential and the exact path and query, so:

- a caller only ever gets back an answer it was itself given moments ago (same credential, same
  URL) on the same local day: the service never remembers an answer past the end of the day it
  was asked on, since defaults such as `end_date` depend on the day;
- it never outlives the permission decision nor the answer's own lifetime (the shortest wins);
- webhook invalidations clear it (in this process; other replicas' copies expire within `ttl`);
- only fresh answers enter it (never errors, never stale answers served on upstream failure).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")
MAX_ENTRIES = 10_000


class RecentAnswers(Generic[V]):
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        # key -> (monotonic expiry, wall-clock end of validity, value)
        self._entries: OrderedDict[tuple[object, ...], tuple[float, float, V]] = OrderedDict()
        # Bumped by clear(): an answer computed across an invalidation must not be remembered.
        self.generation = 0
        # Lookups, read by the metrics at scrape time (counting here is cheaper than a call
        # into the metrics on every request).
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[object, ...], wall_now: float = -math.inf) -> V | None:
        """The value, if its lifetime has not run out and `wall_now` (POSIX seconds) is before
        the end of validity it was put with."""
        entry = self._entries.get(key)
        if entry is not None:
            expires, valid_until, value = entry
            if self._clock() < expires and wall_now < valid_until:
                self.hits += 1
                return value
            self._entries.pop(key, None)
        self.misses += 1
        return None

    def put(
        self,
        key: tuple[object, ...],
        value: V,
        lifetime: float,
        generation: int,
        valid_until: float = math.inf,
    ) -> None:
        """Remember `value` for `lifetime` seconds (at most `ttl`; measured on the monotonic
        clock) and not once the wall clock reaches `valid_until`, unless the memory was
        cleared since `generation` was read (the answer may predate what cleared it). Both
        bounds, because a wall clock can jump (NTP, a suspended VM) while the other runs on."""
        lifetime = min(lifetime, self.ttl)
        if lifetime <= 0 or generation != self.generation:
            return
        self._entries[key] = (self._clock() + lifetime, valid_until, value)
        self._entries.move_to_end(key)
        while len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
