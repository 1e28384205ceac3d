"""Bad input: whatever a client sends gets GitLab's answer or a clear 400, never a 500.

Hypothesis fuzzes query strings (keys from the proxy's own OpenAPI document, their `[]` forms
and junk; values from dates, junk, unicode and very long text), path ids (unicode,
%-encodings, dots, slashes) and credential header values, against one running stack per test.
Raw-socket requests cover what an HTTP client library refuses to send: invalid UTF-8, broken
%-escapes, oversized request lines and headers.

Every answer must be JSON (except the HTTP parser's own refusals of oversized input, which must
be 400/414/431), and no status may be 5xx: the fake GitLab has no faults switched on here, so a
502 would mean the proxy sent GitLab something GitLab could not take.
"""

from __future__ import annotations

import asyncio
import json
import string
from datetime import UTC, date, datetime
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from proxy.app import MAX_LINE_SIZE as MAX_LINE
from proxy.query import INTERVALS, METRICS, TIERS
from proxy.web.openapi import DOCUMENT
from tests.scenarios.s06_s10 import build_s6

NOW = datetime(2021, 7, 15, 12, 0, tzinfo=UTC)
EXAMPLES = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TOKENS = ["tok-rita", "tok-admin", "tok-gus", "tok-nina", "tok-unknown"]
P401 = {"message": "You do not have permission to access dora metrics."}
UNAUTHORIZED = {"message": "401 Unauthorized"}
PROJECT_NOT_FOUND = {"message": "404 Project Not Found"}
GROUP_NOT_FOUND = {"message": "404 Group Not Found"}
CATCH_ALL = {"error": "404 Not Found"}


def s6_world():
    from proxy.demo.world import World

    world = World().add_cast()
    build_s6(world)
    return world


def documented_query_names() -> list[str]:
    """Query parameter names of the DORA operations, from the served OpenAPI document."""
    parameters = DOCUMENT["components"]["parameters"]
    names = []
    for item in DOCUMENT["paths"]["/api/v4/projects/{id}/dora/metrics"]["get"]["parameters"]:
        parameter = parameters[item["$ref"].rsplit("/", 1)[1]] if "$ref" in item else item
        if parameter["in"] == "query":
            names.append(parameter["name"])
    return names


KNOWN = documented_query_names()
KEYS = st.one_of(
    st.sampled_from(KNOWN),
    st.sampled_from([f"{name.removesuffix('[]')}[]" for name in KNOWN]),
    st.sampled_from(["environment_tier", "group_project_ids", "page", "per_page", "", "[]"]),
    st.sampled_from([f"{name}[0]" for name in KNOWN] + ["metric[][]", "a[b]c", "%"]),
    st.text(max_size=12),
)
# Years 1900-2200: the ends of the calendar are a known bug with their own test below.
DATES = st.dates(min_value=date(1900, 1, 1), max_value=date(2200, 12, 31))
DATE_TEXT = st.one_of(
    DATES.map(date.isoformat),
    DATES.map(lambda d: d.strftime("%Y%m%d")),
    st.dates(min_value=date(2020, 1, 1), max_value=date(2022, 12, 31)).map(date.isoformat),
    st.builds(
        lambda d, t: f"{d.isoformat()}T{t}",
        DATES,
        st.sampled_from(["10:00:00Z", "10:00:00+01:00", "10:00:00 01:00", "25:99", "x"]),
    ),
    st.sampled_from(["0000-01-01", "9999-12-31", "2021-02-30", "2021-13-01", "-2021-01-01"]),
    st.sampled_from(["Mar 1 2021", "yesterday", "2021/01/01", "1e9", "２０２１-０１-０１"]),
)
VALUES = st.one_of(
    st.sampled_from([*METRICS, *INTERVALS, *TIERS, "", "ALL", "Production", "null", "[]"]),
    DATE_TEXT,
    st.text(max_size=40),
    st.text(alphabet=string.printable, min_size=1000, max_size=4000),
    st.text(min_size=500, max_size=1500),
)
PAIRS = st.lists(st.tuples(KEYS, VALUES), max_size=8)


def encode_query(pairs: list[tuple[str, str]], raw: bool) -> str:
    """`key=value&…` with each part %-encoded (UTF-8), or with only `&`, `=`, `#`, `%` and
    whitespace encoded when `raw` (the rest goes on the wire as it is)."""
    if raw:
        return "&".join(f"{_raw(k)}={_raw(v)}" for k, v in pairs)
    return "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in pairs)


