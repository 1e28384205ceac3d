"""Crash safety with real processes: `python -m proxy serve` in front of a fake GitLab.

- SIGKILL while the disk cache is being written under load, then a restart on the same cache
  directory: every answer is still exactly right (or the cache repaired itself at start-up).
- SIGTERM drains: a request in flight when the signal arrives completes with 200, then the
  process exits 0.
- The processes' stdout/stderr (JSON logs) and every file of the cache directory are scanned
  for the tokens sent: none may appear.

The fake GitLab runs in the test's event loop on a real port; the expected answers come from
the proxy app in-process on a separate cache directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
from yarl import URL

from proxy.demo import FakeGitLab
from proxy.demo.world import MAINTAINER, World, at

TOKEN = "tok-maria-process-test"
HEADERS = {"PRIVATE-TOKEN": TOKEN}
SECRET = "process-test-server-secret-0123456789"
METRICS = (
    "deployment_frequency",
    "lead_time_for_changes",
    "time_to_restore_service",
    "change_failure_rate",
)
WINDOWS = ("start_date=2021-01-01&end_date=2021-03-31", "start_date=2021-02-15&end_date=2021-06-30")
CONTAINERS = ("projects/31", "projects/32", "projects/33", "groups/30")
QUERIES = [
    f"/api/v4/{container}/dora/metrics?metric={metric}&interval={interval}&{window}"
    for container in CONTAINERS
    for metric in METRICS
    for interval in ("daily", "all")
    for window in WINDOWS
]


def busy_world() -> World:
    """Three projects with a deployment most days of 2021-01..06, MRs and incidents."""
    w = World().add_cast()
    w.add_user(20, "maria-p", TOKEN)
    group = w.add_group(30, "crash")
    w.add_member(w.users[20], group, MAINTAINER)
    start = at("2021-01-01T08:00:00Z")
    for pid in (31, 32, 33):
        project = w.add_project(pid, f"app{pid}", group)
        production = w.add_environment(project, "production", "production")
        staging = w.add_environment(project, "staging", "staging")
        for day in range(pid % 3, 181, 4):
            finished = start + timedelta(days=day, hours=pid % 5)
            w.deploy(production, finished, mrs=[finished - timedelta(hours=1 + day % 7)])
            if day % 4 == 0:
                w.deploy(staging, finished + timedelta(minutes=30))
            if day % 9 == 0:
                w.incident(project, finished + timedelta(hours=2), finished + timedelta(hours=5))
    return w


@dataclass
class Proxy:
    process: asyncio.subprocess.Process
    base_url: str
    stdout: Path
    stderr: Path

    async def get(self, session: aiohttp.ClientSession, target: str, headers=HEADERS):
        url = URL(f"{self.base_url}{target}", encoded=True)
        async with session.get(url, headers=headers) as response:
            return response.status, await response.text()

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def exit_code(self, timeout: float = 15.0) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start_proxy(
    upstream_url: str, cache_dir: Path, logs: Path, name: str, *flags: str
) -> Proxy:
    """`python -m proxy serve` on a free port; returns once /-/health answers."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DORA_PROXY_")}
    env.update(
        DORA_PROXY_SERVER_SECRET=SECRET,
        DORA_PROXY_LOG_FORMAT="json",
        DORA_PROXY_LOG_LEVEL="info",
        DORA_PROXY_UPSTREAM_TIMEOUT="10",
        PYTHONUNBUFFERED="1",
    )
    stdout, stderr = logs / f"{name}.out", logs / f"{name}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--upstream-url",
            upstream_url,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--cache-dir",
            str(cache_dir),
            *flags,
            stdout=out,
            stderr=err,
            env=env,
        )
    proxy = Proxy(process, f"http://127.0.0.1:{port}", stdout, stderr)
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            if process.returncode is not None:
                raise AssertionError(f"{name} exited {process.returncode}: {stderr.read_text()}")
            try:
                async with session.get(f"{proxy.base_url}/-/health") as response:
                    if response.status == 200:
                        return proxy
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    process.kill()
    raise AssertionError(f"{name} never became healthy: {stderr.read_text()}")


async def stop_all(processes: list, fake: FakeGitLab) -> None:
    """Kill whatever proxy process a test left running, then stop the fake GitLab."""
    for proxy in processes:
        if proxy.process.returncode is None:
            proxy.process.kill()
            await proxy.process.wait()
    await fake.close()


async def expected_answers(start_stack, world: World, fake: FakeGitLab) -> dict[str, str]:
    stack = await start_stack(world, fake=fake)
    answers = {}
    for target in QUERIES:
        status, body = await stack.get(target, HEADERS)
        assert status == 200, (target, status, body)
        answers[target] = body
    return answers


