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
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from proxy.demo import access, admin_routes
from proxy.demo.faults import (
    STATUS_RESET,
    Call,
    Faults,
    broken_pagination,
    drop_connection,
    injected_status,
)
from proxy.demo.pagination import pagination_headers
from proxy.demo.params import (
    DEPLOYMENT_ORDER,
    DEPLOYMENT_STATUSES,
    ENVIRONMENT_STATES,
    ISSUE_ORDER,
    ISSUE_SCOPES,
    ISSUE_STATES,
    ISSUE_TYPES,
    MR_STATES,
    PROJECT_ORDER,
    SORTS,
    Params,
    page_params,
)
from proxy.demo.replies import Reply, bad_request, message, not_found, render
from proxy.demo.routes import DATA_KINDS, Route, route_for
from proxy.demo.times import format_time
from proxy.demo.world import (
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

_JOB_STATUS = {
    "created": "created",
    "running": "running",
    "success": "success",
    "failed": "failed",
    "canceled": "canceled",
    "skipped": "skipped",
    "blocked": "manual",
}

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
        self.admin = admin_routes.AdminState()
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
                return drop_connection(request)
            if faults.status_codes:
                status = faults.status_codes.pop(0)
                response = injected_status(faults, status)
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
            if route is not None and route.kind in admin_routes.KINDS:
                response = await admin_routes.dispatch(self, request, kind, route.args, token)
            else:
                response = self._dispatch(request, route, query, token)
        except Reply as reply:
            response = render(reply)
        if faults.pagination is not None and faults.matches(kind):
            broken_pagination(faults, request, response)
        if (
            faults.body is not None
            and faults.matches(kind)
            and response.status == 200
            and isinstance(response.body, bytes)
        ):
            response.body = faults.body(response.body)
        call.status = response.status
        return response

    def _dispatch(
        self, request: web.Request, route: Route | None, query: dict[str, str], token: str | None
    ) -> web.Response:
        world = self.world
        user: User | None = None
        if token is not None:
            if token in world.scopeless_tokens:
                raise Reply(
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
                raise message(401)
        if route is None:
            raise not_found()
        if request.method not in ("GET", "HEAD"):
            raise message(405, "405 Method Not Allowed")
        base = f"{request.scheme}://{request.host}"
        ctx = _Ctx(request=request, query=query, user=user, base_url=base)
        result = self._handlers[route.kind](ctx, route.args)
        if isinstance(result, web.Response):
            return result
        return web.json_response(result)

    def _visible_project(self, ctx: _Ctx, ref: str) -> Project:
        project = access.find_project(self.world, ref)
        if project is None or not access.can_see_project(self.world, ctx.user, project):
            raise not_found("Project")
        return project

    def _visible_group(self, ctx: _Ctx, ref: str) -> Group:
        group = access.find_group(self.world, ref)
        if group is None or not access.can_see_group(self.world, ctx.user, group):
            raise not_found("Group")
        return group

    def _paginate(
        self,
        ctx: _Ctx,
        params: Params,
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
            raise message(401)
        return self._user_json(ctx.user, admin_view=True)

    def _project(self, ctx: _Ctx, args: tuple[str, ...]) -> Any:
        params = Params(ctx.query)
        params.boolean("statistics", False)
        params.boolean("license", False)
        params.check()
        project = self._visible_project(ctx, args[0])
        body = self._project_json(project)
        user = ctx.user
        project_level = (
            access.access(self.world, user, {("project", project.id)}) if user is not None else 0
        )
        group_level = (
            access.access(
                self.world,
                user,
                {("group", g.id) for g in self.world.group_ancestors(project.group_id)},
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
        params = Params(ctx.query)
        with_projects = params.boolean("with_projects", True)
        params.check()
        group = self._visible_group(ctx, args[0])
        body = self._group_json(group)
        if with_projects:
            body["projects"] = [
                self._project_json(p)
                for p in sorted(self.world.projects.values(), key=lambda p: p.id)
                if p.group_id == group.id and access.can_see_project(self.world, ctx.user, p)
            ]
            body["shared_projects"] = [
                self._project_json(p)
                for p in sorted(self.world.projects.values(), key=lambda p: p.id)
                if group.id in p.shared_with_group_ids
                and access.can_see_project(self.world, ctx.user, p)
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
            raise Reply(400, {"error": "user_id is invalid"})
        return int(raw)

    def _project_members(self, ctx: _Ctx, args: tuple[str, ...]) -> Any:
        user_id = self._user_id_arg(args[1])
        project = self._visible_project(ctx, args[0])
        members = access.members_of(
            self.world, user_id, access.project_sources(self.world, project)
        )
        if not members:
            raise not_found()
        return self._member_json(members)

    def _group_members(self, ctx: _Ctx, args: tuple[str, ...]) -> Any:
        user_id = self._user_id_arg(args[1])
        group = self._visible_group(ctx, args[0])
        members = access.members_of(self.world, user_id, access.group_sources(self.world, group))
        if not members:
            raise not_found()
        return self._member_json(members)

    def _group_projects(self, ctx: _Ctx, args: tuple[str, ...]) -> Any:
        params = Params(ctx.query)
        page_params(params)
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
        projects = [p for p in projects if access.can_see_project(self.world, ctx.user, p)]
        if archived is not None:
            projects = [p for p in projects if p.archived == archived]
        by_path = order_by in ("name", "path")  # created_at and the rest follow id order
        projects.sort(key=lambda p: (p.path, p.id) if by_path else (p.id,), reverse=sort == "desc")
        return self._paginate(ctx, params, projects, lambda p: self._project_json(p, simple=simple))

    def _require_user(self, ctx: _Ctx) -> User:
        if ctx.user is None:
            raise message(401)
        return ctx.user

    def _environments(self, ctx: _Ctx, args: tuple[str, ...]) -> Any:
        user = self._require_user(ctx)
        params = Params(ctx.query)
        page_params(params)
        name = ctx.query.get("name")
        search = ctx.query.get("search")
        states = ctx.query.get("states")
        if states is not None and states not in ENVIRONMENT_STATES:
            params.errors.append("states does not have a valid value")
        if name is not None and search is not None:
            params.errors.append("name, search are mutually exclusive")
        params.check()
        if search is not None and len(search) < 3:
            raise bad_request("Search query is less than 3 characters")
        project = self._visible_project(ctx, args[0])
        if not access.is_reporter(self.world, user, project):
            raise message(403)
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
        params = Params(ctx.query)
        page_params(params)
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
        if not access.is_reporter(self.world, user, project):
            raise message(403)

        by_updated = "updated_after" in ctx.query or "updated_before" in ctx.query
        by_finished = "finished_after" in ctx.query or "finished_before" in ctx.query
        if by_updated and by_finished:
            raise bad_request(
                "Both `updated_at` filter and `finished_at` filter can not be specified"
            )
        if by_finished != (order_by == "finished_at"):
            raise bad_request("`finished_at` filter and `finished_at` sorting must be paired")
        if (by_finished or order_by == "finished_at") and status != "success":
            raise bad_request("`finished_at` filter must be combined with `success` status filter.")
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
        params = Params(ctx.query)
        page_params(params)
        if not args[1].isdigit():
            params.errors.append("deployment_id is invalid")
        state = params.choice("state", MR_STATES, "all")
        sort = params.choice("sort", SORTS, "desc")
        params.check()
        project = self._visible_project(ctx, args[0])
        if not access.is_reporter(self.world, user, project):
            raise message(403)
        dep = self.world.deployments.get(int(args[1]))
        if dep is None or dep.project_id != project.id:
            raise not_found()
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

    def _issue_filters(self, ctx: _Ctx) -> tuple[Params, Callable[[list[Issue]], list[Issue]]]:
        """Parse the issue-list parameters shared by project and group issues."""
        params = Params(ctx.query)
        page_params(params)
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
        reporter = access.is_reporter(self.world, user, project)
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
            raise message(403)
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
            if not access.can_see_project(self.world, ctx.user, project):
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
