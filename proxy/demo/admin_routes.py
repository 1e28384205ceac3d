"""The fake GitLab's administrative endpoints: `GET /version` and project and group webhooks.

They serve `dora-proxy check` and `dora-proxy webhooks` in tests and in the demo. What GitLab
enforces is reproduced: a token is needed (401), a token without `api`/`read_api` scope gets
403 `insufficient_scope`, and so does a `read_api` token on a write; hooks need the Maintainer
role (403 otherwise, 404 when the container is not visible); group hooks exist only on Premium
and Ultimate (`AdminState.group_hooks_licensed = False` makes them 404 as on GitLab Free); a
hook's token is write-only (never in an answer).

The server (server.py) routes the kinds in `KINDS` here; its call log counts them like any other.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from proxy.demo import access

if TYPE_CHECKING:  # server.py imports this module; the reverse import is for types only
    from proxy.demo.server import FakeGitLab
    from proxy.demo.world import User

MAINTAINER = 40
PATTERNS: tuple[tuple[tuple[str | None, ...], str], ...] = (
    (("version",), "version"),
    (("projects", None, "hooks"), "project_hooks"),
    (("projects", None, "hooks", None), "project_hook"),
    (("groups", None, "hooks"), "group_hooks"),
    (("groups", None, "hooks", None), "group_hook"),
)
KINDS = frozenset(kind for _, kind in PATTERNS)
HOOK_EVENTS = (
    "push_events",
    "tag_push_events",
    "merge_requests_events",
    "issues_events",
    "confidential_issues_events",
    "note_events",
    "confidential_note_events",
    "job_events",
    "pipeline_events",
    "wiki_page_events",
    "deployment_events",
    "releases_events",
)
_MAX_HOOKS = 100  # GitLab's default per-container limit; also bounds the fake's memory
_SCOPE_BODY = {
    "error": "insufficient_scope",
    "error_description": (
        "The request requires higher privileges than provided by the access token."
    ),
}


@dataclass
class AdminState:
    """What a test may set or read: the version, token scopes, licence, and the hooks."""

    version: str = "17.5.1-ee"
    revision: str = "0f0a4c2d8b1"
    # Tokens whose only scope is read_api: reads work, writes get 403 insufficient_scope.
    read_only_tokens: set[str] = field(default_factory=set)
    group_hooks_licensed: bool = True
    hooks: dict[int, dict[str, Any]] = field(default_factory=dict)
    hook_tokens: dict[int, str] = field(default_factory=dict, repr=False)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))


def _message(status: int, text: str) -> web.Response:
    return web.json_response({"message": text}, status=status)


async def dispatch(
    fake: FakeGitLab, request: web.Request, kind: str, args: tuple[str, ...], token: str | None
) -> web.Response:
    state: AdminState = fake.admin
    world = fake.world
    if token is not None and token in world.scopeless_tokens:
        return web.json_response(_SCOPE_BODY | {"scope": "api read_api"}, status=403)
    user = world.user_for_token(token)
    if user is None:
        return _message(401, "401 Unauthorized")
    if request.method not in ("GET", "HEAD") and token in state.read_only_tokens:
        return web.json_response(_SCOPE_BODY | {"scope": "api"}, status=403)
    if kind == "version":
        if request.method not in ("GET", "HEAD"):
            return _message(405, "405 Method Not Allowed")
        return web.json_response({"version": state.version, "revision": state.revision})
    container = "project" if kind.startswith("project") else "group"
    owner = _owner(fake, user, container, args[0])
    if isinstance(owner, web.Response):
        return owner
    if container == "group" and not state.group_hooks_licensed:
        return _message(404, "404 Not Found")  # an EE route: absent on GitLab Free
    hook_id = int(args[1]) if len(args) > 1 and args[1].isdigit() else None
    if len(args) > 1 and (hook_id is None or _hook_of(state, container, owner, hook_id) is None):
        return _message(404, "404 Not found")
    if hook_id is None:
        if request.method in ("GET", "HEAD"):
            return web.json_response(
                [h for h in state.hooks.values() if h.get(f"{container}_id") == owner]
            )
        if request.method == "POST":
            return await _create(state, request, container, owner)
    else:
        if request.method in ("GET", "HEAD"):
            return web.json_response(state.hooks[hook_id])
        if request.method == "PUT":
            return await _update(state, request, hook_id)
        if request.method == "DELETE":
            del state.hooks[hook_id]
            state.hook_tokens.pop(hook_id, None)
            return web.Response(status=204)
    return _message(405, "405 Method Not Allowed")


def _owner(fake: FakeGitLab, user: User, container: str, ref: str) -> int | web.Response:
    """The container id if the user may manage its hooks, else GitLab's 404 or 403."""
    world = fake.world
    if container == "project":
        project = access.find_project(world, ref)
        if project is None or not access.can_see_project(world, user, project):
            return _message(404, "404 Project Not Found")
        level = access.project_access(world, user, project)
        owner_id = project.id
    else:
        group = access.find_group(world, ref)
        if group is None or not access.can_see_group(world, user, group):
            return _message(404, "404 Group Not Found")
        level = access.access(world, user, access.group_sources(world, group))
        owner_id = group.id
    if not user.is_admin and level < MAINTAINER:
        return _message(403, "403 Forbidden")
    return owner_id


def _hook_of(state: AdminState, container: str, owner: int, hook_id: int) -> dict | None:
    hook = state.hooks.get(hook_id)
    return hook if hook is not None and hook.get(f"{container}_id") == owner else None


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    if request.content_type == "application/json":
        try:
            data = json.loads(await request.read() or b"{}")
        except ValueError:
            return _message(400, "400 Bad request - invalid JSON")
        return data if isinstance(data, dict) else {}
    return dict(await request.post())


def _flag(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def _apply(hook: dict[str, Any], data: dict[str, Any]) -> None:
    for key in (*HOOK_EVENTS, "enable_ssl_verification"):
        if key in data:
            hook[key] = _flag(data[key])


async def _create(
    state: AdminState, request: web.Request, container: str, owner: int
) -> web.Response:
    data = await _body(request)
    if isinstance(data, web.Response):
        return data
    if not data.get("url"):
        return web.json_response({"error": "url is missing"}, status=400)
    if sum(1 for h in state.hooks.values() if h.get(f"{container}_id") == owner) >= _MAX_HOOKS:
        return _message(422, f"Maximum number of {container} hooks ({_MAX_HOOKS}) exceeded")
    hook_id = next(state._ids)
    hook: dict[str, Any] = {
        "id": hook_id,
        "url": str(data["url"]),
        f"{container}_id": owner,
        "created_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "enable_ssl_verification": True,
        **dict.fromkeys(HOOK_EVENTS, False),
        "push_events": True,  # GitLab's default
    }
    _apply(hook, data)
    state.hooks[hook_id] = hook
    if data.get("token"):
        state.hook_tokens[hook_id] = str(data["token"])
    return web.json_response(hook, status=201)


async def _update(state: AdminState, request: web.Request, hook_id: int) -> web.Response:
    data = await _body(request)
    if isinstance(data, web.Response):
        return data
    hook = state.hooks[hook_id]
    if "url" in data:
        if not data["url"]:
            return web.json_response({"error": "url is empty"}, status=400)
        hook["url"] = str(data["url"])
    _apply(hook, data)
    if "token" in data:
        state.hook_tokens[hook_id] = str(data["token"] or "")
    return web.json_response(hook)
