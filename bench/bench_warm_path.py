"""Issue 4: warm-path throughput against a bare aiohttp handler, and overlap call counts.

    .venv/bin/python -m bench.bench_warm_path [--rounds 5] [--duration 10] [--connections 32]
        [--proxy-setting log_level=warning ...] [--skip-overlap] [--skip-throughput]

Throughput: the proxy (`python -m proxy serve`, default settings except permission_ttl=3600 so
the permission decision stays cached for the whole run; its log lines go to /dev/null) answers
a project metrics URL that is already cached, with a valid token; the baseline is
`bench.bare_server` answering the same bytes and headers. wrk (same settings for both) runs
A/B/A/B; reported are requests/s, p50 and p99 of each run, each server's CPU per request (user
and system µs, from /proc: a server slower than wrk also pays more system time per request, as
wrk sleeps between answers and each send must wake it), their medians and the ratio of the
medians. Target: proxy ≥ 70% of the bare handler's requests/s. The fake GitLab counts upstream
calls during the runs: a warm hit must make none.

Overlap: upstream calls (fake's count, by kind) of requests that reuse cached facts — another
metric or interval over a fetched window, the window shifted by a day, a group after each of its
projects, and 50 identical cold requests at once.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

from bench import worlds
from bench.common import (
    PYTHON,
    ROOT,
    FakeProcess,
    ProxyProcess,
    free_port,
    http,
    markdown_table,
    median,
    print_machine,
)

PROJECT_URL = "/api/v4/projects/100/dora/metrics?"
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


# ---- wrk ---------------------------------------------------------------------------------------
def wrk(url: str, *, threads: int, connections: int, duration: int) -> dict[str, float]:
    """One wrk run; requests/s and latency percentiles in ms. Fails on any non-2xx answer."""
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-H",
            f"PRIVATE-TOKEN: {worlds.READER_TOKEN}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError("wrk saw errors:\n" + out)

    def latency(percent: str) -> float:
        match = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
        assert match, out
        return float(match[1]) * UNITS[match[2]]

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.MULTILINE)
    total = re.search(r"^\s+(\d+) requests in", out, re.MULTILINE)
    assert rps and total, out
    return {
        "rps": float(rps[1]),
        "p50": latency("50"),
        "p99": latency("99"),
        "requests": int(total[1]),
    }


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def measured(pid: int, run: Callable[[], dict[str, float]]) -> dict[str, float]:
    """`run()`'s wrk result plus the server's CPU per request, user and system, in µs."""
    user0, sys0 = cpu_seconds(pid)
    result = run()
    user1, sys1 = cpu_seconds(pid)
    result["user_us"] = (user1 - user0) / result["requests"] * 1e6
    result["sys_us"] = (sys1 - sys0) / result["requests"] * 1e6
    return result


class BareProcess:
    def __init__(self, body: bytes) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="dora-bench-bare-")
        body_file = Path(self._dir.name) / "body.json"
        body_file.write_bytes(body)
        self.port = free_port()
        self._proc = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "bench.bare_server",
                "--port",
                str(self.port),
                "--body-file",
                str(body_file),
            ],
            cwd=ROOT,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.pid = self._proc.pid
        for _ in range(200):
            try:
                if http("GET", self.url + "/-/health", timeout=1)[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("bare server did not start")

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.wait(10)
        self._dir.cleanup()


def throughput(args: argparse.Namespace, today: date) -> None:
    window = worlds.Window.ending_yesterday(today, 90)
    path = PROJECT_URL + window.query("deployment_frequency")
    settings: dict[str, Any] = {"permission_ttl": 3600}
    settings |= dict(item.split("=", 1) for item in args.proxy_setting)
    with (
        FakeProcess("project", today.isoformat()) as fake,
        ProxyProcess(fake.url, settings) as proxy,
    ):
        status, body, _ = proxy.get(path, worlds.READER_TOKEN)
        assert status == 200, body
        fake.reset()
        status, again, _ = proxy.get(path, worlds.READER_TOKEN)
        assert status == 200 and again == body
        assert fake.calls()["total"] == 0, "the second request was not a warm hit"
        print(f"warm URL {path} ({len(body)} bytes); proxy settings {settings}", flush=True)
        bare = BareProcess(body)
        try:
            status, bare_body, _ = http(
                "GET", bare.url + path, {"PRIVATE-TOKEN": worlds.READER_TOKEN}
            )
            assert status == 200 and bare_body == body
            runs: dict[str, list[dict[str, float]]] = {"proxy": [], "bare": []}
            targets = {"proxy": (proxy.url + path, proxy.pid), "bare": (bare.url + path, bare.pid)}
            for round_ in range(args.rounds):
                for name in ("proxy", "bare"):
                    url, pid = targets[name]
                    result = measured(
                        pid,
                        lambda url=url: wrk(
                            url,
                            threads=args.threads,
                            connections=args.connections,
                            duration=args.duration,
                        ),
                    )
                    runs[name].append(result)
                    print(
                        f"  round {round_ + 1} {name}: {result['rps']:.0f} req/s, "
                        f"p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms, "
                        f"CPU per request {result['user_us']:.1f} µs user "
                        f"+ {result['sys_us']:.1f} µs system",
                        flush=True,
                    )
            upstream = fake.calls()
        finally:
            bare.stop()
    rows = []
    for name in ("proxy", "bare"):
        rows.append(
            [
                name,
                ", ".join(f"{r['rps']:.0f}" for r in runs[name]),
                f"{median([r['rps'] for r in runs[name]]):.0f}",
                f"{median([r['p50'] for r in runs[name]]):.2f}",
                f"{median([r['p99'] for r in runs[name]]):.2f}",
                f"{median([r['user_us'] for r in runs[name]]):.1f}",
                f"{median([r['sys_us'] for r in runs[name]]):.1f}",
            ]
        )
    ratio = median([r["rps"] for r in runs["proxy"]]) / median([r["rps"] for r in runs["bare"]])
    pair_ratios = [p["rps"] / b["rps"] for p, b in zip(runs["proxy"], runs["bare"], strict=True)]
    print(
        f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
        f"{args.rounds} rounds A/B alternating:"
    )
    print(
        markdown_table(
            [
                "server",
                "req/s per run",
                "req/s median",
                "p50 ms median",
                "p99 ms median",
                "CPU µs/request user",
                "CPU µs/request system",
            ],
            rows,
        )
    )
    print(
        f"proxy / bare requests/s: {ratio:.2f} (ratio of medians); per round: "
        + ", ".join(f"{r:.2f}" for r in pair_ratios)
        + f"; median of per-round ratios {median(pair_ratios):.2f}"
    )
    print(f"upstream calls during the runs: {upstream['total']} {upstream['by_kind']}")


# ---- overlap cases -----------------------------------------------------------------------------
def counted(fake: FakeProcess, action: Callable[[], object]) -> dict[str, int]:
    fake.reset()
    action()
    return fake.calls()["by_kind"]


def ok(proxy: ProxyProcess, path: str) -> Callable[[], None]:
    def run() -> None:
        status, body, _ = proxy.get(path, worlds.READER_TOKEN)
        if status != 200:
            raise RuntimeError(f"{path}: {status} {body[:200]!r}")

    return run


def overlap(today: date) -> None:
    window = worlds.Window.ending_yesterday(today, 90)
    rows: list[tuple[str, dict[str, int]]] = []
    project = PROJECT_URL
    with FakeProcess("project", today.isoformat()) as fake:
        with ProxyProcess(fake.url) as proxy:
            steps = [
                ("project: cold deployment_frequency", window.query("deployment_frequency")),
                ("… change_failure_rate, same window", window.query("change_failure_rate")),
                ("… time_to_restore_service, same window", window.query("time_to_restore_service")),
                (
                    "… deployment_frequency monthly, staging+production",
                    window.query("deployment_frequency", "monthly", ("production", "staging")),
                ),
                ("… lead_time_for_changes, same window", window.query("lead_time_for_changes")),
                (
                    "… lead_time_for_changes, interval=all",
                    window.query("lead_time_for_changes", "all"),
                ),
                (
                    "… deployment_frequency, window one day earlier",
                    window.shifted(-1).query("deployment_frequency"),
                ),
                (
                    "… deployment_frequency, window one day later (ends today)",
                    window.shifted(1).query("deployment_frequency"),
                ),
                (
                    "… lead_time_for_changes, window one day earlier",
                    window.shifted(-1).query("lead_time_for_changes"),
                ),
            ]
            for name, query in steps:
                rows.append((name, counted(fake, ok(proxy, project + query))))
        with ProxyProcess(fake.url) as proxy:
            path = project + window.query("deployment_frequency")
            rows.append(("project: 1 cold request (fresh cache)", counted(fake, ok(proxy, path))))
        with ProxyProcess(fake.url) as proxy:
            path = project + window.query("deployment_frequency")

            def fifty() -> None:
                with ThreadPoolExecutor(50) as pool:
                    list(pool.map(lambda _: ok(proxy, path)(), range(50)))

            rows.append(("project: 50 identical cold requests at once", counted(fake, fifty)))
    projects = 10
    with FakeProcess("group", today.isoformat(), projects=projects) as fake:
        group = f"/api/v4/groups/{worlds.ROOT_GROUP_ID}/dora/metrics?"
        query = window.query("deployment_frequency")
        with ProxyProcess(fake.url) as proxy:

            def each_project() -> None:
                for n in range(projects):
                    ok(proxy, f"/api/v4/projects/{10_000 + n}/dora/metrics?{query}")()

            rows.append(
                (f"group: its {projects} projects first, one by one", counted(fake, each_project))
            )
            rows.append(("… then the group, same window", counted(fake, ok(proxy, group + query))))
            rows.append(
                (
                    "… then the group, lead_time_for_changes",
                    counted(fake, ok(proxy, group + window.query("lead_time_for_changes"))),
                )
            )
        with ProxyProcess(fake.url) as proxy:
            rows.append(
                (
                    "group: cold (fresh cache), for comparison",
                    counted(fake, ok(proxy, group + query)),
                )
            )
    kinds = sorted({kind for _, by_kind in rows for kind in by_kind})
    print(f"\noverlap cases, upstream calls by kind (window {window.start} .. {window.end}):")
    print(
        markdown_table(
            ["request", *kinds, "total"],
            [[name, *(c.get(k, 0) for k in kinds), sum(c.values())] for name, c in rows],
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--proxy-setting", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-overlap", action="store_true")
    args = parser.parse_args()
    print_machine()
    today = date.today()
    if not args.skip_throughput:
        if shutil.which("wrk") is None:
            raise SystemExit("wrk is not installed: apt-get install -y wrk")
        throughput(args, today)
    if not args.skip_overlap:
        overlap(today)


if __name__ == "__main__":
    main()
