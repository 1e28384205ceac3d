"""pytest plugin: a private `redis-server` on a free loopback port for the whole test session.

Never the system Redis on 6379: tests clear namespaces and must not touch anyone's data. Without
the binary the Redis tests are skipped, unless DORA_PROXY_REQUIRE_REDIS=1 (CI) makes that a
failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_START_TIMEOUT = 10.0
_ATTEMPTS = 3  # a free port can be taken between choosing it and the server binding it


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start(binary: str, directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    for _ in range(_ATTEMPTS):
        port = free_port()
        if port == 6379:
            continue
        log_path = directory / f"redis-{port}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [
                    binary,
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--save", "",
                    "--appendonly", "no",
                    "--daemonize", "no",
                    "--dir", str(directory),
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=directory,
            )  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline and process.poll() is None:
            if _answers_ping(port):
                return process, port
            time.sleep(0.05)
        _stop(process)
    log_tail = "".join(p.read_text(errors="replace")[-2000:] for p in directory.glob("*.log"))
    pytest.fail(f"redis-server did not answer PING after {_ATTEMPTS} attempts:\n{log_tail}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Redis server started for this session only (db 0, nothing persisted)."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server not installed (apt-get install redis-server); Redis tests skipped"
        if os.environ.get("DORA_PROXY_REQUIRE_REDIS") == "1":
            pytest.fail(message.replace("skipped", "required by DORA_PROXY_REQUIRE_REDIS=1"))
        pytest.skip(message)
    process, port = _start(binary, tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(process)
