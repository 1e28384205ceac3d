"""Real processes under hostile conditions: many idle sockets under a low open-files limit, and
`dora-proxy demo` stopped by a signal.

The proxy runs as `python -m proxy serve` with its RLIMIT_NOFILE lowered before exec
(preexec_fn), as a container's common 1,024 would be. Counts, not times: the legitimate
request's status, the log lines written, tracebacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from proxy.demo import FakeGitLab
from tests.redis_server import free_port
from tests.web.test_upstream_faults import world

SECRET = "hostile-process-secret-0123456789"
TARGET = (
    "/api/v4/projects/11/dora/metrics?metric=deployment_frequency"
    "&start_date=2021-01-01&end_date=2021-01-31"
)


def limit_files(soft: int, hard: int | None = None) -> Callable[[], None]:
    def lower() -> None:
        current_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, current_hard if hard is None else hard))

    return lower


@pytest.fixture(autouse=True)
def _enough_files_for_the_test() -> Iterator[None]:
    """This test process opens a thousand sockets itself."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard open-files limit ({hard}) is too low for this test")
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def start_proxy(
    upstream: str, tmp_path: Path, preexec: Callable[[], None], *flags: str
) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DORA_PROXY_")}
    env.update(DORA_PROXY_SERVER_SECRET=SECRET, DORA_PROXY_LOG_FORMAT="json", PYTHONUNBUFFERED="1")
    output = tmp_path / "proxy.log"
    with output.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "proxy", "serve",
                "--upstream-url", upstream,
                "--port", str(port),
                "--cache-dir", str(tmp_path / "cache"),
                *flags,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=preexec,
        )  # fmt: skip
    return process, f"http://127.0.0.1:{port}", output


async def wait_healthy(process: subprocess.Popen[bytes], base: str, output: Path) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            assert process.poll() is None, output.read_text()
            try:
                async with session.get(f"{base}/-/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"never healthy: {output.read_text()}")


def open_idle(base: str, count: int) -> list[socket.socket]:
    """`count` connections that never send a byte (connected in the kernel's backlog at least)."""
    host, port = base.removeprefix("http://").split(":")
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect((host, int(port)))
        sockets.append(sock)
    return sockets


async def ask(base: str, timeout: float = 20.0) -> int:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
        session.get(f"{base}{TARGET}", headers={"PRIVATE-TOKEN": "tok-maria"}) as response,
    ):
        return response.status


def log_lines(output: Path) -> list[str]:
    return output.read_text(errors="replace").splitlines()


@pytest.fixture
async def fake() -> FakeGitLab:
    gitlab = FakeGitLab(world())
    gitlab.url = await gitlab.start()
    yield gitlab
    await gitlab.close()


async def test_idle_sockets_beyond_a_low_soft_limit_do_not_take_the_proxy_down(
    fake, tmp_path: Path
) -> None:
    """Soft limit 256 (the hard one as it is): the proxy raises it at start, so 1,100 idle
    connections (max_connections raised to 2,000) are held while a real caller is answered."""
    process, base, output = start_proxy(
        fake.url,
        tmp_path,
        limit_files(256),
        "--idle-connection-timeout",
        "60",
        "--max-connections",
        "2000",
    )
    idle: list[socket.socket] = []
    try:
        await wait_healthy(process, base, output)
        idle = open_idle(base, 1100)
        status = None
        for _ in range(20):  # the proxy accepts the burst first (a loaded machine lags)
            await asyncio.sleep(0.5)
            try:
                status = await ask(base, timeout=5)
                break
            except (aiohttp.ClientError, TimeoutError, ConnectionError):
                continue
        assert status == 200
        assert process.poll() is None
        assert len(idle) == 1100 and all(sock.fileno() >= 0 for sock in idle)
    finally:
        for sock in idle:
            sock.close()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=40)
    lines = log_lines(output)
    listening = [json.loads(line) for line in lines if '"connection_limits"' in line]
    assert listening and listening[0]["open_files"][0] > 1100, lines[:5]
    assert not [line for line in lines if "Traceback" in line]


