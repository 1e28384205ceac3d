"""Issue 16: a whole CI day against a warm cache — how often does a request still reach GitLab?

    .venv/bin/python -m bench.bench_ci_day [--hours 8] [--check-every 150] [--seed 16]
        [--modes system-hooks webhooks no-webhooks] [--warm-at 5] [--proxy-setting NAME=VALUE]

Everything runs in this one process on a simulated clock, so a working day takes seconds to
minutes: the proxy is the real aiohttp app (`create_app(settings, clock=...)`) served on
loopback, the fake GitLab (`proxy.demo.FakeGitLab`) serves a world of 20 projects in one group
(100 days of history, production and staging, 1–2 deployments a day on each, some incidents).
Time-to-live checks made with the wall clock elsewhere (the disk cache's expiry, the permission
decisions', the recent answers') are pointed at the same simulated clock, so every lifetime runs
on simulated time.

The day:
- 05:00 (`--warm-at`) the nightly `cache warm`: every metric × interval, default window, for
  the group and each project, by `DoraService.answer` in a service of its own over the same
  cache (`dora-proxy cache warm` is another process: the serving proxy only finds its results);
- 08:00–16:00 traffic, one request at a time:
  - a wall display shows the group dashboard (four metrics, daily and monthly: 8 panels),
    refreshed every minute all day;
  - 6 developers each open a dashboard about 3 times an hour (Poisson): the group's or their
    project's 8 panels, refreshed every minute for 10 minutes;
  - CI: every project runs about 4 pipelines an hour (Poisson); each runs a job asking the
    project's deployment frequency and lead time over the last 30 days (a bot token);
  - deployments finish through the day (each project: 2 production, 3 staging, at random
    times, each with 1–3 MRs merged earlier); an incident opens and closes in 2 projects. With
    webhooks, each is followed by its GitLab event (`POST /-/webhooks/gitlab`) a second later.

Modes: `no-webhooks`; `webhooks` (project hooks for deployments and incidents); `system-hooks`
(those, plus `system_hooks = true`: membership decisions kept, tokens' users re-read in the
background round, which runs here every `permission_ttl / 4` simulated seconds; its calls count
as background calls).

Measured per request: the upstream calls the fake received between sending the request and
reading its answer (permission look-ups included); calls made after an answer and before the
next request are reported as "background". Latency is wall time of the HTTP round trip. Every
`--check-every`-th request (and the first request after each deployment) is also asked of a
second proxy with every cache off (TTLs 0) in front of its own fake GitLab over the same world,
at the same simulated moment; the bodies must be byte-identical.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import sys
import tempfile
import time
import types
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from bench import worlds
from bench.common import markdown_table, percentile, print_machine
from proxy.app import build_service, create_app

try:
    from proxy.app import background_period
except ImportError:  # a baseline from before the background round (bench/at_commit.sh)
    background_period = None  # type: ignore[assignment]
from proxy.credentials import Credential
from proxy.demo import DATA_KINDS, FakeGitLab
from proxy.demo.world import REPORTER, World
from proxy.service import DoraRequest
from proxy.settings import Settings
from proxy.telemetry.logs import configure_logging
from proxy.web.handlers import SERVICE

METRICS = (
    "deployment_frequency",
    "lead_time_for_changes",
    "time_to_restore_service",
    "change_failure_rate",
)
INTERVALS = ("daily", "monthly")
SECRET = "ci-day-webhook-secret"
TV_TOKEN = "tok-wall-display"
CI_TOKEN = "tok-ci-bot"
DEVELOPERS = 6


# ---- the simulated clock ----------------------------------------------------------------------
class SimClock:
    """One simulated instant for the proxy, its caches and the fake world."""

    def __init__(self, start: datetime) -> None:
        self.now = start.timestamp()

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)

    def seconds(self) -> float:
        return self.now


class _SimTime(types.ModuleType):
    """`time` for modules that read the wall clock for lifetimes: simulated `time()`, the rest
    real (sleep, perf_counter...)."""

    def __init__(self, clock: SimClock) -> None:
        super().__init__("time")
        self._clock = clock

    def time(self) -> float:
        return self._clock.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def simulate_wall_time(clock: SimClock) -> None:
    """The disk cache's expiry runs on simulated time (diskcache reads `time.time()`)."""
    import diskcache.core

    import proxy.cache.disk

    shim = _SimTime(clock)
    diskcache.core.time = shim  # type: ignore[attr-defined]
    proxy.cache.disk.time = shim  # type: ignore[attr-defined]