# A killed process leaves its cross-process answer locks behind; a lock is a 1 s lease, so the
# restarted proxy waits about that long. The deadline only has to outlast a cold computation on
# a busy 2-core machine (4 s did not, with test suites running beside it).
DEADLINE = ("--request-deadline", "15")


async def test_sigkill_while_writing_the_cache_then_restart_gives_right_answers(
    start_stack, tmp_path: Path
) -> None:
    world = busy_world()
    fake = FakeGitLab(world)
    fake.url = await fake.start()
    processes: list[Proxy] = []

    async def start(name: str) -> Proxy:
        processes.append(await start_proxy(fake.url, cache_dir, logs, name, *DEADLINE))
        return processes[-1]

    async def check_every_answer(proxy: Proxy, session: aiohttp.ClientSession, when: str):
        answers = await asyncio.gather(*(proxy.get(session, q) for q in QUERIES))
        wrong = [
            f"{q}: {status} {body}\n   expected {expected[q]}"
            for q, (status, body) in zip(QUERIES, answers, strict=True)
            if (status, body) != (200, expected[q])
        ]
        assert not wrong, f"{when}:\n" + "\n".join(wrong[:5])

    try:
        expected = await expected_answers(start_stack, world, fake)
        cache_dir, logs = tmp_path / "cache", tmp_path / "logs"
        logs.mkdir()

        # 1. Under load, SIGKILL once some answers (and facts) are written and more are coming.
        fake.faults.latency = 0.005  # spread the writes over time
        fake.faults.only_kinds = {"deployments", "deployment_mrs", "project_issues"}
        proxy = await start("killed")
        async with aiohttp.ClientSession() as session:
            pending = {asyncio.ensure_future(proxy.get(session, q)) for q in QUERIES}
            done_count = 0
            while pending and done_count < 15:
                done, pending = await asyncio.wait(pending, return_when="FIRST_COMPLETED")
                done_count += len(done)
                for task in done:
                    status, body = task.result()
                    assert status == 200, body
            assert pending, "killed while requests (and cache writes) were in flight"
            proxy.signal(signal.SIGKILL)
            assert await proxy.exit_code() == -signal.SIGKILL
            await asyncio.gather(*pending, return_exceptions=True)
        fake.faults.latency = 0.0

        # 2. Restarted on the same cache directory: right answers, then all from the cache.
        proxy = await start("restarted")
        async with aiohttp.ClientSession() as session:
            await check_every_answer(proxy, session, "after the crash")
            fake.reset_calls()
            await check_every_answer(proxy, session, "from the cache")
            assert fake.data_calls() == [], "every answer is served from the cache"

            # Tokens that must not reach the logs: in the query string (refused), inside an
            # oversized request line (refused by the HTTP parser), and a rejected token.
            leaky = f"/api/v4/projects/31/dora/metrics?private_token={TOKEN}&metric=x"
            assert (await proxy.get(session, leaky, {}))[0] == 400
            assert (await proxy.get(session, leaky + "&j=" + "x" * 9000, {}))[0] == 400
            bad = {"PRIVATE-TOKEN": TOKEN + "-revoked"}
            assert (await proxy.get(session, QUERIES[0], bad))[0] == 401
        proxy.signal(signal.SIGKILL)
        await proxy.exit_code()

        # 3. A database file damaged on disk is set aside at start-up; answers are recomputed.
        database = cache_dir / "cache.db"
        with database.open("r+b") as handle:
            handle.seek(database.stat().st_size // 2)
            handle.write(os.urandom(8192))
        proxy = await start("repaired")
        async with aiohttp.ClientSession() as session:
            await check_every_answer(proxy, session, "after repairing the cache")

        proxy.signal(signal.SIGTERM)
        assert await proxy.exit_code() == 0
        assert_no_token_in(logs, cache_dir)
        assert "cache.corrupt" in (logs / "repaired.out").read_text()
    finally:
        await stop_all(processes, fake)


async def test_a_killed_lock_holder_does_not_stall_the_restarted_proxy(tmp_path: Path) -> None:
    world = busy_world()
    fake = FakeGitLab(world)
    fake.url = await fake.start()
    (tmp_path / "logs").mkdir()
    queries = [q for q in QUERIES if "interval=all" in q and "projects/31" in q]
    # A dead holder's lock would otherwise hold answers for its whole lifetime (the deadline):
    # 10 s, against one lease (1 s) with the fix; the bound below leaves room for a busy machine.
    flags = ("--request-deadline", "10")
    processes = []
    try:
        proxy = await start_proxy(fake.url, tmp_path / "cache", tmp_path / "logs", "a", *flags)
        processes.append(proxy)
        fake.faults.latency = 2.0
        fake.faults.only_kinds = {"deployments"}
        async with aiohttp.ClientSession() as session:
            pending = [asyncio.ensure_future(proxy.get(session, q)) for q in queries]
            while len(fake.calls_of("deployments")) < 1:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # every query holds its answer lock now
            proxy.signal(signal.SIGKILL)
            await proxy.exit_code()
            await asyncio.gather(*pending, return_exceptions=True)
        fake.faults.latency = 0.0

        proxy = await start_proxy(fake.url, tmp_path / "cache", tmp_path / "logs", "b", *flags)
        processes.append(proxy)
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with aiohttp.ClientSession() as session:
            answers = await asyncio.gather(*(proxy.get(session, q) for q in queries))
        assert all(status == 200 for status, _ in answers)
        assert loop.time() - started < 5.0, "answers are not held back by a dead process"
    finally:
        await stop_all(processes, fake)


async def test_sigterm_drains_the_request_in_flight(tmp_path: Path) -> None:
    world = busy_world()
    fake = FakeGitLab(world)
    fake.url = await fake.start()
    (tmp_path / "logs").mkdir()
    proxy = await start_proxy(fake.url, tmp_path / "cache", tmp_path / "logs", "drained")
    try:
        fake.faults.latency = 1.0
        fake.faults.only_kinds = {"deployments"}
        target = QUERIES[0]
        async with aiohttp.ClientSession() as session:
            request = asyncio.ensure_future(proxy.get(session, target))
            for _ in range(200):
                if fake.calls_of("deployments"):
                    break
                await asyncio.sleep(0.01)
            assert fake.calls_of("deployments"), "the request is waiting on GitLab"
            proxy.signal(signal.SIGTERM)
            status, body = await request
        assert status == 200, body
        rows = json.loads(body)
        assert rows and all(set(row) == {"date", "value"} for row in rows)
        assert await proxy.exit_code() == 0
        assert_no_token_in(tmp_path / "logs", tmp_path / "cache")
    finally:
        await stop_all([proxy], fake)


async def test_sigterm_writes_the_request_lines_still_batched(tmp_path: Path) -> None:
    """Request lines are batched for up to 50 ms; a SIGTERM'd process writes the rest before
    it exits (probes, including start_proxy's health checks, are never logged)."""
    fake = FakeGitLab(busy_world())
    fake.url = await fake.start()
    (tmp_path / "logs").mkdir()
    proxy = await start_proxy(fake.url, tmp_path / "cache", tmp_path / "logs", "batched")
    try:
        async with aiohttp.ClientSession() as session:
            expected = []
            for target in (QUERIES[0], QUERIES[0], QUERIES[1], "/nothing/here?a=1"):
                status, _ = await proxy.get(session, target)
                expected.append((target.partition("?")[0], status))
            assert [status for _, status in expected] == [200, 200, 200, 404]
            # A burst answered in a few milliseconds: its lines are still batched at the signal.
            burst = [f"/api/v4/projects/31/dora/metrics?metric=x&n={n}" for n in range(20)]
            statuses = await asyncio.gather(*(proxy.get(session, t, {}) for t in burst))
            expected += [("/api/v4/projects/31/dora/metrics", status) for status, _ in statuses]
            assert [status for status, _ in statuses] == [404] * 20  # anonymous: a private project
            written = proxy.stdout.read_text().count('"event": "request"')
            proxy.signal(signal.SIGTERM)
        assert await proxy.exit_code() == 0
        logged = [json.loads(line) for line in proxy.stdout.read_text().splitlines()]
        requests = [line for line in logged if line["event"] == "request"]
        assert len(requests) == len(expected), f"{written} request lines before the signal"
        assert [(r["path"], r["status"]) for r in requests[:4]] == expected[:4]
        assert sorted((r["path"], r["status"]) for r in requests[4:]) == sorted(expected[4:])
        assert [r["cache"] for r in requests[:4]] == ["miss", "recent", "miss", "none"]
    finally:
        await stop_all([proxy], fake)


def assert_no_token_in(*directories: Path) -> None:
    """No file under the directories (logs, cache database, WAL, value files) holds the token."""
    scanned = 0
    for directory in directories:
        for root, _, names in os.walk(directory):
            for name in names:
                content = (Path(root) / name).read_bytes()
                scanned += 1
                assert TOKEN.encode() not in content, f"token in {Path(root) / name}"
                assert SECRET.encode() not in content, f"server secret in {Path(root) / name}"
    assert scanned, "there were files to scan"
