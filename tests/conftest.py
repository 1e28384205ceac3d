"""Shared fixtures: a fake GitLab on 127.0.0.1 and the real proxy app in front of it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer

from proxy.app import create_app
from proxy.fake_gitlab.server import FakeGitLab
from proxy.fake_gitlab.world import World
from proxy.settings import Settings

pytest_plugins = ["tests.redis_server"]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DORA_PROXY_* variable of the developer's shell leaks into a test."""
    for name in list(os.environ):
        if name.startswith("DORA_PROXY_") and name != "DORA_PROXY_REQUIRE_REDIS":
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

    @property
    def base_url(self) -> str:
        return str(self.client.make_url("")).rstrip("/")


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


@pytest.fixture
async def start_stack(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[Stack]]]:
    """`stack = await start_stack(world, time_zone="UTC", now=datetime(...), **settings)`."""
    started: list[tuple[TestClient, FakeGitLab]] = []

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
        settings = test_settings(
            fake.url, cache_dir or tmp_path / f"cache{len(started)}", **overrides
        )
        if now is None:
            clock = lambda: datetime.now(UTC)  # noqa: E731
        elif callable(now):
            clock = now
        else:
            clock = lambda: now  # noqa: E731
        client = TestClient(TestServer(create_app(settings, clock=clock)))
        await client.start_server()
        started.append((client, None))  # type: ignore[arg-type]
        return Stack(client=client, fake=fake, settings=settings)

    yield start
    for client, fake in reversed(started):
        if client is not None:
            await client.close()
        if fake is not None:
            await fake.close()
