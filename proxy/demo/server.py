"""A fake GitLab REST v4 server (real aiohttp, real HTTP) serving a `World`.

Why a real server: python-gitlab talks through `requests`, which in-process mocks cannot reach,
and the proxy's retry, timeout and pagination code must meet real sockets. The fake reproduces
what `upstream-gitlab-api.md` §1, §3 and §10 say GitLab enforces on the eleven endpoints the
proxy may call: visibility (404 to those who may not see), authentication (401), Reporter access
for deployments (403), parameter validation with GitLab's exact bodies, offset pagination with
GitLab's headers, and switchable faults (latency, status bursts, 429, resets, bad JSON, hangs).

It reads the World on every request, so a test can change the world between two calls. Tokens
are recorded in `Call.token` for assertions only; they are never logged or repr'd.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlencode

from aiohttp import web

from proxy.demo.world import (
    GUEST,
    REPORTER,
    Deployment,
    Environment,
    Group,
    Issue,
    Member,
    Project,
    User,
    World,
)
from proxy.facts import format_time, parse_time

API_PREFIX = "/api/v4"
DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100
# GitLab stops counting above this many records: no X-Total, X-Total-Pages or rel="last".
COUNT_LIMIT = 10_000

DATA_KINDS = frozenset(
    {
        "environments",
        "deployments",
        "deployment_mrs",
        "project_issues",
        "group_issues",
        "group_projects",
    }
)

DEPLOYMENT_ORDER = ("id", "iid", "created_at", "updated_at", "finished_at", "ref")
DEPLOYMENT_STATUSES = ("created", "running", "success", "failed", "canceled", "skipped", "blocked")
ISSUE_TYPES = ("issue", "incident", "test_case", "requirement", "task", "ticket")
ISSUE_STATES = ("opened", "closed", "all")
ISSUE_ORDER = (
    "created_at",
    "due_date",
    "label_priority",
    "milestone_due",
    "popularity",
    "priority",
    "relative_position",
    "title",
    "updated_at",
    "weight",
)
ISSUE_SCOPES = ("created_by_me", "assigned_to_me", "all", "created-by-me", "assigned-to-me")
ENVIRONMENT_STATES = ("available", "stopping", "stopped")
PROJECT_ORDER = (
    "id",
    "name",
    "path",
    "created_at",
    "updated_at",
    "last_activity_at",
    "similarity",
    "star_count",
    "storage_size",
    "repository_size",
    "wiki_size",
    "packages_size",
)
MR_STATES = ("opened", "closed", "locked", "merged", "all")
SORTS = ("asc", "desc")
# Grape/dry-types boolean coercion, case-insensitive.
_TRUE = frozenset({"true", "1", "t", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "f", "no", "n", "off"})

_JOB_STATUS = {
    "created": "created",
    "running": "running",
    "success": "success",
    "failed": "failed",
    "canceled": "canceled",
    "skipped": "skipped",
    "blocked": "manual",
}
_REASONS = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    408: "Request Timeout",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
# The request could not be answered because the connection was dropped (Faults.reset_connections).
STATUS_RESET = 0


@dataclass
class Call:
    """One request the fake received. `status` is what was sent (0: connection dropped)."""

    method: str
    path: str
    query: dict[str, str]
    token: str | None = field(repr=False)
    status: int
    kind: str


@dataclass
class Faults:
    """Switchable misbehaviour; a test may change any field between (or during) requests."""

    latency: float = 0.0
    status_codes: list[int] = field(default_factory=list)
    retry_after: str | None = None
    reset_connections: int = 0
    malformed_json: int = 0
    hang: float = 0.0
    only_kinds: set[str] | None = None

    def matches(self, kind: str) -> bool:
        return self.only_kinds is None or kind in self.only_kinds


class _Reply(Exception):
    """Short-circuits a handler with a finished answer (error bodies, mostly)."""

    def __init__(
        self, status: int, body: Any, headers: dict[str, str] | None = None, *, text: bool = False
    ) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.text = text


def _message(status: int, text: str | None = None) -> _Reply:
    return _Reply(status, {"message": text or f"{status} {_REASONS.get(status, 'Error')}"})


def _not_found(what: str = "") -> _Reply:
    return _message(404, f"404 {what} Not Found" if what else "404 Not found")


def _bad_request(reason: str) -> _Reply:
    return _message(400, f"400 Bad request - {reason}")


# ---- route table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Route:
    kind: str
    args: tuple[str, ...]  # URL-decoded dynamic segments, in order


_PATTERNS: tuple[tuple[tuple[str | None, ...], str], ...] = (
    (("user",), "user"),
    (("projects", None), "project"),
    (("projects", None, "members", "all", None), "project_members"),
    (("projects", None, "environments"), "environments"),
    (("projects", None, "deployments"), "deployments"),
    (("projects", None, "deployments", None, "merge_requests"), "deployment_mrs"),
    (("projects", None, "issues"), "project_issues"),
    (("groups", None), "group"),
    (("groups", None, "members", "all", None), "group_members"),
    (("groups", None, "projects"), "group_projects"),
    (("groups", None, "issues"), "group_issues"),
)


def route_for(raw_path: str) -> _Route | None:
    """Match a raw (still percent-encoded) path; `None` for anything the fake does not serve.

    Splitting before decoding keeps `s1%2Fapp` one segment, as GitLab's router does.
    """
    if not raw_path.startswith(API_PREFIX + "/"):
        return None
    segments = raw_path[len(API_PREFIX) + 1 :].split("/")
    for pattern, kind in _PATTERNS:
        if len(pattern) != len(segments):
            continue
        args: list[str] = []
        for expected, actual in zip(pattern, segments, strict=True):
            if expected is None:
                if not actual:
                    break
                args.append(unquote(actual))
            elif expected != actual:
                break
        else:
            return _Route(kind, tuple(args))
    return None


# ---- parameters --------------------------------------------------------------------------------


class _Params:
    """Grape-style parameter checks: collect every error, then answer them joined by `, `."""

    def __init__(self, query: dict[str, str]) -> None:
        self.query = query
        self.errors: list[str] = []
        self.page = 1
        self.per_page = DEFAULT_PER_PAGE

    def choice(self, name: str, allowed: Sequence[str], default: str | None = None) -> str | None:
        value = self.query.get(name)
        if value is None:
            return default
        if value not in allowed:
            self.errors.append(f"{name} does not have a valid value")
            return default
        return value

    def time(self, name: str) -> datetime | None:
        value = self.query.get(name)
        if value is None:
            return None
        try:
            return parse_time(value)
        except ValueError:
            self.errors.append(f"{name} is invalid")
            return None

    def boolean(self, name: str, default: bool) -> bool:
        value = self.query.get(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        self.errors.append(f"{name} is invalid")
        return default

    def integer(self, name: str, default: int) -> int:
        value = self.query.get(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            self.errors.append(f"{name} is invalid")
            return default

    def check(self) -> None:
        if self.errors:
            raise _Reply(400, {"error": ", ".join(self.errors)})


# ---- pagination --------------------------------------------------------------------------------


def pagination_headers(
    base_url: str, query: Sequence[tuple[str, str]], page: int, per_page: int, total: int
) -> dict[str, str]:
    """GitLab's offset-pagination headers for one page of `total` records.

    `base_url` is scheme, host and raw path; `query` the request's parameters in order (page and
    per_page are replaced). Above COUNT_LIMIT records the totals and rel="last" are left out, as
    GitLab does.
    """
    total_pages = max(1, math.ceil(total / per_page))
    counted = total <= COUNT_LIMIT
    next_page = page + 1 if page < total_pages else None
    prev_page = page - 1 if page > 1 else None

    def link(target: int) -> str:
        params = [(k, v) for k, v in query if k not in ("page", "per_page")]
        params += [("page", str(target)), ("per_page", str(per_page))]
        return f"{base_url}?{urlencode(params)}"

    links: list[str] = []
    if prev_page is not None:
        links.append(f'<{link(prev_page)}>; rel="prev"')
    if next_page is not None:
        links.append(f'<{link(next_page)}>; rel="next"')
    links.append(f'<{link(1)}>; rel="first"')
    if counted:
        links.append(f'<{link(total_pages)}>; rel="last"')
    headers = {
        "Link": ", ".join(links),
        "X-Page": str(page),
        "X-Per-Page": str(per_page),
        "X-Next-Page": str(next_page) if next_page else "",
        "X-Prev-Page": str(prev_page) if prev_page else "",
    }
    if counted:
        headers["X-Total"] = str(total)
        headers["X-Total-Pages"] = str(total_pages)
    return headers


def _page_params(params: _Params) -> tuple[int, int]:
    """`page` and `per_page`, declared first on every GitLab list; per_page clamps to 100."""
    page = params.integer("page", 1)
    per_page = params.integer("per_page", DEFAULT_PER_PAGE)
    if page < 1:
        page = 1
    if per_page < 1:
        per_page = DEFAULT_PER_PAGE
    params.page, params.per_page = page, min(per_page, MAX_PER_PAGE)
    return params.page, params.per_page


# ---- rendering ---------------------------------------------------------------------------------


def _time(value: datetime | None) -> str | None:
    return format_time(value) if value is not None else None


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:24].strip("-")
    return slug or "env"


def _sha(seed: int) -> str:
    return hashlib.sha1(f"deployment-{seed}".encode()).hexdigest()


@dataclass
class _Ctx:
    request: web.Request
    query: dict[str, str]
    user: User | None
    base_url: str  # scheme and host the client used, for Link headers


class FakeGitLab:
    """The fake server. Serve `app` with `aiohttp_server(fake.app)`, or call `start()`."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.faults = Faults()
        self.calls: list[Call] = []
        self.app = web.Application()
        from proxy.demo import graphql_routes, passthrough_routes  # (they import this module)

        graphql_routes.register(self)  # before the catch-all below, which would take them
        passthrough_routes.register(self)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner: web.AppRunner | None = None
        self.url: str | None = None  # set by start()
        self._handlers: dict[str, Callable[[_Ctx, tuple[str, ...]], Any]] = {
            "user": self._user,
            "project": self._project,
            "group": self._group,
            "project_members": self._project_members,
            "group_members": self._group_members,
            "group_projects": self._group_projects,
            "environments": self._environments,
            "deployments": self._deployments,
            "deployment_mrs": self._deployment_mrs,
            "project_issues": self._project_issues,
            "group_issues": self._group_issues,
        }

    # ---- public helpers -------------------------------------------------------------------
    def calls_of(self, *kinds: str) -> list[Call]:
        return [call for call in self.calls if call.kind in kinds]

    def data_calls(self) -> list[Call]:
        return [call for call in self.calls if call.kind in DATA_KINDS]

    def reset_calls(self) -> None:
        self.calls.clear()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on a real socket (for `dora-proxy demo`); returns the base URL."""
        # No access log (query strings could carry credentials); hung handlers don't hold close.
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_port = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound_port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- request pipeline -----------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.raw_path.split("?", 1)[0]
        route = route_for(raw_path)
        kind = route.kind if route else "other"
        query = {key: request.query.getall(key)[-1] for key in request.query}
        token = _token_of(request)
        call = Call(
            method=request.method,
            path=unquote(raw_path),
            query=query,
            token=token,
            status=0,
            kind=kind,
        )
        self.calls.append(call)

        faults = self.faults
        if faults.matches(kind):
            if faults.latency > 0:
                await asyncio.sleep(faults.latency)
            if faults.hang > 0:
                await asyncio.sleep(faults.hang)
            if faults.reset_connections > 0:
                faults.reset_connections -= 1
                call.status = STATUS_RESET
                return _drop_connection(request)
            if faults.status_codes:
                status = faults.status_codes.pop(0)
                response = self._injected_status(status)
                call.status = response.status
                return response
            if faults.malformed_json > 0:
                faults.malformed_json -= 1
                call.status = 200
                return web.Response(
                    status=200,
                    text='<html><body>{"id": 1, "truncated',
                    content_type="application/json",
                )

        try:
            response = self._dispatch(request, route, query, token)
        except _Reply as reply:
            response = _render(reply)
        call.status = response.status
        return response

    def _injected_status(self, status: int) -> web.Response:
        if status == 429:
            if self.faults.retry_after is None:
                # GitLab's per-endpoint application limit: JSON body, no rate-limit headers.
                return web.json_response(
                    {
                        "message": {
                            "error": (
                                "This endpoint has been requested too many times. Try again later."
                            )
                        }
                    },
                    status=429,
                )
            # Rack::Attack's instance-wide throttle: plain text plus RateLimit-* headers.
            headers = {
                "Retry-After": self.faults.retry_after,
                "RateLimit-Name": "throttle_authenticated_api",
                "RateLimit-Limit": "60",
                "RateLimit-Observed": "61",
                "RateLimit-Remaining": "0",
            }
            if self.faults.retry_after.isdigit():
                reset = int(time.time()) + int(self.faults.retry_after)
                headers["RateLimit-Reset"] = str(reset)
            return web.Response(status=429, text="Retry later\n", headers=headers)
        reason = _REASONS.get(status, "Error")
        return web.json_response({"message": f"{status} {reason}"}, status=status)

    def _dispatch(
        self, request: web.Request, route: _Route | None, query: dict[str, str], token: str | None
    ) -> web.Response:
        world = self.world
        user: User | None = None
        if token is not None:
            if token in world.scopeless_tokens:
                raise _Reply(
                    403,
                    {
                        "error": "insufficient_scope",
                        "error_description": (
                            "The request requires higher privileges than provided by the "
                            "access token."
                        ),
                        "scope": "api read_api",
                    },
                )
            user = world.user_for_token(token)
            if user is None:
                raise _message(401)
        if route is None:
            raise _not_found()
        if request.method not in ("GET", "HEAD"):
            raise _message(405, "405 Method Not Allowed")
        base = f"{request.scheme}://{request.host}"
        ctx = _Ctx(request=request, query=query, user=user, base_url=base)
        result = self._handlers[route.kind](ctx, route.args)
        if isinstance(result, web.Response):
            return result
        return web.json_response(result)

    # ---- lookups and permissions ----------------------------------------------------------
    def _find_project(self, ref: str) -> Project | None:
        if ref.isdigit():
            return self.world.projects.get(int(ref))
        lowered = ref.lower()
        for project in self.world.projects.values():
            if project.path_with_namespace.lower() == lowered:
                return project
        return None

    def _find_group(self, ref: str) -> Group | None:
        if ref.isdigit():
            return self.world.groups.get(int(ref))
        lowered = ref.lower()
        for group in self.world.groups.values():
            if group.full_path.lower() == lowered:
                return group
        return None

    def _project_sources(self, project: Project) -> set[tuple[str, int]]:
        """Membership sources that give access to a project: itself, its group chain, and the
        groups it is shared with (with their ancestors, whose members are inherited there)."""
        sources = {("project", project.id)}
        sources |= {("group", g.id) for g in self.world.group_ancestors(project.group_id)}
        for shared in project.shared_with_group_ids:
            if shared in self.world.groups:
                sources |= {("group", g.id) for g in self.world.group_ancestors(shared)}
        return sources

    def _group_sources(self, group: Group) -> set[tuple[str, int]]:
        return {("group", g.id) for g in self.world.group_ancestors(group.id)}

    def _members_of(self, user_id: int, sources: set[tuple[str, int]]) -> list[Member]:
        return [
            m
            for m in self.world.members
            if m.user_id == user_id and (m.source_type, m.source_id) in sources
        ]

    def _access(self, user: User | None, sources: set[tuple[str, int]]) -> int:
        if user is None:
            return 0
        levels = [m.access_level for m in self._members_of(user.id, sources) if m.state == "active"]
        return max(levels, default=0)

    def project_access(self, user: User | None, project: Project) -> int:
        """Effective access level (0 = none), direct, inherited or through a shared group."""
        return self._access(user, self._project_sources(project))

    def can_see_project(self, user: User | None, project: Project) -> bool:
        if project.visibility == "public" or (user is not None and user.is_admin):
            return True
        if user is None:
            return False
        if project.visibility == "internal":
            return True
        return self.project_access(user, project) >= GUEST

    def can_see_group(self, user: User | None, group: Group) -> bool:
        if group.visibility == "public" or (user is not None and user.is_admin):
            return True
        if user is None:
            return False
        if group.visibility == "internal":
            return True
        if self._access(user, self._group_sources(group)) > 0:
            return True
        # GitLab shows a private group to members of anything inside it.
        inside = {g.id for g in self.world.group_descendants(group.id)}
        for member in self.world.members:
            if member.user_id != user.id or member.state != "active":
                continue
            if member.source_type == "group" and member.source_id in inside:
                return True
            if member.source_type == "project":
                project = self.world.projects.get(member.source_id)
                if project is not None and project.group_id in inside:
                    return True
        return False

    def _visible_project(self, ctx: _Ctx, ref: str) -> Project:
        project = self._find_project(ref)
        if project is None or not self.can_see_project(ctx.user, project):
            raise _not_found("Project")
        return project

    def _visible_group(self, ctx: _Ctx, ref: str) -> Group:
        group = self._find_group(ref)
        if group is None or not self.can_see_group(ctx.user, group):
            raise _not_found("Group")
        return group

    def _is_reporter(self, user: User | None, project: Project) -> bool:
        if user is None:
            return False
        return user.is_admin or self.project_access(user, project) >= REPORTER

    def _paginate(
        self,
        ctx: _Ctx,
        params: _Params,
        items: Sequence[Any],
        render: Callable[[Any], Any] = lambda item: item,
    ) -> web.Response:
        """One page of `items` (rendered only for that page) with GitLab's headers."""
        page, per_page = params.page, params.per_page
        start = (page - 1) * per_page
        chunk = [render(item) for item in items[start : start + per_page]]
        raw_path = ctx.request.raw_path.split("?", 1)[0]
        headers = pagination_headers(
            f"{ctx.base_url}{raw_path}",
            list(ctx.request.query.items()),
            page,
            per_page,
            len(items),
        )
        return web.json_response(chunk, headers=headers)

    # ---- renderers ------------------------------------------------------------------------
    def _user_json(self, user: User, *, admin_view: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": user.id,
            "username": user.username,
            "name": user.name or user.username,
            "state": user.state,
            "locked": False,
            "avatar_url": None,
            "web_url": f"http://gitlab.example.com/{user.username}",
        }
        if admin_view and user.is_admin:
            body["is_admin"] = True
        return body

    def _namespace_json(self, group: Group) -> dict[str, Any]:
        return {
            "id": group.id,
            "name": group.path,
            "path": group.path,
            "kind": "group",
            "full_path": group.full_path,
            "parent_id": group.parent_id,
            "web_url": f"http://gitlab.example.com/groups/{group.full_path}",
        }

    def _project_json(self, project: Project, *, simple: bool = False) -> dict[str, Any]:
        group = self.world.groups[project.group_id]
        body: dict[str, Any] = {
            "id": project.id,
            "description": None,
            "name": project.path,
            "name_with_namespace": project.path_with_namespace.replace("/", " / "),
            "path": project.path,
            "path_with_namespace": project.path_with_namespace,
            "default_branch": "main",
            "web_url": f"http://gitlab.example.com/{project.path_with_namespace}",
            "namespace": self._namespace_json(group),
        }
        if simple:
            # GitLab's BasicProjectDetails: no visibility, no archived.
            return body
        body.update(
            {
                "visibility": project.visibility,
                "archived": project.archived,
                "issues_enabled": project.issues_enabled,
                "jobs_enabled": True,
                "empty_repo": False,
                "shared_with_groups": [
                    {
                        "group_id": gid,
                        "group_name": self.world.groups[gid].path,
                        "group_full_path": self.world.groups[gid].full_path,
                        "group_access_level": REPORTER,
                        "expires_at": None,
                    }
                    for gid in project.shared_with_group_ids
                    if gid in self.world.groups
                ],
            }
        )
        return body

    def _group_json(self, group: Group) -> dict[str, Any]:
        return {
            "id": group.id,
            "name": group.path,
            "path": group.path,
            "full_name": group.full_path.replace("/", " / "),
            "full_path": group.full_path,
            "description": "",
            "visibility": group.visibility,
            "parent_id": group.parent_id,
            "web_url": f"http://gitlab.example.com/groups/{group.full_path}",
        }

    def _environment_json(self, env: Environment, *, with_tier: bool = True) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": env.id,
            "name": env.name,
            "slug": _slug(env.name),
            "external_url": None,
        }
        if with_tier:
            body["tier"] = env.tier
            body["state"] = env.state
        return body

    def _deployment_json(self, dep: Deployment) -> dict[str, Any]:
        env = self.world.environments.get(dep.environment_id)
        env_json = (
            self._environment_json(env, with_tier=False)
            if env is not None
            else {"id": dep.environment_id, "name": "unknown", "slug": "unknown"}
        )
        sha = _sha(dep.id)
        deployable: dict[str, Any] | None = None
        if not dep.api:
            started = None if dep.status == "created" else dep.created_at + timedelta(minutes=1)
            finished = dep.deployable_finished_at
            duration = (
                (finished - started).total_seconds() if started and finished is not None else None
            )
            deployable = {
                "id": 5_000_000 + dep.id,
                "status": _JOB_STATUS.get(dep.status, dep.status),
                "stage": "deploy",
                "name": "deploy",
                "ref": "main",
                "tag": False,
                "coverage": None,
                "allow_failure": False,
                "created_at": format_time(dep.created_at),
                "started_at": _time(started),
                "finished_at": _time(finished),
                "duration": duration,
                "queued_duration": 1.0,
                "pipeline": {
                    "id": 4_000_000 + dep.id,
                    "iid": dep.iid,
                    "project_id": dep.project_id,
                    "sha": sha,
                    "ref": "main",
                    "status": _JOB_STATUS.get(dep.status, dep.status),
                    "source": "push",
                    "created_at": format_time(dep.created_at),
                    "updated_at": format_time(dep.updated_at),
                },
                "web_url": f"http://gitlab.example.com/-/jobs/{5_000_000 + dep.id}",
            }
        return {
            "id": dep.id,
            "iid": dep.iid,
            "ref": "main",
            "sha": sha,
            "created_at": format_time(dep.created_at),
            "updated_at": format_time(dep.updated_at),
            "status": dep.status,
            "user": None,
            "environment": env_json,
            "deployable": deployable,
        }

    def _issue_json(self, issue: Issue) -> dict[str, Any]:
        updated = issue.updated_at or max(
            t for t in (issue.created_at, issue.closed_at) if t is not None
        )
        project = self.world.projects.get(issue.project_id)
        path = project.path_with_namespace if project else str(issue.project_id)
        return {
            "id": issue.id,
            "iid": issue.iid,
            "project_id": issue.project_id,
            "title": issue.title or f"{issue.issue_type} {issue.id}",
            "description": None,
            "state": issue.state,
            "created_at": format_time(issue.created_at),
            "updated_at": format_time(updated),
            "closed_at": _time(issue.closed_at),
            "closed_by": None,
            "labels": [],
            "confidential": issue.confidential,
            "issue_type": issue.issue_type,
            "type": issue.issue_type.upper(),
            "web_url": f"http://gitlab.example.com/{path}/-/issues/{issue.iid}",
        }

    # ---- endpoints ------------------------------------------------------------------------
    def _user(self, ctx: _Ctx, args: tuple[str, ...]) -> Any:
        if ctx.user is None:
            raise _message(401)
        return self._user_json(ctx.user, admin_view=True)

    def _project(self, ctx: _Ctx, args: tuple[str, ...]) -> Any:
        params = _Params(ctx.query)
        params.boolean("statistics", False)
        params.boolean("license", False)
        params.check()
        project = self._visible_project(ctx, args[0])
        body = self._project_json(project)
        user = ctx.user
        project_level = self._access(user, {("project", project.id)}) if user is not None else 0
        group_level = (
            self._access(
                user, {("group", g.id) for g in self.world.group_ancestors(project.group_id)}
            )
            if user is not None
            else 0
        )
        body["permissions"] = {
            "project_access": (
                {"access_level": project_level, "notification_level": 3} if project_level else None
            ),
            "group_access": (
                {"access_level": group_level, "notification_level": 3} if group_level else None
            ),
        }
        return body

    def _group(self, ctx: _Ctx, args: tuple[str, ...]) -> Any:
        params = _Params(ctx.query)
        with_projects = params.boolean("with_projects", True)
        params.check()
        group = self._visible_group(ctx, args[0])
        body = self._group_json(group)
        if with_projects:
            body["projects"] = [
                self._project_json(p)
                for p in sorted(self.world.projects.values(), key=lambda p: p.id)
                if p.group_id == group.id and self.can_see_project(ctx.user, p)
            ]
            body["shared_projects"] = [
                self._project_json(p)
                for p in sorted(self.world.projects.values(), key=lambda p: p.id)
                if group.id in p.shared_with_group_ids and self.can_see_project(ctx.user, p)
            ]
        return body

    def _member_json(self, members: list[Member]) -> dict[str, Any]:
        best = max(members, key=lambda m: (m.access_level, m.state == "active"))
        user = self.world.users.get(best.user_id)
        return {
            "id": best.user_id,
            "username": user.username if user else f"user{best.user_id}",
            "name": (user.name or user.username) if user else "",
            "state": user.state if user else "active",
            "avatar_url": None,
            "web_url": f"http://gitlab.example.com/{user.username if user else best.user_id}",
            "access_level": best.access_level,
            "expires_at": best.expires_at,
            "membership_state": best.state,
        }

    def _user_id_arg(self, raw: str) -> int:
        if not raw.isdigit():
            raise _Reply(400, {"error": "user_id is invalid"})
        return int(raw)

    def _project_members(self, ctx: _Ctx, args: tuple[str, ...]) -> Any:
        user_id = self._user_id_arg(args[1])
        project = self._visible_project(ctx, args[0])
        members = self._members_of(user_id, self._project_sources(project))
        if not members:
            raise _not_found()
        return self._member_json(members)

    def _group_members(self, ctx: _Ctx, args: tuple[str, ...]) -> Any:
        user_id = self._user_id_arg(args[1])
        group = self._visible_group(ctx, args[0])
        members = self._members_of(user_id, self._group_sources(group))
        if not members:
            raise _not_found()
        return self._member_json(members)

    def _group_projects(self, ctx: _Ctx, args: tuple[str, ...]) -> Any:
        params = _Params(ctx.query)
        _page_params(params)
        include_subgroups = params.boolean("include_subgroups", False)
        with_shared = params.boolean("with_shared", True)
        archived = params.boolean("archived", False) if "archived" in ctx.query else None
        simple = params.boolean("simple", False)
        order_by = params.choice("order_by", PROJECT_ORDER, "created_at")
        sort = params.choice("sort", SORTS, "desc")
        params.check()
        group = self._visible_group(ctx, args[0])
        owners = (
            {g.id for g in self.world.group_descendants(group.id)}
            if include_subgroups
            else {group.id}
        )
        projects = [p for p in self.world.projects.values() if p.group_id in owners]
        if with_shared:
            projects += [
                p
                for p in self.world.projects.values()
                if group.id in p.shared_with_group_ids and p.group_id not in owners
            ]
        projects = [p for p in projects if self.can_see_project(ctx.user, p)]
        if archived is not None:
            projects = [p for p in projects if p.archived == archived]
        by_path = order_by in ("name", "path")  # created_at and the rest follow id order
        projects.sort(key=lambda p: (p.path, p.id) if by_path else (p.id,), reverse=sort == "desc")
        return self._paginate(ctx, params, projects, lambda p: self._project_json(p, simple=simple))

    def _require_user(self, ctx: _Ctx) -> User:
        if ctx.user is None:
            raise _message(401)
        return ctx.user

    def _environments(self, ctx: _Ctx, args: tuple[str, ...]) -> Any:
        user = self._require_user(ctx)
        params = _Params(ctx.query)
        _page_params(params)
        name = ctx.query.get("name")
        search = ctx.query.get("search")
        states = ctx.query.get("states")
        if states is not None and states not in ENVIRONMENT_STATES:
            params.errors.append("states does not have a valid value")
        if name is not None and search is not None:
            params.errors.append("name, search are mutually exclusive")
        params.check()
        if search is not None and len(search) < 3:
            raise _bad_request("Search query is less than 3 characters")
        project = self._visible_project(ctx, args[0])
        if not self._is_reporter(user, project):
            raise _message(403)
        envs = sorted(
            (e for e in self.world.environments.values() if e.project_id == project.id),
            key=lambda e: e.id,
        )
        if states is not None:
            envs = [e for e in envs if e.state == states]
        if name is not None:
            envs = [e for e in envs if e.name == name]
        if search is not None:
            envs = [e for e in envs if search in e.name]
        return self._paginate(ctx, params, envs, self._environment_json)

    def _deployments(self, ctx: _Ctx, args: tuple[str, ...]) -> Any:
        user = self._require_user(ctx)
        params = _Params(ctx.query)
        _page_params(params)
        order_by = params.choice("order_by", DEPLOYMENT_ORDER, "id")
        sort = params.choice("sort", SORTS, "asc")
        updated_after = params.time("updated_after")
        updated_before = params.time("updated_before")
        finished_after = params.time("finished_after")
        finished_before = params.time("finished_before")
        environment = ctx.query.get("environment")
        status = params.choice("status", DEPLOYMENT_STATUSES)
        params.check()
        project = self._visible_project(ctx, args[0])
        if not self._is_reporter(user, project):
            raise _message(403)

        by_updated = "updated_after" in ctx.query or "updated_before" in ctx.query
        by_finished = "finished_after" in ctx.query or "finished_before" in ctx.query
        if by_updated and by_finished:
            raise _bad_request(
                "Both `updated_at` filter and `finished_at` filter can not be specified"
            )
        if by_finished != (order_by == "finished_at"):
            raise _bad_request("`finished_at` filter and `finished_at` sorting must be paired")
        if (by_finished or order_by == "finished_at") and status != "success":
            raise _bad_request(
                "`finished_at` filter must be combined with `success` status filter."
            )
        if by_updated:
            order_by = "updated_at"  # GitLab silently forces this order.

        deps = [d for d in self.world.deployments.values() if d.project_id == project.id]
        if status is not None:
            deps = [d for d in deps if d.status == status]
        if environment is not None:
            env_ids = {
                e.id
                for e in self.world.environments.values()
                if e.project_id == project.id and e.name == environment
            }
            deps = [d for d in deps if d.environment_id in env_ids]
        if updated_after is not None:
            deps = [d for d in deps if d.updated_at >= updated_after]
        if updated_before is not None:
            deps = [d for d in deps if d.updated_at <= updated_before]
        if finished_after is not None:
            deps = [
                d
                for d in deps
                if d.internal_finished_at is not None and d.internal_finished_at >= finished_after
            ]
        if finished_before is not None:
            deps = [
                d
                for d in deps
                if d.internal_finished_at is not None and d.internal_finished_at < finished_before
            ]
        deps.sort(key=_deployment_key(order_by or "id"), reverse=sort == "desc")
        return self._paginate(ctx, params, deps, self._deployment_json)

    def _deployment_mrs(self, ctx: _Ctx, args: tuple[str, ...]) -> Any:
        user = self._require_user(ctx)
        params = _Params(ctx.query)
        _page_params(params)
        if not args[1].isdigit():
            params.errors.append("deployment_id is invalid")
        state = params.choice("state", MR_STATES, "all")
        sort = params.choice("sort", SORTS, "desc")
        params.check()
        project = self._visible_project(ctx, args[0])
        if not self._is_reporter(user, project):
            raise _message(403)
        dep = self.world.deployments.get(int(args[1]))
        if dep is None or dep.project_id != project.id:
            raise _not_found()
        mrs = [
            self.world.merge_requests[i]
            for i in dep.merge_request_ids
            if i in self.world.merge_requests
        ]
        if state != "all":
            mrs = [mr for mr in mrs if mr.state == state]
        mrs.sort(key=lambda mr: mr.id, reverse=sort == "desc")
        body = [
            {
                "id": mr.id,
                "iid": mr.iid,
                "project_id": mr.project_id,
                "title": f"Change {mr.iid}",
                "state": mr.state,
                "merged_at": _time(mr.merged_at),
                "target_branch": "main",
                "source_branch": f"feature-{mr.iid}",
                "web_url": (
                    f"http://gitlab.example.com/{project.path_with_namespace}"
                    f"/-/merge_requests/{mr.iid}"
                ),
            }
            for mr in mrs
        ]
        return self._paginate(ctx, params, body)

    def _issue_filters(self, ctx: _Ctx) -> tuple[_Params, Callable[[list[Issue]], list[Issue]]]:
        """Parse the issue-list parameters shared by project and group issues."""
        params = _Params(ctx.query)
        _page_params(params)
        issue_type = params.choice("issue_type", ISSUE_TYPES)
        state = params.choice("state", ISSUE_STATES, "all")
        created_after = params.time("created_after")
        created_before = params.time("created_before")
        updated_after = params.time("updated_after")
        updated_before = params.time("updated_before")
        order_by = params.choice("order_by", ISSUE_ORDER, "created_at")
        sort = params.choice("sort", SORTS, "desc")
        scope = params.choice("scope", ISSUE_SCOPES, "all")

        def apply(issues: list[Issue]) -> list[Issue]:
            if scope != "all":
                return []  # the fake's issues have no author or assignee
            result = issues
            if issue_type is not None:
                result = [i for i in result if i.issue_type == issue_type]
            if state != "all":
                result = [i for i in result if i.state == state]
            if created_after is not None:
                result = [i for i in result if i.created_at >= created_after]
            if created_before is not None:
                result = [i for i in result if i.created_at <= created_before]
            if updated_after is not None:
                result = [i for i in result if _updated(i) >= updated_after]
            if updated_before is not None:
                result = [i for i in result if _updated(i) <= updated_before]
            key: Callable[[Issue], Any]
            if order_by == "updated_at":
                key = lambda i: (_updated(i), i.id)  # noqa: E731
            elif order_by == "title":
                key = lambda i: (i.title, i.id)  # noqa: E731
            else:
                key = lambda i: (i.created_at, i.id)  # noqa: E731
            return sorted(result, key=key, reverse=sort == "desc")

        return params, apply

    def _readable_issues(self, user: User | None, project: Project) -> list[Issue]:
        reporter = self._is_reporter(user, project)
        return [
            i
            for i in self.world.issues.values()
            if i.project_id == project.id and (reporter or not i.confidential)
        ]

    def _project_issues(self, ctx: _Ctx, args: tuple[str, ...]) -> Any:
        params, apply = self._issue_filters(ctx)
        params.check()
        project = self._visible_project(ctx, args[0])
        if not project.issues_enabled:
            raise _message(403)
        issues = apply(self._readable_issues(ctx.user, project))
        return self._paginate(ctx, params, issues, self._issue_json)

    def _group_issues(self, ctx: _Ctx, args: tuple[str, ...]) -> Any:
        params, apply = self._issue_filters(ctx)
        non_archived = params.boolean("non_archived", True)
        params.check()
        group = self._visible_group(ctx, args[0])
        inside = {g.id for g in self.world.group_descendants(group.id)}
        issues: list[Issue] = []
        for project in self.world.projects.values():
            if project.group_id not in inside or not project.issues_enabled:
                continue
            if non_archived and project.archived:
                continue
            if not self.can_see_project(ctx.user, project):
                continue
            issues.extend(self._readable_issues(ctx.user, project))
        return self._paginate(ctx, params, apply(issues), self._issue_json)


