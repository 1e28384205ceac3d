"""The fake GitLab's /version and hook endpoints answer as GitLab does (status codes, bodies),
and a hook's token is write-only: stored for assertions, never in an answer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from proxy.demo.server import FakeGitLab
from tests.web.test_setup_cli import SCOPELESS, setup_world


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeGitLab, aiohttp.ClientSession]]:
    gitlab = FakeGitLab(setup_world())
    await gitlab.start()
    async with aiohttp.ClientSession(base_url=f"{gitlab.url}") as session:
        yield gitlab, session
    await gitlab.close()


def _as(token: str) -> dict[str, str]:
    return {"PRIVATE-TOKEN": token}


async def test_version_needs_a_token_with_scope(fake) -> None:
    gitlab, session = fake
    async with session.get("/api/v4/version") as response:
        assert (response.status, await response.json()) == (401, {"message": "401 Unauthorized"})
    async with session.get("/api/v4/version", headers=_as(SCOPELESS)) as response:
        assert response.status == 403
        assert (await response.json())["error"] == "insufficient_scope"
    async with session.get("/api/v4/version", headers=_as("tok-gus")) as response:
        assert response.status == 200
        assert await response.json() == {"version": "17.5.1-ee", "revision": "0f0a4c2d8b1"}
    assert [c.kind for c in gitlab.calls] == ["version"] * 3


async def test_hooks_need_maintainer_and_hide_their_token(fake) -> None:
    gitlab, session = fake
    body = {"url": "https://p.example/-/webhooks/gitlab", "token": "t0k", "issues_events": True}
    async with session.post("/api/v4/projects/20/hooks", json=body, headers=_as("tok-rita")) as r:
        assert (r.status, await r.json()) == (403, {"message": "403 Forbidden"})
    async with session.post("/api/v4/projects/20/hooks", json=body, headers=_as("tok-nina")) as r:
        assert (r.status, await r.json()) == (404, {"message": "404 Project Not Found"})
    async with session.post("/api/v4/projects/20/hooks", json=body, headers=_as("tok-maria")) as r:
        assert r.status == 201
        created = await r.json()
    assert created["push_events"] is True and created["issues_events"] is True
    assert "token" not in created and "t0k" not in str(created)
    assert gitlab.admin.hook_tokens[created["id"]] == "t0k"
    path = f"/api/v4/projects/acme%2Fweb/hooks/{created['id']}"
    async with session.put(path, json={"push_events": False}, headers=_as("tok-maria")) as r:
        assert r.status == 200 and (await r.json())["push_events"] is False
    async with session.put("/api/v4/projects/20/hooks/999", json={}, headers=_as("tok-maria")) as r:
        assert r.status == 404
    async with session.post("/api/v4/projects/20/hooks", json={}, headers=_as("tok-maria")) as r:
        assert (r.status, await r.json()) == (400, {"error": "url is missing"})
    async with session.get("/api/v4/groups/acme/hooks", headers=_as("tok-maria")) as r:
        assert (r.status, await r.json()) == (200, [])  # project hooks are not group hooks
