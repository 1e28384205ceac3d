"""Processes and numbers shared by the benchmarks: fake GitLab, proxy, machine, statistics.

Each benchmark runs the fake GitLab and the proxy as separate processes (the fake's CPU time
would otherwise land in the proxy's event loop) and talks to both over HTTP with the standard
library, so the benchmark process itself stays idle while it waits.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SERVER_SECRET = "bench-server-secret-0123456789"


# ---- numbers -----------------------------------------------------------------------------------
def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def machine() -> dict[str, str]:
    load = os.getloadavg()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": os.environ.get("BENCH_COMMIT", "work tree"),
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": " ".join(f"{x:.2f}" for x in load),
    }


def print_machine() -> None:
    print("machine: " + ", ".join(f"{k}={v}" for k, v in machine().items()), flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def proc_status(pid: int, field_name: str) -> int:
    """A `kB` field of /proc/<pid>/status (VmRSS, VmHWM), in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise KeyError(field_name)


def reset_peak_rss(pid: int) -> None:
    """Linux ≥ 4.0: writing 5 to clear_refs resets VmHWM to the current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU seconds of a process (or of one of its threads: tid == pid is main)."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


# ---- HTTP --------------------------------------------------------------------------------------
def http(
    method: str, url: str, headers: dict[str, str] | None = None, timeout: float = 900
) -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


# ---- the fake GitLab ---------------------------------------------------------------------------
@dataclass
class FakeProcess:
    """`python -m bench.fake_process` in the background; see that module."""

    scenario: str
    today: str
    latency: float = 0.0
    projects: int = 200
    indexed: bool = True
    url: str = ""
    control: str = ""
    pid: int = 0
    build_seconds: float = 0.0
    _proc: subprocess.Popen[str] | None = field(default=None, repr=False)

    def start(self) -> FakeProcess:
        cmd = [
            PYTHON,
            "-m",
            "bench.fake_process",
            "--scenario",
            self.scenario,
            "--today",
            self.today,
            "--latency",
            str(self.latency),
            "--projects",
            str(self.projects),
        ]
        if not self.indexed:
            cmd.append("--no-index")
        self._proc = subprocess.Popen(
            cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("fake GitLab process did not start")
        info = json.loads(line)
        self.url, self.control, self.pid = info["url"], info["control"], info["pid"]
        self.build_seconds = info["build_seconds"]
        return self

    def calls(self) -> dict[str, Any]:
        return json.loads(http("GET", self.control + "/calls")[1])

    def reset(self) -> None:
        http("POST", self.control + "/reset")

    def set_latency(self, seconds: float) -> None:
        http("POST", f"{self.control}/latency?seconds={seconds}")

    def stop(self) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None

    def __enter__(self) -> FakeProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


# ---- the proxy ---------------------------------------------------------------------------------
@dataclass
class ProxyProcess:
    """`python -m proxy serve` on a free port with a fresh cache directory."""

    upstream_url: str
    settings: dict[str, str | int | float] = field(default_factory=dict)
    cache_dir: Path | None = None
    port: int = 0
    log_path: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _temp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)
    _profiler: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def start(self) -> ProxyProcess:
        """Start on a free port; retried on another port if the process dies (port taken)."""
        if self.cache_dir is None:
            self._temp = tempfile.TemporaryDirectory(prefix="dora-bench-")
            self.cache_dir = Path(self._temp.name) / "cache"
        for _ in range(5):
            if self._try_start(self.port or free_port()):
                self._start_profiler()
                return self
        raise RuntimeError("proxy did not start")

    def _start_profiler(self) -> None:
        """`BENCH_PYSPY=FILE`: sample the proxy with py-spy (raw stacks, every thread) into FILE.

        Each proxy started appends its own numbered file, so a benchmark's runs stay apart.
        """
        target = os.environ.get("BENCH_PYSPY")
        if not target:
            return
        out = f"{target}.{self.pid}"
        cmd = ["py-spy", "record", "--pid", str(self.pid), "--format", "raw", "-o", out]
        extra = os.environ.get("BENCH_PYSPY_ARGS", "").split()
        cmd += ["--rate", "250", "--threads", "--nonblocking", *extra]
        py_spy = Path(PYTHON).with_name("py-spy")
        if py_spy.exists():
            cmd[0] = str(py_spy)
        self._profiler = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def _try_start(self, port: int) -> bool:
        self.port = port
        cmd = [PYTHON, "-m", "proxy", "serve", "--upstream-url", self.upstream_url]
        options = {
            "port": self.port,
            "cache_dir": self.cache_dir,
            "log_format": "json",
            **self.settings,
        }
        for name, value in options.items():
            cmd += ["--" + name.replace("_", "-"), str(value)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DORA_PROXY_")} | {
            "DORA_PROXY_SERVER_SECRET": SERVER_SECRET
        }
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if http("GET", self.url + "/-/health", timeout=1)[0] == 200:
                    # Another process may hold the port (and answer): ours then exits.
                    time.sleep(0.3)
                    if proc.poll() is None:
                        return True
                    break
            except OSError:
                time.sleep(0.05)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        self._proc = None
        self.port = 0
        return False

    def get(self, path_and_query: str, token: str) -> tuple[int, bytes, dict[str, str]]:
        return http("GET", self.url + path_and_query, {"PRIVATE-TOKEN": token})

    def stop(self) -> None:
        if self._profiler is not None:
            self._profiler.send_signal(signal.SIGINT)
            self._profiler.wait(30)
            self._profiler = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(35)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._temp is not None:
            self._temp.cleanup()
            self._temp = None

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
