"""One caller's door to the upstream: typed fetches made with that caller's credential.

A session is made per proxy request (cheap: the python-gitlab client behind it is only built
when a first call is made, so a request answered from the caches builds none). Everything
returned is a plain record from `proxy.facts`; every failure is a `ProxyError` or an
`UpstreamStatus` the caller may need to see (permission decisions read 401/403/404).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

import gitlab

from proxy.credentials import Credential
from proxy.errors import BadGateway
from proxy.facts import ContainerInfo, Deployment, Environment, Incident, MergeRequest, UserInfo
from proxy.upstream import endpoints
from proxy.upstream.client import UpstreamStatus

if TYPE_CHECKING:
    from proxy.upstream.client import Upstream


class UpstreamSession:
    def __init__(self, upstream: Upstream, credential: Credential | None) -> None:
        self._upstream = upstream
        self._credential = credential

    def reopener(self) -> functools.partial[UpstreamSession]:
        """A way to open a new session with the same credential later (background re-checks),
        without keeping this one's python-gitlab client alive meanwhile."""
        return functools.partial(UpstreamSession, self._upstream, self._credential)

    @functools.cached_property
    def _gl(self) -> gitlab.Gitlab:
        return self._upstream.client(self._credential)

    async def fetch_user(self) -> UserInfo:
        data = (await self._upstream.get_page(self._gl, "user", "/user")).data
        with _answer_shape("GET /user"):
            return endpoints.user(data)

    async def fetch_project(self, id_or_path: str) -> ContainerInfo:
        path = f"/projects/{endpoints.encode_segment(id_or_path)}"
        data = (await self._upstream.get_page(self._gl, "project", path)).data
        with _answer_shape(f"GET {path}"):
            return endpoints.project(data)

    async def fetch_group(self, id_or_path: str) -> ContainerInfo:
        path = f"/groups/{endpoints.encode_segment(id_or_path)}"
        data = (
            await self._upstream.get_page(self._gl, "group", path, {"with_projects": "false"})
        ).data
        with _answer_shape(f"GET {path}"):
            return endpoints.group(data)

    async def fetch_access_level(self, container: str, container_id: int, user_id: int) -> int:
        """Effective access level (inherited and shared included); 0 when not a member."""
        path = f"/{container}s/{container_id}/members/all/{user_id}"
        try:
            data = (await self._upstream.get_page(self._gl, f"{container}_members", path)).data
        except UpstreamStatus as exc:
            if exc.status == 404:
                return 0
            raise
        with _answer_shape(f"GET {path}"):
            return endpoints.access_level(data)

    async def fetch_group_projects(self, group: ContainerInfo) -> list[ContainerInfo]:
        path = f"/groups/{group.id}/projects"
        items = await self._upstream.get_list(
            self._gl, "group_projects", path, endpoints.GROUP_PROJECTS_QUERY
        )
        with _answer_shape(f"GET {path}"):
            return endpoints.group_projects(items, group)

    async def fetch_environments(self, project_id: int) -> tuple[Environment, ...]:
        path = f"/projects/{project_id}/environments"
        items = await self._upstream.get_list(self._gl, "environments", path, {})
        with _answer_shape(f"GET {path}"):
            return endpoints.environments(items)

    async def fetch_deployments(
        self, project_id: int, finished_after: datetime, finished_before: datetime
    ) -> tuple[Deployment, ...]:
        """Successful deployments whose finish time lies in [finished_after, finished_before)."""
        path = f"/projects/{project_id}/deployments"
        query = endpoints.deployments_query(finished_after, finished_before)
        items = await self._upstream.get_list(self._gl, "deployments", path, query)
        with _answer_shape(f"GET {path}"):
            return endpoints.deployments(items)

    async def fetch_deployment_merge_requests(
        self, project_id: int, deployment_id: int
    ) -> tuple[MergeRequest, ...]:
        path = f"/projects/{project_id}/deployments/{deployment_id}/merge_requests"
        items = await self._upstream.get_list(self._gl, "deployment_mrs", path, {})
        with _answer_shape(f"GET {path}"):
            return endpoints.merge_requests(items)

    async def fetch_project_incidents(
        self, project_id: int, updated_after: datetime
    ) -> tuple[Incident, ...]:
        """Incidents updated since `updated_after`: a superset of those created or closed since."""
        path = f"/projects/{project_id}/issues"
        query = endpoints.incidents_query(updated_after)
        items = await self._upstream.get_list(self._gl, "project_issues", path, query)
        with _answer_shape(f"GET {path}"):
            return endpoints.incidents(items)

    async def fetch_group_incidents(
        self, group_id: int, updated_after: datetime
    ) -> dict[int, list[Incident]]:
        """Incidents of every project below the group (archived included), by project id."""
        path = f"/groups/{group_id}/issues"
        query = {**endpoints.incidents_query(updated_after), "non_archived": "false"}
        items = await self._upstream.get_list(self._gl, "group_issues", path, query)
        with _answer_shape(f"GET {path}"):
            return endpoints.incidents_by_project(items)


@contextlib.contextmanager
def _answer_shape(call: str) -> Iterator[None]:
    """Valid JSON that is not shaped like GitLab's answer is a bad upstream answer: 502 naming
    the call, never a 500."""
    try:
        yield
    except endpoints.MALFORMED as exc:
        raise BadGateway(detail=f"{call}: unexpected answer ({type(exc).__name__})") from None
