"""The fake GitLab's `/api/graphql`: the non-DORA fields a Free/Premium GitLab answers.

GitLab without Ultimate has no `dora` field: a document asking for it fails validation here as
it would there ("Field 'dora' doesn't exist on type 'Project'"), which is why the proxy must
take DORA selections out before forwarding. Visibility follows the fake's REST rules (an
invisible project or group is `null`, no error). Executed by graphql-core, so variables,
fragments and errors behave as a real GraphQL server's.

Each document received lands in `fake.graphql_calls` (query text, variables, operation name,
whether a token came) for the tests.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web
from graphql import GraphQLError, build_schema, graphql

from proxy.demo import access

if TYPE_CHECKING:
    from proxy.demo.server import FakeGitLab
    from proxy.demo.world import Group, Project, User

SCHEMA = build_schema(
    """
    type Query {
      project(fullPath: ID!): Project
      group(fullPath: ID!): Group
      currentUser: UserCore
    }
    type Project {
      id: ID!
      name: String!
      path: String!
      fullPath: ID!
      webUrl: String
      archived: Boolean
      visibility: String
      group: Group
      repositorySize: Float
    }
    type Group {
      id: ID!
      name: String!
      path: String!
      fullPath: ID!
      webUrl: String
      visibility: String
      projects(includeSubgroups: Boolean, first: Int): ProjectConnection!
    }
    type ProjectConnection {
      count: Int!
      nodes: [Project]
    }
    type UserCore {
      id: ID!
      username: String!
      name: String!
    }
    type Mutation {
      echo(text: String!): String
    }
    """
)


NOT_ALLOWED = (
    "The resource that you are attempting to access does not exist or you don't have "
    "permission to perform this action"
)


def _refused(info: Any) -> None:
    """A field error with a path (GitLab's wording), for tests that merge upstream errors."""
    raise GraphQLError(NOT_ALLOWED)


def register(fake: FakeGitLab) -> None:
    """Add GET and POST /api/graphql to `fake.app` (before its catch-all)."""
    fake.graphql_calls = []  # type: ignore[attr-defined]
    endpoint = _Endpoint(fake)
    fake.app.router.add_route("POST", "/api/graphql", endpoint.handle)
    fake.app.router.add_route("GET", "/api/graphql", endpoint.handle)


class _Endpoint:
    def __init__(self, fake: FakeGitLab) -> None:
        self.fake = fake

    async def handle(self, request: web.Request) -> web.Response:
        from proxy.demo.server import _token_of

        if request.method == "POST":
            try:
                payload = json.loads(await request.read())
            except ValueError:
                return web.json_response({"errors": [{"message": "Invalid JSON"}]}, status=400)
        else:
            payload = {
                "query": request.query.get("query"),
                "variables": json.loads(request.query.get("variables") or "null"),
                "operationName": request.query.get("operationName"),
            }
        token = _token_of(request)
        self.fake.graphql_calls.append(  # type: ignore[attr-defined]
            {
                "query": payload.get("query"),
                "variables": payload.get("variables"),
                "operationName": payload.get("operationName"),
                "authenticated": token is not None,
            }
        )
        faults = self.fake.faults
        if faults.latency > 0 and faults.matches("graphql"):  # a slow GitLab, GraphQL too
            await asyncio.sleep(faults.latency)
        user = None
        if token is not None:
            user = self.fake.world.user_for_token(token)
            if user is None:
                return web.json_response({"errors": [{"message": "Invalid token"}]}, status=401)
        result = await graphql(
            SCHEMA,
            payload.get("query") or "",
            root_value=_Root(self.fake, user),
            variable_values=payload.get("variables"),
            operation_name=payload.get("operationName"),
        )
        return web.json_response(result.formatted)


class _Root:
    def __init__(self, fake: FakeGitLab, user: User | None) -> None:
        self.fake = fake
        self.user = user

    def project(self, info: Any, fullPath: str) -> dict[str, Any] | None:
        project = access.find_project(self.fake.world, fullPath)
        if project is None or not access.can_see_project(self.fake.world, self.user, project):
            return None
        return self._project(project)

    def group(self, info: Any, fullPath: str) -> dict[str, Any] | None:
        group = access.find_group(self.fake.world, fullPath)
        if group is None or not access.can_see_group(self.fake.world, self.user, group):
            return None
        return self._group(group)

    def currentUser(self, info: Any) -> dict[str, Any] | None:
        if self.user is None:
            return None
        user = self.user
        return {
            "id": f"gid://gitlab/User/{user.id}",
            "username": user.username,
            "name": user.name or user.username,
        }

    def echo(self, info: Any, text: str) -> str:
        return text

    def _project(self, project: Project) -> dict[str, Any]:
        world = self.fake.world
        return {
            "id": f"gid://gitlab/Project/{project.id}",
            "name": project.path,
            "path": project.path,
            "fullPath": project.path_with_namespace,
            "webUrl": f"http://gitlab.example.com/{project.path_with_namespace}",
            "archived": project.archived,
            "visibility": project.visibility,
            "group": lambda info: self._group(world.groups[project.group_id]),
            "repositorySize": _refused,
        }

    def _group(self, group: Group) -> dict[str, Any]:
        world = self.fake.world

        def projects(info: Any, includeSubgroups: bool = False, first: int = 100) -> Any:
            inside = {group.id}
            if includeSubgroups:
                inside |= {g.id for g in world.group_descendants(group.id)}
            visible = [
                self._project(p)
                for p in sorted(world.projects.values(), key=lambda p: p.id)
                if p.group_id in inside and access.can_see_project(world, self.user, p)
            ]
            return {"count": len(visible), "nodes": visible[:first]}

        return {
            "id": f"gid://gitlab/Group/{group.id}",
            "name": group.path,
            "path": group.path,
            "fullPath": group.full_path,
            "webUrl": f"http://gitlab.example.com/groups/{group.full_path}",
            "visibility": group.visibility,
            "projects": projects,
        }
