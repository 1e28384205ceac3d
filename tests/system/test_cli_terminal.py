"""The CLI as a person at a terminal and as a job without one, through real subprocesses:

- `cache warm` draws a tqdm progress bar on a terminal (a pseudo-terminal here) and writes
  plain lines otherwise;
- `cache clear` asks on a terminal (no → nothing removed, yes → cleared), and without a
  terminal refuses unless --yes;
- `cache stats` and `cache clear` leave a missing cache directory missing (default one too);
- `serve --log-format json` writes JSON from its very first line (no aiohttp banner).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import signal
import socket
import struct
import sys
import termios
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.demo.server import FakeGitLab
from tests.web.test_cache_cli import acme_world

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60.0


@pytest.fixture
async def fake() -> AsyncIterator[FakeGitLab]:
    gitlab = FakeGitLab(acme_world())
    await gitlab.start()
    yield gitlab
    await gitlab.close()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DORA_PROXY_")}
    env["DORA_PROXY_WARM_TOKEN"] = "tok-rita"
    env.update(extra)
    return env


class Terminal:
    """A pseudo-terminal: the child's stdin/stdout/stderr; a thread collects what it shows."""

    def __init__(self, columns: int = 120) -> None:
        self.master, self.slave = pty.openpty()
        # A real terminal has a size; a fresh pty says 0 columns.
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        self.output = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:  # EIO: every slave end closed
                return
            if not chunk:
                return
            with self._lock:
                self.output += chunk

    def text(self) -> str:
        with self._lock:
            return self.output.decode("utf-8", "replace")

    async def wait_for(self, needle: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert time.monotonic() < deadline, f"{needle!r} not shown; got {self.text()!r}"
            await asyncio.sleep(0.05)

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> None:
        os.close(self.slave)
        self._reader.join(timeout=5)
        os.close(self.master)


async def _run(*argv: str, env: dict[str, str], **streams) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy", *argv, cwd=ROOT, env=env, **streams
    )


def _warm(fake: FakeGitLab, cache_dir: Path) -> list[str]:
    upstream = ["--upstream-url", str(fake.url), "--cache-dir", str(cache_dir)]
    return ["cache", "warm", *upstream, "--project", "20"]


