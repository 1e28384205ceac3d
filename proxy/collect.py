"""Gather the facts of a window for one project or many: from the facts cache, else upstream.

Facts are cached per project and per day (in the configured time zone), so another metric,
interval or tier set over an already-fetched window costs no upstream call, a window shifted by
a day fetches only the day it lacks, and group and project requests share the same entries.

- environments: one entry per project, short TTL (tier edits send no webhook);
- deployments: the days of each project, settled days in one entry per (project, month), recent
  days in one entry per (project, day) (see `_read_days`); missing days are fetched in contiguous
  runs, one paginated `finished_after/finished_before` stream per run;
- merge requests: one entry per deployment, kept long once the deployment is 10 minutes old
  (GitLab links MRs asynchronously), not cached before;
- incidents: per day, the incidents created or closed that day, stored like deployments (month
  entries for settled days); one `updated_after` stream (per project, or per group) fills every
  missing day.

A day is *settled* once it ended more than `settle_margin` seconds ago: its entries live
`ttl_settled`, younger days `ttl_recent`. Nothing is written unless its fetch completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from proxy import facts as f
from proxy.cache.base import Storage
from proxy.cache.keys import CacheKeys
from proxy.cache.lifetimes import put, put_many
from proxy.clock import Clock, utc_now
from proxy.days import Calendar, contiguous_runs, days_between
from proxy.facts import ContainerInfo, Deployment, Environment, Incident, MergeRequest, ProjectFacts
from proxy.single_flight import SingleFlight
from proxy.telemetry.prometheus import Telemetry
from proxy.upstream import UpstreamSession

MR_LINK_DELAY = timedelta(minutes=10)
# Set in a background renewal (`DoraService.renew_due`): how many seconds ahead of now it
# computes. An MR list GitLab has surely linked by then is read as settled; otherwise an
# answer renewed seconds before a young deployment's list settles would be provisional for
# those seconds only, and expire before the next round could renew it.
SETTLE_AHEAD: ContextVar[float] = ContextVar("dora_proxy_settle_ahead", default=0.0)
MR_WORKERS = 16  # concurrent MR-list lookups per project
GROUP_ISSUES_MIN_PROJECTS = 2  # from this many projects on, one group stream beats N streams


@dataclass(frozen=True, slots=True)
class FactsPolicy:
    tz: ZoneInfo
    ttl_settled: float
    ttl_recent: float
    settle_margin: float
    # The group's project list: no webhook reports a project joining or leaving a group, so it
    # keeps the short lifetime even when webhooks lengthen `ttl_recent`. None: `ttl_recent`.
    ttl_listing: float | None = None


@dataclass(frozen=True, slots=True)
class DayEntries:
    """Where one project's facts of one kind live: a recent day in its own entry (short-lived,
    dropped by webhooks), settled days together in one entry per month. A cold 90-day window is
    then ~4 entries per project and kind instead of 90: fewer storage round trips, transactions
    and JSON documents, for the same "a shifted window fetches only the day it lacks"."""

    day: Callable[[date], str]
    month: Callable[[str], str]


@dataclass(frozen=True, slots=True)
class Need:
    """What a request needs besides environments and deployments."""

    merge_requests: bool
    incidents: bool
    tiers: frozenset[str] = frozenset({"production"})


class FactsCollector:
    def __init__(
        self,
        storage: Storage,
        policy: FactsPolicy,
        namespace: str,
        clock: Clock = utc_now,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.storage = storage
        self.policy = policy
        self.keys = CacheKeys(namespace)
        self.calendar = Calendar(policy.tz, policy.settle_margin)
        self.clock = clock
        self.flights = SingleFlight()
        # "Read the cached days, fetch the missing ones" runs under a per-project lock: day
        # entries are written one by one, so a second request reading them mid-write would see
        # a different set of missing days, miss the running flight and fetch them again.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.telemetry = telemetry or Telemetry()

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    # ---- the calendar, at this moment -------------------------------------------------------
    def local_midnight(self, day: date) -> datetime:
        return self.calendar.local_midnight(day)

    def link_clock(self) -> datetime:
        """Now, or `SETTLE_AHEAD` later in a background renewal: when MR links are judged."""
        return self.clock() + timedelta(seconds=SETTLE_AHEAD.get())

    def local_day(self, instant: datetime) -> date:
        return self.calendar.local_day(instant)

    def today(self) -> date:
        return self.calendar.local_day(self.clock())

    def day_end(self, day: date) -> datetime:
        return self.calendar.day_end(day)

    def recent_days(self) -> list[date]:
        return self.calendar.recent_days(self.clock())

    # ---- public -------------------------------------------------------------------------------
    async def project_facts(
        self, session: UpstreamSession, project_id: int, start: date, end: date, need: Need
    ) -> ProjectFacts:
        days = self.calendar.fetchable_days(start, end, self.clock())
        if not days:
            return ProjectFacts(project_id)
        incidents_task = (
            self._incidents(session, project_id, days) if need.incidents else _constant(())
        )
        environments, deployments, incidents = await asyncio.gather(
            self._environments(session, project_id),
            self._deployments(session, project_id, days),
            incidents_task,
        )
        mrs = None
        if need.merge_requests:
            wanted = {e.id for e in environments if e.tier in need.tiers}
            in_window = [
                d
                for d in deployments
                if d.environment_id in wanted and start <= self.local_day(d.finished_at) <= end
            ]
            mrs = await self._merge_requests(session, project_id, in_window)
        return ProjectFacts(project_id, environments, deployments, incidents, mrs)

    async def group_facts(
        self,
        session: UpstreamSession,
        group: ContainerInfo,
        projects: Sequence[ContainerInfo],
        start: date,
        end: date,
        need: Need,
    ) -> list[ProjectFacts]:
        days = self.calendar.fetchable_days(start, end, self.clock())
        if not days:
            return []
        ids = [p.id for p in projects]
        group_stream = need.incidents and len(ids) >= GROUP_ISSUES_MIN_PROJECTS
        # The group's incident stream is fetched first (its few pages would otherwise queue
        # behind hundreds of project calls), and its days are stored while the projects'
        # facts are fetched: storing 200 projects' incident days first kept a cold group
        # request from its first deployment call for ~0.3 s (issue 16).
        handoff = _Handoff()
        incidents_task = asyncio.ensure_future(
            self._group_incidents(session, group, ids, days, handoff)
            if group_stream
            else _no_incidents(handoff)
        )
        try:
            await _until(handoff.streamed, incidents_task)
            projects = asyncio.gather(
                *(
                    self.project_facts(
                        session,
                        pid,
                        start,
                        end,
                        Need(need.merge_requests, need.incidents and not group_stream, need.tiers),
                    )
                    for pid in ids
                )
            )
            handoff.projects_started.set()  # their first calls are queued before the storing
            per_project = await projects
            incidents = await incidents_task
        finally:
            _discard(incidents_task)
        if group_stream:
            per_project = [
                ProjectFacts(
                    p.project_id,
                    p.environments,
                    p.deployments,
                    incidents.get(p.project_id, ()),
                    p.merge_requests,
                )
                for p in per_project
            ]
        return list(per_project)

    async def group_projects(
        self, session: UpstreamSession, group: ContainerInfo
    ) -> list[ContainerInfo]:
        """The group's own and descendant projects (archived included, shared excluded)."""
        key = self.keys.group_projects(group.id)
        cached = await self.storage.get(key)
        self.telemetry.cache_lookup("facts", cached is not None)
        if cached is not None:
            return [ContainerInfo(p["id"], p["full_path"]) for p in f.loads(cached)]  # type: ignore[union-attr]

        async def fetch() -> list[ContainerInfo]:
            projects = await session.fetch_group_projects(group)
            value = [{"id": p.id, "full_path": p.full_path} for p in projects]
            ttl = self.policy.ttl_listing
            await put(
                self.storage,
                key,
                f.dump_entry(value),
                self.policy.ttl_recent if ttl is None else ttl,
            )
            return projects

        return await self.flights.run(key, fetch)

    async def invalidate_deployments(self, project_id: int) -> None:
        """A deployment webhook: forget the environments and the unsettled days.

        Under the deployments lock, so a fetch already running (its answer may predate the new
        deployment) stores its days first and they are dropped too, instead of landing after.
        """
        async with self._lock(self.keys.deployments_lock(project_id)):
            await self.storage.delete(self.keys.environments(project_id))
            for day in self.recent_days():
                await self.storage.delete(self.keys.deployments(project_id, day))

    async def invalidate_incidents(self, project_id: int) -> None:
        """An incident webhook: every cached incident day of the project becomes unreachable."""
        await self.storage.incr(self.keys.incidents_generation(project_id))

    # ---- environments -------------------------------------------------------------------------
    async def _environments(
        self, session: UpstreamSession, project_id: int
    ) -> tuple[Environment, ...]:
        key = self.keys.environments(project_id)
        cached = await self.storage.get(key)
        self.telemetry.cache_lookup("facts", cached is not None)
        if cached is not None:
            return f.environments_from_json(f.loads(cached))  # type: ignore[arg-type]

        async def fetch() -> tuple[Environment, ...]:
            environments = await session.fetch_environments(project_id)
            await put(
                self.storage,
                key,
                f.dump_entry(environments),
                self.policy.ttl_recent,
            )
            return environments

        return await self.flights.run(key, fetch)

    # ---- deployments --------------------------------------------------------------------------
    async def _deployments(
        self, session: UpstreamSession, project_id: int, days: list[date]
    ) -> tuple[Deployment, ...]:
        async with self._lock(self.keys.deployments_lock(project_id)):
            return await self._deployments_locked(session, project_id, days)

    async def _deployments_locked(
        self, session: UpstreamSession, project_id: int, days: list[date]
    ) -> tuple[Deployment, ...]:
        cached, missing = await self._read_days(self._deployment_entries(project_id), days)
        found: list[Deployment] = []
        for items in cached.values():
            found.extend(f.deployments_from_json(items))
        runs = await asyncio.gather(
            *(
                self.flights.run(
                    self.keys.deployments_run(project_id, a, b),
                    lambda a=a, b=b: self._fetch_deployment_run(session, project_id, a, b),
                )
                for a, b in contiguous_runs(missing)
            )
        )
        for run in runs:
            found.extend(run)
        return tuple(sorted(found, key=lambda d: (d.finished_at, d.id)))

    async def _fetch_deployment_run(
        self, session: UpstreamSession, project_id: int, first: date, last: date
    ) -> list[Deployment]:
        margin = timedelta(days=1)
        fetched = await session.fetch_deployments(
            project_id,
            self.local_midnight(first) - margin,
            self.local_midnight(last + timedelta(days=1)) + margin,
        )
        by_day: dict[date, list[Deployment]] = {day: [] for day in days_between(first, last)}
        for deployment in fetched:
            day = self.local_day(deployment.finished_at)
            if day in by_day:
                by_day[day].append(deployment)
        # The records as they are: `dump_entry` writes them as `deployments_to_json` would.
        await self._write_days(self._deployment_entries(project_id), by_day)
        return [d for items in by_day.values() for d in items]

    def _deployment_entries(self, project_id: int) -> DayEntries:
        return DayEntries(
            functools.partial(self.keys.deployments, project_id),
            functools.partial(self.keys.deployments_month, project_id),
        )

    # ---- day entries --------------------------------------------------------------------------
    async def _read_days(
        self, entries: DayEntries, days: list[date]
    ) -> tuple[dict[date, list], list[date]]:
        """The cached facts (JSON lists) of each day found, and the days not found.

        A settled day is read from its month's entry, where each day carries the time it was
        fetched and counts only for `ttl_settled` after it; a recent day from its own entry. A
        day of the last two that settled while its own entry still lives is read from there."""
        now = self.clock()
        unsettled = self._first_unsettled(now)
        settled = {day for day in days if day < unsettled}
        found: dict[date, list] = {}
        wanted = {day.isoformat(): day for day in settled}
        oldest = now.timestamp() - self.policy.ttl_settled
        # One batched read for the months, one for the days they leave (a cold group reads
        # ~2 000 entries: one guarded round trip each was a tenth of its event loop's time).
        months = sorted({text[:7] for text in wanted})
        for cached in await self._get_many([entries.month(month) for month in months]):
            self.telemetry.cache_lookup("facts", cached is not None)
            if cached is None:
                continue
            for text, (fetched, items) in f.loads(cached).items():  # type: ignore[union-attr]
                day = wanted.get(text)
                if day is not None and fetched > oldest:
                    found[day] = items
        lately = self.calendar.local_day(now) - timedelta(days=2)
        alone = [day for day in days if not (day in found or (day in settled and day < lately))]
        for day, cached in zip(
            alone, await self._get_many([entries.day(day) for day in alone]), strict=True
        ):
            self.telemetry.cache_lookup("facts", cached is not None)
            if cached is not None:
                found[day] = f.loads(cached)  # type: ignore[assignment]
        return found, [day for day in days if day not in found]

    async def _get_many(self, keys: list[str]) -> list[bytes | None]:
        return await self.storage.get_many(keys) if keys else []

    def _first_unsettled(self, now: datetime) -> date:
        """Days before this one are settled at `now` (today never is)."""
        return min(self.calendar.recent_days(now), default=self.calendar.local_day(now))

    async def _write_days(self, entries: DayEntries, by_day: Mapping[date, Sequence]) -> None:
        """Store freshly fetched days: recent ones alone, settled ones merged into their
        month's entry (days fetched earlier keep their own fetch time)."""
        now = self.clock()
        unsettled = self._first_unsettled(now)
        items: list[tuple[str, bytes, float]] = []
        months: dict[str, dict[str, list]] = {}
        for day, value in by_day.items():
            if day < unsettled:
                text = day.isoformat()
                months.setdefault(text[:7], {})[text] = [now.timestamp(), value]
            else:
                items.append((entries.day(day), f.dump_entry(value), self.policy.ttl_recent))
        oldest = now.timestamp() - self.policy.ttl_settled
        keys = {month: entries.month(month) for month in months}
        # Read, merge and write each month entry under its own lock: two runs of one project
        # fetched at once (days on both sides of a cached stretch) merge into the same month,
        # and without it the later write drops the other run's days (fetched again next time).
        async with contextlib.AsyncExitStack() as held:
            for key in sorted(keys.values()):  # one order for every writer: no deadlock
                await held.enter_async_context(self._lock(key))
            merging = list(months.items())
            stored = await self.storage.get_many([keys[month] for month, _ in merging])
            for (month, fetched), cached in zip(merging, stored, strict=True):
                merged = {
                    text: entry
                    for text, entry in (f.loads(cached) if cached else {}).items()  # type: ignore[union-attr]
                    if entry[0] > oldest
                }
                merged.update(fetched)
                items.append((keys[month], f.dump_entry(merged), self.policy.ttl_settled))
            await put_many(self.storage, items)

    # ---- merge requests -----------------------------------------------------------------------
    async def _merge_requests(
        self,
        session: UpstreamSession,
        project_id: int,
        deployments: list[Deployment],
    ) -> dict[int, tuple[MergeRequest, ...]]:
        # A few workers per project pull deployments from one iterator, rather than a task per
        # deployment: a 200-project group has ~27 000, and their tasks, flights and pending
        # futures all alive at once were most of the request's peak memory (issue 16). The
        # upstream itself allows `upstream_concurrency` calls at a time anyway.
        # Lists kept long (deployments older than MR_LINK_DELAY) in one batched read: a warm
        # group recomputation reads thousands, and one guarded read each was most of its time.
        keys = [self.keys.merge_requests(project_id, d.id) for d in deployments]
        found: dict[int, tuple[MergeRequest, ...]] = {}
        missing: list[Deployment] = []
        for deployment, cached in zip(deployments, await self.storage.get_many(keys), strict=True):
            if cached is None:
                missing.append(deployment)  # counted by _deployment_mrs
                continue
            self.telemetry.cache_lookup("facts", True)
            found[deployment.id] = f.merge_requests_from_json(f.loads(cached))  # type: ignore[arg-type]
        pending = iter(missing)

        async def worker() -> None:
            for deployment in pending:
                found[deployment.id] = await self._deployment_mrs(session, project_id, deployment)

        await asyncio.gather(*(worker() for _ in range(min(MR_WORKERS, len(missing)))))
        return {d.id: found[d.id] for d in deployments}

    async def _deployment_mrs(
        self, session: UpstreamSession, project_id: int, deployment: Deployment
    ) -> tuple[MergeRequest, ...]:
        key = self.keys.merge_requests(project_id, deployment.id)
        linked_by = deployment.finished_at + MR_LINK_DELAY
        cached = await self.storage.get(key)
        if cached is None and self.link_clock() < linked_by:
            # A young deployment's list, kept only until GitLab has surely linked its MRs: every
            # answer computed meanwhile lives no longer (`provisional_for`), and is the same.
            cached = await self.storage.get(
                self.keys.young_merge_requests(project_id, deployment.id)
            )
        self.telemetry.cache_lookup("facts", cached is not None)
        if cached is not None:
            return f.merge_requests_from_json(f.loads(cached))  # type: ignore[arg-type]

        async def fetch() -> tuple[MergeRequest, ...]:
            mrs = await session.fetch_deployment_merge_requests(project_id, deployment.id)
            value = f.dump_entry(mrs)
            if linked_by <= self.link_clock():
                await put(self.storage, key, value, self.policy.ttl_settled)
            else:
                young = min((linked_by - self.clock()).total_seconds(), self.policy.ttl_recent)
                await put(
                    self.storage,
                    self.keys.young_merge_requests(project_id, deployment.id),
                    value,
                    young,
                )
            return mrs

        return await self.flights.run(key, fetch)

    # ---- incidents ----------------------------------------------------------------------------
    async def _incident_entries(self, project_id: int) -> DayEntries:
        generation = await self.storage.get(self.keys.incidents_generation(project_id))
        gen = generation.decode() if generation else "0"
        return DayEntries(
            lambda day: self.keys.incidents(project_id, gen, day),
            lambda month: self.keys.incidents_month(project_id, gen, month),
        )

    async def _cached_incident_days(
        self, project_id: int, days: list[date]
    ) -> tuple[DayEntries, dict[date, tuple[Incident, ...]], list[date]]:
        entries = await self._incident_entries(project_id)
        cached, missing = await self._read_days(entries, days)
        found = {day: f.incidents_from_json(items) for day, items in cached.items()}
        return entries, found, missing

    async def _store_incident_days(
        self, entries: DayEntries, days: list[date], incidents: Iterable[Incident]
    ) -> dict[date, tuple[Incident, ...]]:
        by_day: dict[date, list[Incident]] = {day: [] for day in days}
        for incident in incidents:
            for instant in (incident.created_at, incident.closed_at):
                if instant is not None:
                    day = self.local_day(instant)
                    if day in by_day and incident not in by_day[day]:
                        by_day[day].append(incident)
        stored = {day: tuple(items) for day, items in by_day.items()}
        await self._write_days(entries, stored)
        return stored

    async def _incidents(
        self, session: UpstreamSession, project_id: int, days: list[date]
    ) -> tuple[Incident, ...]:
        async with self._lock(self.keys.incidents_lock(project_id)):
            return await self._incidents_locked(session, project_id, days)

    async def _incidents_locked(
        self, session: UpstreamSession, project_id: int, days: list[date]
    ) -> tuple[Incident, ...]:
        entries, found, missing = await self._cached_incident_days(project_id, days)
        if missing:

            async def fetch() -> dict[date, tuple[Incident, ...]]:
                incidents = await session.fetch_project_incidents(
                    project_id, self.local_midnight(min(missing))
                )
                return await self._store_incident_days(entries, missing, incidents)

            flight = self.keys.incidents_run(project_id, missing[0], missing[-1])
            found.update(await self.flights.run(flight, fetch))
        return merge_incident_days(found, self.local_day)

    async def _group_incidents(
        self,
        session: UpstreamSession,
        group: ContainerInfo,
        project_ids: list[int],
        days: list[date],
        handoff: _Handoff,
    ) -> dict[int, tuple[Incident, ...]]:
        """One group issues stream fills every project's missing incident days; the storing
        waits for the projects' fetches to start (see `_Handoff`)."""
        async with self._lock(self.keys.group_incidents_lock(group.id)):
            return await self._group_incidents_locked(session, group, project_ids, days, handoff)

    async def _group_incidents_locked(
        self,
        session: UpstreamSession,
        group: ContainerInfo,
        project_ids: list[int],
        days: list[date],
        handoff: _Handoff,
    ) -> dict[int, tuple[Incident, ...]]:
        cached = await asyncio.gather(
            *(self._cached_incident_days(pid, days) for pid in project_ids)
        )
        missing_any = [day for _, _, missing in cached for day in missing]
        fetched: dict[int, list[Incident]] = {}
        if missing_any:
            fetched = await session.fetch_group_incidents(
                group.id, self.local_midnight(min(missing_any))
            )
        handoff.streamed.set()
        await handoff.projects_started.wait()
        # One project after another: each store yields at its write, so the projects' fetches,
        # started meanwhile (`_Handoff`), keep the upstream busy while this runs.
        result: dict[int, tuple[Incident, ...]] = {}
        for pid, (entries, found, missing) in zip(project_ids, cached, strict=True):
            if missing:
                found.update(
                    await self._store_incident_days(entries, missing, fetched.get(pid, ()))
                )
            result[pid] = merge_incident_days(found, self.local_day)
        return result


