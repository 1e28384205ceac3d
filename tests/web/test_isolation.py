"""No leaks across callers: a cached answer never reaches someone GitLab would turn away, and no
credential ends up in the cache, the logs, an error body, a header or the metrics.

Every test goes through real HTTP: the proxy app on a TestServer in front of the fake GitLab on a
real socket. The fixture is scenario S6 (spec §10): private project 62 in private group 61
`s6/sub`, public project 63 and public group 60, rita Reporter of group 60, gus Guest, pat
Planner, devon Developer of project 62 only, nina nobody.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import aiohttp
import structlog
from aiohttp import web
from yarl import URL

from proxy.credentials import Credential, credential_key, mac_key
from proxy.demo import FakeGitLab
from proxy.demo.world import REPORTER, World
from proxy.errors import TOKEN_IN_QUERY
from proxy.server_secret import SECRET_FILE
from proxy.telemetry.redaction import redact
from proxy.web.handlers import SERVICE
from tests.scenarios.s06_s10 import build_s6

NOW = datetime(2021, 7, 15, 12, 0, tzinfo=UTC)
Q = "metric=deployment_frequency&start_date=2021-06-01&end_date=2021-06-30"
PROJECT_62 = f"/api/v4/projects/62/dora/metrics?{Q}"
PROJECT_63 = f"/api/v4/projects/63/dora/metrics?{Q}"
GROUP_60 = f"/api/v4/groups/60/dora/metrics?{Q}"
GROUP_61 = f"/api/v4/groups/61/dora/metrics?{Q}"
A = '[{"date":"2021-06-01","value":1}]'
B = '[{"date":"2021-06-01","value":1},{"date":"2021-06-02","value":2}]'
C = '[{"date":"2021-06-02","value":2}]'
P401 = '{"message":"You do not have permission to access dora metrics."}'
UNAUTHORIZED = '{"message":"401 Unauthorized"}'
PROJECT_NOT_FOUND = '{"message":"404 Project Not Found"}'
GROUP_NOT_FOUND = '{"message":"404 Group Not Found"}'

RITA = {"PRIVATE-TOKEN": "tok-rita"}
SCOPELESS = "tok-rita-read-user-only"
TOKENS = (
    "tok-admin",
    "tok-rita",
    "tok-gus",
    "tok-pat",
    "tok-devon",
    "tok-nina",
    "tok-erin",
    "tok-never-issued",
    SCOPELESS,
)


def s6_world() -> World:
    world = World().add_cast()
    build_s6(world)
    world.scopeless_tokens[SCOPELESS] = 12  # rita's user, a token without the api scope
    return world


async def fetch(stack, target: str, headers: dict[str, str] | None = None):
    """GET the raw target; (status, body text, response headers)."""
    url = URL(f"{stack.base_url}{target}", encoded=True)
    async with stack.client.session.get(url, headers=headers or {}) as response:
        return response.status, await response.text(), response.headers


async def gitlab_says(fake: FakeGitLab, path: str, headers: dict[str, str]) -> tuple[int, str]:
    """What the (fake) GitLab itself answers, compacted like the proxy's JSON."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{fake.url}/api/v4{path}", headers=headers) as response,
    ):
        body = await response.json(content_type=None)
        return response.status, json.dumps(body, separators=(",", ":"))


