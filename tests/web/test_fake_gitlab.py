"""The fake GitLab behaves like GitLab where the proxy depends on it (upstream spec §1, §3, §10).

Driven with python-gitlab, the client the proxy itself uses, over real HTTP. python-gitlab is
synchronous, so every call runs in a thread while the server keeps the event loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any

import gitlab
import pytest
import requests

from proxy.demo import COUNT_LIMIT, FakeGitLab, pagination_headers
from proxy.demo.seed import DEMO_PROJECTS, DEMO_TOKENS, build_demo_world
from proxy.demo.world import DEVELOPER, GUEST, MAINTAINER, PLANNER, REPORTER, World, at

Serve = Callable[[World], Awaitable[tuple[FakeGitLab, str]]]


@pytest.fixture
def serve(aiohttp_server: Any) -> Serve:
    async def start(world: World) -> tuple[FakeGitLab, str]:
        fake = FakeGitLab(world)
        server = await aiohttp_server(fake.app)
        return fake, str(server.make_url("")).rstrip("/")

    return start


def client(url: str, token: str | None = None, **kwargs: Any) -> gitlab.Gitlab:
    kwargs.setdefault("timeout", 5)
    return gitlab.Gitlab(url, private_token=token, **kwargs)


async def raw_get(
    url: str, path: str, token: str | None = None, bearer: bool = False
) -> requests.Response:
    """A plain GET through python-gitlab's session, without its error mapping."""

    def call() -> requests.Response:
        headers = {}
        if token is not None:
            headers = {"Authorization": f"Bearer {token}"} if bearer else {"PRIVATE-TOKEN": token}
        gl = client(url)
        with gl:
            return gl.session.get(f"{url}/api/v4{path}", headers=headers, timeout=5)

    return await asyncio.to_thread(call)


async def status_and_body(url: str, path: str, token: str | None = None) -> tuple[int, Any]:
    response = await raw_get(url, path, token)
    try:
        body = response.json()
    except ValueError:
        body = response.text
    return response.status_code, body


# ---- fixtures shaped like the spec's scenarios ----------------------------------------------


def s6_world() -> World:
    """Semantics S6: public group 60, private subgroup 61, private 62 in 61, public 63 in 60."""
    world = World().add_cast()
    g60 = world.add_group(60, "s6", visibility="public")
    g61 = world.add_group(61, "sub", parent=g60)
    p62 = world.add_project(62, "app", g61)
    p63 = world.add_project(63, "open", g60, visibility="public")
    world.add_project(64, "inner", g60, visibility="internal")
    world.add_member(12, g60, REPORTER)  # rita
    world.add_member(13, g60, GUEST)  # gus
    world.add_member(14, g60, PLANNER)  # pat
    world.add_member(15, p62, DEVELOPER)  # devon
    e1 = world.add_environment(p62, "production", "production", id=1)
    e2 = world.add_environment(p63, "production", "production", id=2)
    world.deploy(e1, "2021-06-01T01:00:00Z")
    world.deploy_many(e2, 2, "2021-06-02")
    return world


# ---- pagination ---------------------------------------------------------------------------