def provisional_for(facts: Iterable[ProjectFacts], since: datetime, now: datetime) -> float | None:
    """How long an answer computed from `facts` (gathered from `since` on) may live, or None
    for no limit. GitLab links MRs to a deployment asynchronously (within `MR_LINK_DELAY`), so
    a lead time that read a deployment's MR list while it was younger may still change without
    any webhook: it lives until that deployment is `MR_LINK_DELAY` old (0: do not keep it)."""
    linked_by = max(
        (
            d.finished_at + MR_LINK_DELAY
            for p in facts
            if p.merge_requests
            for d in p.deployments
            if d.id in p.merge_requests
        ),
        default=None,
    )
    if linked_by is None or linked_by <= since:
        return None
    return max((linked_by - now).total_seconds(), 0.0)


def merge_incident_days(
    by_day: dict[date, tuple[Incident, ...]], local_day: Callable[[datetime], date]
) -> tuple[Incident, ...]:
    """One Incident per id from per-day entries that may have been read at different times.

    The creation comes from any entry; the closing time only from the entry of its own closing
    day, so an entry cached before the incident closed (or reopened) never contradicts the day
    that records the close.
    """
    first: dict[int, Incident] = {}
    closed: dict[int, datetime] = {}
    for day, incidents in by_day.items():
        for incident in incidents:
            first.setdefault(incident.id, incident)
            if incident.closed_at is not None and local_day(incident.closed_at) == day:
                closed[incident.id] = incident.closed_at
    return tuple(
        Incident(i, first[i].created_at, closed.get(i), first[i].iid, first[i].web_url)
        for i in sorted(first)
    )


async def _constant(value: tuple[()]) -> tuple[()]:
    return value


class _Handoff:
    """Between a group's incident stream and its projects' fetches: the stream's pages go first
    (`streamed`: no upstream call left, only storing), then the projects' first calls are queued
    (`projects_started`), then the incident days are stored while those calls run."""

    def __init__(self) -> None:
        self.streamed = asyncio.Event()
        self.projects_started = asyncio.Event()


async def _no_incidents(handoff: _Handoff) -> dict[int, tuple[Incident, ...]]:
    handoff.streamed.set()
    return {}


async def _until(event: asyncio.Event, task: asyncio.Future[object]) -> None:
    """Wait for `event`, or for `task` to end first (its failure is raised at once: the group's
    incident stream failing fails the request before any project call is made)."""
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait((waiter, task), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        task.result()


def _discard(task: asyncio.Future[object]) -> None:
    """A side task nobody awaits any more: cancelled if running, its failure marked seen."""
    if not task.done():
        task.cancel()
    elif not task.cancelled():
        task.exception()