# Callers GitLab turns away, each after rita has warmed the cache for the same question.
# (label, target, headers, status, body)
TURNED_AWAY = [
    ("non-member, private project", PROJECT_62, {"PRIVATE-TOKEN": "tok-nina"}, 404,
     PROJECT_NOT_FOUND),
    ("guest", PROJECT_62, {"PRIVATE-TOKEN": "tok-gus"}, 401, P401),
    ("planner", PROJECT_62, {"PRIVATE-TOKEN": "tok-pat"}, 401, P401),
    ("unknown token", PROJECT_62, {"PRIVATE-TOKEN": "tok-never-issued"}, 401, UNAUTHORIZED),
    ("unknown bearer token", PROJECT_62, {"Authorization": "Bearer tok-never-issued"}, 401,
     UNAUTHORIZED),
    ("token without api scope", PROJECT_62, {"PRIVATE-TOKEN": SCOPELESS}, 403, None),
    ("anonymous", PROJECT_62, {}, 404, PROJECT_NOT_FOUND),
    ("JOB-TOKEN only", PROJECT_62, {"JOB-TOKEN": "tok-rita"}, 404, PROJECT_NOT_FOUND),
    ("Basic auth", PROJECT_62,
     {"Authorization": "Basic " + base64.b64encode(b"rita:tok-rita").decode()}, 404,
     PROJECT_NOT_FOUND),
    ("session cookie", PROJECT_62, {"Cookie": "_gitlab_session=tok-rita"}, 404,
     PROJECT_NOT_FOUND),
    ("PRIVATE-TOKEN wins over Bearer", PROJECT_62,
     {"PRIVATE-TOKEN": "tok-gus", "Authorization": "Bearer tok-rita"}, 401, P401),
    ("token no GitLab could issue", PROJECT_62, {"PRIVATE-TOKEN": "tok-€-rita"}, 401,
     UNAUTHORIZED),
    ("anonymous, public project", PROJECT_63, {}, 401, P401),
    ("JOB-TOKEN, public project", PROJECT_63, {"JOB-TOKEN": "tok-rita"}, 401, P401),
    ("non-member, public project", PROJECT_63, {"PRIVATE-TOKEN": "tok-nina"}, 401, P401),
    ("project membership, group question", GROUP_60, {"PRIVATE-TOKEN": "tok-devon"}, 401,
     P401),
    ("guest, group", GROUP_60, {"PRIVATE-TOKEN": "tok-gus"}, 401, P401),
    ("anonymous, public group", GROUP_60, {}, 401, P401),
    ("non-member, private subgroup", GROUP_61, {"PRIVATE-TOKEN": "tok-nina"}, 404,
     GROUP_NOT_FOUND),
    ("anonymous, private subgroup", GROUP_61, {}, 404, GROUP_NOT_FOUND),
    ("unknown token, group", GROUP_61, {"PRIVATE-TOKEN": "tok-never-issued"}, 401, UNAUTHORIZED),
]  # fmt: skip


async def test_cached_answers_never_reach_callers_gitlab_turns_away(start_stack) -> None:
    stack = await start_stack(s6_world(), now=NOW)
    etags = {}
    for target, body in ((PROJECT_62, A), (PROJECT_63, C), (GROUP_60, B), (GROUP_61, A)):
        status, text, headers = await fetch(stack, target, RITA)
        assert (status, text) == (200, body), target
        etags[target] = headers["ETag"]
    stack.fake.reset_calls()
    status, _, _ = await fetch(stack, PROJECT_62, RITA)
    assert status == 200 and stack.fake.data_calls() == [], "rita's answer is cached"

    mismatches = []
    for label, target, headers, expected_status, expected_body in TURNED_AWAY:
        # Twice (the second time the caller's own decision is cached), and once more with the
        # cached answer's ETag: a 304 would confirm the cached answer to the wrong caller.
        for extra in ({}, {}, {"If-None-Match": etags[target]}):
            stack.fake.reset_calls()
            status, text, _ = await fetch(stack, target, {**headers, **extra})
            if expected_body is None:  # GitLab's own body, passed through
                expected_body = (await gitlab_says(stack.fake, "/user", headers))[1]
            if (status, text) != (expected_status, expected_body):
                mismatches.append(f"{label}: {status} {text}")
            if stack.fake.data_calls():
                mismatches.append(f"{label}: fetched data {stack.fake.data_calls()}")
    assert not mismatches, "\n".join(mismatches)