def _raw(text: str) -> str:
    return quote(text, safe="".join(c for c in string.printable if c not in "&=#% \t\r\n\x0b\x0c"))


async def send(stack, target: str, headers: dict[str, str] | None = None):
    """GET a raw (already encoded) target; (status, content type, body text)."""
    url = URL(f"{stack.base_url}{target}", encoded=True)
    async with stack.client.session.get(url, headers=headers or {}) as response:
        return response.status, response.content_type, await response.text()


def assert_clear_answer(status: int, content_type: str, body: str, allowed: set[int]) -> None:
    assert status < 500, (status, body)
    assert status in allowed, (status, body)
    assert content_type == "application/json", (status, content_type, body)
    parsed = json.loads(body)
    if status != 200:
        assert isinstance(parsed, dict) and set(parsed) <= {"error", "message"}, body
        assert "Traceback" not in body and "File " not in body


async def test_random_query_strings(start_stack) -> None:
    stack = await start_stack(s6_world(), now=NOW, upstream_max_retries=0)

    @EXAMPLES
    @given(
        pairs=PAIRS,
        raw=st.booleans(),
        path=st.sampled_from(
            [
                "/api/v4/projects/62/dora/metrics",
                "/api/v4/projects/63/dora/metrics",
                "/api/v4/projects/s6%2Fsub%2Fapp/dora/metrics",
                "/api/v4/groups/60/dora/metrics",
                "/api/v4/projects/999999/dora/metrics",
            ]
        ),
        token=st.sampled_from([*TOKENS, None]),
    )
    def check(pairs, raw, path, token) -> None:
        target = f"{path}?{encode_query(pairs, raw)}"
        headers = {"PRIVATE-TOKEN": token} if token else {}
        status, content_type, body = run(send(stack, target, headers))
        if len(target) > MAX_LINE and status in (400, 414, 431):
            return  # the HTTP parser's own early refusal of an oversized request line
        assert_clear_answer(status, content_type, body, {200, 400, 401, 404})

    await in_thread(check)


async def test_random_path_ids(start_stack) -> None:
    # pass-through off: an id that makes another /api/v4/ path would otherwise get GitLab's answer
    stack = await start_stack(s6_world(), now=NOW, upstream_max_retries=0, pass_through="off")
    ids = st.one_of(
        st.sampled_from(
            ["62", "s6/sub/app", "S6/SUB/APP", "..", ".", "...", "62#x", "62?x", "%2e%2e", "0"]
        ),
        st.integers(min_value=-(10**30), max_value=10**30).map(str),
        st.text(min_size=1, max_size=30),
        st.text(alphabet="./%#?;=&+ \\62s", min_size=1, max_size=12),
    )

    @EXAMPLES
    @given(
        ident=ids,
        encoding=st.sampled_from(["full", "slash-only", "raw"]),
        container=st.sampled_from(["projects", "groups"]),
    )
    def check(ident: str, encoding: str, container: str) -> None:
        if encoding == "full":
            segment = quote(ident, safe="")
        elif encoding == "slash-only":
            segment = quote(ident, safe="").replace("%2E", ".").replace("%25", "%")
        else:
            segment = _raw(ident).replace("%2F", "/").replace("%25", "%")
        target = (
            f"/api/v4/{container}/{segment}/dora/metrics"
            "?metric=deployment_frequency&start_date=2021-06-01&end_date=2021-06-30"
        )
        status, content_type, body = run(send(stack, target, {"PRIVATE-TOKEN": "tok-rita"}))
        assert_clear_answer(status, content_type, body, {200, 400, 404, 405})
        if status == 404:
            assert json.loads(body) in (PROJECT_NOT_FOUND, GROUP_NOT_FOUND, CATCH_ALL), body

    await in_thread(check)


