"""Who may see and read what in the fake: GitLab's visibility and membership rules over a World
(direct, inherited from ancestor groups, and through groups a project is shared with)."""

from __future__ import annotations

from proxy.demo.world import GUEST, REPORTER, Group, Member, Project, User, World


def find_project(world: World, ref: str) -> Project | None:
    if ref.isascii() and ref.isdigit():  # "¹" is a digit to str.isdigit, not to int()
        return world.projects.get(int(ref))
    lowered = ref.lower()
    for project in world.projects.values():
        if project.path_with_namespace.lower() == lowered:
            return project
    return None


def find_group(world: World, ref: str) -> Group | None:
    if ref.isascii() and ref.isdigit():  # "¹" is a digit to str.isdigit, not to int()
        return world.groups.get(int(ref))
    lowered = ref.lower()
    for group in world.groups.values():
        if group.full_path.lower() == lowered:
            return group
    return None


def project_sources(world: World, project: Project) -> set[tuple[str, int]]:
    """Membership sources that give access to a project: itself, its group chain, and the
    groups it is shared with (with their ancestors, whose members are inherited there)."""
    sources = {("project", project.id)}
    sources |= {("group", g.id) for g in world.group_ancestors(project.group_id)}
    for shared in project.shared_with_group_ids:
        if shared in world.groups:
            sources |= {("group", g.id) for g in world.group_ancestors(shared)}
    return sources


def group_sources(world: World, group: Group) -> set[tuple[str, int]]:
    return {("group", g.id) for g in world.group_ancestors(group.id)}


def members_of(world: World, user_id: int, sources: set[tuple[str, int]]) -> list[Member]:
    return [
        m for m in world.members if m.user_id == user_id and (m.source_type, m.source_id) in sources
    ]


def access(world: World, user: User | None, sources: set[tuple[str, int]]) -> int:
    if user is None:
        return 0
    levels = [m.access_level for m in members_of(world, user.id, sources) if m.state == "active"]
    return max(levels, default=0)


def project_access(world: World, user: User | None, project: Project) -> int:
    """Effective access level (0 = none), direct, inherited or through a shared group."""
    return access(world, user, project_sources(world, project))


def can_see_project(world: World, user: User | None, project: Project) -> bool:
    if project.visibility == "public" or (user is not None and user.is_admin):
        return True
    if user is None:
        return False
    if project.visibility == "internal":
        return True
    return project_access(world, user, project) >= GUEST


def can_see_group(world: World, user: User | None, group: Group) -> bool:
    if group.visibility == "public" or (user is not None and user.is_admin):
        return True
    if user is None:
        return False
    if group.visibility == "internal":
        return True
    if access(world, user, group_sources(world, group)) > 0:
        return True
    # GitLab shows a private group to members of anything inside it.
    inside = {g.id for g in world.group_descendants(group.id)}
    for member in world.members:
        if member.user_id != user.id or member.state != "active":
            continue
        if member.source_type == "group" and member.source_id in inside:
            return True
        if member.source_type == "project":
            project = world.projects.get(member.source_id)
            if project is not None and project.group_id in inside:
                return True
    return False


def is_reporter(world: World, user: User | None, project: Project) -> bool:
    if user is None:
        return False
    return user.is_admin or project_access(world, user, project) >= REPORTER