def simulate_memory_clocks(service: Any, clock: SimClock) -> None:
    """Permission decisions and recent answers measure their lifetimes on the monotonic clock;
    point them at the simulated one."""
    service.permissions.cache._clock = clock.seconds
    service.recent._clock = clock.seconds
    if getattr(service, "hot", None) is not None:
        service.hot._clock = clock.seconds


# ---- the world and the day --------------------------------------------------------------------
def day_world(today: date, seed: int) -> World:
    world = worlds.group_world(
        today, worlds.GroupShape(projects=20, subgroups=2, subsubgroups=1), seed=seed
    )
    root = world.groups[worlds.ROOT_GROUP_ID]
    for n, token in enumerate([TV_TOKEN, CI_TOKEN] + [f"tok-dev{n}" for n in range(DEVELOPERS)]):
        user = world.add_user(500 + n, token.removeprefix("tok-"), token)
        world.add_member(user, root, REPORTER)
    return world


@dataclass(order=True)
class Event:
    at: float
    order: int
    kind: str = field(compare=False)  # "request", "deploy", "incident_open", "incident_close"
    data: dict[str, Any] = field(compare=False, default_factory=dict)


def dashboard_urls(container: str, ref: str) -> list[str]:
    return [
        f"/api/v4/{container}s/{ref}/dora/metrics?metric={metric}&interval={interval}"
        for metric in METRICS
        for interval in INTERVALS
    ]


def plan_day(world: World, today: date, hours: float, rng: random.Random) -> list[Event]:
    start = datetime(today.year, today.month, today.day, 8, tzinfo=UTC).timestamp()
    end = start + hours * 3600
    events: list[Event] = []
    order = iter(range(10**9))
    projects = sorted(world.projects)
    group_urls = dashboard_urls("group", str(worlds.ROOT_GROUP_ID))

    def add(at: float, kind: str, **data: Any) -> None:
        events.append(Event(at, next(order), kind, data))

    t = start
    while t < end:  # the wall display
        for url in group_urls:
            add(t, "request", url=url, token=TV_TOKEN, who="dashboard")
        t += 60
    for n in range(DEVELOPERS):
        token = f"tok-dev{n}"
        own = projects[n * 3 % len(projects)]
        t = start + rng.expovariate(3 / 3600)
        while t < end:
            urls = group_urls if rng.random() < 0.5 else dashboard_urls("project", str(own))
            for refresh in range(10):
                at = t + refresh * 60
                if at < end:
                    for url in urls:
                        add(at, "request", url=url, token=token, who="dashboard")
            t += rng.expovariate(3 / 3600)
    for pid in projects:
        t = start + rng.expovariate(4 / 3600)
        while t < end:
            since = (datetime.fromtimestamp(t, UTC).date() - timedelta(days=30)).isoformat()
            for metric in ("deployment_frequency", "lead_time_for_changes"):
                url = f"/api/v4/projects/{pid}/dora/metrics?metric={metric}&start_date={since}"
                add(t + 5, "request", url=url, token=CI_TOKEN, who="ci")
            t += rng.expovariate(4 / 3600)
        environments = [e for e in world.environments.values() if e.project_id == pid]
        for env in environments:
            for _ in range(2 if env.tier == "production" else 3):
                add(start + rng.uniform(0, end - start), "deploy", project=pid, env=env.id)
    for pid in rng.sample(projects, 2):
        opened = start + rng.uniform(0, (end - start) / 2)
        add(opened, "incident_open", project=pid)
        add(opened + rng.uniform(900, 7200), "incident_close", project=pid)
    return sorted(events)


# ---- one run ----------------------------------------------------------------------------------
@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)
    with_calls: Counter[str] = field(default_factory=Counter)
    requests: Counter[str] = field(default_factory=Counter)
    calls_by_kind: Counter[str] = field(default_factory=Counter)
    background_calls: int = 0
    background_by_kind: Counter[str] = field(default_factory=Counter)
    quiet_latencies: list[float] = field(default_factory=list)  # requests without a call
    layers: Counter[str] = field(default_factory=Counter)  # X-Dora-Proxy-Cache of answers
    # recomputed answers by caller, container and hour of the day
    misses: Counter[str] = field(default_factory=Counter)
    with_data_calls: int = 0  # requests that made a data call (not only permission look-ups)
    warm_calls: int = 0
    checked: int = 0
    mismatches: int = 0
    mismatch_examples: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    hours: float = 8.0
    wall: float = 0.0


def deployment_event(world: World, pid: int, env_id: int, dep_id: int) -> dict[str, Any]:
    project = world.projects[pid]
    env = world.environments[env_id]
    return {
        "object_kind": "deployment",
        "status": "success",
        "deployment_id": dep_id,
        "environment": env.name,
        "environment_tier": env.tier,
        "project": {
            "id": pid,
            "name": project.path,
            "path_with_namespace": project.path_with_namespace,
        },
    }