async def test_deployments_paginate_165_over_two_pages(serve: Serve) -> None:
    world = World().add_cast()
    group = world.add_group(1, "g")
    project = world.add_project(11, "p", group)
    world.add_member(12, group, REPORTER)
    env = world.add_environment(project, "production", "production")
    start = at("2021-01-01T00:00:00Z")
    for i in range(165):
        world.deploy(env, start + timedelta(hours=i))
    fake, url = await serve(world)

    def list_all() -> list[Any]:
        with client(url, "tok-rita") as gl:
            return list(
                gl.projects.get(11, lazy=True).deployments.list(per_page=100, iterator=True)
            )

    deployments = await asyncio.to_thread(list_all)
    assert len(deployments) == 165
    assert len({d.id for d in deployments}) == 165
    pages = [call.query.get("page", "1") for call in fake.calls_of("deployments")]
    assert pages == ["1", "2"]

    first = await raw_get(url, "/projects/11/deployments?per_page=100&status=success", "tok-rita")
    assert first.headers["X-Total"] == "165"
    assert first.headers["X-Total-Pages"] == "2"
    assert first.headers["X-Page"] == "1"
    assert first.headers["X-Per-Page"] == "100"
    assert first.headers["X-Next-Page"] == "2"
    assert first.headers["X-Prev-Page"] == ""
    assert 'rel="next"' in first.headers["Link"] and 'rel="last"' in first.headers["Link"]
    assert "status=success" in first.links["next"]["url"]
    assert first.links["next"]["url"].startswith(f"{url}/api/v4/projects/11/deployments?")
    assert "page=2" in first.links["next"]["url"]

    second = await raw_get(url, "/projects/11/deployments?per_page=100&page=2", "tok-rita")
    assert len(second.json()) == 65
    assert second.headers["X-Next-Page"] == ""
    assert second.headers["X-Prev-Page"] == "1"
    assert "next" not in second.links and "prev" in second.links

    default = await raw_get(url, "/projects/11/deployments", "tok-rita")
    assert len(default.json()) == 20 and default.headers["X-Per-Page"] == "20"
    clamped = await raw_get(url, "/projects/11/deployments?per_page=500", "tok-rita")
    assert len(clamped.json()) == 100 and clamped.headers["X-Per-Page"] == "100"


def test_totals_are_omitted_above_ten_thousand_records() -> None:
    base = "http://gitlab.test/api/v4/projects/1/deployments"
    counted = pagination_headers(base, [("per_page", "100")], 1, 100, COUNT_LIMIT)
    assert counted["X-Total"] == "10000" and counted["X-Total-Pages"] == "100"
    assert 'rel="last"' in counted["Link"]

    uncounted = pagination_headers(base, [("per_page", "100")], 3, 100, COUNT_LIMIT + 1)
    assert "X-Total" not in uncounted and "X-Total-Pages" not in uncounted
    assert 'rel="last"' not in uncounted["Link"]
    assert 'rel="next"' in uncounted["Link"] and 'rel="prev"' in uncounted["Link"]
    assert uncounted["X-Next-Page"] == "4" and uncounted["X-Prev-Page"] == "2"


# ---- deployments: validation and finish-time filters ---------------------------------------

BAD_FINISHED = (
    "400 Bad request - `finished_at` filter must be combined with `success` status filter."
)
PAIRED = "400 Bad request - `finished_at` filter and `finished_at` sorting must be paired"
BOTH = "400 Bad request - Both `updated_at` filter and `finished_at` filter can not be specified"


@pytest.mark.parametrize(
    ("query", "body"),
    [
        (
            "status=success&order_by=finished_at&finished_after=2021-01-01T00:00:00Z"
            "&updated_after=2021-01-01T00:00:00Z",
            {"message": BOTH},
        ),
        ("status=success&finished_after=2021-01-01T00:00:00Z", {"message": PAIRED}),
        ("status=success&order_by=finished_at", {"message": PAIRED}),  # sorting without filter
        ("order_by=finished_at&finished_after=2021-01-01T00:00:00Z", {"message": BAD_FINISHED}),
        (
            "status=failed&order_by=finished_at&finished_before=2021-01-01T00:00:00Z",
            {"message": BAD_FINISHED},
        ),
        ("order_by=finished", {"error": "order_by does not have a valid value"}),
        ("sort=up", {"error": "sort does not have a valid value"}),
        ("status=done", {"error": "status does not have a valid value"}),
        ("finished_after=yesterday", {"error": "finished_after is invalid"}),
        (
            "order_by=x&status=y",
            {"error": "order_by does not have a valid value, status does not have a valid value"},
        ),
    ],
)
async def test_deployments_parameter_validation(serve: Serve, query: str, body: Any) -> None:
    _, url = await serve(s6_world())
    assert await status_and_body(url, f"/projects/62/deployments?{query}", "tok-rita") == (
        400,
        body,
    )