async def test_random_credential_headers(start_stack) -> None:
    stack = await start_stack(s6_world(), now=NOW, upstream_max_retries=0)
    values = st.one_of(
        st.sampled_from(TOKENS),
        st.text(max_size=60),
        st.text(alphabet=string.printable, max_size=200),
        st.builds(lambda t: f"tok-rita{t}", st.text(max_size=3)),
        st.text(min_size=3000, max_size=7000),
    )

    @EXAMPLES
    @given(
        name=st.sampled_from(["PRIVATE-TOKEN", "Authorization", "JOB-TOKEN"]),
        scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Bearer  "]),
        value=values,
        project=st.sampled_from(["62", "63"]),
    )
    def check(name: str, scheme: str, value: str, project: str) -> None:
        header = f"{scheme}{value}" if name == "Authorization" else value
        if any(c in header for c in "\r\n\x00") or not header.isprintable():
            return  # an HTTP client cannot send these; the raw-socket test does
        target = (
            f"/api/v4/projects/{project}/dora/metrics"
            "?metric=deployment_frequency&start_date=2021-06-01&end_date=2021-06-30"
        )
        status, content_type, body = run(send(stack, target, {name: header}))
        if status in (400, 431) and len(header.encode()) > 8000:
            return  # the HTTP parser's own refusal of an oversized header
        assert_clear_answer(status, content_type, body, {200, 401, 403, 404})
        if status == 401:
            assert json.loads(body) in (P401, UNAUTHORIZED), body
        if status == 200:
            assert name != "JOB-TOKEN" and value.strip() in ("tok-rita", "tok-admin")

    await in_thread(check)


@pytest.mark.parametrize("time_zone", ["UTC", "America/New_York"])
async def test_dates_at_the_ends_of_the_calendar(start_stack, time_zone: str) -> None:
    """No deployment can lie there, so GitLab's answer is its empty one."""
    stack = await start_stack(s6_world(), now=NOW, time_zone=time_zone, upstream_max_retries=0)
    problems = []
    for dates in (
        "start_date=9999-12-30&end_date=9999-12-31",
        "start_date=0001-01-01&end_date=0001-01-02",
    ):
        for path in ("/api/v4/projects/62/dora/metrics", "/api/v4/groups/60/dora/metrics"):
            for metric in METRICS:
                target = f"{path}?metric={metric}&{dates}"
                answer = await send(stack, target, {"PRIVATE-TOKEN": "tok-rita"})
                if answer != (200, "application/json", "[]"):
                    problems.append(f"{target}: {answer}")
    assert not problems, "\n".join(problems)


RAW_CASES = [
    # (request line target, extra header lines)
    (b"/api/v4/projects/62/dora/metrics?metric=%ZZ&start_date=%E9", []),
    (b"/api/v4/projects/62/dora/metrics?metric=deployment_frequency&%C3=%C3%28", []),
    (b"/api/v4/projects/%C3%28/dora/metrics?metric=deployment_frequency", []),
    (b"/api/v4/projects/%ZZ/dora/metrics?metric=deployment_frequency", []),
    (b"/api/v4/projects/%00/dora/metrics?metric=deployment_frequency", []),
    (b"/api/v4/projects/62%00/dora/metrics?metric=deployment_frequency", []),
    (b"/api/v4/projects/62/dora/metrics?metric=deployment_frequency%00", []),
    (b"/api/v4/projects/\xc3\xa9/dora/metrics?metric=deployment_frequency", []),
    (b"/api/v4/projects/62/dora/metrics?metric=\xff\xfe", []),
    (b"/api/v4/projects/62/dora/metrics?metric=deployment_frequency", [b"PRIVATE-TOKEN: \xff\xfe"]),
    (b"/api/v4/projects/62/dora/metrics?metric=deployment_frequency",
     [b"PRIVATE-TOKEN: tok-\xc3\xa9"]),
    (b"/api/v4/projects/62/dora/metrics?metric=deployment_frequency",
     [b"Authorization: Bearer \xe2\x82\xac"]),
    (b"/api/v4/projects/62/dora/metrics?metric=deployment_frequency", [b"PRIVATE-TOKEN: a\x01b"]),
    (b"/api/v4/projects/62/dora/metrics?metric=deployment_frequency",
     [b"PRIVATE-TOKEN: tok-rita", b"PRIVATE-TOKEN: tok-gus"]),
    (b"/api/v4/projects/62/../../../-/health", []),
    (b"/api/v4/projects/62/dora/metrics/../../63/dora/metrics?metric=deployment_frequency", []),
    (b"//api/v4//projects//62//dora//metrics?metric=deployment_frequency", []),
    (b"/api/v4/projects/62/dora/metrics?" + b"&" * 3000 + b"metric=deployment_frequency", []),
    (b"/api/v4/projects/62/dora/metrics?" + b"metric[]=x&" * 600, []),
]  # fmt: skip