def incident_event(world: World, pid: int, issue_id: int, action: str) -> dict[str, Any]:
    project = world.projects[pid]
    return {
        "object_kind": "issue",
        "event_type": "issue",
        "project": {
            "id": pid,
            "name": project.path,
            "path_with_namespace": project.path_with_namespace,
        },
        "object_attributes": {"id": issue_id, "type": "INCIDENT", "action": action},
    }


async def run_day(
    today: date,
    hours: float,
    seed: int,
    webhooks: bool,
    check_every: int,
    cache_dir: Path,
    system_hooks: bool = False,
    warm_hour: float = 5.0,
    overrides: dict[str, Any] | None = None,
) -> Outcome:
    rng = random.Random(seed)
    world = day_world(today, seed)
    events = plan_day(world, today, hours, rng)
    clock = SimClock(datetime(today.year, today.month, today.day, 5, tzinfo=UTC))
    warm_at = datetime(today.year, today.month, today.day, tzinfo=UTC) + timedelta(hours=warm_hour)
    simulate_wall_time(clock)

    fake = FakeGitLab(world)
    reference_fake = FakeGitLab(world)  # the same world, its own call log
    await fake.start()
    await reference_fake.start()
    base = Settings(
        upstream_url=fake.url,
        cache_dir=cache_dir / "proxy",
        server_secret="ci-day-server-secret-0123456789",
        log_format="json",
        log_level="warning",
        webhook_secret=SECRET if webhooks else None,
        **({"system_hooks": True} if system_hooks else {}),
        **(overrides or {}),
    )
    # The reference keeps only what cannot change in this world: facts of settled days (the
    # day's deployments and incidents all lie in the past) and the MR lists of deployments
    # older than 10 minutes. No answer, permission or recent-day fact is cached.
    fresh = replace(
        base,
        upstream_url=reference_fake.url,
        cache_dir=cache_dir / "reference",
        permission_ttl=0.0,
        answer_ttl_past=0.0,
        answer_ttl_current=0.0,
        recent_answer_ttl=0.0,
        facts_ttl_recent=0.0,
        webhook_secret=None,
        **({"system_hooks": False} if system_hooks else {}),
    )
    proxy_server = TestServer(create_app(base, clock=clock.datetime))
    reference_server = TestServer(create_app(fresh, clock=clock.datetime))
    await proxy_server.start_server()
    await reference_server.start_server()
    service = proxy_server.app[SERVICE]
    simulate_memory_clocks(service, clock)
    simulate_memory_clocks(reference_server.app[SERVICE], clock)
    outcome = Outcome(hours=hours)
    started = time.perf_counter()
    try:
        # The nightly warm, as `dora-proxy cache warm` runs it: its own service in another
        # process (here: another service object, no HTTP) over the same cache, so the serving
        # proxy learns nothing from it but what it finds in the cache.
        clock.now = max(clock.now, warm_at.timestamp())
        credential = Credential(CI_TOKEN, "private")
        targets = [("group", str(worlds.ROOT_GROUP_ID))] + [
            ("project", str(pid)) for pid in sorted(world.projects)
        ]
        warmer = build_service(base, clock=clock.datetime, batch=True)
        simulate_memory_clocks(warmer, clock)
        try:
            for container, ref in targets:
                for metric in METRICS:
                    for interval in INTERVALS:
                        params = {"metric": metric, "interval": interval}
                        await warmer.answer(DoraRequest(container, ref, params), credential)
        finally:
            await warmer.close()
        outcome.warm_calls = len(fake.calls)
        fake.reset_calls()
        # The fake GitLab's world lives in this process, not the proxy's: out of the garbage
        # collector's sight, as `serve` puts its own start-up objects (its full collections
        # would otherwise scan 100 days of deployments and pause requests for ~40 ms).
        gc.collect()
        gc.freeze()
        _progress(f"warm: {outcome.warm_calls} calls, {time.perf_counter() - started:.0f} s")

        async with ClientSession() as http:
            check_next: set[str] = set()
            rounds = background_period is not None and (
                service.permissions.keepalive > 0 or service.hot is not None
            )
            tick = background_period(base) if rounds else 0.0  # the app's background round
            next_tick = clock.now + tick
            for n, event in enumerate(events):
                if n % 500 == 0:
                    _progress(f"{n}/{len(events)} events, {time.perf_counter() - started:.0f} s")
                while rounds and next_tick <= event.at:
                    # The rounds `run_background` makes every `tick` seconds, each at its own
                    # simulated moment (its real-time loop rarely fires in a run this fast),
                    # and the passes they start: requests come seconds apart in this world.
                    clock.now = max(clock.now, next_tick)
                    before = len(fake.calls)
                    await service.background_round(tick)
                    _trace(clock.now, "round", len(fake.calls) - before)
                    await service.refreshed()
                    outcome.background_calls += len(fake.calls) - before
                    outcome.background_by_kind.update(c.kind for c in fake.calls[before:])
                    next_tick += tick
                clock.now = max(clock.now, event.at)
                if event.kind == "request":
                    await _request(
                        http,
                        proxy_server,
                        reference_server,
                        fake,
                        event,
                        outcome,
                        check=n % check_every == 0 or event.data["url"] in check_next,
                    )
                    check_next.discard(event.data["url"])
                else:
                    payload = _change_world(world, event, clock, rng)
                    _trace(event.at, "event", event.kind, event.data)
                    if event.kind == "deploy":
                        pid = event.data["project"]
                        check_next.update(_urls_of(pid))
                    if webhooks:
                        clock.now += 1  # GitLab delivers a second later
                        before = len(fake.calls)
                        headers = {
                            "X-Gitlab-Token": SECRET,
                            "X-Gitlab-Event": payload.pop("_event"),
                        }
                        async with http.post(
                            proxy_server.make_url("/-/webhooks/gitlab"),
                            json=payload,
                            headers=headers,
                        ) as response:
                            assert response.status == 200, await response.text()
                        # The answers the change touched are computed again in the background
                        # (refresh_window); the next request comes seconds later in this world.
                        if background_period is not None:
                            await service.refreshed()
                        outcome.background_calls += len(fake.calls) - before
                        outcome.background_by_kind.update(c.kind for c in fake.calls[before:])
    finally:
        outcome.wall = time.perf_counter() - started
        await proxy_server.close()
        await reference_server.close()
        await fake.close()
        await reference_fake.close()
    return outcome


