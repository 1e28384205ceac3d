"""The state a fake GitLab serves: users, groups, projects, memberships, environments,
deployments, merge requests and issues, plus builder helpers that read like the spec's fixtures.

Shipped in the package because `dora-proxy demo` serves a seeded World; the tests build one per
scenario. Plain mutable dataclasses: the fake server reads them on every request, so a test can
change the world between two requests.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

REPORTER, DEVELOPER, MAINTAINER, OWNER = 20, 30, 40, 50
GUEST, PLANNER, MINIMAL_ACCESS = 10, 15, 5


@dataclass
class User:
    id: int
    username: str
    is_admin: bool = False
    state: str = "active"
    name: str = ""


@dataclass
class Group:
    id: int
    path: str
    parent_id: int | None = None
    visibility: str = "private"
    full_path: str = ""


@dataclass
class Project:
    id: int
    path: str
    group_id: int
    visibility: str = "private"
    archived: bool = False
    shared_with_group_ids: list[int] = field(default_factory=list)
    issues_enabled: bool = True
    path_with_namespace: str = ""


@dataclass
class Member:
    user_id: int
    source_type: str  # "group" or "project"
    source_id: int
    access_level: int
    state: str = "active"
    expires_at: str | None = None


@dataclass
class Environment:
    id: int
    project_id: int
    name: str
    tier: str
    state: str = "available"


@dataclass
class MergeRequest:
    id: int
    iid: int
    project_id: int
    merged_at: datetime | None
    state: str = "merged"


@dataclass
class Deployment:
    id: int
    iid: int
    project_id: int
    environment_id: int
    status: str
    created_at: datetime
    updated_at: datetime
    # None for API deployments (`deployable: null`) and for CI jobs that have not finished.
    deployable_finished_at: datetime | None
    api: bool = False
    merge_request_ids: list[int] = field(default_factory=list)

    @property
    def internal_finished_at(self) -> datetime | None:
        """GitLab's internal finish time, used by the `finished_after/before` filters."""
        if self.status != "success":
            return None
        return self.updated_at if self.api else self.deployable_finished_at


@dataclass
class Issue:
    id: int
    iid: int
    project_id: int
    issue_type: str  # "incident" or "issue"
    created_at: datetime
    closed_at: datetime | None = None
    updated_at: datetime | None = None
    confidential: bool = False
    title: str = ""

    @property
    def state(self) -> str:
        return "closed" if self.closed_at is not None else "opened"