async def test_updated_filter_forces_updated_order(serve: Serve) -> None:
    world = s6_world()
    env = world.environments[1]
    world.deploy(env, "2021-06-03T01:00:00Z", updated="2021-06-03T02:00:00Z", id=500)
    world.deploy(env, "2021-06-03T03:00:00Z", updated="2021-06-03T01:30:00Z", id=400)
    _, url = await serve(world)
    status, body = await status_and_body(
        url, "/projects/62/deployments?updated_after=2021-06-03T00:00:00Z&order_by=id", "tok-rita"
    )
    assert status == 200
    assert [d["id"] for d in body] == [400, 500]


async def test_finished_filters_use_the_internal_finish_time(serve: Serve) -> None:
    world = World().add_cast()
    group = world.add_group(1, "g")
    project = world.add_project(11, "p", group)
    world.add_member(12, group, REPORTER)
    env = world.add_environment(project, "production", "production", id=5)
    # CI: finished inside, updated much later -> filtered on deployable.finished_at
    ci = world.deploy(env, "2021-03-01T00:00:00Z", updated="2021-03-09T00:00:00Z", id=101)
    # API: deployable null -> filtered on updated_at
    api = world.deploy(env, "2021-03-02T12:00:00Z", api=True, id=102)
    # CI finished after the window but updated inside it -> excluded
    world.deploy(env, "2021-03-05T00:00:00Z", updated="2021-03-02T00:00:00Z", id=103)
    world.deploy(env, "2021-03-02T00:00:00Z", status="failed", id=104)
    world.deploy(env, "2021-03-03T00:00:00Z", id=105)  # exactly at finished_before: excluded
    _, url = await serve(world)

    def fetch() -> list[Any]:
        with client(url, "tok-rita") as gl:
            return gl.projects.get(11, lazy=True).deployments.list(
                status="success",
                order_by="finished_at",
                sort="desc",
                finished_after="2021-03-01T00:00:00Z",
                finished_before="2021-03-03T00:00:00Z",
                get_all=True,
            )

    found = await asyncio.to_thread(fetch)
    assert [d.id for d in found] == [api.id, ci.id]
    by_id = {d.id: d.attributes for d in found}
    assert by_id[api.id]["deployable"] is None
    assert by_id[api.id]["updated_at"] == "2021-03-02T12:00:00.000Z"
    job = by_id[ci.id]["deployable"]
    assert job["finished_at"] == "2021-03-01T00:00:00.000Z"
    assert by_id[ci.id]["updated_at"] == "2021-03-09T00:00:00.000Z"
    assert "finished_at" not in by_id[ci.id]
    assert by_id[ci.id]["environment"] == {
        "id": 5,
        "name": "production",
        "slug": "production",
        "external_url": None,
    }


async def test_deployment_merge_requests(serve: Serve) -> None:
    world = s6_world()
    dep = world.deploy(
        world.environments[1], "2021-06-05T01:00:00Z", mrs=["2021-06-04T01:00:00Z", None]
    )
    _, url = await serve(world)

    def fetch() -> list[dict[str, Any]]:
        with client(url, "tok-rita") as gl:
            deployment = gl.projects.get(62, lazy=True).deployments.get(dep.id, lazy=True)
            return [mr.attributes for mr in deployment.mergerequests.list(get_all=True)]

    mrs = await asyncio.to_thread(fetch)
    assert sorted((mr["merged_at"] is None, mr["state"]) for mr in mrs) == [
        (False, "merged"),
        (True, "opened"),
    ]
    assert {"2021-06-04T01:00:00.000Z"} <= {mr["merged_at"] for mr in mrs}
    assert all(mr["project_id"] == 62 for mr in mrs)
    assert (await status_and_body(url, f"/projects/63/deployments/{dep.id}/merge_requests"))[
        0
    ] == 401
    assert await status_and_body(
        url, "/projects/62/deployments/999/merge_requests", "tok-rita"
    ) == (404, {"message": "404 Not found"})


# ---- authentication and visibility --------------------------------------------------------