async def test_raw_requests_an_http_client_would_refuse(start_stack) -> None:
    stack = await start_stack(s6_world(), now=NOW, upstream_max_retries=0)
    for target, extra in RAW_CASES:
        head = [b"GET " + target + b" HTTP/1.1", b"Host: proxy", *extra]
        status, headers, body = await raw_request(stack, head)
        assert status < 500, (target, extra, status, body)
        assert status in (200, 400, 401, 404), (target, extra, status, body)
        if status != 400 or headers.get("content-type", "").startswith("application/json"):
            assert headers.get("content-type", "").startswith("application/json"), (target, body)
            json.loads(body)


async def test_oversized_request_lines_and_headers_are_refused_early(start_stack) -> None:
    stack = await start_stack(s6_world(), now=NOW)
    long_query = b"metric=deployment_frequency&junk=" + b"x" * 16_000
    cases = [
        [b"GET /api/v4/projects/62/dora/metrics?" + long_query + b" HTTP/1.1", b"Host: p"],
        [b"GET /api/v4/projects/" + b"6" * 16_000 + b"/dora/metrics HTTP/1.1", b"Host: p"],
        [
            b"GET /api/v4/projects/62/dora/metrics?metric=deployment_frequency HTTP/1.1",
            b"Host: p",
            b"PRIVATE-TOKEN: " + b"t" * 16_000,
        ],
        [
            b"GET /api/v4/projects/62/dora/metrics?metric=deployment_frequency HTTP/1.1",
            b"Host: p",
            b"X-Junk: " + b"j" * 16_000,
        ],
    ]
    for head in cases:
        status, _, body = await raw_request(stack, head)
        assert status in (400, 414, 431), (head[0][:60], status, body[:200])
    assert stack.fake.calls == [], "refused before anything went upstream"


async def test_openapi_document_describes_the_running_app(start_stack) -> None:
    stack = await start_stack(s6_world(), now=NOW)
    status, content_type, body = await send(stack, "/-/openapi.json")
    assert (status, content_type) == (200, "application/json")
    document = json.loads(body)
    assert document["openapi"] == "3.1.0"

    app = stack.client.app
    registered = {
        (route.resource.canonical, route.method.lower())
        for route in app.router.routes()
        if route.method not in ("HEAD", "*")  # "*": the catch-all for requests no route takes
    }
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert documented == registered, "every route documented, nothing documented that is absent"

    # Every $ref resolves, and the enums are the proxy's own.
    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for child in node.values():
                yield from refs(child)
        elif isinstance(node, list):
            for child in node:
                yield from refs(child)

    for ref in refs(document):
        target = document
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
    parameters = document["components"]["parameters"]
    assert parameters["metric"]["schema"]["enum"] == list(METRICS)
    assert parameters["interval"]["schema"]["enum"] == list(INTERVALS)
    assert parameters["environment_tiers_array"]["schema"]["items"]["enum"] == list(TIERS)
    assert set(KNOWN) == {
        "metric",
        "start_date",
        "end_date",
        "interval",
        "environment_tiers[]",
        "environment_tiers",
    }


# ---- helpers ------------------------------------------------------------------------------------

_LOOP: asyncio.AbstractEventLoop | None = None


def run(coroutine):
    """Run a coroutine on the test's event loop from the Hypothesis worker thread."""
    assert _LOOP is not None
    return asyncio.run_coroutine_threadsafe(coroutine, _LOOP).result(timeout=60)


async def in_thread(check) -> None:
    """Hypothesis drives a synchronous test: run it in a thread while this loop serves."""
    global _LOOP
    _LOOP = asyncio.get_running_loop()
    try:
        await asyncio.to_thread(check)
    finally:
        _LOOP = None


async def raw_request(stack, head: list[bytes]) -> tuple[int, dict[str, str], str]:
    """One request written byte for byte on a socket; (status, headers, body)."""
    url = URL(stack.base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    try:
        writer.write(b"\r\n".join([*head, b"Connection: close", b"", b""]))
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=10)
    finally:
        writer.close()
    header_part, _, body = data.partition(b"\r\n\r\n")
    lines = header_part.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body.decode("utf-8", "replace")