def _trace(at: float, *what: object) -> None:
    """`CI_DAY_TRACE=1`: each miss, change and background round on stderr, at its moment."""
    if os.environ.get("CI_DAY_TRACE"):
        print(datetime.fromtimestamp(at, UTC).time(), *what, file=sys.stderr)


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _urls_of(pid: int) -> list[str]:
    """Checked against the reference at their next request after a deployment of `pid`."""
    return [f"/api/v4/projects/{pid}/dora/metrics?metric=deployment_frequency&interval=daily"]


def _change_world(world: World, event: Event, clock: SimClock, rng: random.Random) -> dict:
    """Apply a deployment or incident to the world at `clock`; the webhook payload for it."""
    now = clock.datetime()
    pid = event.data["project"]
    if event.kind == "deploy":
        env = world.environments[event.data["env"]]
        merged = [
            now - timedelta(minutes=rng.randrange(20, 48 * 60)) for _ in range(rng.randint(1, 3))
        ]
        dep = world.deploy(env, now, mrs=merged)
        return {"_event": "Deployment Hook", **deployment_event(world, pid, env.id, dep.id)}
    if event.kind == "incident_open":
        issue = world.incident(pid, now)
        event.data["issue"] = issue.id
        world.__dict__.setdefault("_bench_open", {})[pid] = issue
        return {"_event": "Issue Hook", **incident_event(world, pid, issue.id, "open")}
    issue = world.__dict__["_bench_open"].pop(pid)
    issue.closed_at = now
    issue.updated_at = now
    return {"_event": "Issue Hook", **incident_event(world, pid, issue.id, "close")}