async def test_rejected_credentials_get_gitlabs_own_status_and_body(start_stack) -> None:
    stack = await start_stack(s6_world(), now=NOW)
    assert (await fetch(stack, PROJECT_63, RITA))[:2] == (200, C)
    for headers in (
        {"PRIVATE-TOKEN": "tok-never-issued"},
        {"Authorization": "Bearer tok-never-issued"},
        {"PRIVATE-TOKEN": SCOPELESS},
    ):
        status, text, _ = await fetch(stack, PROJECT_63, headers)
        assert (status, text) == await gitlab_says(stack.fake, "/user", headers)


async def test_revoked_token_and_lost_membership_take_effect_after_the_permission_ttl(
    start_stack,
) -> None:
    world = s6_world()
    erin = world.add_user(17, "erin", "tok-erin")
    membership = world.add_member(erin, world.groups[60], REPORTER)
    stack = await start_stack(world, now=NOW, permission_ttl=0.2)
    erin_headers = {"PRIVATE-TOKEN": "tok-erin"}
    assert (await fetch(stack, PROJECT_62, erin_headers))[:2] == (200, A)
    assert (await fetch(stack, PROJECT_62, RITA))[:2] == (200, A)

    world.members.remove(membership)  # erin is no longer a member
    await asyncio.sleep(0.25)
    assert (await fetch(stack, PROJECT_62, erin_headers))[:2] == (404, PROJECT_NOT_FOUND)

    world.add_member(erin, world.groups[60], REPORTER)
    del world.tokens["tok-erin"]  # the token expired
    await asyncio.sleep(0.25)
    assert (await fetch(stack, PROJECT_62, erin_headers))[:2] == (401, UNAUTHORIZED)
    assert (await fetch(stack, PROJECT_62, RITA))[:2] == (200, A), "rita is unaffected"


async def test_tokens_in_the_query_string_are_refused_before_anything_goes_upstream(
    start_stack,
) -> None:
    stack = await start_stack(s6_world(), now=NOW)
    refused = json.dumps({"error": TOKEN_IN_QUERY}, separators=(",", ":"))
    for name in (
        "private_token",
        "access_token",
        "job_token",
        "PRIVATE_TOKEN",
        "private_token[]",
        "job_token%5B%5D",
    ):
        for target in (
            f"{PROJECT_62}&{name}=tok-rita",
            f"/api/v4/groups/60/dora/metrics?{name}=tok-rita",  # before "metric is missing"
            f"/api/v4/projects/999999/dora/metrics?{name}=tok-rita&{Q}",
        ):
            for headers in ({}, RITA):
                status, text, response_headers = await fetch(stack, target, headers)
                assert (status, text) == (400, refused), target
                assert "tok-rita" not in text + str(dict(response_headers))
    assert stack.fake.calls == [], "nothing was forwarded upstream"


async def test_a_cookie_gitlab_sets_is_never_sent_back(start_stack) -> None:
    """GitLab's `Set-Cookie` (a `_gitlab_session` is a login) on data answers is dropped: the
    next calls, of this request or another caller's, carry no Cookie header."""
    seen: list[dict[str, str]] = []

    async def set_cookie(request: web.Request, response: web.StreamResponse) -> None:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        response.headers["Set-Cookie"] = "_gitlab_session=upstream-login; path=/; HttpOnly"

    world = s6_world()
    fake = FakeGitLab(world)
    fake.app.on_response_prepare.append(set_cookie)
    # A host name, not an IP address: a cookie jar keeps cookies for it.
    fake.url = (await fake.start()).replace("127.0.0.1", "localhost")
    try:
        stack = await start_stack(world, now=NOW, fake=fake)
        for token in ("tok-devon", "tok-devon", "tok-rita"):
            await fetch(stack, PROJECT_62, {"Authorization": f"Bearer {token}"})
        assert len(seen) > 3, "several upstream calls, each answered with a cookie"
        assert all("cookie" not in headers for headers in seen), seen
    finally:
        await fake.close()