async def test_unknown_token_is_401_everywhere_and_scopeless_is_403(serve: Serve) -> None:
    world = s6_world()
    world.scopeless_tokens["tok-noscope"] = 12
    _, url = await serve(world)
    for path in ("/user", "/projects/63", "/groups/60", "/projects/62/deployments", "/nope"):
        assert await status_and_body(url, path, "tok-revoked") == (
            401,
            {"message": "401 Unauthorized"},
        )
    status, body = await status_and_body(url, "/projects/63", "tok-noscope")
    assert status == 403 and body["error"] == "insufficient_scope"
    assert body["scope"] == "api read_api"

    def auth_error() -> int:
        with client(url, "tok-revoked") as gl, pytest.raises(gitlab.GitlabAuthenticationError) as e:
            gl.auth()
        return e.value.response_code

    assert await asyncio.to_thread(auth_error) == 401


async def test_user_endpoint_and_admin_flag(serve: Serve) -> None:
    _, url = await serve(s6_world())
    assert await status_and_body(url, "/user") == (401, {"message": "401 Unauthorized"})
    status, admin = await status_and_body(url, "/user", "tok-admin")
    assert status == 200 and admin["is_admin"] is True and admin["id"] == 1
    status, rita = await status_and_body(url, "/user", "tok-rita")
    assert status == 200 and "is_admin" not in rita
    assert {k: rita[k] for k in ("id", "username", "state")} == {
        "id": 12,
        "username": "rita",
        "state": "active",
    }
    bearer = await raw_get(url, "/user", "tok-rita", bearer=True)
    assert bearer.json()["id"] == 12


@pytest.mark.parametrize(
    ("path", "token", "status"),
    [
        ("/projects/62", "tok-nina", 404),  # private, non-member
        ("/projects/62", None, 404),  # private, anonymous
        ("/projects/64", None, 404),  # internal, anonymous
        ("/projects/64", "tok-nina", 200),  # internal, any signed-in user
        ("/projects/63", None, 200),  # public, anonymous
        ("/projects/62", "tok-admin", 200),  # admin sees everything
        ("/projects/62", "tok-rita", 200),  # inherited from group 60
        ("/projects/62", "tok-gus", 200),  # guests see the project
        ("/projects/s6%2Fsub%2Fapp", "tok-rita", 200),  # encoded full path
        ("/projects/s6%2Fsub%2Fapp", "tok-nina", 404),
        ("/projects/s6%2Fnope", "tok-rita", 404),
        ("/projects/999999", "tok-admin", 404),
        ("/groups/61", "tok-nina", 404),  # private group, non-member
        ("/groups/61", None, 404),
        ("/groups/61", "tok-devon", 200),  # member of a project inside it
        ("/groups/61", "tok-rita", 200),  # inherited
        ("/groups/61", "tok-admin", 200),
        ("/groups/s6%2Fsub", "tok-rita", 200),
        ("/groups/60", None, 200),  # public group
        ("/groups/999999", "tok-admin", 404),
    ],
)
async def test_visibility(serve: Serve, path: str, token: str | None, status: int) -> None:
    _, url = await serve(s6_world())
    got, body = await status_and_body(url, path, token)
    assert got == status, body
    if status == 404:
        kind = "Project" if path.startswith("/projects") else "Group"
        assert body == {"message": f"404 {kind} Not Found"}
    else:
        assert body["visibility"] in ("public", "internal", "private")


async def test_project_lookup_by_path_with_python_gitlab(serve: Serve) -> None:
    fake, url = await serve(s6_world())

    def lookup() -> dict[str, Any]:
        with client(url, "tok-rita") as gl:
            return gl.projects.get("s6/sub/app").attributes

    project = await asyncio.to_thread(lookup)
    assert project["id"] == 62
    assert project["path_with_namespace"] == "s6/sub/app"
    assert project["namespace"]["full_path"] == "s6/sub"
    assert project["archived"] is False
    assert fake.calls[-1].kind == "project" and fake.calls[-1].path == "/api/v4/projects/s6/sub/app"


