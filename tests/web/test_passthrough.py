"""The pass-through: every other /api/v4/ call reaches the (fake) GitLab and comes back intact.

Real HTTP both ways: the proxy app on a loopback port in front of the fake GitLab. python-gitlab
is driven as a new user would drive it, with the proxy as its URL.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import warnings

import aiohttp
import gitlab
import pytest

from proxy.demo.passthrough_routes import pattern_bytes
from proxy.demo.server import FakeGitLab
from proxy.demo.world import REPORTER, World
from proxy.telemetry.access_log import REQUEST_LOG
from tests.scenarios.s01_s05 import S1
from tests.web.test_request_log import json_logs, request_lines  # noqa: F401  (fixture)

RITA = {"PRIVATE-TOKEN": "tok-rita"}
Q = {"start_date": "2020-10-03", "end_date": "2021-01-03"}


def many_projects_world() -> World:
    """S1 plus 12 more projects in its group: a listing of 5 per page has 3 pages."""
    world = S1.world()
    group = world.groups[10]
    for pid in range(901, 913):
        world.add_project(pid, f"extra{pid}", group)
    return world


async def _in_thread(stack, token: str, call):
    def run():
        with gitlab.Gitlab(url=stack.base_url, private_token=token, timeout=30) as gl:
            return call(gl)

    return await asyncio.to_thread(run)


async def test_python_gitlab_as_a_new_user_with_the_proxy_as_its_url(start_stack) -> None:
    stack = await start_stack(many_projects_world())
    links: list[str] = []

    def session(gl: gitlab.Gitlab):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gl.auth()
        # python-gitlab compares the user's web_url (GitLab's own URL, in the JSON body, which
        # the proxy leaves alone) with its base URL: a warning, nothing breaks (README).
        assert [str(w.message) for w in caught if "base URL" in str(w.message)]
        user = gl.user.username
        project = gl.projects.get("s1/app")
        group = gl.groups.get("s1")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a Link naming another host would warn here
            listed = [item.id for item in group.projects.list(per_page=5, iterator=True)]
        # the Links a client pages with, followed as given
        response = gl.http_get(f"/groups/{group.id}/projects", query_data={"per_page": 5}, raw=True)
        links.append(response.headers["Link"])
        while "next" in response.links:
            response = gl.http_get(response.links["next"]["url"], raw=True)
            links.append(response.headers["Link"])
        metrics = gl.http_get(
            f"/projects/{project.id}/dora/metrics", {"metric": "deployment_frequency", **Q}
        )
        return user, project.path_with_namespace, listed, metrics

    user, path, listed, metrics = await _in_thread(stack, "tok-rita", session)
    assert (user, path) == ("rita", "s1/app")
    assert len(listed) == 13 and len(set(listed)) == 13
    assert len(links) == 3
    for link in links:
        assert f"<{stack.base_url}/api/v4/groups/10/projects?" in link
        assert stack.fake.url not in link
    status, rest = await stack.get(
        "/api/v4/projects/11/dora/metrics?metric=deployment_frequency"
        "&start_date=2020-10-03&end_date=2021-01-03",
        RITA,
    )
    assert (status, metrics) == (200, json.loads(rest))
    # the listing went through the pass-through, page by page
    pages = [c.query.get("page") for c in stack.fake.calls_of("group_projects")]
    assert {"2", "3"} <= set(pages)


async def test_every_listing_page_is_reachable_through_the_links(start_stack) -> None:
    """python-gitlab follows `rel="next"` itself: all pages come through the proxy."""
    stack = await start_stack(many_projects_world())

    def listing(gl: gitlab.Gitlab) -> list[int]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a next page on another host warns
            group = gl.groups.get(10, lazy=True)
            return [p.id for p in group.projects.list(per_page=5, get_all=True)]

    stack.fake.reset_calls()
    ids = await _in_thread(stack, "tok-rita", listing)
    assert len(ids) == 13
    assert len(stack.fake.calls_of("group_projects")) == 3


async def test_link_and_location_name_the_public_url(start_stack) -> None:
    stack = await start_stack(many_projects_world(), public_url="https://dora.example.com/")
    response = await stack.client.get("/api/v4/groups/10/projects?per_page=5", headers=RITA)
    assert response.status == 200
    link = response.headers["Link"]
    assert link.count("<https://dora.example.com/api/v4/groups/10/projects?") == 3, link
    moved = await stack.client.get(
        "/api/v4/projects/11/packages/generic/moved/1.0/12.bin",
        headers=RITA,
        allow_redirects=False,
    )
    assert moved.status == 302
    assert moved.headers["Location"] == (
        "https://dora.example.com/api/v4/projects/11/packages/generic/generated/1.0/12.bin"
    )


async def test_location_without_public_url_names_the_host_the_caller_used(start_stack) -> None:
    stack = await start_stack(S1.world())
    moved = await stack.client.get(
        "/api/v4/projects/11/packages/generic/moved/1.0/12.bin",
        headers=RITA,
        allow_redirects=False,
    )
    assert moved.headers["Location"].startswith(f"{stack.base_url}/api/v4/projects/11/")
    followed = await stack.client.get(
        "/api/v4/projects/11/packages/generic/moved/1.0/1000.bin", headers=RITA
    )
    assert await followed.read() == pattern_bytes(1000)


async def test_post_put_delete_bodies_arrive_intact(start_stack) -> None:
    stack = await start_stack(S1.world())
    received = stack.fake.received

    # POST JSON (unicode), then a form body
    issue = {"title": "Déploiement \u2603", "description": 'line1\nline2 "quoted"'}
    response = await stack.client.post("/api/v4/projects/11/issues", json=issue, headers=RITA)
    assert response.status == 201
    assert (await response.json())["title"] == issue["title"]
    raw = json.dumps(issue).encode()
    assert received[-1].sha256 == hashlib.sha256(raw).hexdigest()
    response = await stack.client.post(
        "/api/v4/projects/11/issues", data={"title": "a&b=c"}, headers=RITA
    )
    assert (await response.json())["title"] == "a&b=c"

    # PUT 3 MB of random bytes, streamed by the client in pieces (chunked, no Content-Length)
    body = os.urandom(3 * 1024 * 1024 + 7)

    async def pieces():
        for start in range(0, len(body), 100_000):
            yield body[start : start + 100_000]

    path = "/api/v4/projects/11/packages/generic/tool/1.0/tool.bin"
    response = await stack.client.put(path, data=pieces(), headers=RITA)
    assert response.status == 201, await response.text()
    assert (received[-1].method, received[-1].length) == ("PUT", len(body))
    assert received[-1].sha256 == hashlib.sha256(body).hexdigest()
    # and with a Content-Length
    response = await stack.client.put(path, data=body, headers=RITA)
    assert response.status == 201
    assert received[-1].headers["Content-Length"] == str(len(body))
    download = await stack.client.get(path, headers=RITA)
    assert await download.read() == body

    # DELETE with a body (GitLab takes parameters in DELETE bodies too)
    response = await stack.client.delete(path, data=b"reason=cleanup", headers=RITA)
    assert response.status == 204
    assert (received[-1].method, received[-1].length) == ("DELETE", len(b"reason=cleanup"))
    assert (await stack.client.get(path, headers=RITA)).status == 404


async def test_credentials_reach_the_upstream_and_hop_by_hop_headers_do_not(start_stack) -> None:
    stack = await start_stack(S1.world())
    for headers in (
        {"PRIVATE-TOKEN": "tok-rita"},
        {"Authorization": "Bearer tok-rita"},
        {"JOB-TOKEN": "tok-rita"},
    ):
        extra = {
            "X-Custom": "kept",
            "Connection": "keep-alive, X-Hop",
            "X-Hop": "dropped",
            "Proxy-Authorization": "Basic secret",
            "Cookie": "_gitlab_session=abc",
        }
        stack.client.session.cookie_jar.clear()  # only the Cookie header below is sent
        response = await stack.client.post(
            "/api/v4/projects/11/issues", json={"title": "t"}, headers={**headers, **extra}
        )
        assert response.status == 201
        got = stack.fake.received[-1].headers
        name, value = next(iter(headers.items()))
        assert got[name] == value
        assert got["X-Custom"] == "kept"
        assert got["Cookie"] == "_gitlab_session=abc"
        assert "X-Hop" not in got and "Proxy-Authorization" not in got
        assert got["Host"] == stack.fake.url.removeprefix("http://")
        assert got["X-Forwarded-For"] == "127.0.0.1"  # the caller's address
    await stack.client.post(
        "/api/v4/projects/11/issues",
        json={"title": "t"},
        headers={**RITA, "X-Forwarded-For": "203.0.113.9"},
    )
    assert stack.fake.received[-1].headers["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"
    # a token the upstream does not know: its own 401 comes back
    response = await stack.client.get("/api/v4/projects/11", headers={"PRIVATE-TOKEN": "nope"})
    assert (response.status, await response.json()) == (401, {"message": "401 Unauthorized"})


async def test_status_and_head_answers_pass_unchanged(start_stack) -> None:
    stack = await start_stack(S1.world())
    response = await stack.client.get("/api/v4/projects/999", headers=RITA)
    assert (response.status, await response.json()) == (404, {"message": "404 Project Not Found"})
    head = await stack.client.head("/api/v4/projects/11", headers=RITA)
    assert head.status == 200 and await head.read() == b""
    assert int(head.headers["Content-Length"]) > 100  # the GET's length, as the upstream said


async def test_pass_through_off_keeps_the_json_404(start_stack) -> None:
    stack = await start_stack(S1.world(), pass_through="off")
    for method in ("GET", "POST", "DELETE"):
        response = await stack.client.request(method, "/api/v4/projects/11", headers=RITA)
        assert (response.status, await response.json()) == (404, {"error": "404 Not Found"})
    assert stack.fake.calls_of("project") == []
    status, _ = await stack.get(
        "/api/v4/projects/11/dora/metrics?metric=deployment_frequency", RITA
    )
    assert status == 200  # the DORA routes are not affected


async def test_pass_through_read_only_forwards_get_and_head_only(start_stack) -> None:
    stack = await start_stack(S1.world(), pass_through="read-only")
    assert (await stack.client.get("/api/v4/projects/11", headers=RITA)).status == 200
    assert (await stack.client.head("/api/v4/projects/11", headers=RITA)).status == 200
    before = len(stack.fake.received)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = await stack.client.request(
            method, "/api/v4/projects/11/issues", json={"title": "x"}, headers=RITA
        )
        assert response.status == 405
        assert response.headers["Allow"] == "GET, HEAD"
        assert await response.json() == {"error": "405 Not Allowed"}
    assert len(stack.fake.received) == before


async def test_other_paths_keep_json_404_and_dora_paths_keep_405(start_stack) -> None:
    stack = await start_stack(S1.world())
    response = await stack.client.get("/api/v5/projects", headers=RITA)
    assert (response.status, await response.json()) == (404, {"error": "404 Not Found"})
    response = await stack.client.get("/projects/11", headers=RITA)
    assert response.status == 404
    response = await stack.client.post("/api/v4/projects/11/dora/metrics", headers=RITA)
    assert response.status == 405
    assert stack.fake.calls == []


async def test_upstream_down_is_a_502_json(start_stack) -> None:
    stack = await start_stack(S1.world())
    await stack.fake.close()
    response = await stack.client.get("/api/v4/projects/11", headers=RITA)
    assert response.status == 502
    assert await response.json() == {"message": "502 Bad Gateway"}
    assert "GET /api/v4/projects/11" in response.headers["X-Dora-Proxy-Upstream-Error"]


async def test_upstream_slow_is_a_504_json(start_stack) -> None:
    stack = await start_stack(S1.world(), upstream_timeout=0.3, request_deadline=0.3)
    stack.fake.faults.latency = 2.0
    response = await stack.client.get("/api/v4/projects/11", headers=RITA)
    assert response.status == 504
    assert await response.json() == {"message": "504 Gateway Timeout"}


async def test_a_client_that_hangs_up_mid_download_frees_the_upstream(start_stack) -> None:
    stack = await start_stack(S1.world())
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{stack.base_url}/api/v4/projects/11/packages/generic/generated/1/50000000.bin",
            headers=RITA,
        ) as response,
    ):
        await response.content.readexactly(1_000_000)
    await asyncio.sleep(0.2)
    # the proxy still serves
    assert (await stack.client.get("/api/v4/projects/11", headers=RITA)).status == 200


async def test_no_credential_in_any_log_line(json_logs, start_stack) -> None:  # noqa: F811
    stack = await start_stack(S1.world())
    secrets = ["glpat-pt-secret", "glpat-bearer-secret", "glpat-job-secret", "glpat-cookie"]
    stack.world.add_user(77, "pt", secrets[0])
    stack.world.add_member(77, stack.world.groups[10], REPORTER)
    await stack.client.get("/api/v4/projects/11", headers={"PRIVATE-TOKEN": secrets[0]})
    await stack.client.get("/api/v4/projects/11", headers={"Authorization": f"Bearer {secrets[1]}"})
    await stack.client.get("/api/v4/projects/11", headers={"JOB-TOKEN": secrets[2]})
    await stack.client.get(
        "/api/v4/projects/11", headers={"Cookie": f"_gitlab_session={secrets[3]}"}
    )
    await stack.client.get("/api/v4/projects/11?private_token=glpat-query-secret")
    await stack.fake.close()
    await stack.client.get("/api/v4/projects/11", headers={"PRIVATE-TOKEN": secrets[0]})  # 502
    REQUEST_LOG.flush()
    output = json_logs.getvalue()
    assert len(request_lines(json_logs)) == 6
    for secret in [*secrets, "glpat-query-secret"]:
        assert secret not in output
    assert "upstream_failure" in output  # the 502 was logged, without the token


@pytest.mark.parametrize(
    "target", ["/api/v4/projects/1/dora/metrics/", "/api/v4/version", "/api/v4/no/such/thing"]
)
async def test_api_paths_without_a_route_are_forwarded(start_stack, target: str) -> None:
    stack = await start_stack(S1.world())
    response = await stack.client.get(target, headers=RITA)
    async with (
        aiohttp.ClientSession() as session,
        session.get(stack.fake.url + target, headers=RITA) as direct,
    ):
        assert (response.status, await response.read()) == (direct.status, await direct.read())
    assert [c.path for c in stack.fake.calls[-2:]] == [target, target]


async def test_a_request_that_comes_back_to_the_proxy_is_refused(start_stack) -> None:
    """`upstream_url` pointing at an nginx that routes back here would loop: the proxy marks
    what it forwards (Via) and answers 508 to its own requests."""
    stack = await start_stack(S1.world())
    await stack.client.post("/api/v4/projects/11/issues", json={"title": "t"}, headers=RITA)
    assert "gitlab-dora-proxy" in stack.fake.received[-1].headers["Via"]
    looped = {**RITA, "Via": "1.1 gitlab-dora-proxy"}
    response = await stack.client.get("/api/v4/projects/11", headers=looped)
    assert (response.status, await response.json()) == (508, {"message": "508 Loop Detected"})
    response = await stack.client.post(
        "/api/graphql", json={"query": "{ currentUser { username } }"}, headers=looped
    )
    assert response.status == 508
    assert stack.fake.calls_of("project") == []


async def test_one_callers_cookies_never_reach_another(start_stack) -> None:
    """The shared client session keeps no cookie jar: a Set-Cookie goes back to its caller
    only, and the next caller's request carries no cookie it did not send."""
    fake = FakeGitLab(S1.world())
    # a host name, not an IP address: a cookie jar would keep cookies for it
    fake.url = (await fake.start()).replace("127.0.0.1", "localhost")
    stack = await start_stack(fake.world, fake=fake)
    response = await stack.client.post(
        "/api/v4/projects/11/issues", json={"title": "a"}, headers=RITA
    )
    assert "session-of-tok-rita" in response.headers["Set-Cookie"]
    stack.client.session.cookie_jar.clear()
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as other,
        other.post(
            f"{stack.base_url}/api/v4/projects/11/issues",
            json={"title": "b"},
            headers={"PRIVATE-TOKEN": "tok-maria"},
        ) as second,
    ):
        assert second.status in (201, 401)
    assert "Cookie" not in stack.fake.received[-1].headers
    await fake.close()