def _updated(issue: Issue) -> datetime:
    return issue.updated_at or max(t for t in (issue.created_at, issue.closed_at) if t is not None)


def _deployment_key(order_by: str) -> Callable[[Deployment], Any]:
    def key(dep: Deployment) -> Any:
        value: Any
        if order_by == "finished_at":
            value = dep.internal_finished_at
        elif order_by == "ref":
            value = "main"
        else:
            value = getattr(dep, order_by)
        return (value is None, value if value is not None else 0, dep.id)

    return key


def _token_of(request: web.Request) -> str | None:
    """PRIVATE-TOKEN wins over `Authorization: Bearer`; anything else is anonymous."""
    private = request.headers.get("PRIVATE-TOKEN")
    if private:
        return private
    auth = request.headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def _render(reply: _Reply) -> web.Response:
    if reply.text:
        return web.Response(status=reply.status, text=str(reply.body), headers=reply.headers)
    return web.json_response(reply.body, status=reply.status, headers=reply.headers)


def _drop_connection(request: web.Request) -> web.Response:
    """Close the socket without answering; the client sees a reset / remote disconnect."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    # aiohttp cannot write to the aborted transport; the returned response is discarded.
    return web.Response(status=500)


__all__ = [
    "COUNT_LIMIT",
    "DATA_KINDS",
    "Call",
    "FakeGitLab",
    "Faults",
    "pagination_headers",
    "route_for",
]
