"""Several proxies on one cache: answers are shared, and a cold answer is computed once.

Three levels: `StorageLock` between two storage clients of one cache (disk and Redis); two apps
in this process on one cache (through HTTP; disk or Redis per DORA_PROXY_TEST_BACKEND); and two
real `python -m proxy serve` processes sharing the session's redis-server.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.cache.base import Storage
from proxy.cache.disk import DiskStorage
from proxy.cache.redis import RedisStorage
from proxy.demo import Call, FakeGitLab
from proxy.demo.world import REPORTER, World
from proxy.single_flight import StorageLock
from tests.redis_server import free_port

KEY = "v1|answer|project:1|q"
LOCK = KEY + "|lock"
RITA = {"PRIVATE-TOKEN": "tok-rita"}
WINDOW = "start_date=2024-01-01&end_date=2024-02-29"
NOW = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)
SECRET = "replica-test-secret-0123456789"


def world() -> World:
    """Group acme (10) with projects web (20) and api (21); rita reports on acme."""
    w = World().add_cast()
    acme = w.add_group(10, "acme")
    w.add_member(12, acme, REPORTER)
    for project_id, path in ((20, "web"), (21, "api")):
        project = w.add_project(project_id, path, acme)
        production = w.add_environment(project, "production", "production")
        for day in ("2024-01-05", "2024-01-20", "2024-02-10"):
            w.deploy(production, f"{day}T09:00:00Z", mrs=[f"{day}T07:00:00Z"])
    w.incident(20, "2024-01-20T10:00:00Z", "2024-01-20T14:00:00Z")
    return w


def repeated(calls: list[Call]) -> dict[tuple, int]:
    """Data calls made more than once (same endpoint, same query): duplicated work."""
    counts = Counter((c.kind, c.path, tuple(sorted(c.query.items()))) for c in calls)
    return {signature: n for signature, n in counts.items() if n > 1}


# ---- StorageLock between two clients of one cache ---------------------------------------------


@pytest.fixture(params=["disk", "redis"])
async def twins(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Storage, Storage]]:
    """Two independent clients of one cache, as two processes would have."""
    if request.param == "disk":
        pair: tuple[Storage, Storage] = (
            DiskStorage(tmp_path / "cache", size_limit=2**26),
            DiskStorage(tmp_path / "cache", size_limit=2**26),
        )
    else:
        url, namespace = request.getfixturevalue("redis_url"), f"test-{uuid.uuid4().hex}"
        pair = (RedisStorage(url, namespace=namespace), RedisStorage(url, namespace=namespace))
    yield pair
    await pair[0].clear()
    for storage in pair:
        await storage.close()


def computation(storage: Storage, calls: list[str], name: str, seconds: float = 0.2):
    async def work() -> bytes:
        calls.append(name)
        await asyncio.sleep(seconds)
        await storage.set(KEY, f"answer of {name}".encode(), 60)
        return f"answer of {name}".encode()

    return work


async def test_two_processes_asking_at_once_compute_once(twins) -> None:
    a, b = twins
    calls: list[str] = []
    outcomes: list[str] = []
    results = await asyncio.gather(
        StorageLock(a, ttl=5, on_outcome=outcomes.append).run(KEY, computation(a, calls, "a")),
        StorageLock(b, ttl=5, on_outcome=outcomes.append).run(KEY, computation(b, calls, "b")),
    )
    assert len(calls) == 1
    assert results == [f"answer of {calls[0]}".encode()] * 2
    assert sorted(outcomes) == ["acquired", "shared"]
    assert await a.get(LOCK) is None  # released


async def test_a_dead_holders_lock_expires_and_the_waiter_takes_over(twins) -> None:
    a, b = twins
    await a.add(LOCK, b"holder that crashed", 0.3)
    calls: list[str] = []
    outcomes: list[str] = []
    started = time.monotonic()
    result = await StorageLock(b, ttl=5, on_outcome=outcomes.append).run(
        KEY, computation(b, calls, "b", 0)
    )
    waited = time.monotonic() - started
    assert result == b"answer of b" and calls == ["b"] and outcomes == ["took_over"]
    assert 0.2 <= waited < 2.0


async def test_a_failing_holder_hands_over_to_the_waiter(twins) -> None:
    a, b = twins
    outcomes: list[str] = []

    async def failing() -> bytes:
        await asyncio.sleep(0.15)
        raise RuntimeError("upstream broke")

    holder = asyncio.create_task(
        StorageLock(a, ttl=5, on_outcome=outcomes.append).run(KEY, failing)
    )
    await asyncio.sleep(0.05)
    calls: list[str] = []
    waiter = StorageLock(b, ttl=5, on_outcome=outcomes.append).run(KEY, computation(b, calls, "b"))
    assert await waiter == b"answer of b"
    with pytest.raises(RuntimeError):
        await holder
    assert outcomes == ["acquired", "took_over"]
    assert await a.get(LOCK) is None


async def test_a_late_holder_does_not_release_a_lock_it_lost(twins) -> None:
    a, b = twins
    slow = StorageLock(a, ttl=0.2)
    holder = asyncio.create_task(slow.run(KEY, computation(a, [], "a", seconds=0.5)))
    await asyncio.sleep(0.35)  # the holder's lock has expired; another process takes it
    assert await b.add(LOCK, b"the new holder", 5)
    await holder
    assert await b.get(LOCK) == b"the new holder"


async def test_a_live_holder_renews_its_short_lease(twins) -> None:
    """The lease is short (a dead holder blocks others for one lease), but a live one keeps it."""
    a, b = twins
    slow = StorageLock(a, ttl=5.0, lease=0.2)
    holder = asyncio.create_task(slow.run(KEY, computation(a, [], "a", seconds=0.6)))
    await asyncio.sleep(0.45)  # two leases later, the holder still works and still holds it
    assert not await b.add(LOCK, b"intruder", 5)
    await holder
    assert await b.get(LOCK) is None  # released when done


async def test_a_waiter_stops_waiting_after_the_lock_lifetime(twins) -> None:
    a, b = twins
    await a.add(LOCK, b"stuck", 60)  # outlives the 0.1 s the waiter allows it (plus 1 s)
    outcomes: list[str] = []
    result = await StorageLock(b, ttl=0.1, on_outcome=outcomes.append).run(
        KEY, computation(b, [], "b", 0)
    )
    assert result == b"answer of b" and outcomes == ["timed_out"]


# ---- two apps in this process sharing one cache -----------------------------------------------


async def test_two_apps_on_one_cache_share_answers_and_compute_once(start_stack) -> None:
    first = await start_stack(world(), now=NOW)
    second = await start_stack(
        first.world, now=NOW, fake=first.fake, cache_dir=first.settings.cache_dir
    )
    fake = first.fake

    path = f"/api/v4/groups/10/dora/metrics?metric=lead_time_for_changes&{WINDOW}"
    status, body = await first.get(path, RITA)
    assert status == 200
    fake.reset_calls()
    assert await second.get(path, RITA) == (200, body)
    assert fake.data_calls() == []  # the other app's answer, from the shared cache

    fake.faults.latency = 0.05  # every upstream call: the two cold requests overlap
    cold = (
        "/api/v4/groups/10/dora/metrics?metric=time_to_restore_service"
        "&start_date=2023-11-01&end_date=2023-12-31"  # days nobody fetched yet
    )
    answers = await asyncio.gather(first.get(cold, RITA), second.get(cold, RITA))
    assert answers[0] == answers[1] and answers[0][0] == 200
    assert fake.data_calls() and repeated(fake.data_calls()) == {}
    outcomes = Counter()
    for stack in (first, second):
        async with stack.client.get("/metrics") as response:
            outcomes += lock_outcomes(_samples(await response.text()))
    assert outcomes == {"acquired": 2, "shared": 1}  # the first answer, then the cold pair


# ---- two real processes on one Redis ----------------------------------------------------------


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def lock_outcomes(samples: dict) -> Counter[str]:
    """dora_proxy_shared_lock_total by outcome."""
    return Counter(
        {
            dict(labels)["outcome"]: int(count)
            for (name, labels), count in samples.items()
            if name == "dora_proxy_shared_lock_total"
        }
    )


class Replica:
    """`python -m proxy serve` in a subprocess, on its own port and cache directory."""

    def __init__(self, upstream_url: str, cache_url: str, cache_dir: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith("DORA_PROXY_")}
        env["DORA_PROXY_SERVER_SECRET"] = SECRET  # a secret never goes on a command line
        command = [
            sys.executable, "-m", "proxy", "serve",
            "--upstream-url", upstream_url,
            "--cache-url", cache_url,
            "--port", str(self.port),
            "--cache-dir", str(cache_dir),
            "--log-format", "json",
        ]  # fmt: skip
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=Path(__file__).parents[2],
            )

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                async with session.get(f"{self.url}/-/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        pytest.fail(f"proxy on port {self.port} did not start:\n{self.log.read_text()[-3000:]}")

    async def get(self, session: aiohttp.ClientSession, path: str) -> tuple[int, str]:
        async with session.get(f"{self.url}{path}", headers=RITA) as response:
            return response.status, await response.text()

    async def metrics(self, session: aiohttp.ClientSession) -> dict:
        async with session.get(f"{self.url}/metrics") as response:
            assert response.status == 200
            return _samples(await response.text())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def replicas_on_redis(redis_url: str, tmp_path: Path) -> Iterator[Callable]:
    started: list[Replica] = []

    def start(upstream_url: str) -> Replica:
        n = len(started) + 1
        replica = Replica(upstream_url, redis_url, tmp_path / f"cache{n}", tmp_path / f"p{n}.log")
        started.append(replica)
        return replica

    yield start
    for replica in started:
        replica.stop()


async def test_two_proxy_processes_on_one_redis(replicas_on_redis, redis_url: str) -> None:
    fake = FakeGitLab(world())
    upstream_url = await fake.start()
    session = aiohttp.ClientSession()
    try:
        one, two = replicas_on_redis(upstream_url), replicas_on_redis(upstream_url)
        await asyncio.gather(one.wait_ready(session), two.wait_ready(session))

        # An answer one replica computed is the other's cache hit: no data call.
        path = f"/api/v4/projects/20/dora/metrics?metric=deployment_frequency&{WINDOW}"
        status, body = await one.get(session, path)
        assert status == 200, body
        assert fake.data_calls()
        fake.reset_calls()
        assert await two.get(session, path) == (200, body)
        assert fake.data_calls() == []
        assert (await two.metrics(session))[
            ("dora_proxy_cache_hits_total", (("layer", "answer"),))
        ] == 1

        # The same cold question to both at once: one computation, which both answer with.
        fake.faults.latency = 0.1
        cold = f"/api/v4/groups/10/dora/metrics?metric=lead_time_for_changes&{WINDOW}"
        first, second = await asyncio.gather(one.get(session, cold), two.get(session, cold))
        assert first == second and first[0] == 200, first
        assert fake.data_calls() and repeated(fake.data_calls()) == {}
        outcomes = Counter()
        for replica in (one, two):
            outcomes += lock_outcomes(await replica.metrics(session))
        # Replica one computed the first answer; of the cold pair one computed, one waited.
        assert outcomes == {"acquired": 2, "shared": 1}
    finally:
        await session.close()
        await fake.close()
        cleanup = RedisStorage(redis_url)  # the replicas' default namespace
        await cleanup.clear()
        await cleanup.close()