async def test_past_the_connection_cap_the_proxy_still_serves_and_logs_little(
    fake, tmp_path: Path
) -> None:
    """Soft and hard limit 300: at most 300 - 128 connections; 600 idle ones are closed (past
    the cap at once, the rest after the idle timeout), then a real caller is answered. The
    log stays a handful of one-line JSON records, without tracebacks."""
    process, base, output = start_proxy(
        fake.url, tmp_path, limit_files(300, 300), "--idle-connection-timeout", "1"
    )
    idle: list[socket.socket] = []
    try:
        await wait_healthy(process, base, output)
        idle = open_idle(base, 600)
        deadline = time.monotonic() + 15
        status = None
        while time.monotonic() < deadline:  # idle ones are closed within a second or so
            await asyncio.sleep(1.5)
            try:
                status = await ask(base, timeout=5)
                break
            except (aiohttp.ClientError, TimeoutError):
                continue
        assert status == 200
        assert process.poll() is None
    finally:
        for sock in idle:
            sock.close()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=40)
    lines = log_lines(output)
    assert not [line for line in lines if "Traceback" in line]
    assert len(lines) < 60, lines[-20:]
    refused = [json.loads(line) for line in lines if '"connections_refused"' in line]
    assert refused and refused[0]["max_connections"] == 300 - 128


async def test_one_address_holds_at_most_max_client_connections(fake, tmp_path: Path) -> None:
    """With `max_client_connections`, 40 idle sockets from 127.0.0.1 keep 5; another address
    is served meanwhile."""
    process, base, output = start_proxy(
        fake.url, tmp_path, limit_files(4096), "--max-client-connections", "5"
    )
    idle: list[socket.socket] = []
    try:
        await wait_healthy(process, base, output)
        idle = open_idle(base, 40)
        await asyncio.sleep(0.5)
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(f"{base}{TARGET}", headers={"PRIVATE-TOKEN": "tok-maria"}) as response,
        ):
            assert response.status == 200
    finally:
        for sock in idle:
            sock.close()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=40)
    refused = [json.loads(line) for line in log_lines(output) if '"connections_refused"' in line]
    assert len(refused) == 1, refused  # rate-limited: one line for the 35 refused at once
    assert refused[0]["max_client_connections"] == 5 and refused[0]["refused"] >= 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_demo_removes_its_temporary_directory_when_stopped(tmp_path: Path, signum: int) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DORA_PROXY_")}
    env.update(TMPDIR=str(temp), PYTHONUNBUFFERED="1", DORA_PROXY_LOG_FORMAT="json")
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "demo", "--port", str(free_port())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        assert process.stdout is not None
        seen = []
        for line in process.stdout:
            seen.append(line)
            if line.startswith(b"gitlab-dora-proxy demo:"):
                break
        else:
            raise AssertionError(b"".join(seen).decode(errors="replace"))
        made = list(temp.glob("dora-proxy-demo-*"))
        assert len(made) == 1 and (made[0] / "server-secret").exists()
        process.send_signal(signum)
        assert process.wait(timeout=30) in (0, 130)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert list(temp.glob("dora-proxy-demo-*")) == []


def test_library_records_are_rate_limited(tmp_path: Path) -> None:
    """asyncio logging the same error with a traceback a thousand times (accept() without
    descriptors) writes at most ten JSON lines, each one line."""
    code = (
        "import logging\n"
        "from proxy.telemetry.logs import configure_logging\n"
        "configure_logging('info', 'json')\n"
        "for _ in range(1000):\n"
        "    try:\n"
        "        raise OSError(24, 'Too many open files')\n"
        "    except OSError:\n"
        "        logging.getLogger('asyncio').exception('socket.accept() out of system resource')\n"
        "logging.getLogger('aiohttp.server').warning('another message')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DORA_PROXY_")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in (done.stdout + done.stderr).splitlines() if line]
    accept = [e for e in lines if e["event"].startswith("socket.accept()")]
    assert len(accept) == 10
    assert all(e["logger"] == "asyncio" and "OSError" in json.dumps(e) for e in accept)
    assert [e["event"] for e in lines][-1] == "another message"