async def test_data_endpoints_need_authentication_and_reporter(serve: Serve) -> None:
    world = s6_world()
    world.add_project(70, "noissues", 60, visibility="public").issues_enabled = False
    _, url = await serve(world)
    for path in ("/projects/63/deployments", "/projects/63/environments"):
        assert await status_and_body(url, path) == (401, {"message": "401 Unauthorized"})
        assert await status_and_body(url, path, "tok-gus") == (403, {"message": "403 Forbidden"})
        assert (await status_and_body(url, path, "tok-rita"))[0] == 200
        assert (await status_and_body(url, path, "tok-admin"))[0] == 200
    assert await status_and_body(url, "/projects/62/deployments", "tok-nina") == (
        404,
        {"message": "404 Project Not Found"},
    )
    assert (await status_and_body(url, "/projects/63/issues"))[0] == 200  # public, anonymous
    assert await status_and_body(url, "/projects/70/issues", "tok-rita") == (
        403,
        {"message": "403 Forbidden"},
    )


async def test_environments_states(serve: Serve) -> None:
    world = s6_world()
    world.add_environment(62, "old", "production", id=3, state="stopped")
    world.add_environment(62, "staging", "staging", id=4, state="stopping")
    _, url = await serve(world)

    def fetch() -> list[dict[str, Any]]:
        with client(url, "tok-rita") as gl:
            envs = gl.projects.get(62, lazy=True).environments.list(get_all=True)
            return [e.attributes for e in envs]

    envs = await asyncio.to_thread(fetch)
    assert [(e["id"], e["name"], e["tier"], e["state"]) for e in envs] == [
        (1, "production", "production", "available"),
        (3, "old", "production", "stopped"),
        (4, "staging", "staging", "stopping"),
    ]
    assert await status_and_body(url, "/projects/62/environments?states=gone", "tok-rita") == (
        400,
        {"error": "states does not have a valid value"},
    )
    status, stopped = await status_and_body(
        url, "/projects/62/environments?states=stopped", "tok-rita"
    )
    assert status == 200 and [e["id"] for e in stopped] == [3]


# ---- memberships ----------------------------------------------------------------------------


async def test_members_all_inherits_and_follows_shared_groups(serve: Serve) -> None:
    world = s6_world()
    other = world.add_group(80, "other")
    shared_in = world.add_project(81, "shared", other)
    world.share_project(shared_in, 61)  # shared with s6/sub: members of 61 and 60 inherit
    world.add_member(16, world.groups[61], MAINTAINER)  # nina: Maintainer of the subgroup
    world.add_member(16, world.groups[60], GUEST)  # and Guest of the parent: highest wins
    _, url = await serve(world)

    async def level(path: str, token: str = "tok-admin") -> int | None:
        status, body = await status_and_body(url, path, token)
        if status == 404:
            assert body == {"message": "404 Not found"}
            return None
        assert status == 200 and body["membership_state"] == "active"
        return body["access_level"]

    assert await level("/projects/62/members/all/12") == REPORTER  # from group 60
    assert await level("/groups/61/members/all/12") == REPORTER  # ancestor inheritance
    assert await level("/projects/62/members/all/15") == DEVELOPER  # direct on project
    assert await level("/groups/60/members/all/15") is None  # project membership ≠ group
    assert await level("/projects/62/members/all/16") == MAINTAINER
    assert await level("/groups/60/members/all/16") == GUEST
    assert await level("/projects/81/members/all/12") == REPORTER  # via the shared group
    assert await level("/projects/81/members/all/16") == MAINTAINER
    assert await level("/groups/80/members/all/12") is None  # sharing is not group membership
    assert await level("/projects/62/members/all/1") is None  # admin is not a member

    def via_python_gitlab() -> dict[str, Any]:
        with client(url, "tok-rita") as gl:
            return gl.projects.get(81, lazy=True).members_all.get(12).attributes

    member = await asyncio.to_thread(via_python_gitlab)
    assert {k: member[k] for k in ("id", "username", "access_level", "state", "expires_at")} == {
        "id": 12,
        "username": "rita",
        "access_level": REPORTER,
        "state": "active",
        "expires_at": None,
    }
    # rita sees project 81 only through the share
    assert (await status_and_body(url, "/projects/81", "tok-rita"))[0] == 200