async def _request(
    http: ClientSession,
    proxy_server: TestServer,
    reference_server: TestServer,
    fake: FakeGitLab,
    event: Event,
    outcome: Outcome,
    *,
    check: bool,
) -> None:
    url, token, who = event.data["url"], event.data["token"], event.data["who"]
    headers = {"PRIVATE-TOKEN": token}
    background = len(fake.calls)
    await asyncio.sleep(0)  # let work left from the last request reach the fake first
    before = len(fake.calls)
    outcome.background_calls += before - background
    outcome.background_by_kind.update(c.kind for c in fake.calls[background:before])
    t0 = time.perf_counter()
    async with http.get(proxy_server.make_url(url), headers=headers) as response:
        body = await response.read()
    elapsed = time.perf_counter() - t0
    outcome.latencies.append(elapsed)
    made = fake.calls[before:]
    layer = response.headers.get("X-Dora-Proxy-Cache", "?")
    outcome.layers[layer] += 1
    if layer == "miss":
        container = "group" if "/groups/" in url else "project"
        hour = datetime.fromtimestamp(event.at, UTC).hour
        outcome.misses[f"{who} {container} {hour:02d}h"] += 1
        _trace(event.at, "miss", who, url, token, f"{elapsed * 1000:.1f}ms", [c.kind for c in made])
    if not made:
        outcome.quiet_latencies.append(elapsed)
    outcome.requests[who] += 1
    outcome.statuses[response.status] += 1
    if made:
        outcome.with_calls[who] += 1
        outcome.calls_by_kind.update(call.kind for call in made)
        if any(call.kind in DATA_KINDS for call in made):
            outcome.with_data_calls += 1
    if check:
        async with http.get(reference_server.make_url(url), headers=headers) as response:
            expected = await response.read()
        outcome.checked += 1
        if body != expected:
            outcome.mismatches += 1
            if len(outcome.mismatch_examples) < 5:
                outcome.mismatch_examples.append(url)


# ---- report -----------------------------------------------------------------------------------
def report(results: dict[str, Outcome]) -> None:
    rows = []
    for mode, o in results.items():
        total = sum(o.requests.values())
        with_calls = sum(o.with_calls.values())
        calls = sum(o.calls_by_kind.values())
        rows.append(
            [
                mode,
                total,
                f"{100 * (total - with_calls) / total:.2f} %",
                f"{o.with_calls['dashboard']} / {o.with_calls['ci']}",
                f"{100 * (total - o.with_data_calls) / total:.2f} %",
                f"{1000 * percentile(o.latencies, 50):.2f}",
                f"{1000 * percentile(o.latencies, 99):.2f}",
                f"{1000 * percentile(o.quiet_latencies, 99):.2f}",
                sum(1 for latency in o.latencies if latency > 0.005),
                f"{(calls + o.background_calls) / o.hours:.0f}",
                f"{calls} + {o.background_calls}",
                f"{o.checked - o.mismatches}/{o.checked}",
                o.warm_calls,
                f"{o.wall:.0f}",
            ]
        )
    print(
        markdown_table(
            [
                "mode",
                "requests",
                "no upstream call",
                "with calls: dashboard / CI",
                "no data call",
                "p50 ms",
                "p99 ms",
                "p99 ms, no call",
                "over 5 ms",
                "upstream calls / hour",
                "calls: in requests + after",
                "identical to fresh",
                "warm calls",
                "run s",
            ],
            rows,
        )
    )
    print()
    for mode, o in results.items():
        kinds = ", ".join(f"{k} {v}" for k, v in o.calls_by_kind.most_common())
        print(
            f"- {mode}: calls in requests by kind: {kinds or 'none'}; statuses {dict(o.statuses)}"
        )
        print(f"  answered by layer (X-Dora-Proxy-Cache): {dict(o.layers)}")
        if o.background_calls:
            print(f"  calls between requests by kind: {dict(o.background_by_kind.most_common())}")
        print(f"  recomputed (miss) by caller, container, hour: {dict(sorted(o.misses.items()))}")
        if o.mismatch_examples:
            print(f"  mismatches, e.g.: {o.mismatch_examples}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--check-every", type=int, default=150)
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["system-hooks", "webhooks", "no-webhooks"],
        choices=["system-hooks", "webhooks", "no-webhooks"],
    )
    parser.add_argument(
        "--warm-at", type=float, default=5.0, help="hour of the nightly warm (default 5.0)"
    )
    parser.add_argument(
        "--proxy-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the measured proxy (not the reference), e.g. refresh_window=3600",
    )
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.proxy_setting:
        name, _, value = item.partition("=")
        kind = type(getattr(Settings(), name))
        overrides[name] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    print_machine()
    configure_logging("error", "json")
    print(f"commit: {os.environ.get('BENCH_COMMIT', 'work tree')}; load: {os.getloadavg()}")
    print(f"warm at {args.warm_at:g} h; proxy settings: {overrides or 'defaults'}")
    today = datetime.now(UTC).date()
    results = {}
    for mode in args.modes:
        with tempfile.TemporaryDirectory(prefix="ci-day-") as tmp:
            results[mode] = asyncio.run(
                run_day(
                    today,
                    args.hours,
                    args.seed,
                    mode != "no-webhooks",
                    args.check_every,
                    Path(tmp),
                    system_hooks=mode == "system-hooks",
                    warm_hour=args.warm_at,
                    overrides=overrides,
                )
            )
        print(f"{mode}: done in {results[mode].wall:.0f} s", file=sys.stderr)
    report(results)


if __name__ == "__main__":
    main()