async def test_only_the_callers_own_header_credential_goes_upstream(start_stack) -> None:
    """JOB-TOKEN, Basic auth and cookies are not credentials and are never forwarded."""
    seen: list[dict[str, str]] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        seen.append({k.lower(): v for k, v in request.headers.items()})

    world = s6_world()
    fake = FakeGitLab(world)
    fake.app.on_response_prepare.append(record)
    fake.url = await fake.start()
    try:
        stack = await start_stack(world, now=NOW, fake=fake)
        basic = "Basic " + base64.b64encode(b"rita:tok-rita").decode()
        for headers in (
            {"JOB-TOKEN": "tok-rita"},
            {"Authorization": basic},
            {"Cookie": "_gitlab_session=s3cr3t-session"},
        ):
            assert (await fetch(stack, PROJECT_63, headers))[:2] == (401, P401)
        assert seen, "the lookups went upstream"
        for upstream_headers in seen:
            assert not {"job-token", "private-token", "authorization", "cookie"} & set(
                upstream_headers
            ), upstream_headers

        seen.clear()
        assert (await fetch(stack, PROJECT_62, {"Authorization": "Bearer tok-devon"}))[:2] == (
            200,
            A,
        )
        assert {h.get("authorization") for h in seen} == {"Bearer tok-devon"}
        assert all("private-token" not in h and "cookie" not in h for h in seen)
        assert all(h["user-agent"].startswith("gitlab-dora-proxy/") for h in seen)
    finally:
        await fake.close()


async def test_no_credential_in_cache_logs_bodies_headers_or_metrics(start_stack) -> None:
    stack = await start_stack(s6_world(), now=NOW)
    secret = stack.settings.server_secret
    assert secret
    texts: list[str] = []
    with structlog.testing.capture_logs() as logs:
        for token in TOKENS:
            for form in ({"PRIVATE-TOKEN": token}, {"Authorization": f"Bearer {token}"}):
                for target in (
                    PROJECT_62,
                    GROUP_60,
                    "/api/v4/projects/62/dora/metrics?metric=lead_time_for_changes&"
                    "interval=monthly&start_date=2021-05-01&end_date=2021-06-30",
                    f"{PROJECT_62}&private_token={token}",
                    "/api/v4/projects/62/dora/metrics",
                    f"/api/v4/projects/62/nope?access_token={token}",
                ):
                    status, text, headers = await fetch(stack, target, form)
                    assert status < 500, (target, status, text)
                    texts.append(text + json.dumps(dict(headers)))
        # a failing upstream: the error header and log name the call, never the token
        stack.fake.faults.status_codes = [500] * 10
        status, text, headers = await fetch(
            stack,
            "/api/v4/projects/62/dora/metrics?metric=change_failure_rate&start_date=2021-01-01"
            "&end_date=2021-02-01",
            {"PRIVATE-TOKEN": "tok-rita"},
        )
        assert status == 502 and "X-Dora-Proxy-Upstream-Error" in headers
        texts.append(text + json.dumps(dict(headers)))
        stack.fake.faults.status_codes = []
        status, metrics_text, _ = await fetch(stack, "/metrics")
        if status == 200:
            texts.append(metrics_text)
    assert any(event["event"] == "request" for event in logs), "logs were captured"

    hashes = [
        credential_key(mac_key(secret.encode()), f"{kind}:{token}")
        for token in TOKENS
        for kind in ("private", "bearer")
    ]
    logged = json.dumps(logs, default=repr)
    responses = "\n".join(texts)
    files = _cache_files(stack.settings.cache_dir)
    assert files, "the cache has files"
    for token in TOKENS:
        assert token not in logged, f"{token} in the logs"
        assert token not in responses, f"{token} in a response"
        for path, content in files.items():
            assert token.encode() not in content, f"{token} in {path}"
    for needle in [*hashes, secret]:
        assert needle not in logged
        for path, content in files.items():
            assert needle.encode() not in content, f"a per-caller hash or the secret in {path}"

    # The in-memory permission decisions are keyed by a MAC, never by the token itself.
    decisions = stack.client.app[SERVICE].permissions.cache
    remembered = repr(decisions._entries)
    assert decisions._entries and not any(token in remembered for token in TOKENS)