# ---- group projects and group issues --------------------------------------------------------


def group_world() -> World:
    world = World().add_cast()
    top = world.add_group(90, "top")
    sub = world.add_group(91, "sub", parent=top)
    elsewhere = world.add_group(92, "elsewhere")
    world.add_member(12, top, REPORTER)
    world.add_member(12, elsewhere, REPORTER)
    direct = world.add_project(93, "direct", top)
    nested = world.add_project(94, "nested", sub)
    old = world.add_project(95, "old", top, archived=True)
    shared = world.add_project(96, "shared", elsewhere)
    world.share_project(shared, top)
    for project in (direct, nested, old, shared):
        world.incident(project, "2021-03-01T00:00:00Z", id=project.id * 10)
    world.incident(direct, "2021-03-02T00:00:00Z", "2021-03-02T05:00:00Z", issue_type="issue")
    world.incident(nested, "2021-03-03T00:00:00Z", confidential=True, id=9999)
    world.add_member(13, top, GUEST)
    return world


async def test_group_projects_defaults(serve: Serve) -> None:
    _, url = await serve(group_world())

    async def ids(query: str) -> list[int]:
        status, body = await status_and_body(url, f"/groups/90/projects?{query}", "tok-rita")
        assert status == 200, body
        return sorted(p["id"] for p in body)

    assert await ids("") == [93, 95, 96]  # direct only, shared included, archived included
    assert await ids("include_subgroups=true&with_shared=false") == [93, 94, 95]
    assert await ids("include_subgroups=True&with_shared=False&archived=false") == [93, 94]
    assert await ids("include_subgroups=1&with_shared=0&archived=1") == [95]
    assert await ids("with_shared=FALSE") == [93, 95]
    assert await status_and_body(url, "/groups/90/projects?archived=maybe", "tok-rita") == (
        400,
        {"error": "archived is invalid"},
    )

    def listed() -> list[dict[str, Any]]:
        with client(url, "tok-rita") as gl:
            projects = gl.groups.get(90, lazy=True).projects.list(
                include_subgroups=True, with_shared=False, order_by="id", sort="asc", get_all=True
            )
            return [p.attributes for p in projects]

    projects = await asyncio.to_thread(listed)
    assert [p["id"] for p in projects] == [93, 94, 95]
    assert projects[1]["namespace"] == {
        **projects[1]["namespace"],
        "id": 91,
        "full_path": "top/sub",
    }
    assert projects[1]["path_with_namespace"] == "top/sub/nested"
    assert projects[2]["archived"] is True and projects[2]["visibility"] == "private"


async def test_group_issues_default_drops_archived_projects(serve: Serve) -> None:
    _, url = await serve(group_world())

    def fetch(token: str, **params: Any) -> list[int]:
        with client(url, token) as gl:
            issues = gl.groups.get(90, lazy=True).issues.list(
                issue_type="incident", scope="all", get_all=True, **params
            )
            return sorted(i.id for i in issues)

    # default non_archived=true: the archived project's incident is missing; shared never appears
    assert await asyncio.to_thread(fetch, "tok-rita") == [930, 940, 9999]
    assert await asyncio.to_thread(fetch, "tok-rita", non_archived=False) == [930, 940, 950, 9999]
    # guests do not see confidential incidents
    assert await asyncio.to_thread(fetch, "tok-gus", non_archived=False) == [930, 940, 950]

    status, body = await status_and_body(url, "/groups/90/issues?non_archived=false", "tok-rita")
    assert status == 200 and len(body) == 5  # the plain issue too
    issue = next(i for i in body if i["id"] == 930)
    assert issue["issue_type"] == "incident" and issue["type"] == "INCIDENT"
    assert issue["state"] == "opened" and issue["closed_at"] is None
    closed = next(i for i in body if i["issue_type"] == "issue")
    assert closed["state"] == "closed" and closed["closed_at"] == "2021-03-02T05:00:00.000Z"
    assert closed["updated_at"] >= closed["closed_at"]


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("issue_type=bug", "issue_type does not have a valid value"),
        ("state=open", "state does not have a valid value"),
        ("order_by=closed_at", "order_by does not have a valid value"),
        ("sort=random", "sort does not have a valid value"),
        ("scope=mine", "scope does not have a valid value"),
        ("updated_after=soon", "updated_after is invalid"),
        ("created_before=2021-13-45", "created_before is invalid"),
    ],
)
async def test_issue_parameter_validation(serve: Serve, query: str, error: str) -> None:
    _, url = await serve(group_world())
    for path in ("/projects/93/issues", "/groups/90/issues"):
        assert await status_and_body(url, f"{path}?{query}", "tok-rita") == (400, {"error": error})