def at(text: str) -> datetime:
    """`at("2021-01-01T10:00:00Z")` → aware UTC datetime (spec fixtures are written this way)."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@dataclass
class World:
    """Everything the fake GitLab knows. Ids are explicit where the spec names them."""

    users: dict[int, User] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)  # token -> user id
    # tokens that exist but lack the api/read_api scope: GitLab answers 403 insufficient_scope
    scopeless_tokens: dict[str, int] = field(default_factory=dict)
    groups: dict[int, Group] = field(default_factory=dict)
    projects: dict[int, Project] = field(default_factory=dict)
    members: list[Member] = field(default_factory=list)
    environments: dict[int, Environment] = field(default_factory=dict)
    deployments: dict[int, Deployment] = field(default_factory=dict)
    merge_requests: dict[int, MergeRequest] = field(default_factory=dict)
    issues: dict[int, Issue] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(100_000))

    # ---- builders -------------------------------------------------------------------------
    def next_id(self) -> int:
        return next(self._ids)

    def add_user(
        self, id: int, username: str, token: str | None, *, is_admin: bool = False
    ) -> User:
        user = User(id=id, username=username, is_admin=is_admin, name=username.title())
        self.users[id] = user
        if token:
            self.tokens[token] = id
        return user

    def add_cast(self) -> World:
        """The spec's cast (§10.0): root (admin), maria, rita, gus, pat, devon, nina."""
        self.add_user(1, "root", "tok-admin", is_admin=True)
        for uid, name in (
            (11, "maria"),
            (12, "rita"),
            (13, "gus"),
            (14, "pat"),
            (15, "devon"),
            (16, "nina"),
        ):
            self.add_user(uid, name, f"tok-{name}")
        return self

    def add_group(
        self, id: int, path: str, *, parent: Group | int | None = None, visibility: str = "private"
    ) -> Group:
        parent_id = parent.id if isinstance(parent, Group) else parent
        full_path = path if parent_id is None else f"{self.groups[parent_id].full_path}/{path}"
        group = Group(
            id=id, path=path, parent_id=parent_id, visibility=visibility, full_path=full_path
        )
        self.groups[id] = group
        return group

    def add_project(
        self,
        id: int,
        path: str,
        group: Group | int,
        *,
        visibility: str = "private",
        archived: bool = False,
        issues_enabled: bool = True,
    ) -> Project:
        group_id = group.id if isinstance(group, Group) else group
        project = Project(
            id=id,
            path=path,
            group_id=group_id,
            visibility=visibility,
            archived=archived,
            issues_enabled=issues_enabled,
            path_with_namespace=f"{self.groups[group_id].full_path}/{path}",
        )
        self.projects[id] = project
        return project

    def share_project(self, project: Project | int, group: Group | int) -> None:
        project_id = project.id if isinstance(project, Project) else project
        group_id = group.id if isinstance(group, Group) else group
        self.projects[project_id].shared_with_group_ids.append(group_id)

    def add_member(self, user: User | int, source: Group | Project, access_level: int) -> Member:
        user_id = user.id if isinstance(user, User) else user
        kind = "group" if isinstance(source, Group) else "project"
        member = Member(
            user_id=user_id, source_type=kind, source_id=source.id, access_level=access_level
        )
        self.members.append(member)
        return member

    def add_environment(
        self,
        project: Project | int,
        name: str,
        tier: str,
        *,
        id: int | None = None,
        state: str = "available",
    ) -> Environment:
        project_id = project.id if isinstance(project, Project) else project
        env = Environment(
            id=id if id is not None else self.next_id(),
            project_id=project_id,
            name=name,
            tier=tier,
            state=state,
        )
        self.environments[env.id] = env
        return env

    def add_merge_request(self, project_id: int, merged_at: datetime | None) -> MergeRequest:
        mr_id = self.next_id()
        mr = MergeRequest(
            id=mr_id,
            iid=mr_id % 100_000 + 1,
            project_id=project_id,
            merged_at=merged_at,
            state="merged" if merged_at else "opened",
        )
        self.merge_requests[mr.id] = mr
        return mr

    def deploy(
        self,
        env: Environment,
        finished: datetime | str,
        *,
        status: str = "success",
        mrs: list[datetime | str | None] = (),  # type: ignore[assignment]
        api: bool = False,
        updated: datetime | str | None = None,
        id: int | None = None,
    ) -> Deployment:
        """A deployment as the spec writes it: "finished X" (CI) or "API" (`deployable: null`).

        CI: `deployable.finished_at` = X, `updated_at` = `updated` or X, `created_at` X − 10 min.
        API: `updated_at` = X. `mrs` are `merged_at` values (None = an MR with merged_at null).
        Non-success statuses keep `deployable.finished_at` only for failed/canceled jobs.
        """
        finished_at = at(finished) if isinstance(finished, str) else finished
        updated_at = at(updated) if isinstance(updated, str) else (updated or finished_at)
        dep_id = id if id is not None else self.next_id()
        finished_job = status in ("success", "failed", "canceled")
        deployment = Deployment(
            id=dep_id,
            iid=dep_id % 100_000 + 1,
            project_id=env.project_id,
            environment_id=env.id,
            status=status,
            created_at=finished_at - timedelta(minutes=10),
            updated_at=updated_at,
            deployable_finished_at=None if api or not finished_job else finished_at,
            api=api,
        )
        for merged in mrs:
            merged_at = at(merged) if isinstance(merged, str) else merged
            deployment.merge_request_ids.append(
                self.add_merge_request(env.project_id, merged_at).id
            )
        self.deployments[deployment.id] = deployment
        return deployment

    def deploy_many(self, env: Environment, count: int, day: str) -> list[Deployment]:
        """The spec's "n× D": n deployments on D, finished every 20 minutes from 01:00:00Z."""
        start = at(f"{day}T01:00:00Z")
        return [self.deploy(env, start + timedelta(minutes=20 * i)) for i in range(count)]

    def incident(
        self,
        project: Project | int,
        created: datetime | str,
        closed: datetime | str | None = None,
        *,
        issue_type: str = "incident",
        confidential: bool = False,
        id: int | None = None,
    ) -> Issue:
        project_id = project.id if isinstance(project, Project) else project
        created_at = at(created) if isinstance(created, str) else created
        closed_at = at(closed) if isinstance(closed, str) else closed
        issue_id = id if id is not None else self.next_id()
        issue = Issue(
            id=issue_id,
            iid=sum(1 for i in self.issues.values() if i.project_id == project_id) + 1,
            project_id=project_id,
            issue_type=issue_type,
            created_at=created_at,
            closed_at=closed_at,
            updated_at=max(t for t in (created_at, closed_at) if t is not None),
            confidential=confidential,
            title=f"{issue_type} {issue_id}",
        )
        self.issues[issue.id] = issue
        return issue

    # ---- queries the fake server needs ------------------------------------------------------
    def user_for_token(self, token: str | None) -> User | None:
        if token is None:
            return None
        user_id = self.tokens.get(token)
        return self.users.get(user_id) if user_id is not None else None

    def group_ancestors(self, group_id: int) -> list[Group]:
        """The group itself, then its parent, up to the root."""
        chain: list[Group] = []
        current: int | None = group_id
        while current is not None:
            group = self.groups[current]
            chain.append(group)
            current = group.parent_id
        return chain

    def group_descendants(self, group_id: int) -> list[Group]:
        """The group itself and every group below it."""
        result = [self.groups[group_id]]
        for group in self.groups.values():
            if (
                group.parent_id is not None
                and group.id != group_id
                and any(g.id == group_id for g in self.group_ancestors(group.parent_id))
            ):
                result.append(group)
        return result
