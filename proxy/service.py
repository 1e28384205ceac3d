"""One DORA request, top to bottom, in GitLab's order of checks:

recall (this caller's identical request seconds ago) → parse (presence, date syntax) →
authorize → validate (range, interval, metric, tiers) → answer cache → facts (cache or upstream)
→ compute (pure, off the event loop) → store → remember.

Everything that asks a DORA question goes through `DoraService.answer`: the HTTP handler and
`dora-proxy cache warm`. Webhooks go through `DoraService.invalidate`. Callers hand over plain
values (`DoraRequest`, a credential); what comes back is the exact body bytes plus what the
HTTP layer needs for caching headers.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import date
from zoneinfo import ZoneInfo

import structlog
from multidict import CIMultiDict, MultiDict

from proxy.cache.base import Storage
from proxy.cache.keys import CacheKeys
from proxy.cache.lifetimes import put
from proxy.clock import Clock, seconds_of, utc_now
from proxy.collect import SETTLE_AHEAD, FactsCollector, Need, provisional_for
from proxy.credentials import Credential
from proxy.dora import compute_metric, render
from proxy.errors import (
    BadGateway,
    GatewayTimeout,
    ProxyError,
    ServiceUnavailable,
    UpstreamRejected,
)
from proxy.facts import ContainerInfo, ProjectFacts
from proxy.permissions import Permissions
from proxy.query import DoraQuery, QueryItems, UncheckedQuery, parse_query, validate_query
from proxy.recent import RecentAnswers
from proxy.refresh import IN_PASS, MAX_PASSES, HotAnswer, HotAnswers
from proxy.single_flight import SingleFlight, StorageLock
from proxy.telemetry.prometheus import Telemetry
from proxy.upstream import Upstream, UpstreamSession, count_upstream_calls

log = structlog.get_logger("proxy.service")
INLINE_FACTS = 2000  # deployments + incidents under which an answer is computed on the loop

UPSTREAM_FAULTS = (BadGateway, GatewayTimeout, ServiceUnavailable)


@dataclass(frozen=True, slots=True)
class DoraRequest:
    """One DORA question as it arrived: which container, and the raw query parameters.

    `url` is the request target as sent; with it, an identical request of the same caller
    within seconds is answered from memory (`RecentAnswers`). Without it nothing is recalled
    or remembered (cache warm, GraphQL)."""

    container: str  # "project" or "group"
    id_or_path: str
    params: QueryItems
    url: str | None = None
    client: str | None = None  # the peer's address: bounds its uncached permission checks


@dataclass(frozen=True, slots=True)
class Change:
    """What a webhook reports: the facts of one project changed ("deployments" or
    "incidents"); `path_with_namespace` names the groups whose answers include it."""

    facts: str
    project_id: int
    path_with_namespace: str | None


@dataclass(frozen=True)
class Answer:
    body: bytes
    cache: str  # "hit", "miss", "stale", or "recent" (answered from RecentAnswers)
    max_age: int

    @functools.cached_property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.body).hexdigest()[:32] + '"'

    @functools.cached_property
    def headers(self) -> CIMultiDict[str]:
        """The response headers: type, validator, freshness and which layer answered. Built
        once per answer: a recalled answer is served again and again as the same object (and
        aiohttp copies a CIMultiDict faster than it converts a dict)."""
        headers = {
            "Content-Type": "application/json",
            "ETag": self.etag,
            "Cache-Control": f"private, max-age={self.max_age}",
            "Vary": "PRIVATE-TOKEN, Authorization",
            # hit / miss / recent / stale: which layer answered (for operators; not GitLab's)
            "X-Dora-Proxy-Cache": self.cache,
        }
        if self.cache == "stale":
            headers["Warning"] = '110 - "Response is Stale"'
            headers["X-Dora-Proxy-Stale"] = "true"
            headers["Cache-Control"] = "private, no-cache"
        return CIMultiDict(headers)

    def recalled(self) -> Answer:
        """The same answer, as served again from process memory (its ETag is not re-hashed:
        cached_property reads the value from the instance dict)."""
        again = Answer(self.body, "recent", self.max_age)
        again.__dict__["etag"] = self.etag
        return again


@dataclass(frozen=True, slots=True)
class CountedFacts:
    """What the extension endpoints explain: the container, the valid query, every project's
    facts for the window (all four metrics' needs) and each project's full path."""

    info: ContainerInfo
    query: DoraQuery
    facts: list[ProjectFacts]
    paths: dict[int, str]
    web_base: str  # GitLab's base URL, for links


@dataclass(frozen=True, slots=True)
class AnswerPolicy:
    ttl_past: float
    ttl_current: float
    stale_ttl: float
    stale_on_error: bool


class DoraService:
    def __init__(
        self,
        *,
        upstream: Upstream,
        permissions: Permissions,
        collector: FactsCollector,
        storage: Storage,
        policy: AnswerPolicy,
        keys: CacheKeys,
        deadline: float | None,
        clock: Clock = utc_now,
        telemetry: Telemetry | None = None,
        replica_lock: StorageLock | None = None,
        recent_ttl: float = 0.0,
        max_computations: int = 0,
        hot: HotAnswers | None = None,
    ) -> None:
        self.upstream = upstream
        self.permissions = permissions
        self.collector = collector
        self.storage = storage
        self.policy = policy
        self.keys = keys
        self.deadline = deadline
        self.clock = clock
        self.computations = SingleFlight()
        # Cold answers computed at once, all sharing the upstream pool (0: unbounded, batch).
        self.max_computations = max_computations
        self.telemetry = telemetry or Telemetry()
        # Never longer than a permission decision is trusted (see proxy/recent.py).
        self._seconds = seconds_of(clock)  # read on every recalled answer: cheap
        self.recent: RecentAnswers[Answer] = RecentAnswers(min(recent_ttl, permissions.cache.ttl))
        self.telemetry.cache_lookups.count("recent", lambda: (self.recent.hits, self.recent.misses))
        # Other processes sharing the storage compute a cold answer once (None: this one only).
        self.replica_lock = replica_lock
        # answer key -> its shorter lifetime, from `_compute_and_store` to the response headers
        self._short_lived: dict[str, float] = {}
        # Answers asked lately, computed again in the background after a webhook's change.
        self.hot = hot
        self._passes: set[asyncio.Task[None]] = set()
        self._facts_renewed: dict[int, float] = {}  # project id -> when `renew_due` dropped them

    async def close(self) -> None:
        for task in self._passes:
            task.cancel()
        await asyncio.gather(*self._passes, return_exceptions=True)
        await self.upstream.close()
        await self.storage.close()

    def today(self) -> date:
        return self.collector.today()

    async def answer(
        self,
        request: DoraRequest,
        credential: Credential | None,
        *,
        renew: bool = False,
    ) -> Answer:
        """The answer GitLab Ultimate would give; raises the error it would give otherwise.

        Within the service's deadline (None for batch jobs such as `cache warm`), else 504."""
        recalled, token = self._recall(credential, request.url)
        if recalled is not None:
            return recalled
        count_upstream_calls()
        try:
            async with asyncio.timeout(self.deadline):
                answer = await self._answer(request, credential, renew)
        except TimeoutError:
            raise GatewayTimeout(detail="request deadline exceeded") from None
        self._remember(token, answer)
        return answer

    def _recall(
        self, credential: Credential | None, url: str | None
    ) -> tuple[Answer | None, tuple]:
        """An answer this very caller got for this very URL today, seconds ago (or None), and
        on a miss the token to remember the coming answer with (`_remember`)."""
        if url is None:
            return None, ()
        try:
            caller = self.permissions.caller_key(credential)
        except UnicodeError:  # not a token GitLab could issue; authorize() answers it
            return None, ()
        key = (caller, url)
        answer = self.recent.get(key, self._seconds())
        if answer is not None:
            return answer, ()
        return None, (key, self.recent.generation, self.today())

    def _remember(self, token: tuple, answer: Answer) -> None:
        """Keep a fresh answer for `_recall`, as the one object every repeat is served, until
        the end of the local day it was asked on: defaults such as `end_date` depend on the
        day."""
        if token and answer.cache in ("hit", "miss"):
            key, generation, day = token
            day_ends = self.collector.day_end(day).timestamp()
            lifetime = min(answer.max_age, day_ends - self._seconds())
            self.recent.put(key, answer.recalled(), lifetime, generation, valid_until=day_ends)

    async def _answer(
        self, request: DoraRequest, credential: Credential | None, renew: bool = False
    ) -> Answer:
        container = request.container
        unchecked = parse_query(request.params, self.today())
        session = self.upstream.session(credential)
        info = await self.permissions.authorize(
            session, credential, container, request.id_or_path, request.client
        )
        query = validate_query(unchecked)
        hot = (
            self.hot.note(container, request.id_or_path, request.params.items(), info, credential)
            if self.hot is not None
            else None
        )
        answer = await self._answer_for(session, container, info, query, renew)
        if hot is not None and self.hot is not None and answer.cache in ("hit", "miss"):
            hot.served(answer.max_age, self.hot.now())
        return answer

    async def _answer_for(
        self,
        session: UpstreamSession,
        container: str,
        info: ContainerInfo,
        query: DoraQuery,
        renew: bool = False,
    ) -> Answer:
        """The answer for a caller already authorized: cached, else computed (once). `renew`:
        computed again (and stored) even though a cached copy still lives."""
        key, stale_key = await self._answer_keys(container, info, query)
        ttl = self._answer_ttl(query)
        cached = None if renew else await self.storage.get(key)
        self.telemetry.cache_lookup("answer", cached is not None)
        if cached is not None:
            return self._from_cache(cached, "hit", ttl)

        def compute() -> Awaitable[bytes]:
            return self.telemetry.computing(
                self._compute_and_store(session, container, info, query, key, stale_key, ttl)
            )

        lock = self.replica_lock if ttl > 0 else None  # an uncached answer is never shared
        if (
            self.max_computations
            and len(self.computations) >= self.max_computations
            and not self.computations.running(key)
        ):
            # Joining a computation is free; one more past the bound would only lengthen
            # every caller's wait for the upstream pool: answered at once, to ask again.
            raise ServiceUnavailable(
                1, detail=f"{len(self.computations)} computations in flight (max_computations)"
            )
        try:
            body = await self.computations.run(
                key, (lambda: lock.run(key, compute)) if lock else compute
            )
            ttl = self._short_lived.pop(key, ttl)
        except UPSTREAM_FAULTS as fault:
            stale = await self.storage.get(stale_key) if self.policy.stale_on_error else None
            if stale is None:
                degraded = getattr(self.storage, "degraded", None)
                if degraded is not None and fault.status != 503:
                    # Neither the cache nor the upstream can serve it: try again shortly.
                    raise ServiceUnavailable(
                        self.storage.retry_after(),  # type: ignore[attr-defined]
                        detail=f"{fault.detail or fault.status}; {degraded}",
                    ) from None
                raise
            log.warning(
                "stale_answer_served",
                container=container,
                container_id=info.id,
                cause=fault.status,
                detail=fault.detail,
            )
            self.telemetry.stale_served()
            return Answer(stale, "stale", 0)
        # Another replica's answer (shared through the lock) may be older than ours would be.
        return self._from_cache(body, "miss", ttl)

    def _answer_ttl(self, query: DoraQuery) -> float:
        """How long an answer may be cached: `answer_ttl_past` for a range that ended,
        `answer_ttl_current` for one that includes today, and never longer than the settle
        margin while any of its days is unsettled (a late deployment must show up)."""
        today = self.today()
        ttl = self.policy.ttl_past if query.end_date < today else self.policy.ttl_current
        calendar = self.collector.calendar
        if not calendar.is_settled(min(query.end_date, today), self.clock()):
            ttl = min(ttl, calendar.settle_margin)
        return ttl

    def _from_cache(self, value: bytes, cache: str, ttl: float) -> Answer:
        """The answer in a stored value; its max-age is the entry's remaining life, never
        more than `ttl` (an entry stored yesterday for 300 s is not good for a day now)."""
        body, expires = unstamped(value)
        remaining = ttl if expires is None else min(ttl, expires - self._seconds())
        return Answer(body, cache, max(0, int(remaining)))

    async def invalidate(self, change: Change, *, refresh: bool = True) -> None:
        """A webhook's change: facts first, then answer generations, so an answer recomputed
        in between reads fresh facts. The `|stale` copies stay: they are what a later upstream
        failure falls back to."""
        self.recent.clear()  # this process's seconds-long memory of answers, whatever project
        if change.facts == "deployments":
            await self.collector.invalidate_deployments(change.project_id)
        else:
            await self.collector.invalidate_incidents(change.project_id)
        keys = [self.keys.answers_generation("project", change.project_id)]
        if change.path_with_namespace:
            keys += [
                self.keys.answers_generation("group", group)
                for group in ancestor_groups(change.path_with_namespace)
            ]
        for key in keys:
            await self.storage.incr(key)
        self.recent.clear()  # again: an answer remembered meanwhile may predate the bump
        if refresh and self.hot is not None:
            self._start_pass(self._touched(change))

    def _touched(self, change: Change) -> list[HotAnswer]:
        assert self.hot is not None
        groups = ancestor_groups(change.path_with_namespace or "")
        return self.hot.touched_by(change.project_id, groups)

    def _start_pass(
        self, touched: list[HotAnswer], renew: set[int] | None = None, ahead: float = 0.0
    ) -> None:
        """The background pass over `touched` (proxy/refresh.py), if one more may run; those
        in `renew` (by `id`) are computed again even if their cached copy still lives, as of
        `ahead` seconds from now for MR links (`SETTLE_AHEAD`)."""
        if not touched or len(self._passes) >= MAX_PASSES:
            return
        task = asyncio.ensure_future(self._refresh(touched, renew or set(), ahead))
        self._passes.add(task)
        task.add_done_callback(self._passes.discard)

    async def renew_due(self, within: float) -> int:
        """Answers asked lately whose cached copy ends within `within` seconds are computed
        again in one background pass. Their projects' recent facts are dropped first, as a
        webhook would drop them, unless that was done in the last half of `ttl_current` (the
        answers of one group come due at different times; its twenty projects' facts are read
        again once, not once per answer). Returns how many projects' facts were dropped."""
        if self.hot is None:
            return 0
        now = self.hot.now()
        due = self.hot.due(within)
        projects: dict[int, str] = {}
        for hot in due:
            if hot.container == "project":
                projects[hot.info.id] = hot.info.full_path
                continue
            session = self.upstream.session(hot.credential)
            try:
                members = await self.collector.group_projects(session, hot.info)
            except ProxyError:
                continue  # the caller lost access, GitLab failed: its next request decides
            projects.update((p.id, p.full_path) for p in members)
        every = self.policy.ttl_current / 2
        stale = {
            project_id: path
            for project_id, path in projects.items()
            if now - self._facts_renewed.get(project_id, -math.inf) >= every
        }
        if len(self._facts_renewed) > 10_000:
            self._facts_renewed = {p: t for p, t in self._facts_renewed.items() if now - t < every}
        touched: dict[int, HotAnswer] = {id(hot): hot for hot in due}
        for project_id, path in stale.items():
            self._facts_renewed[project_id] = now
            for facts in ("deployments", "incidents"):
                change = Change(facts, project_id, path)
                await self.invalidate(change, refresh=False)
                touched.update((id(hot), hot) for hot in self._touched(change))
        self._start_pass(list(touched.values()), renew={id(hot) for hot in due}, ahead=within)
        return len(stale)

    async def _refresh(self, touched: list[HotAnswer], renew: set[int], ahead: float) -> None:
        IN_PASS.set(True)  # this task's context only
        SETTLE_AHEAD.set(ahead)
        for hot in touched:
            request = DoraRequest(hot.container, hot.id_or_path, MultiDict(hot.params))
            try:
                await self.answer(request, hot.credential, renew=id(hot) in renew)
            except ProxyError as refused:
                if self.hot is not None and isinstance(refused, UpstreamRejected):
                    # GitLab refused the token itself (revoked, expired, scope removed): it
                    # leaves memory now with every answer asked with it, not
                    # `refresh_window` after its last request.
                    self.hot.forget(hot.credential)
                elif self.hot is not None and refused.status in (401, 403, 404):
                    self.hot.drop(hot)  # this container only: the token may still see others
                continue  # GitLab failed, the proxy is busy...: the next request decides
            except Exception as exc:  # a background pass must not die loudly
                log.warning("refresh_failed", error=type(exc).__name__)

    async def run_background(self, period: float) -> None:
        """Every `period` seconds until cancelled: the permission keep-alive round, then the
        renewal of answers whose cached copy would end before the next round."""
        while True:
            await asyncio.sleep(period)
            try:
                await self.background_round(period)
            except Exception as exc:  # one failed round must not end the loop
                log.warning("background_round_failed", error=type(exc).__name__)

    async def background_round(self, period: float) -> None:
        if self.permissions.keepalive > 0:
            await self.permissions.refresh_due(margin=2 * period)
        if self.hot is not None:
            await self.renew_due(2 * period)

    async def refreshed(self) -> None:
        """Wait for the background passes running now (benchmarks, tests)."""
        while self._passes:
            await asyncio.gather(*self._passes, return_exceptions=True)

    async def membership_changed(self) -> None:
        """A system hook's membership, project or group change: kept permission decisions are
        decided again, here at once and on other replicas within a second (shared counter)."""
        await self.storage.incr(self.keys.membership_generation())
        self.permissions.membership_changed()
        self.recent.clear()  # answers remembered for a caller rest on their decision

    async def checked(
        self,
        container: str,
        id_or_path: str,
        credential: Credential | None,
        unchecked: UncheckedQuery,
    ) -> tuple[ContainerInfo, DoraQuery]:
        """The extension endpoints' first steps (proxy/web/extensions.py): the same permission
        check, then validation, as `answer`."""
        session = self.upstream.session(credential)
        info = await self.permissions.authorize(session, credential, container, id_or_path)
        return info, validate_query(unchecked)

    async def extension_key(
        self, kind: str, container: str, info: ContainerInfo, query: DoraQuery
    ) -> tuple[str, float]:
        """Cache key and lifetime of an extension answer: the DORA answer's own (webhook
        generation included), suffixed with the endpoint's kind."""
        key, _ = await self._answer_keys(container, info, query)
        return f"{key}|{kind}", self._answer_ttl(query)

    async def counted_facts(
        self,
        container: str,
        info: ContainerInfo,
        query: DoraQuery,
        credential: Credential | None,
    ) -> CountedFacts:
        """Every fact of the window for all four metrics, from the same collector and facts
        caches as `answer`; call only after `checked` allowed the caller."""
        session = self.upstream.session(credential)
        tiers = query.environment_tiers
        need = Need(merge_requests=True, incidents="production" in tiers, tiers=frozenset(tiers))
        if container == "project":
            facts = [
                await self.collector.project_facts(
                    session, info.id, query.start_date, query.end_date, need
                )
            ]
            return CountedFacts(
                info, query, facts, {info.id: info.full_path}, self.upstream.base_url
            )
        projects = await self.collector.group_projects(session, info)
        facts = await self.collector.group_facts(
            session, info, projects, query.start_date, query.end_date, need
        )
        paths = {p.id: p.full_path for p in projects}
        return CountedFacts(info, query, facts, paths, self.upstream.base_url)

    async def _compute_and_store(
        self,
        session: UpstreamSession,
        container: str,
        info: ContainerInfo,
        query: DoraQuery,
        key: str,
        stale_key: str,
        ttl: float,
    ) -> bytes:
        started = self.collector.link_clock()
        need = Need(
            merge_requests=query.metric == "lead_time_for_changes",
            incidents="production" in query.environment_tiers,
            tiers=frozenset(query.environment_tiers),
        )
        if container == "project":
            facts = [
                await self.collector.project_facts(
                    session, info.id, query.start_date, query.end_date, need
                )
            ]
        else:
            projects = await self.collector.group_projects(session, info)
            facts = await self.collector.group_facts(
                session, info, projects, query.start_date, query.end_date, need
            )
        # Pure CPU work (a few hundred ms for a large group): off the event loop, so other
        # requests, probes and cache hits keep being served meanwhile. A small one (a typical
        # project: well under a millisecond) is cheaper here than the hop to a thread and back.
        compute = functools.partial(_compute_body, facts, query, self.collector.policy.tz)
        if sum(len(p.deployments) + len(p.incidents) for p in facts) < INLINE_FACTS:
            body = compute()
        else:
            body = await asyncio.get_running_loop().run_in_executor(None, compute)
        if need.merge_requests:
            provisional = provisional_for(facts, started, self.clock())
            if provisional is not None and provisional < ttl:
                ttl = provisional
                if len(self._short_lived) < 1024:
                    self._short_lived[key] = ttl
        await asyncio.gather(
            put(self.storage, key, stamped(body, self._seconds() + ttl), ttl),
            put(self.storage, stale_key, body, self.policy.stale_ttl),
        )
        return body

    async def _answer_keys(
        self, container: str, info: ContainerInfo, query: DoraQuery
    ) -> tuple[str, str]:
        """(fresh key, stale key). The fresh key carries the container's webhook generation."""
        ref = info.id if container == "project" else info.full_path
        generation = await self.storage.get(self.keys.answers_generation(container, ref))
        params = "|".join(
            (
                query.metric,
                query.interval,
                ",".join(query.environment_tiers),
                query.start_date.isoformat(),
                query.end_date.isoformat(),
            )
        )
        gen = generation.decode() if generation else "0"
        return (
            self.keys.answer(container, info.id, params, gen),
            self.keys.stale_answer(container, info.id, params),
        )


def _compute_body(facts: list[ProjectFacts], query: DoraQuery, tz: ZoneInfo) -> bytes:
    return render(
        compute_metric(
            facts,
            metric=query.metric,
            interval=query.interval,
            start_date=query.start_date,
            end_date=query.end_date,
            tiers=query.environment_tiers,
            tz=tz,
        )
    )


_STAMP = b"expires="


def stamped(body: bytes, expires: float) -> bytes:
    """A cached answer carries its expiry (Unix seconds): a hit's max-age is what is left."""
    return b"%s%d\n%s" % (_STAMP, math.ceil(expires), body)


def unstamped(value: bytes) -> tuple[bytes, float | None]:
    """(body, expiry) of a stored answer; a body stored without expiry (older versions, or
    the holder's own result) gives None."""
    if not value.startswith(_STAMP):
        return value, None
    head, _, body = value.partition(b"\n")
    try:
        return body, float(head[len(_STAMP) :])
    except ValueError:
        return body, None


def ancestor_groups(path_with_namespace: str) -> list[str]:
    """Every group whose answers include the project: "a/b/app" → ["a", "a/b"]."""
    parts = path_with_namespace.strip("/").split("/")[:-1]
    return ["/".join(parts[: n + 1]) for n in range(len(parts))]
