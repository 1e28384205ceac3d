"""May this caller read DORA metrics of this project or group? Decided as GitLab does.

Order (upstream-gitlab-api.md §5): the caller's user (a rejected credential passes GitLab's
401/403 through), the container lookup (invisible or absent → 404), admins pass, anonymous
callers fail, then the effective access level must be Reporter (20) or above.

Decisions are kept in memory for a short TTL under a MAC of the credential (never the
credential itself). Every request passes through here before any cached metric is used, so a
cached answer is only ever shared between callers who each proved access.

With GitLab's system hooks delivered to the proxy (`system_hooks`), a decision has two parts
with two lifetimes. What the *credential* says (its user, admin or not, or a refusal) still lives
`permission_ttl`, and for a token used in the last `permission_keepalive` seconds it is
re-read in the background before it expires (`refresh_due`), so a revoked token, a blocked user
or a demoted admin loses access within `permission_ttl` as before, without a request waiting for
the check. What the *membership* says (the container's id, Reporter or not) lives until a system
hook reports a membership, project or group change (`membership_changed`, shared by replicas
through a generation counter in the cache) and at most `membership_ttl`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from proxy.client_gate import ClientGate
from proxy.credentials import Credential, caller_key, could_be_a_token, mac_key
from proxy.errors import (
    GROUP_NOT_FOUND,
    PROJECT_NOT_FOUND,
    BadGateway,
    NotFound,
    ProxyError,
    Unauthorized,
    UpstreamRejected,
)
from proxy.facts import ContainerInfo, UserInfo
from proxy.single_flight import SingleFlight
from proxy.upstream import UpstreamSession, UpstreamStatus

_log = structlog.get_logger("proxy.permissions")

REPORTER = 20
MAX_ACTIVE = 10_000  # credentials kept for background re-checks (the least recent go first)
MAX_CHECKS_PER_ROUND = 256  # user reads, and as many membership decisions, per background round
GENERATION_READ_EVERY = 1.0  # seconds between reads of the shared membership generation
UNKNOWN_GENERATION = -1  # the shared counter could not be read: nothing is kept meanwhile
WAITING_PER_CLIENT = 16  # checks of one client address waiting for a turn (default)
_MAX_ENTRIES = 50_000


@dataclass(frozen=True, slots=True)
class _Entry:
    expires: float
    value: ContainerInfo | UserInfo | ProxyError | Membership


@dataclass(frozen=True, slots=True)
class Membership:
    """A decision kept across user-record refreshes (system hooks on): the container, whether it
    was granted by the caller's admin (or auditor) flag, which the live user record must still
    show, and the membership generation it was made under."""

    info: ContainerInfo
    by_admin_flag: bool
    generation: int


@dataclass(slots=True)
class _Active:
    """A credential used lately, kept (in memory only) to re-read its user in the background."""

    credential: Credential
    open_session: Callable[[], UpstreamSession]
    last_used: float


class DecisionCache:
    """A small in-memory TTL map; keys are MACs, values are decisions (never tokens)."""

    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._entries: dict[tuple[str, ...], _Entry] = {}

    def get(
        self, key: tuple[str, ...]
    ) -> ContainerInfo | UserInfo | ProxyError | Membership | None:
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
        value: ContainerInfo | UserInfo | ProxyError | Membership,
        not_after: float | None = None,
        ttl: float | None = None,
    ) -> None:
        """Keep `value` for `ttl` seconds (default: the cache's), and never past `not_after` (a
        decision made from a cached user record must not outlive that record)."""
        ttl = self.ttl if ttl is None else ttl
        if ttl <= 0:
            return
        if len(self._entries) >= _MAX_ENTRIES:
            now = self._clock()
            self._entries = {k: e for k, e in self._entries.items() if e.expires > now}
            if len(self._entries) >= _MAX_ENTRIES:
                self._entries.clear()
        expires = self._clock() + ttl
        if not_after is not None:
            expires = min(expires, not_after)
        self._entries[key] = _Entry(expires, value)

    def clear(self) -> None:
        self._entries.clear()

    def now(self) -> float:
        return self._clock()

    def entries(self) -> list[tuple[tuple[str, ...], _Entry]]:
        """Every live entry (a copy: callers may put while they go through it)."""
        now = self._clock()
        return [(key, entry) for key, entry in self._entries.items() if entry.expires > now]


class Permissions:
    def __init__(
        self,
        secret: bytes,
        ttl: float,
        client_limit: int = 0,
        client_queue: int = WAITING_PER_CLIENT,
        *,
        membership_ttl: float | None = None,
        keepalive: float = 0.0,
        generation: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        """`membership_ttl` set (system hooks on): membership decisions live that long unless
        `generation` (a counter system hooks bump) moves; tokens used in the last `keepalive`
        seconds get their user re-read by `refresh_due` before it expires."""
        self.secret = mac_key(secret)
        self.cache = DecisionCache(ttl)
        self.flights = SingleFlight()
        self.gate = ClientGate(client_limit, client_queue)
        self.membership_ttl = membership_ttl
        self.keepalive = keepalive if membership_ttl is not None else 0.0
        self._generation_source = generation
        self._generation = (0, -math.inf)  # (value, when read): read at most once a second
        self._active: dict[str, _Active] = {}

    @property
    def hooks(self) -> bool:
        return self.membership_ttl is not None

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
        caller = self.caller_key(credential)
        key = (caller, container, id_or_path)
        if self.hooks:
            kept = await self._kept(session, credential, container, key)
            if kept is not None:
                self._mark_active(caller, credential, session)
                return kept
        cached = self.cache.get(key)
        if isinstance(cached, ProxyError):
            raise _fresh(cached)
        if isinstance(cached, ContainerInfo):
            return cached

        async def decide() -> ContainerInfo:
            bound: list[float] = []  # expiry of the user record the decision used
            generation = await self._current_generation() if self.hooks else 0
            try:
                info, by_admin_flag = await self._decide(
                    session, credential, container, id_or_path, bound, client
                )
            except (NotFound, Unauthorized, UpstreamRejected) as decision:
                # without the traceback and its frames
                self.cache.put(key, _fresh(decision), min(bound, default=None))
                raise
            if self.hooks and credential is not None and generation != UNKNOWN_GENERATION:
                kept = Membership(info, by_admin_flag, generation)
                self.cache.put(key, kept, ttl=self.membership_ttl)
                self._mark_active(caller, credential, session)  # proven: worth keeping alive
            else:
                self.cache.put(key, info, min(bound, default=None))
            return info

        # Concurrent cold requests of one caller for one container share one decision.
        try:
            return await self.flights.run("|".join(key), decide)
        except (NotFound, Unauthorized, UpstreamRejected) as decision:
            raise _fresh(decision) from None

    async def _decide(
        self,
        session: UpstreamSession,
        credential: Credential | None,
        container: str,
        id_or_path: str,
        bound: list[float],
        client: str | None = None,
    ) -> tuple[ContainerInfo, bool]:
        """The container, and whether the caller's admin (or auditor) flag is what let them in.

        The calls anyone can make the proxy send at will, `/user` for a token not seen yet and
        an anonymous caller's lookups, take a turn of `client`'s (`ClientGate`); the rest are
        made for a user GitLab has just vouched for."""
        if credential is None:
            async with self.gate.enter(client):  # invisible → 404, visible → 401
                await self._lookup(session, container, id_or_path, anonymous=True)
            raise Unauthorized()
        user = await self._user(session, credential, bound, client)
        info = await self._lookup(session, container, id_or_path, anonymous=False)
        if _privileged(user, container):
            return info, True
        level = await self._access_level(session, container, info.id, user.id)
        if level < REPORTER:
            raise Unauthorized()
        return info, False

    # ---- system hooks on: decisions kept across user-record refreshes -------------------------
    async def _kept(
        self,
        session: UpstreamSession,
        credential: Credential | None,
        container: str,
        key: tuple[str, ...],
    ) -> ContainerInfo | None:
        """The kept decision under `key` if it still holds: same membership generation, and the
        caller's user record (live, or read now) still valid and, for a decision its admin flag
        made, still admin. None: decide again. A refused credential raises its refusal."""
        kept = self.cache.get(key)
        if not isinstance(kept, Membership) or credential is None:
            return None
        if kept.generation != await self._current_generation():
            return None
        user = await self._user(session, credential, [])
        if kept.by_admin_flag and not _privileged(user, container):
            return None
        return kept.info

    def _mark_active(
        self, caller: str, credential: Credential | None, session: UpstreamSession
    ) -> None:
        if credential is None or self.keepalive <= 0:
            return
        now = self.cache.now()
        active = self._active.get(caller)
        if active is not None:
            active.last_used = now
            return
        if len(self._active) >= MAX_ACTIVE:  # the oldest quarter goes
            oldest = sorted(self._active.items(), key=lambda item: item[1].last_used)
            for name, _ in oldest[: MAX_ACTIVE // 4]:
                del self._active[name]
        self._active[caller] = _Active(credential, session.reopener(), now)

    async def refresh_due(self, margin: float | None = None, concurrency: int = 4) -> int:
        """Re-check, in the background, what the next request of a credential used in the last
        `keepalive` seconds would otherwise wait for: its user record (so the revocation
        promise, `permission_ttl`, holds and no request waits for `/user`) and its kept
        membership decisions (`membership_ttl`), once they have less than `margin` seconds left
        (the background round passes two rounds; default: half and a quarter of their life).
        Credentials idle longer are forgotten. Returns how many checks were made."""
        now = self.cache.now()
        # As late as the next round allows (`margin`: two rounds): fewer reads per token.
        user_margin = min(margin, self.cache.ttl / 2) if margin else self.cache.ttl / 2
        for caller, active in list(self._active.items()):
            if now - active.last_used > self.keepalive:
                del self._active[caller]
        users = [
            caller
            for caller in self._active
            if (entry := self.cache.entry((caller, "user"))) is None
            or entry.expires - now < user_margin
        ]
        # A bound on each round's calls, the most recently active first: the others are
        # checked on their next request, as without keep-alive.
        users = sorted(users, key=lambda caller: -self._active[caller].last_used)
        users = users[:MAX_CHECKS_PER_ROUND]
        renew = min(margin, self.membership_ttl / 4) if margin else (self.membership_ttl or 0) / 4
        memberships = [
            key
            for key, entry in self.cache.entries()
            if isinstance(entry.value, Membership)
            and key[0] in self._active
            and entry.expires - now < renew
        ][:MAX_CHECKS_PER_ROUND]
        limit = asyncio.Semaphore(concurrency)
        sessions: dict[str, UpstreamSession] = {}  # one per credential this round

        def session_of(caller: str) -> UpstreamSession:
            if caller not in sessions:
                sessions[caller] = self._active[caller].open_session()
            return sessions[caller]

        async def read_user(caller: str) -> None:
            async with limit:
                with contextlib.suppress(ProxyError):
                    await self._read_user(session_of(caller), (caller, "user"))

        async def decide_again(key: tuple[str, ...]) -> None:
            caller, container, id_or_path = key
            active = self._active[caller]
            async with limit:
                generation = await self._current_generation()
                try:
                    info, by_admin_flag = await self._decide(
                        session_of(caller), active.credential, container, id_or_path, []
                    )
                except (NotFound, Unauthorized, UpstreamRejected) as decision:
                    self.cache.put(key, _fresh(decision))
                except ProxyError:
                    pass  # GitLab in trouble: the decision ends with its time, as it would
                else:
                    if generation != UNKNOWN_GENERATION:
                        kept = Membership(info, by_admin_flag, generation)
                        self.cache.put(key, kept, ttl=self.membership_ttl)

        await asyncio.gather(*map(read_user, users))
        await asyncio.gather(*map(decide_again, memberships))
        return len(users) + len(memberships)

    def membership_changed(self) -> None:
        """A system hook reported a membership, project or group change, and the caller bumped
        the shared generation: read it again now rather than within the second."""
        self._generation = (self._generation[0], -math.inf)

    async def _current_generation(self) -> int:
        if self._generation_source is None:
            return 0
        value, read_at = self._generation
        now = self.cache.now()
        if now - read_at >= GENERATION_READ_EVERY:
            try:
                value = await self._generation_source()
            except Exception:  # the cache is down: no decision may be kept from it
                self._generation = (value, -math.inf)
                return UNKNOWN_GENERATION
            self._generation = (value, now)
        return value

    async def _user(
        self,
        session: UpstreamSession,
        credential: Credential,
        bound: list[float],
        client: str | None = None,
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

        async def read() -> UserInfo:
            # One read per token however many of its checks wait: one turn of the client's.
            async with self.gate.enter(client):
                return await self._read_user(session, key)

        try:
            return await self.flights.run("|".join(key), read)
        except UpstreamRejected as rejected:
            raise _fresh(rejected) from None

    async def _read_user(self, session: UpstreamSession, key: tuple[str, ...]) -> UserInfo:
        """`/user` now; the record (or the refusal) kept `permission_ttl` under `key`."""
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


def _privileged(user: UserInfo, container: str) -> bool:
    """Admins read every container's metrics; auditors every group's."""
    return user.is_admin or (container == "group" and user.is_auditor)


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
