"""`dora-proxy cache warm|stats|clear` through `proxy.cli.main`, against a fake GitLab on a port.

`main()` calls `asyncio.run`, so it runs in a worker thread while this test's loop serves the
fake GitLab (and, afterwards, a proxy on the same cache directory).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from proxy.cli import main
from proxy.demo import FakeGitLab
from proxy.demo.world import REPORTER, World
from proxy.query import INTERVALS, METRICS

RITA = {"PRIVATE-TOKEN": "tok-rita"}
TARGETS = ("projects/20", "projects/acme%2Fapi", "groups/acme")


def acme_world() -> World:
    """acme (10) with web (20) and api (21), deployments and an incident in the last weeks.

    Dates are relative to the real today: `cache warm` uses the default window, which ends today.
    """
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    world = World().add_cast()
    acme = world.add_group(10, "acme")
    world.add_member(12, acme, REPORTER)
    for project_id, path in ((20, "web"), (21, "api")):
        project = world.add_project(project_id, path, acme)
        production = world.add_environment(project, "production", "production")
        for days_ago in (40, 20, 5):
            finished = today - timedelta(days=days_ago) + timedelta(hours=9)
            world.deploy(production, finished, mrs=[finished - timedelta(hours=3)])
    world.incident(20, today - timedelta(days=20, hours=-10), today - timedelta(days=20, hours=-12))
    return world


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitLab]:
    gitlab = FakeGitLab(acme_world())
    await gitlab.start()
    yield gitlab
    await gitlab.close()


async def run_cli(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


def warm_args(fake: FakeGitLab, cache_dir: Path, *targets: str) -> list[str]:
    return [
        "cache",
        "warm",
        "--upstream-url",
        str(fake.url),
        "--cache-dir",
        str(cache_dir),
        *targets,
    ]


async def proxy_on(start_stack, fake: FakeGitLab, cache_dir: Path):
    """A proxy on the same disk cache (cache_url=None keeps it off Redis in a Redis test run)."""
    return await start_stack(fake.world, fake=fake, cache_dir=cache_dir, cache_url=None)


async def answer_everything(stack) -> None:
    for target in TARGETS:
        for metric in METRICS:
            for interval in INTERVALS:
                path = f"/api/v4/{target}/dora/metrics?metric={metric}&interval={interval}"
                status, body = await stack.get(path, RITA)
                assert status == 200, (path, status, body)


async def test_warm_fills_the_cache_a_proxy_then_answers_from(
    start_stack, fake, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("DORA_PROXY_WARM_TOKEN", "tok-rita")
    cache_dir = tmp_path / "cache"
    targets = ("--project", "20", "--project", "acme/api", "--group", "acme")
    assert await run_cli(*warm_args(fake, cache_dir, *targets)) == 0
    assert fake.data_calls()

    lines = capsys.readouterr().err.splitlines()  # not a terminal: one plain line per answer
    assert len(lines) == 3 * 4 * 3
    assert lines[0] == "1/36 project 20 deployment_frequency all miss"
    assert lines[-1] == "36/36 group acme change_failure_rate daily miss"

    fake.reset_calls()
    stack = await proxy_on(start_stack, fake, cache_dir)
    await answer_everything(stack)
    assert fake.data_calls() == []  # every answer was already there


# The progress bar on a terminal: tests/system/test_cli_terminal.py (a pseudo-terminal).


async def test_warm_reports_failures_and_exits_1(fake, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DORA_PROXY_WARM_TOKEN", "tok-rita")
    args = warm_args(fake, tmp_path / "cache", "--project", "999", "--project", "20")
    assert await run_cli(*args) == 1
    err = capsys.readouterr().err
    assert (
        '1/24 project 999 deployment_frequency all error 404 {"message": "404 Project Not Found"}'
        in err
    )
    assert "13/24 project 20 deployment_frequency all miss" in err


@pytest.mark.parametrize(
    ("token", "targets", "complaint"),
    [
        (None, ("--project", "20"), "DORA_PROXY_WARM_TOKEN: required by cache warm"),
        ("tok-rita", (), "name at least one --project or --group"),
    ],
    ids=["no token", "no target"],
)
async def test_warm_refuses_to_start_without_token_or_target(
    fake, tmp_path, monkeypatch, capsys, token, targets, complaint
) -> None:
    if token:
        monkeypatch.setenv("DORA_PROXY_WARM_TOKEN", token)
    assert await run_cli(*warm_args(fake, tmp_path / "cache", *targets)) == 2
    assert complaint in capsys.readouterr().err
    assert fake.calls == []


async def test_warm_reads_the_token_from_the_named_variable(
    fake, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("NIGHTLY_TOKEN", "tok-rita")
    args = [*warm_args(fake, tmp_path / "cache", "--group", "acme"), "--token-env", "NIGHTLY_TOKEN"]
    assert await run_cli(*args) == 0
    assert {call.token for call in fake.calls} == {"tok-rita"}
    assert "tok-rita" not in capsys.readouterr().err


async def test_stats_and_clear(start_stack, fake, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DORA_PROXY_WARM_TOKEN", "tok-rita")
    cache_dir = tmp_path / "cache"
    assert await run_cli(*warm_args(fake, cache_dir, "--project", "20")) == 0
    capsys.readouterr()

    assert await run_cli("cache", "stats", "--cache-dir", str(cache_dir)) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["backend"] == "disk"
    assert stats["entries"] > 12  # 12 answers, their stale copies, the facts of each day

    assert await run_cli("cache", "clear", "--yes", "--cache-dir", str(cache_dir)) == 0
    assert json.loads(capsys.readouterr().out) == {"removed": stats["entries"]}
    assert await run_cli("cache", "stats", "--cache-dir", str(cache_dir)) == 0
    assert json.loads(capsys.readouterr().out)["entries"] == 0

    fake.reset_calls()
    stack = await proxy_on(start_stack, fake, cache_dir)
    status, _ = await stack.get(
        "/api/v4/projects/20/dora/metrics?metric=deployment_frequency", RITA
    )
    assert status == 200
    assert fake.data_calls()  # cleared: fetched again
