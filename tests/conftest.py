"""Shared fixtures: a fake GitLab on 127.0.0.1 and the real proxy app in front of it.

`DORA_PROXY_TEST_BACKEND=redis` runs every stack on the session's private redis-server instead
of a disk cache (scripts/test runs the cache-sensitive files a second time so). Each cache
directory a test gives (or gets by default) maps to its own Redis namespace, so stacks share a
cache exactly when they would share one on disk.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer

from proxy.app import STORAGE, create_app
from proxy.cache.base import Storage
from proxy.cache.redis import RedisStorage
from proxy.demo import FakeGitLab
from proxy.demo.world import World
from proxy.service import DoraService
from proxy.settings import Settings
from proxy.web.handlers import SERVICE

pytest_plugins = ["tests.redis_server"]

BACKEND_ENV = "DORA_PROXY_TEST_BACKEND"
# Read once: the autouse fixture below keeps it, but tests may change the environment.
TEST_BACKEND = os.environ.get(BACKEND_ENV, "disk")
if TEST_BACKEND not in ("disk", "redis"):
    raise pytest.UsageError(f"{BACKEND_ENV} must be disk or redis, not {TEST_BACKEND!r}")
KEPT_VARIABLES = ("DORA_PROXY_REQUIRE_REDIS", "DORA_PROXY_REQUIRE_BROWSER", BACKEND_ENV)


def pytest_report_header() -> str:
    return f"cache backend of the stacks: {TEST_BACKEND} ({BACKEND_ENV})"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DORA_PROXY_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("DORA_PROXY_") and name not in KEPT_VARIABLES:
            monkeypatch.delenv(name)
    structlog.reset_defaults()


@pytest.fixture
def world() -> World:
    return World().add_cast()


@dataclass
class Stack:
    """The proxy (a real aiohttp server via TestClient) and the fake GitLab behind it."""

    client: TestClient
    fake: FakeGitLab
    settings: Settings
    clients: list[TestClient] = field(default_factory=list)

    @property
    def world(self) -> World:
        return self.fake.world

    async def get(
        self, path_and_query: str, headers: dict[str, str] | None = None
    ) -> tuple[int, str]:
        from yarl import URL

        response = await self.client.get(URL(path_and_query, encoded=True), headers=headers)
        return response.status, await response.text()

    def app_service(self) -> DoraService:
        """The proxy's service object (its caches), for tests that must reach behind HTTP."""
        return self.client.app[SERVICE]

    @property
    def base_url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")

    @property
    def storage(self) -> Storage:
        """The app's cache storage (disk or Redis, whichever this run uses)."""
        return self.client.server.app[STORAGE]


def test_settings(upstream_url: str, cache_dir: Path, **overrides: Any) -> Settings:
    base = Settings(
        upstream_url=upstream_url,
        cache_dir=cache_dir,
        server_secret="test-server-secret-0123456789",
        upstream_timeout=5.0,
        request_deadline=20.0,
        rate_limit_max_wait=2.0,
        log_format="json",
    )
    return replace(base, **overrides)


def redis_namespace_for(cache_dir: Path) -> str:
    """The Redis namespace standing in for a cache directory (same directory, same cache)."""
    return "test-" + hashlib.sha256(str(cache_dir).encode()).hexdigest()[:16]


@pytest.fixture
async def start_stack(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[..., Awaitable[Stack]]]:
    """`stack = await start_stack(world, time_zone="UTC", now=datetime(...), **settings)`."""
    started: list[tuple[TestClient, FakeGitLab]] = []
    namespaces: dict[str, str] = {}  # Redis namespace -> URL, emptied at the end

    async def start(
        world: World,
        *,
        now: datetime | Callable[[], datetime] | None = None,
        fake: FakeGitLab | None = None,
        cache_dir: Path | None = None,
        **overrides: Any,
    ) -> Stack:
        if fake is None:
            fake = FakeGitLab(world)
            fake.url = await fake.start()  # type: ignore[attr-defined]
            started.append((None, fake))  # type: ignore[arg-type]
        cache_dir = cache_dir or tmp_path / f"cache{len(started)}"
        namespace = None
        if TEST_BACKEND == "redis" and "cache_url" not in overrides:
            overrides["cache_url"] = request.getfixturevalue("redis_url")
            namespace = redis_namespace_for(cache_dir)
            namespaces[namespace] = overrides["cache_url"]
        settings = test_settings(fake.url, cache_dir, **overrides)
        if now is None:
            clock = lambda: datetime.now(UTC)  # noqa: E731
        elif callable(now):
            clock = now
        else:
            clock = lambda: now  # noqa: E731
        client = TestClient(
            TestServer(create_app(settings, clock=clock, redis_namespace=namespace))
        )
        await client.start_server()
        started.append((client, None))  # type: ignore[arg-type]
        return Stack(client=client, fake=fake, settings=settings)

    yield start
    for client, fake in reversed(started):
        if client is not None:
            await client.close()
        if fake is not None:
            await fake.close()
    for namespace, url in namespaces.items():  # leave the session's redis-server empty
        storage = RedisStorage(url, namespace=namespace)
        await storage.clear()
        await storage.close()