async def test_generated_server_secret_is_private_and_stable(start_stack, tmp_path) -> None:
    cache_dir = tmp_path / "generated"
    stack = await start_stack(s6_world(), now=NOW, server_secret=None, cache_dir=cache_dir)
    assert (await fetch(stack, PROJECT_62, RITA))[:2] == (200, A)
    secret_file = cache_dir / SECRET_FILE
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    secret = secret_file.read_bytes()
    assert len(secret.strip()) >= 32

    # A second process on the same directory reuses it, and re-tightens a loosened mode.
    secret_file.chmod(0o644)
    again = await start_stack(s6_world(), now=NOW, server_secret=None, cache_dir=cache_dir)
    assert (await fetch(again, PROJECT_62, RITA))[:2] == (200, A)
    assert secret_file.read_bytes() == secret
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600

    configured = tmp_path / "configured"
    await start_stack(s6_world(), now=NOW, cache_dir=configured)
    assert not (configured / SECRET_FILE).exists(), "a configured secret is not written"


def _cache_files(directory: Path) -> dict[Path, bytes]:
    """Every file under the cache directory, as bytes (SQLite db, WAL, value files)."""
    found = {}
    for root, _, names in os.walk(directory):
        for name in names:
            path = Path(root) / name
            found[path] = path.read_bytes()
    return found


def test_security_md_names_real_settings_and_their_defaults() -> None:
    """SECURITY.md promises lifetimes by setting name: the names and defaults must be real."""
    import re

    from proxy.settings import Settings

    text = (Path(__file__).resolve().parents[2] / "SECURITY.md").read_text()
    named = set(re.findall(r"`([a-z]+(?:_[a-z]+)+)`", text)) - {
        "private_token",
        "access_token",
        "job_token",
    }
    defaults = Settings()
    assert named and all(hasattr(defaults, name) for name in named), named
    stated = {
        "answer_ttl_past": 24 * 3600,
        "answer_ttl_current": 5 * 60,
        "facts_ttl_settled": 7 * 86400,
        "facts_ttl_recent": 5 * 60,
        "permission_ttl": 60,
        "cache_size_limit": 2**30,
    }
    assert {name: getattr(defaults, name) for name in stated} == stated


def test_a_credential_never_shows_its_token() -> None:
    credential = Credential("glpat-xyz", "private")
    shown = [
        repr(credential),
        str(credential),
        f"{credential}",
        f"{credential!r}",
        format(credential),
        "%r" % [credential],
        repr([credential]),
        str({"credential": credential}),
        repr((credential, None)),
    ]
    for text in shown:
        assert "glpat-xyz" not in text
        assert "private" in text  # the kind is no secret
    assert (credential.token, credential.kind) == ("glpat-xyz", "private")  # still usable


def test_a_credential_in_a_log_event_is_masked() -> None:
    """A credential (or any named tuple) in an event renders as its redacted repr, whatever the
    renderer: JSON would otherwise write a tuple's fields, the token among them."""

    class Pair(NamedTuple):
        label: str
        secret: str

    event = redact(
        None,
        "info",
        {
            "event": "e",
            "caller": Credential("glpat-xyz", "private"),
            "pair": Pair("x", "Bearer glpat-abc"),
            "nested": [Credential("glpat-xyz", "bearer")],
        },
    )
    rendered = structlog.processors.JSONRenderer()(None, "info", event)
    assert "glpat-xyz" not in rendered and "glpat-abc" not in rendered
    assert "token=<redacted>" in rendered and "Bearer [redacted]" in rendered
