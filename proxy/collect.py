"""Gather the facts of a window for one project or many: from the facts cache, else upstream.

Facts are cached per project and per day (in the configured time zone), so another metric,
interval or tier set over an already-fetched window costs no upstream call, a window shifted by
a day fetches only the day it lacks, and group and project requests share the same entries.

- environments: one entry per project, short TTL (tier edits send no webhook);
- deployments: one entry per (project, day); missing days are fetched in contiguous runs, one
  paginated `finished_after/finished_before` stream per run;
- merge requests: one entry per deployment, kept long once the deployment is 10 minutes old
  (GitLab links MRs asynchronously), not cached before;
- incidents: one entry per (project, day) holding the incidents created or closed that day; one
  `updated_after` stream (per project, or per group) fills every missing day.

A day is *settled* once it ended more than `settle_margin` seconds ago: its entries live
`ttl_settled`, younger days `ttl_recent`. Nothing is written unless its fetch completed.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import gitlab

from proxy import facts as f
from proxy.cache.base import Storage
from proxy.cache.lifetimes import put, put_many
from proxy.clock import Clock, utc_now
from proxy.facts import Deployment, Environment, Incident, MergeRequest, ProjectFacts
from proxy.single_flight import SingleFlight
from proxy.telemetry.prometheus import Telemetry
from proxy.upstream.client import ContainerInfo, Upstream

MR_LINK_DELAY = timedelta(minutes=10)
EARLIEST_DAY = date(2000, 1, 1)  # before GitLab existed: no deployment or incident can be older
GROUP_ISSUES_MIN_PROJECTS = 2  # from this many projects on, one group stream beats N streams


@dataclass(frozen=True, slots=True)
class FactsPolicy:
    tz: ZoneInfo
    ttl_settled: float
    ttl_recent: float
    settle_margin: float


@dataclass(frozen=True, slots=True)
class Need:
    """What a request needs besides environments and deployments."""

    merge_requests: bool
    incidents: bool
    tiers: frozenset[str] = frozenset({"production"})


def days_between(start: date, end: date) -> list[date]:
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def contiguous_runs(days: Sequence[date]) -> list[tuple[date, date]]:
    runs: list[tuple[date, date]] = []
    for day in sorted(days):
        if runs and day == runs[-1][1] + timedelta(days=1):
            runs[-1] = (runs[-1][0], day)
        else:
            runs.append((day, day))
    return runs


class FactsCollector:
    def __init__(
        self,
        upstream: Upstream,
        storage: Storage,
        policy: FactsPolicy,
        namespace: str,
        clock: Clock = utc_now,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.upstream = upstream
        self.storage = storage
        self.policy = policy
        self.namespace = namespace
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

    # ---- keys and lifetimes -------------------------------------------------------------------
    def _key(self, project_id: int, *parts: object) -> str:
        return "|".join((self.namespace, f"project:{project_id}", *map(str, parts)))

    def incident_generation_key(self, project_id: int) -> str:
        return self._key(project_id, "incidents-generation")

    def deployments_key(self, project_id: int, day: date) -> str:
        return self._key(project_id, "deployments", day.isoformat())

    def environments_key(self, project_id: int) -> str:
        return self._key(project_id, "environments")

    def local_midnight(self, day: date) -> datetime:
        return datetime.combine(day, time(0), self.policy.tz).astimezone(UTC)

    def local_day(self, instant: datetime) -> date:
        return instant.astimezone(self.policy.tz).date()

    def today(self) -> date:
        return self.local_day(self.clock())

    def day_end(self, day: date) -> datetime:
        """When local `day` ends (the next local midnight, in UTC)."""
        try:
            return self.local_midnight(day + timedelta(days=1))
        except OverflowError:  # 9999-12-31 never ends
            return datetime.max.replace(tzinfo=UTC)

    def fetchable_days(self, start: date, end: date) -> list[date]:
        """The window's days that can hold facts: none before EARLIEST_DAY, none after
        tomorrow (a day of margin for clock skew). Also keeps date arithmetic at the ends of
        the calendar (0001-01-01, 9999-12-31) away from the upstream and from overflow."""
        first = max(start, EARLIEST_DAY)
        last = min(end, self.today() + timedelta(days=1))
        return days_between(first, last) if first <= last else []

    def recent_days(self) -> list[date]:
        """Days not yet settled: their facts may still change without a webhook."""
        now = self.clock()
        day = self.today()
        days = []
        while (
            self.local_midnight(day + timedelta(days=1))
            + timedelta(seconds=self.policy.settle_margin)
            > now
        ):
            days.append(day)
            day -= timedelta(days=1)
        return days

    def _ttl_for_day(self, day: date) -> float:
        settled_at = self.local_midnight(day + timedelta(days=1)) + timedelta(
            seconds=self.policy.settle_margin
        )
        return self.policy.ttl_settled if settled_at <= self.clock() else self.policy.ttl_recent

    # ---- public -------------------------------------------------------------------------------
    async def project_facts(
        self, gl: gitlab.Gitlab, project_id: int, start: date, end: date, need: Need
    ) -> ProjectFacts:
        days = self.fetchable_days(start, end)
        if not days:
            return ProjectFacts(project_id)
        incidents_task = self._incidents(gl, project_id, days) if need.incidents else _constant(())
        environments, deployments, incidents = await asyncio.gather(
            self._environments(gl, project_id),
            self._deployments(gl, project_id, days),
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
            mrs = await self._merge_requests(gl, project_id, in_window)
        return ProjectFacts(project_id, environments, deployments, incidents, mrs)

    async def group_facts(
        self,
        gl: gitlab.Gitlab,
        group: ContainerInfo,
        projects: Sequence[ContainerInfo],
        start: date,
        end: date,
        need: Need,
    ) -> list[ProjectFacts]:
        days = self.fetchable_days(start, end)
        if not days:
            return []
        ids = [p.id for p in projects]
        incidents: dict[int, tuple[Incident, ...]] = {}
        group_stream = need.incidents and len(ids) >= GROUP_ISSUES_MIN_PROJECTS
        if group_stream:
            incidents = await self._group_incidents(gl, group, ids, days)
        per_project = await asyncio.gather(
            *(
                self.project_facts(
                    gl,
                    pid,
                    start,
                    end,
                    Need(need.merge_requests, need.incidents and not group_stream, need.tiers),
                )
                for pid in ids
            )
        )
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

    async def group_projects(self, gl: gitlab.Gitlab, group: ContainerInfo) -> list[ContainerInfo]:
        """The group's own and descendant projects (archived included, shared excluded)."""
        key = f"{self.namespace}|group:{group.id}|projects"
        cached = await self.storage.get(key)
        self.telemetry.cache_lookup("facts", cached is not None)
        if cached is not None:
            return [ContainerInfo(p["id"], p["full_path"]) for p in f.loads(cached)]  # type: ignore[union-attr]

        async def fetch() -> list[ContainerInfo]:
            projects = await self.upstream.fetch_group_projects(gl, group)
            value = [{"id": p.id, "full_path": p.full_path} for p in projects]
            await put(self.storage, key, f.dumps(value), self.policy.ttl_recent)
            return projects

        return await self.flights.run(key, fetch)

    async def invalidate_deployments(self, project_id: int) -> None:
        """A deployment webhook: forget the environments and the unsettled days.

        Under the deployments lock, so a fetch already running (its answer may predate the new
        deployment) stores its days first and they are dropped too, instead of landing after.
        """
        async with self._lock(self._key(project_id, "deployments-lock")):
            await self.storage.delete(self.environments_key(project_id))
            for day in self.recent_days():
                await self.storage.delete(self.deployments_key(project_id, day))

    async def invalidate_incidents(self, project_id: int) -> None:
        """An incident webhook: every cached incident day of the project becomes unreachable."""
        await self.storage.incr(self.incident_generation_key(project_id))

    # ---- environments -------------------------------------------------------------------------
    async def _environments(self, gl: gitlab.Gitlab, project_id: int) -> tuple[Environment, ...]:
        key = self.environments_key(project_id)
        cached = await self.storage.get(key)
        self.telemetry.cache_lookup("facts", cached is not None)
        if cached is not None:
            return f.environments_from_json(f.loads(cached))  # type: ignore[arg-type]

        async def fetch() -> tuple[Environment, ...]:
            environments = await self.upstream.fetch_environments(gl, project_id)
            await put(
                self.storage,
                key,
                f.dumps(f.environments_to_json(environments)),
                self.policy.ttl_recent,
            )
            return environments

        return await self.flights.run(key, fetch)

    # ---- deployments --------------------------------------------------------------------------
    async def _deployments(
        self, gl: gitlab.Gitlab, project_id: int, days: list[date]
    ) -> tuple[Deployment, ...]:
        async with self._lock(self._key(project_id, "deployments-lock")):
            return await self._deployments_locked(gl, project_id, days)

    async def _deployments_locked(
        self, gl: gitlab.Gitlab, project_id: int, days: list[date]
    ) -> tuple[Deployment, ...]:
        found: list[Deployment] = []
        missing: list[date] = []
        for day in days:
            cached = await self.storage.get(self.deployments_key(project_id, day))
            self.telemetry.cache_lookup("facts", cached is not None)
            if cached is None:
                missing.append(day)
            else:
                found.extend(f.deployments_from_json(f.loads(cached)))  # type: ignore[arg-type]
        runs = await asyncio.gather(
            *(
                self.flights.run(
                    self._key(project_id, "deployments-run", a, b),
                    lambda a=a, b=b: self._fetch_deployment_run(gl, project_id, a, b),
                )
                for a, b in contiguous_runs(missing)
            )
        )
        for run in runs:
            found.extend(run)
        return tuple(sorted(found, key=lambda d: (d.finished_at, d.id)))

    async def _fetch_deployment_run(
        self, gl: gitlab.Gitlab, project_id: int, first: date, last: date
    ) -> list[Deployment]:
        margin = timedelta(days=1)
        fetched = await self.upstream.fetch_deployments(
            gl,
            project_id,
            self.local_midnight(first) - margin,
            self.local_midnight(last + timedelta(days=1)) + margin,
        )
        by_day: dict[date, list[Deployment]] = {day: [] for day in days_between(first, last)}
        for deployment in fetched:
            day = self.local_day(deployment.finished_at)
            if day in by_day:
                by_day[day].append(deployment)
        await put_many(
            self.storage,
            [
                (
                    self.deployments_key(project_id, day),
                    f.dumps(f.deployments_to_json(tuple(items))),
                    self._ttl_for_day(day),
                )
                for day, items in by_day.items()
            ],
        )
        return [d for items in by_day.values() for d in items]

    # ---- merge requests -----------------------------------------------------------------------
    async def _merge_requests(
        self,
        gl: gitlab.Gitlab,
        project_id: int,
        deployments: list[Deployment],
    ) -> dict[int, tuple[MergeRequest, ...]]:
        lists = await asyncio.gather(
            *(self._deployment_mrs(gl, project_id, d) for d in deployments)
        )
        return {d.id: mrs for d, mrs in zip(deployments, lists, strict=True)}

    async def _deployment_mrs(
        self, gl: gitlab.Gitlab, project_id: int, deployment: Deployment
    ) -> tuple[MergeRequest, ...]:
        key = self._key(project_id, "merge-requests", deployment.id)
        cached = await self.storage.get(key)
        self.telemetry.cache_lookup("facts", cached is not None)
        if cached is not None:
            return f.merge_requests_from_json(f.loads(cached))  # type: ignore[arg-type]

        async def fetch() -> tuple[MergeRequest, ...]:
            mrs = await self.upstream.fetch_deployment_merge_requests(gl, project_id, deployment.id)
            if deployment.finished_at + MR_LINK_DELAY <= self.clock():
                await put(
                    self.storage,
                    key,
                    f.dumps(f.merge_requests_to_json(mrs)),
                    self.policy.ttl_settled,
                )
            return mrs

        return await self.flights.run(key, fetch)

    # ---- incidents ----------------------------------------------------------------------------
    async def _incident_keys(self, project_id: int, days: list[date]) -> dict[date, str]:
        generation = await self.storage.get(self.incident_generation_key(project_id))
        gen = generation.decode() if generation else "0"
        return {day: self._key(project_id, "incidents", f"g{gen}", day.isoformat()) for day in days}

    async def _cached_incident_days(
        self, project_id: int, days: list[date]
    ) -> tuple[dict[date, str], dict[date, tuple[Incident, ...]], list[date]]:
        keys = await self._incident_keys(project_id, days)
        found: dict[date, tuple[Incident, ...]] = {}
        missing = []
        for day, key in keys.items():
            cached = await self.storage.get(key)
            self.telemetry.cache_lookup("facts", cached is not None)
            if cached is None:
                missing.append(day)
            else:
                found[day] = f.incidents_from_json(f.loads(cached))  # type: ignore[arg-type]
        return keys, found, missing

    async def _store_incident_days(
        self, keys: dict[date, str], days: list[date], incidents: Iterable[Incident]
    ) -> dict[date, tuple[Incident, ...]]:
        by_day: dict[date, list[Incident]] = {day: [] for day in days}
        for incident in incidents:
            for instant in (incident.created_at, incident.closed_at):
                if instant is not None:
                    day = self.local_day(instant)
                    if day in by_day and incident not in by_day[day]:
                        by_day[day].append(incident)
        stored = {day: tuple(items) for day, items in by_day.items()}
        await put_many(
            self.storage,
            [
                (keys[day], f.dumps(f.incidents_to_json(value)), self._ttl_for_day(day))
                for day, value in stored.items()
            ],
        )
        return stored

    async def _incidents(
        self, gl: gitlab.Gitlab, project_id: int, days: list[date]
    ) -> tuple[Incident, ...]:
        async with self._lock(self._key(project_id, "incidents-lock")):
            return await self._incidents_locked(gl, project_id, days)

    async def _incidents_locked(
        self, gl: gitlab.Gitlab, project_id: int, days: list[date]
    ) -> tuple[Incident, ...]:
        keys, found, missing = await self._cached_incident_days(project_id, days)
        if missing:

            async def fetch() -> dict[date, tuple[Incident, ...]]:
                incidents = await self.upstream.fetch_project_incidents(
                    gl, project_id, self.local_midnight(min(missing))
                )
                return await self._store_incident_days(keys, missing, incidents)

            flight = self._key(project_id, "incidents-run", *missing[:1], *missing[-1:])
            found.update(await self.flights.run(flight, fetch))
        return merge_incident_days(found, self.local_day)

    async def _group_incidents(
        self, gl: gitlab.Gitlab, group: ContainerInfo, project_ids: list[int], days: list[date]
    ) -> dict[int, tuple[Incident, ...]]:
        """One group issues stream fills every project's missing incident days."""
        async with self._lock(f"{self.namespace}|group:{group.id}|incidents-lock"):
            return await self._group_incidents_locked(gl, group, project_ids, days)

    async def _group_incidents_locked(
        self, gl: gitlab.Gitlab, group: ContainerInfo, project_ids: list[int], days: list[date]
    ) -> dict[int, tuple[Incident, ...]]:
        cached = await asyncio.gather(
            *(self._cached_incident_days(pid, days) for pid in project_ids)
        )
        missing_any = [day for _, _, missing in cached for day in missing]
        fetched: dict[int, list[Incident]] = {}
        if missing_any:
            fetched = await self.upstream.fetch_group_incidents(
                gl, group.id, self.local_midnight(min(missing_any))
            )
        result: dict[int, tuple[Incident, ...]] = {}
        for pid, (keys, found, missing) in zip(project_ids, cached, strict=True):
            if missing:
                found.update(await self._store_incident_days(keys, missing, fetched.get(pid, ())))
            result[pid] = merge_incident_days(found, self.local_day)
        return result


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