@pytest.mark.parametrize("columns", [120, 0], ids=["sized", "no size reported"])
async def test_warm_draws_a_progress_bar_on_a_terminal(fake, tmp_path, columns) -> None:
    terminal = Terminal(columns)
    try:
        process = await _run(
            *_warm(fake, tmp_path / "cache"),
            env=_env(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=terminal.slave,
        )
        assert await asyncio.wait_for(process.wait(), DEADLINE) == 0
    finally:
        terminal.close()
    shown = terminal.text()
    assert "\r" in shown  # redrawn in place, not one line per item
    assert "100%|" in shown and "12/12 [" in shown  # tqdm's bar: percentage, bar, count, times
    assert "answer/s" in shown or "s/answer" in shown
    assert "1/12 project 20" not in shown  # not the plain-line format


async def test_warm_writes_plain_lines_without_a_terminal(fake, tmp_path) -> None:
    process = await _run(
        *_warm(fake, tmp_path / "cache"),
        env=_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode == 0
    lines = err.decode().splitlines()
    assert len(lines) == 12, lines
    assert lines[0] == "1/12 project 20 deployment_frequency all miss"
    assert "\r" not in err.decode() and "%|" not in err.decode()


async def _entries(cache_dir: Path) -> int:
    process = await _run(
        "cache", "stats", "--cache-dir", str(cache_dir), env=_env(), stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode == 0
    return json.loads(out)["entries"]


async def _warmed(fake: FakeGitLab, cache_dir: Path) -> int:
    process = await _run(*_warm(fake, cache_dir), env=_env(), stderr=asyncio.subprocess.DEVNULL)
    assert await asyncio.wait_for(process.wait(), DEADLINE) == 0
    entries = await _entries(cache_dir)
    assert entries > 12
    return entries


async def _clear_on_a_terminal(cache_dir: Path, answer: str) -> tuple[int, str]:
    terminal = Terminal()
    try:
        process = await _run(
            "cache",
            "clear",
            "--cache-dir",
            str(cache_dir),
            env=_env(),
            stdin=terminal.slave,
            stdout=terminal.slave,
            stderr=terminal.slave,
        )
        await terminal.wait_for("[y/N] ")
        terminal.type(answer + "\n")
        code = await asyncio.wait_for(process.wait(), DEADLINE)
    finally:
        terminal.close()
    return code, terminal.text()


async def test_clear_asks_on_a_terminal(fake, tmp_path) -> None:
    cache_dir = tmp_path / "cache"
    entries = await _warmed(fake, cache_dir)

    code, shown = await _clear_on_a_terminal(cache_dir, "n")
    assert code == 1
    assert f"Empty the disk cache {cache_dir} ({entries} entries" in shown
    assert "Nothing removed." in shown
    assert await _entries(cache_dir) == entries

    code, shown = await _clear_on_a_terminal(cache_dir, "y")
    assert code == 0
    assert json.dumps({"removed": entries}) in shown
    assert await _entries(cache_dir) == 0


async def test_clear_without_a_terminal_refuses_unless_yes(fake, tmp_path) -> None:
    cache_dir = tmp_path / "cache"
    entries = await _warmed(fake, cache_dir)
    argv = ("cache", "clear", "--cache-dir", str(cache_dir))
    pipes = {"stdin": asyncio.subprocess.DEVNULL, "stdout": asyncio.subprocess.PIPE}
    process = await _run(*argv, env=_env(), stderr=asyncio.subprocess.PIPE, **pipes)
    out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode == 1
    assert "refusing to empty the disk cache" in err.decode() and "--yes" in err.decode()
    assert out == b""
    assert await _entries(cache_dir) == entries

    process = await _run(*argv, "--yes", env=_env(), **pipes)
    out, _ = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode == 0
    assert json.loads(out) == {"removed": entries}


async def test_stats_and_clear_leave_a_missing_cache_missing(tmp_path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    explicit = tmp_path / "nowhere" / "cache"
    env = _env(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    for argv in (
        ("cache", "stats"),
        ("cache", "stats", "--cache-dir", str(explicit)),
        ("cache", "clear", "--yes", "--cache-dir", str(explicit)),
    ):
        process = await _run(*argv, env=env, stdout=asyncio.subprocess.PIPE)
        out, _ = await asyncio.wait_for(process.communicate(), DEADLINE)
        assert process.returncode == 0, argv
        assert json.loads(out)["exists"] is False
    assert list(home.iterdir()) == []  # no ~/.cache/gitlab-dora-proxy
    assert not (tmp_path / "nowhere").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_serve_json_logs_are_json_from_the_first_line(fake, tmp_path) -> None:
    port = _free_port()
    process = await _run(
        "serve",
        "--upstream-url",
        str(fake.url),
        "--port",
        str(port),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--log-format",
        "json",
        env=_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        first = await asyncio.wait_for(process.stdout.readline(), DEADLINE)
        lines = [first]
        while b'"listening"' not in lines[-1]:
            lines.append(await asyncio.wait_for(process.stdout.readline(), DEADLINE))
            assert lines[-1], b"".join(lines)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        rest, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    events = [json.loads(line) for line in lines + rest.splitlines(keepends=True) if line.strip()]
    listening = next(e for e in events if e["event"] == "listening")
    assert listening["url"] == f"http://127.0.0.1:{port}"
    assert json.loads(first)["event"]  # the very first line is a JSON event
    assert b"Running on" not in err and b"Press CTRL+C" not in err
    for line in err.splitlines():
        json.loads(line)  # stderr, if anything, is JSON too


async def test_library_records_are_json_lines_too(tmp_path) -> None:
    """aiohttp's and other libraries' stdlib records (stderr) are JSON in JSON mode, redacted."""
    code = (
        "import logging\n"
        "from proxy.telemetry.logs import configure_logging\n"
        "configure_logging('info', 'json')\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    logging.getLogger('aiohttp.server').exception('handler failed PRIVATE-TOKEN: abc')\n"
        "logging.getLogger('asyncio').warning('slow callback')\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=ROOT,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode == 0, err
    lines = [json.loads(line) for line in (out + err).splitlines() if line.strip()]
    assert [e["event"] for e in lines][-1] == "slow callback"
    failed = next(e for e in lines if e["event"].startswith("handler failed"))
    assert failed["level"] == "error" and failed["logger"] == "aiohttp.server"
    assert "ZeroDivisionError" in json.dumps(failed["exception"])
    assert "abc" not in err.decode()  # the redaction still runs
