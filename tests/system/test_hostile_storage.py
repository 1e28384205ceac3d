"""A broken cache is a degraded cache, not a bug: Redis killed or frozen, a full disk.

DORA requests are answered uncached from the upstream (503 with Retry-After when the upstream
fails too), never 500; the failure is logged once per interval, not per request; readiness
answers within its bound and says "degraded"; `cache stats` / `cache clear` print one line and
exit non-zero. Each Redis here is this test's own redis-server (tests/redis_server.py), so it
can be killed or stopped (SIGSTOP) without touching the session's.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tests.redis_server import _start, _stop, free_port
from tests.web.test_upstream_faults import BAD_GATEWAY, world

NOW_WORLD = world
QUERY = "/api/v4/projects/11/dora/metrics?start_date=2021-01-01&end_date=2021-01-31&metric="
MARIA = {"PRIVATE-TOKEN": "tok-maria"}
METRICS = ("deployment_frequency", "lead_time_for_changes", "change_failure_rate")
FAST = {"cache_timeout": 0.3, "recent_answer_ttl": 0.0, "upstream_max_retries": 0}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("DORA_PROXY_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server required by DORA_PROXY_REQUIRE_REDIS=1")
        pytest.skip("redis-server not installed (apt-get install redis-server)")
    directory = tmp_path / "redis"
    directory.mkdir()
    process, port = _start(binary, directory)
    try:
        yield process, f"redis://127.0.0.1:{port}/0"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
        _stop(process)


async def start(start_stack, **overrides):
    from datetime import UTC, datetime

    return await start_stack(
        NOW_WORLD(), now=datetime(2021, 3, 1, 12, tzinfo=UTC), **{**FAST, **overrides}
    )


async def ask_many(stack, rounds: int) -> list[tuple[int, str]]:
    answers = []
    for n in range(rounds):
        status, body = await stack.get(QUERY + METRICS[n % len(METRICS)], MARIA)
        answers.append((status, body))
    return answers


def events(logs: list[dict], name: str) -> list[dict]:
    return [e for e in logs if e["event"] == name]


async def test_redis_killed_answers_uncached_and_logs_once(start_stack, own_redis) -> None:
    process, url = own_redis
    stack = await start(start_stack, cache_url=url)
    assert (await stack.get(QUERY + "deployment_frequency", MARIA))[0] == 200
    process.kill()
    process.wait()
    with capture_logs() as logs:
        answers = await ask_many(stack, 30)
        ready = await stack.client.get("/-/readiness")
    assert [status for status, _ in answers] == [200] * 30
    assert len(events(logs, "cache_degraded")) == 1
    assert not events(logs, "unhandled_error")
    assert ready.status == 200
    body = await ready.json()
    assert body["status"] == "degraded" and body["degraded"] == ["cache"]

    # Neither the cache nor the upstream: a clear 503 to retry, not a 500.
    stack.fake.faults.status_codes = [500] * 50
    stack.fake.faults.only_kinds = {"deployments"}
    response = await stack.client.get(QUERY + "deployment_frequency", headers=MARIA)
    assert response.status == 503
    assert await response.text() == '{"message":"503 Service Unavailable"}'
    assert int(response.headers["Retry-After"]) >= 1
    assert "deployments" in response.headers["X-Dora-Proxy-Upstream-Error"]
    assert BAD_GATEWAY not in await response.text()


async def test_redis_frozen_answers_uncached_readiness_within_its_bound(
    start_stack, own_redis
) -> None:
    process, url = own_redis
    stack = await start(start_stack, cache_url=url)
    assert (await stack.get(QUERY + "deployment_frequency", MARIA))[0] == 200
    process.send_signal(signal.SIGSTOP)
    try:
        with capture_logs() as logs:
            answers = await ask_many(stack, 12)
            async with asyncio.timeout(3.5):  # the documented bound, plus slack
                ready = await stack.client.get("/-/readiness")
        assert [status for status, _ in answers] == [200] * 12
        assert len(events(logs, "cache_degraded")) == 1
        assert ready.status == 200 and (await ready.json())["degraded"] == ["cache"]
    finally:
        process.send_signal(signal.SIGCONT)
    # Thawed: the cache is used again once the breaker lets an operation through.
    service = stack.app_service()
    service.storage._open_until = 0.0
    with capture_logs() as logs:
        for _ in range(20):
            status, _ = await stack.get(QUERY + "change_failure_rate", MARIA)
            assert status == 200
            if service.storage.degraded is None:
                break
            await asyncio.sleep(0.2)
    assert service.storage.degraded is None
    assert events(logs, "cache_recovered")


@pytest.fixture
def full_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (root only), to be filled by the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; the full-disk test runs as root in CI")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> None:
    with (directory / "filler").open("wb") as filler:
        try:
            while True:
                filler.write(b"\0" * 65536)
                filler.flush()
        except OSError:
            pass


async def test_a_full_disk_answers_uncached_never_500(start_stack, full_tmpfs: Path) -> None:
    cache_dir = full_tmpfs / "cache"
    with capture_logs() as start_logs:
        stack = await start(start_stack, cache_dir=cache_dir, cache_url=None)
    warned = events(start_logs, "cache_size_limit_exceeds_free_space")
    assert len(warned) == 1 and warned[0]["cache_size_limit"] == 2**30
    assert (await stack.get(QUERY + "deployment_frequency", MARIA))[0] == 200
    fill(full_tmpfs)
    with capture_logs() as logs:
        answers = await ask_many(stack, 12)
        for day in range(21, 29):  # new answers, each one would be written
            target = QUERY.replace("01-31", f"01-{day}") + "lead_time_for_changes"
            answers.append(await stack.get(target, MARIA))
    assert [status for status, _ in answers] == [200] * 20, answers
    assert len(events(logs, "cache_degraded")) == 1
    assert not events(logs, "unhandled_error")


def test_cache_commands_on_a_broken_cache_print_one_line_and_fail(tmp_path: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    for command in (["stats"], ["clear", "--yes"]):
        done = subprocess.run(
            [sys.executable, "-m", "proxy", "cache", *command, "--cache-url", dead],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "DORA_PROXY_CACHE_DIR": str(tmp_path / "c")},
        )
        assert done.returncode == 1, done
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("dora-proxy: cache error:"), done.stderr
        assert "Traceback" not in done.stderr and done.stdout == ""


SHORT_LIVED = {
    "answer_ttl_past": 2.0,
    "answer_ttl_current": 2.0,
    "facts_ttl_settled": 2.0,
    "facts_ttl_recent": 2.0,
}


async def test_a_volume_the_cache_filled_recovers_once_its_entries_expire(
    start_stack, full_tmpfs: Path
) -> None:
    """The cache itself fills a volume smaller than SQLite's default WAL (4 MiB): writes fail.
    Once the entries expire, a write culls them and folds the WAL back, and answers are cached
    again: the volume does not stay wedged (it did: nothing could be culled or checkpointed)."""
    cache_dir = full_tmpfs / "cache"
    stack = await start(start_stack, cache_dir=cache_dir, cache_url=None, **SHORT_LIVED)
    disk = stack.storage.inner
    # Fill the volume with the cache's own short-lived entries (about 400 answers' worth),
    # until a write fails; the proxy still answers every request meanwhile.
    filler = [(f"-/filler/{n}", os.urandom(2000), 2.0) for n in range(5000)]
    written = 0
    with capture_logs():
        for start_at in range(0, len(filler), 20):
            try:
                await disk.set_many(filler[start_at : start_at + 20])
            except Exception:
                break
            written += 20
        # A 40 KB batch that did not fit may leave room for the request's own writes (a flaky
        # pass, 1 in 5): fill what is left with smaller entries until 200 bytes do not fit.
        for size in (2000, 200):
            for n in range(500):
                try:
                    await disk.set_many([(f"-/small/{size}/{n}", os.urandom(size), 2.0)])
                except Exception:
                    break
    assert 0 < written < len(filler), "the volume never filled"
    assert shutil.disk_usage(full_tmpfs).free < 64 * 1024
    with capture_logs() as logs:
        status, _ = await stack.get(QUERY + "deployment_frequency", MARIA)
        assert status == 200
        assert stack.storage.degraded, "the answer could not be written"

        await asyncio.sleep(2.5)  # every entry has expired
        # Ask until an answer comes from the cache (the clean-up runs at most every 5 s and
        # the breaker skips the cache for 5 s after failures): bounded, and never a 500.
        answers, cached_after = [], None
        for attempt in range(40):
            stack.fake.reset_calls()
            answers.append((await stack.get(QUERY + "change_failure_rate", MARIA))[0])
            if not stack.fake.data_calls():
                cached_after = attempt
                break
            await asyncio.sleep(0.25)
    assert set(answers) == {200}
    assert cached_after is not None, "answers were never cached again: the volume stayed full"
    assert stack.storage.degraded is None
    assert shutil.disk_usage(full_tmpfs).free > 512 * 1024
    assert events(logs, "cache_volume_full")
    assert not events(logs, "unhandled_error")


async def test_the_start_warning_counts_the_wal_and_the_reserve(
    start_stack, full_tmpfs: Path
) -> None:
    """A 2 MiB volume holds a 1 MiB limit and the cache's headroom, not a 1.75 MiB limit."""
    for limit, warned in ((1_835_008, 1), (1 << 20, 0)):
        with capture_logs() as logs:
            await start(
                start_stack,
                cache_dir=full_tmpfs / f"c{limit}",
                cache_url=None,
                cache_size_limit=limit,
            )
        found = events(logs, "cache_size_limit_exceeds_free_space")
        assert len(found) == warned, (limit, found)
        if found:
            assert found[0]["headroom_bytes"] > 0
