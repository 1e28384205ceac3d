"""May this caller read DORA metrics of this project or group? Decided as GitLab does.

Order (upstream-gitlab-api.md §5): the caller's user (a rejected credential passes GitLab's
401/403 through), the container lookup (invisible or absent → 404), admins pass, anonymous
callers fail, then the effective access level must be Reporter (20) or above.

Decisions are kept in memory for a short TTL under a MAC of the credential (never the
credential itself). Every request passes through here before any cached metric is used, so a
cached answer is only ever shared between callers who each proved access.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from proxy.credentials import Credential, caller_key, could_be_a_token, mac_key
from proxy.errors import (
    GROUP_NOT_FOUND,
    PROJECT_NOT_FOUND,
    BadGateway,
    NotFound,
    ProxyError,
    TooManyRequests,
    Unauthorized,
    UpstreamRejected,
)
from proxy.facts import ContainerInfo, UserInfo
from proxy.single_flight import SingleFlight
from proxy.upstream import UpstreamSession, UpstreamStatus

REPORTER = 20
WAITING_PER_CLIENT = 16  # checks of one client address waiting for a turn (default)
_MAX_ENTRIES = 50_000


@dataclass(frozen=True, slots=True)
class _Entry:
    expires: float
    value: ContainerInfo | UserInfo | ProxyError


class DecisionCache:
    """A small in-memory TTL map; keys are MACs, values are decisions (never tokens)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[tuple[str, ...], _Entry] = {}

    def get(self, key: tuple[str, ...]) -> ContainerInfo | UserInfo | ProxyError | None:
        entry = self.entry(key)
        return None if entry is None else entry.value

    def entry(self, key: tuple[str, ...]) -> _Entry | None:
        """The live entry (value and expiry), or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            del self._entries[key]
            return None
        return entry

    def put(
        self,
        key: tuple[str, ...],
        value: ContainerInfo | UserInfo | ProxyError,
        not_after: float | None = None,
    ) -> None:
        """Keep `value` for `ttl` seconds, and never past `not_after` (a decision made from a
        cached user record must not outlive that record)."""
        if self.ttl <= 0:
            return
        if len(self._entries) >= _MAX_ENTRIES:
            now = self._clock()
            self._entries = {k: e for k, e in self._entries.items() if e.expires > now}
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
        expires = self._clock() + self.ttl
        if not_after is not None:
            expires = min(expires, not_after)
        self._entries[key] = _Entry(expires, value)

    def clear(self) -> None:
        self._entries.clear()


class ClientGate:
    """At most `limit` uncached permission checks in flight per client address (0: no limit),
    and at most `WAITING_PER_CLIENT` more waiting for their turn; past that, 429 at once.

    Each check of an unknown token costs upstream calls; a flood of random tokens from one
    address waits its turn behind its own checks (and is refused past the waiting room)
    instead of filling the permission pool that every other caller's first check shares.
    """

    def __init__(self, limit: int, waiting: int = WAITING_PER_CLIENT) -> None:
        self.limit = limit
        self.waiting = waiting
        self._clients: dict[str, _ClientTurns] = {}
        self.refused = 0

    @contextlib.asynccontextmanager
    async def enter(self, client: str | None) -> AsyncIterator[None]:
        if not self.limit or client is None:
            yield
            return
        turns = self._clients.get(client)
        if turns is None:
            turns = self._clients[client] = _ClientTurns(asyncio.Semaphore(self.limit))
        if turns.semaphore.locked() and turns.waiting >= self.waiting:
            self.refused += 1
            raise TooManyRequests(
                1, detail=f"over {self.limit + self.waiting} permission checks from one client"
            )
        turns.users += 1
        turns.waiting += 1
        try:
            try:
                await turns.semaphore.acquire()
            finally:
                turns.waiting -= 1
            try:
                yield
            finally:
                turns.semaphore.release()
        finally:
            turns.users -= 1
            if turns.users == 0:
                self._clients.pop(client, None)


@dataclass(slots=True)
class _ClientTurns:
    semaphore: asyncio.Semaphore
    users: int = 0  # checks in flight or waiting
    waiting: int = 0


class Permissions:
    def __init__(
        self,
        secret: bytes,
        ttl: float,
        client_limit: int = 0,
        client_queue: int = WAITING_PER_CLIENT,
    ) -> None:
        self.secret = mac_key(secret)
        self.cache = DecisionCache(ttl)
        self.flights = SingleFlight()
        self.gate = ClientGate(client_limit, client_queue)

    def caller_key(self, credential: Credential | None) -> str:
        return caller_key(self.secret, credential)

    async def authorize(
        self,
        session: UpstreamSession,
        credential: Credential | None,
        container: str,
        id_or_path: str,
        client: str | None = None,
    ) -> ContainerInfo:
        """The container if the caller may read its DORA metrics; raises the GitLab error else.

        `session` is the caller's door upstream; a cached decision makes no call through it.
        `client` (the peer address) bounds the uncached checks one client runs at once.
        """
        if credential is not None and not could_be_a_token(credential.token):
            # No GitLab token looks like this, so GitLab would answer its unknown-token 401.
            # Answered here: such a value cannot even be put on the wire (non-Latin-1 text,
            # control characters) or hashed (undecodable bytes arrive as surrogates).
            raise UpstreamRejected(401, {"message": "401 Unauthorized"})
        key = (self.caller_key(credential), container, id_or_path)
        cached = self.cache.get(key)
        if isinstance(cached, ProxyError):
            raise _fresh(cached)
        if isinstance(cached, ContainerInfo):
            return cached

        async def decide() -> ContainerInfo:
            bound: list[float] = []  # expiry of the user record the decision used
            try:
                info = await self._decide(session, credential, container, id_or_path, bound)
            except (NotFound, Unauthorized, UpstreamRejected) as decision:
                # without the traceback and its frames
                self.cache.put(key, _fresh(decision), min(bound, default=None))
                raise
            self.cache.put(key, info, min(bound, default=None))
            return info

        # Concurrent cold requests of one caller for one container share one decision;
        # joining one costs nothing, so only a new check takes a turn of this client's.
        flight = "|".join(key)
        try:
            if self.flights.running(flight):
                return await self.flights.run(flight, decide)
            async with self.gate.enter(client):
                decided = self.cache.get(key)  # made while this check waited for its turn
                if isinstance(decided, ProxyError):
                    raise _fresh(decided)
                if isinstance(decided, ContainerInfo):
                    return decided
                return await self.flights.run(flight, decide)
        except (NotFound, Unauthorized, UpstreamRejected) as decision:
            raise _fresh(decision) from None

    async def _decide(
        self,
        session: UpstreamSession,
        credential: Credential | None,
        container: str,
        id_or_path: str,
        bound: list[float],
    ) -> ContainerInfo:
        user = await self._user(session, credential, bound) if credential is not None else None
        info = await self._lookup(session, container, id_or_path, anonymous=user is None)
        if user is not None and (user.is_admin or (container == "group" and user.is_auditor)):
            return info
        if user is None:
            raise Unauthorized()
        level = await self._access_level(session, container, info.id, user.id)
        if level < REPORTER:
            raise Unauthorized()
        return info

    async def _user(
        self, session: UpstreamSession, credential: Credential, bound: list[float]
    ) -> UserInfo:
        """The credential's user, from `/user` or its record of the last `ttl` seconds.

        A rejected credential is remembered as such under its MAC for the same time, whatever
        container it asks about next: an unknown token costs one `/user` call per `ttl`, not
        one per container. `bound` receives the record's expiry: decisions made from it must
        not outlive it."""
        key = (self.caller_key(credential), "user")
        cached = self.cache.entry(key)
        if cached is not None and isinstance(cached.value, UserInfo | UpstreamRejected):
            bound.append(cached.expires)
            if isinstance(cached.value, UpstreamRejected):
                raise _fresh(cached.value)
            return cached.value
        try:
            user = await session.fetch_user()
        except UpstreamStatus as exc:
            if exc.status in (401, 403):
                rejected = UpstreamRejected(exc.status, _as_body(exc.body), exc.headers)
                self.cache.put(key, _fresh(rejected))
                raise rejected from None
            raise _unexpected(exc) from None
        self.cache.put(key, user)
        return user

    async def _lookup(
        self, session: UpstreamSession, container: str, id_or_path: str, *, anonymous: bool
    ) -> ContainerInfo:
        fetch = session.fetch_project if container == "project" else session.fetch_group
        message = PROJECT_NOT_FOUND if container == "project" else GROUP_NOT_FOUND
        try:
            return await fetch(id_or_path)
        except UpstreamStatus as exc:
            if exc.status in (403, 404) or (exc.status == 401 and anonymous):
                raise NotFound({"message": message}) from None
            if exc.status == 401:
                raise UpstreamRejected(401, _as_body(exc.body), exc.headers) from None
            raise _unexpected(exc) from None

    async def _access_level(
        self, session: UpstreamSession, container: str, container_id: int, user_id: int
    ) -> int:
        try:
            return await session.fetch_access_level(container, container_id, user_id)
        except UpstreamStatus as exc:
            if exc.status in (401, 403):
                return 0
            raise _unexpected(exc) from None


def _fresh(error: ProxyError) -> ProxyError:
    """A copy of a cached decision to raise: re-raising one exception object from many
    requests would grow its traceback with every raise (and share it between tasks)."""
    fresh = type(error).__new__(type(error))
    fresh.__dict__.update(error.__dict__)
    fresh.args = error.args
    return fresh


def _as_body(body: object) -> dict[str, object]:
    return body if isinstance(body, dict) else {"message": str(body)}


def _unexpected(exc: UpstreamStatus) -> ProxyError:
    return BadGateway(detail=f"{exc.call}: unexpected {exc.status}")
