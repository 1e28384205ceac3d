"""`dora-proxy check` and `dora-proxy webhooks list|install` through `proxy.cli.main`, against
the fake GitLab on a real port (python-gitlab over HTTP), as an operator would run them.

`main()` is synchronous (python-gitlab), so it runs in a worker thread while this test's loop
serves the fake GitLab.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from proxy.cli import main
from proxy.demo.server import FakeGitLab
from proxy.demo.world import GUEST, REPORTER, World

MAINTAINER = 40
SCOPELESS = "tok-no-read-api"
READ_ONLY = "tok-read-api-only"


def setup_world() -> World:
    """acme (10) with web (20): rita Reporter, gus Guest, maria Maintainer, nina outsider."""
    world = World().add_cast()
    acme = world.add_group(10, "acme")
    web = world.add_project(20, "web", acme)
    world.add_member(12, acme, REPORTER)
    world.add_member(13, acme, GUEST)
    world.add_member(11, acme, MAINTAINER)
    production = world.add_environment(web, "production", "production")
    finished = datetime.now(UTC) - timedelta(days=3)
    world.deploy(production, finished, mrs=[finished - timedelta(hours=2)])
    world.scopeless_tokens[SCOPELESS] = 12
    return world


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitLab]:
    gitlab = FakeGitLab(setup_world())
    await gitlab.start()
    gitlab.admin.read_only_tokens.add("tok-maria-ro")
    gitlab.world.tokens["tok-maria-ro"] = 11
    yield gitlab
    await gitlab.close()


async def cli(fake_url: str, *argv: str, token: str | None = None) -> int:
    args = [*argv, "--upstream-url", fake_url]
    if token is not None:
        args += ["--token", token]
    return await asyncio.to_thread(main, args)


# ---- check -------------------------------------------------------------------------------------


async def test_check_with_a_good_token_says_all_good_and_exits_0(fake, capsys) -> None:
    assert await cli(fake.url, "check", "--project", "acme/web", token="tok-rita") == 0
    out = capsys.readouterr().out
    assert f"ok   upstream: {fake.url} answers" in out
    assert "ok   version: GitLab 17.5.1-ee" in out
    assert "ok   token: user rita" in out
    assert "ok   role: Reporter on project acme/web" in out
    for what in ("environments", "deployments", "merge requests", "issues"):
        assert f"ok   {what}: readable" in out, what
    assert "FAIL" not in out and "All good" in out
    kinds = {call.kind for call in fake.calls}
    assert {"version", "user", "project", "project_members", "environments"} <= kinds
    assert {"deployments", "deployment_mrs", "project_issues"} <= kinds
    assert "tok-rita" not in out


async def test_check_a_group_reads_its_issues_and_a_project_inside(fake, capsys) -> None:
    assert await cli(fake.url, "check", "--group", "acme", token="tok-rita") == 0
    out = capsys.readouterr().out
    assert "ok   group issues: readable" in out
    assert "ok   project 20: deployments: readable" in out
    assert {"group", "group_members", "group_projects", "group_issues"} <= {
        c.kind for c in fake.calls
    }


async def test_check_a_token_without_read_api_names_the_missing_scope(fake, capsys) -> None:
    assert await cli(fake.url, "check", "--project", "acme/web", token=SCOPELESS) == 1
    out = capsys.readouterr().out
    assert "FAIL token: the token lacks the read_api scope (403 insufficient_scope)" in out
    assert "fix: create a token with the read_api scope" in out
    assert "Not ready" in out


async def test_check_a_guest_is_told_to_get_reporter_a_reporter_passes(fake, capsys) -> None:
    assert await cli(fake.url, "check", "--project", "acme/web", token="tok-gus") == 1
    out = capsys.readouterr().out
    assert "FAIL role: Guest on project acme/web, below Reporter" in out
    assert "fix: give the token's user the Reporter role (or higher) on project acme/web" in out
    assert await cli(fake.url, "check", "--project", "acme/web", token="tok-rita") == 0


async def test_check_an_unknown_token_and_an_invisible_project(fake, capsys) -> None:
    assert await cli(fake.url, "check", "--project", "acme/web", token="tok-nobody") == 1
    out = capsys.readouterr().out
    assert "FAIL token: GitLab refused the token (401 Unauthorized)" in out
    assert await cli(fake.url, "check", "--project", "acme/web", token="tok-nina") == 1
    out = capsys.readouterr().out
    assert "FAIL project: project acme/web not found, or not visible to this token (404)" in out


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_check_an_unreachable_upstream_says_so_and_exits_1(capsys) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    assert await cli(url, "check", "--project", "acme/web", token="tok-rita") == 1
    out = capsys.readouterr().out
    assert f"FAIL upstream: {url}: GitLab unreachable (no connection)" in out
    assert "fix: check upstream_url" in out


async def test_check_takes_the_token_from_the_named_variable(fake, capsys, monkeypatch) -> None:
    monkeypatch.setenv("MY_GITLAB_TOKEN", "tok-rita")
    argv = ("check", "--project", "20", "--token-env", "MY_GITLAB_TOKEN")
    assert await cli(fake.url, *argv) == 0
    assert {c.token for c in fake.calls} == {"tok-rita"}
    monkeypatch.delenv("MY_GITLAB_TOKEN")
    assert await cli(fake.url, *argv) == 2
    assert "no token: set MY_GITLAB_TOKEN" in capsys.readouterr().err


# ---- webhooks ----------------------------------------------------------------------------------

PUBLIC = "https://dora.example.com"


async def test_install_creates_the_hook_once_then_changes_nothing(
    fake, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("DORA_PROXY_WEBHOOK_SECRET", "s3cret-for-hooks")
    argv = ("webhooks", "install", "--project", "acme/web", "--url", PUBLIC + "/")
    assert await cli(fake.url, *argv, token="tok-maria") == 0
    out = capsys.readouterr().out
    assert f"created hook 1 on project acme/web: {PUBLIC}/-/webhooks/gitlab" in out
    (hook,) = fake.admin.hooks.values()
    assert hook["project_id"] == 20 and hook["url"] == f"{PUBLIC}/-/webhooks/gitlab"
    on = sorted(k for k, v in hook.items() if k.endswith("_events") and v is True)
    assert on == ["confidential_issues_events", "deployment_events", "issues_events"]
    assert hook["enable_ssl_verification"] is True
    assert fake.admin.hook_tokens[1] == "s3cret-for-hooks"
    assert "s3cret-for-hooks" not in out

    fake.reset_calls()
    assert await cli(fake.url, *argv, token="tok-maria") == 0
    assert "unchanged hook 1" in capsys.readouterr().out
    assert [c.method for c in fake.calls_of("project_hooks", "project_hook")] == ["GET"]
    assert len(fake.admin.hooks) == 1


async def test_install_repairs_a_hook_whose_events_drifted(fake, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DORA_PROXY_WEBHOOK_SECRET", "s3cret-for-hooks")
    argv = ("webhooks", "install", "--project", "20", "--url", PUBLIC)
    assert await cli(fake.url, *argv, token="tok-maria") == 0
    fake.admin.hooks[1]["deployment_events"] = False
    fake.admin.hooks[1]["push_events"] = True
    assert await cli(fake.url, *argv, token="tok-maria") == 0
    assert "updated hook 1" in capsys.readouterr().out
    assert fake.admin.hooks[1]["deployment_events"] is True
    assert fake.admin.hooks[1]["push_events"] is False
    assert len(fake.admin.hooks) == 1


async def test_install_on_a_group_and_list_shows_it(fake, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DORA_PROXY_WEBHOOK_SECRET", "s3cret-for-hooks")
    argv = ("webhooks", "install", "--group", "acme", "--url", PUBLIC)
    assert await cli(fake.url, *argv, token="tok-maria") == 0
    (hook,) = fake.admin.hooks.values()
    assert hook["group_id"] == 10
    capsys.readouterr()
    assert await cli(fake.url, "webhooks", "list", "--group", "acme", token="tok-maria") == 0
    out = capsys.readouterr().out
    assert f"proxy  {PUBLIC}/-/webhooks/gitlab" in out
    assert "events: confidential_issues, deployment, issues" in out


async def test_group_hooks_on_gitlab_free_explain_premium(fake, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DORA_PROXY_WEBHOOK_SECRET", "s3cret-for-hooks")
    fake.admin.group_hooks_licensed = False
    argv = ("webhooks", "install", "--group", "acme", "--url", PUBLIC)
    assert await cli(fake.url, *argv, token="tok-maria") == 1
    err = capsys.readouterr().err
    assert "group webhooks are a GitLab Premium/Ultimate feature" in err
    assert "--project PATH" in err
    assert fake.admin.hooks == {}


async def test_install_needs_maintainer_the_api_scope_and_the_secret(
    fake, capsys, monkeypatch
) -> None:
    argv = ("webhooks", "install", "--project", "acme/web", "--url", PUBLIC)
    assert await cli(fake.url, *argv, token="tok-maria") == 2
    assert "DORA_PROXY_WEBHOOK_SECRET" in capsys.readouterr().err
    monkeypatch.setenv("DORA_PROXY_WEBHOOK_SECRET", "s3cret-for-hooks")
    assert await cli(fake.url, *argv, token="tok-rita") == 1
    assert "needs the Maintainer role" in capsys.readouterr().err
    assert await cli(fake.url, *argv, token="tok-maria-ro") == 1
    assert "needs a token with the api scope" in capsys.readouterr().err
    assert fake.admin.hooks == {}