async def test_an_upload_with_expect_100_continue_goes_through(start_stack) -> None:
    """curl sends `Expect: 100-continue` before large uploads; the proxy's server answers the
    100 itself and forwards a plain request."""
    stack = await start_stack(S1.world())
    body = os.urandom(200_000)
    response = await stack.client.put(
        "/api/v4/projects/11/packages/generic/tool/2.0/x.bin",
        data=body,
        headers=RITA,
        expect100=True,
    )
    assert response.status == 201
    received = stack.fake.received[-1]
    assert received.sha256 == hashlib.sha256(body).hexdigest()
    assert "Expect" not in received.headers


async def test_an_upload_may_outlast_the_request_deadline_while_it_flows(start_stack) -> None:
    """A big upload takes as long as the caller's link needs: the request deadline bounds the
    wait for an answer, not the body; a body that keeps flowing is never cut."""
    stack = await start_stack(S1.world(), request_deadline=0.5, upstream_timeout=1.0)
    sent = hashlib.sha256()

    async def slow():
        for _ in range(8):  # 1.6 s in all, never silent for 1 s
            piece = os.urandom(10_000)
            sent.update(piece)
            yield piece
            await asyncio.sleep(0.2)

    response = await stack.client.put(
        "/api/v4/projects/11/packages/generic/tool/3.0/slow.bin", data=slow(), headers=RITA
    )
    assert response.status == 201, await response.text()
    assert stack.fake.received[-1].sha256 == sent.hexdigest()


async def test_an_upload_that_stalls_is_cut(start_stack) -> None:
    stack = await start_stack(S1.world(), request_deadline=5.0, upstream_timeout=0.5)

    async def stalls():
        yield b"x" * 1000
        await asyncio.sleep(3)
        yield b"y"

    try:
        response = await stack.client.put(
            "/api/v4/projects/11/packages/generic/tool/4.0/stall.bin", data=stalls(), headers=RITA
        )
        status = response.status
    except aiohttp.ClientError:
        status = None  # the proxy may close the connection while the body is still coming
    assert status in (504, None)
    assert not any(r.path.endswith("/stall.bin") for r in stack.fake.received)