async def test_issue_time_filters_are_inclusive(serve: Serve) -> None:
    _, url = await serve(group_world())
    status, body = await status_and_body(
        url,
        "/projects/93/issues?created_after=2021-03-01T00:00:00Z&created_before=2021-03-01T00:00:00Z",
        "tok-rita",
    )
    assert status == 200 and [i["id"] for i in body] == [930]
    status, body = await status_and_body(
        url,
        "/projects/93/issues?updated_after=2021-03-02T05:00:00Z&order_by=updated_at&sort=asc",
        "tok-rita",
    )
    assert status == 200 and [i["issue_type"] for i in body] == ["issue"]


# ---- faults ---------------------------------------------------------------------------------


async def test_fault_latency(serve: Serve) -> None:
    fake, url = await serve(s6_world())
    fake.faults.latency = 0.3
    started = time.monotonic()
    assert (await status_and_body(url, "/projects/63"))[0] == 200
    assert time.monotonic() - started >= 0.3


async def test_fault_5xx_burst_then_success(serve: Serve) -> None:
    fake, url = await serve(s6_world())
    fake.faults.status_codes = [502, 503]

    def fetch() -> dict[str, Any]:
        with client(url, "tok-rita", retry_transient_errors=True) as gl:
            return gl.http_get("/user")

    assert (await asyncio.to_thread(fetch))["id"] == 12
    assert [c.status for c in fake.calls_of("user")] == [502, 503, 200]
    assert fake.faults.status_codes == []


async def test_fault_429_with_and_without_retry_after(serve: Serve) -> None:
    fake, url = await serve(s6_world())
    fake.faults.status_codes = [429]
    fake.faults.retry_after = "7"
    response = await raw_get(url, "/projects/63")
    assert response.status_code == 429 and response.headers["Retry-After"] == "7"
    assert "RateLimit-Reset" in response.headers

    fake.faults.status_codes = [429]
    fake.faults.retry_after = None
    response = await raw_get(url, "/projects/63")
    assert response.status_code == 429 and "Retry-After" not in response.headers
    assert "too many times" in response.text

    fake.faults.status_codes = [429]
    fake.faults.retry_after = "0"

    def fetch() -> dict[str, Any]:
        with client(url, "tok-rita") as gl:  # python-gitlab obeys the 429 and retries
            return gl.http_get("/user")

    assert (await asyncio.to_thread(fetch))["id"] == 12
    assert [c.status for c in fake.calls_of("user")] == [429, 200]


async def test_fault_connection_reset(serve: Serve) -> None:
    fake, url = await serve(s6_world())
    fake.faults.reset_connections = 1
    with pytest.raises(requests.exceptions.ConnectionError):
        await raw_get(url, "/projects/63")
    assert fake.calls[-1].status == 0
    assert (await raw_get(url, "/projects/63")).status_code == 200


async def test_fault_malformed_json(serve: Serve) -> None:
    fake, url = await serve(s6_world())
    fake.faults.malformed_json = 1

    def fetch() -> Any:
        with client(url, "tok-rita") as gl:
            return gl.http_get("/user")

    with pytest.raises(gitlab.GitlabParsingError):
        await asyncio.to_thread(fetch)
    assert fake.calls[-1].status == 200
    assert (await asyncio.to_thread(fetch))["id"] == 12


async def test_fault_hang_times_out_the_client(serve: Serve) -> None:
    fake, url = await serve(s6_world())
    fake.faults.hang = 1.0

    def fetch() -> Any:
        with client(url, "tok-rita", timeout=0.2) as gl:
            return gl.http_get("/user")

    with pytest.raises(requests.exceptions.Timeout):
        await asyncio.to_thread(fetch)
    fake.faults.hang = 0.0
    await asyncio.sleep(1.0)  # let the hung handler finish before the server closes


async def test_faults_only_for_selected_kinds(serve: Serve) -> None:
    fake, url = await serve(s6_world())
    fake.faults.only_kinds = {"deployments"}
    fake.faults.status_codes = [500]
    assert (await status_and_body(url, "/user", "tok-rita"))[0] == 200
    assert (await status_and_body(url, "/projects/62/environments", "tok-rita"))[0] == 200
    assert await status_and_body(url, "/projects/62/deployments", "tok-rita") == (
        500,
        {"message": "500 Internal Server Error"},
    )
    assert [c.kind for c in fake.data_calls()] == ["environments", "deployments"]
    fake.reset_calls()
    assert fake.calls == []


async def test_calls_record_queries_and_tokens_without_showing_them(serve: Serve) -> None:
    fake, url = await serve(s6_world())
    await status_and_body(url, "/projects/62/deployments?page=2&page=3&per_page=5", "tok-rita")
    call = fake.calls[-1]
    assert call.query == {"page": "3", "per_page": "5"}
    assert call.token == "tok-rita" and "tok-rita" not in repr(call)
    assert (call.method, call.path, call.status) == ("GET", "/api/v4/projects/62/deployments", 200)
    assert await status_and_body(url, "/projects/62/pipelines", "tok-rita") == (
        404,
        {"message": "404 Not found"},
    )
    assert fake.calls[-1].kind == "other"


# ---- start()/close() and the demo world -------------------------------------------------


async def test_demo_world_is_served() -> None:
    started = time.monotonic()
    world = build_demo_world(date.today())
    assert time.monotonic() - started < 1.0
    assert build_demo_world(date.today()).deployments.keys() == world.deployments.keys()
    tiers = {env.tier for env in world.environments.values()}
    assert tiers == {"production", "staging", "testing", "development", "other"}
    assert any(e.state == "stopped" and e.tier == "production" for e in world.environments.values())

    fake = FakeGitLab(world)
    url = await fake.start()
    try:

        def explore() -> tuple[list[str], int, int]:
            with client(url, DEMO_TOKENS["demo-admin"]) as gl:
                paths = [
                    p.path_with_namespace
                    for p in gl.groups.get(10, lazy=True).projects.list(
                        include_subgroups=True, with_shared=False, get_all=True
                    )
                ]
            with client(url, DEMO_TOKENS["demo-reporter"]) as gl:
                project = gl.projects.get(101, lazy=True)
                deployments = project.deployments.list(
                    status="success",
                    order_by="finished_at",
                    finished_after=(date.today() - timedelta(days=30)).isoformat(),
                    iterator=True,
                    per_page=100,
                )
                count = sum(1 for _ in deployments)
                incidents = gl.groups.get(10, lazy=True).issues.list(
                    issue_type="incident", non_archived=False, get_all=True, scope="all"
                )
            return paths, count, len(incidents)

        paths, count, incidents = await asyncio.to_thread(explore)
        assert sorted(paths) == sorted(DEMO_PROJECTS.values())
        assert count > 10 and incidents > 10
        assert (await status_and_body(url, "/projects/101/deployments", "demo-guest"))[0] == 403
        assert (await status_and_body(url, "/projects/101", "demo-outsider"))[0] == 404
    finally:
        await fake.close()
