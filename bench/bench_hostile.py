"""Issue 12: legitimate callers under hostile load, in one run.

    .venv/bin/python -m bench.bench_hostile [--duration 8] [--flood 3000] [--storm 30]
        [--latency 0.02] [--proxy-setting name=value ...]

The fake GitLab (`bench.fake_process`, a group of 40 projects, `--latency` seconds per call)
and the proxy (`python -m proxy serve`, default settings except recent_answer_ttl=0, so every
warm request goes through the permission cache and the answer cache) run as processes of their
own. Legitimate warm callers (4 connections, this process, tok-rita with a cached permission
decision, ten cached answers) measure p50/p99 in three phases of `--duration` seconds:

1. alone;
2. during a junk-token flood: another process sends `--flood` requests with random tokens,
   300 at a time, from 127.0.0.2 (its own client address). Mid-flood a legitimate *cold*
   caller (tok-admin: no cached decision, so its check needs /user and the project) asks once;
3. during a cold storm: another process asks `--storm` distinct cold questions (lead time over
   distinct projects, one upstream call per deployment) and gives each up after 2 s.

Reported: p50/p99 per phase and their ratio to phase 1 (target: flood p99 within 3× of
alone), the cold caller's status and time, the flood's statuses and `/user` calls per junk
token, and the upstream calls made after every storm caller had gone: in the first second
(disconnects reach a busy event loop with some lag; calls already running finish) and in the
three seconds after that (target: none).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import secrets
import time
from collections import Counter
from datetime import date

import aiohttp

from bench import worlds
from bench.common import (
    FakeProcess,
    ProxyProcess,
    markdown_table,
    percentile,
    print_machine,
)

GROUP_PROJECTS = 40
WARM_PROJECTS = range(10_000, 10_010)
STORM_PROJECTS = range(10_010, 10_040)
LEGIT_CONNECTIONS = 4
FLOOD_AT_ONCE = 300
STORM_PATIENCE = 2.0  # seconds a storm caller waits before giving up


def warm_urls(window: worlds.Window) -> list[str]:
    return [
        f"/api/v4/projects/{pid}/dora/metrics?{window.query('deployment_frequency')}"
        for pid in WARM_PROJECTS
    ]


async def legit_phase(base: str, urls: list[str], seconds: float) -> list[float]:
    """Latencies (ms) of warm requests from LEGIT_CONNECTIONS callers for `seconds`."""
    latencies: list[float] = []
    errors: Counter[int] = Counter()
    stop_at = time.perf_counter() + seconds
    headers = {"PRIVATE-TOKEN": worlds.READER_TOKEN}

    async def caller(n: int, session: aiohttp.ClientSession) -> None:
        i = n
        while time.perf_counter() < stop_at:
            url = base + urls[i % len(urls)]
            i += 1
            started = time.perf_counter()
            async with session.get(url, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    errors[response.status] += 1
                    continue
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=LEGIT_CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(caller(n, session) for n in range(LEGIT_CONNECTIONS)))
    if errors:
        print(f"  legit warm errors: {dict(errors)}", flush=True)
    return latencies


def _flood(base: str, url: str, count: int, queue: multiprocessing.Queue) -> None:
    async def run() -> dict[str, int]:
        statuses: Counter[str] = Counter()
        sem = asyncio.Semaphore(FLOOD_AT_ONCE)
        connector = aiohttp.TCPConnector(limit=FLOOD_AT_ONCE, local_addr=("127.0.0.2", 0))
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one() -> None:
                async with sem:
                    token = "glpat-" + secrets.token_hex(10)
                    try:
                        async with session.get(base + url, headers={"PRIVATE-TOKEN": token}) as r:
                            await r.read()
                            statuses[str(r.status)] += 1
                    except (aiohttp.ClientError, TimeoutError) as exc:
                        statuses[type(exc).__name__] += 1

            await asyncio.gather(*(one() for _ in range(count)))
        return dict(statuses)

    started = time.perf_counter()
    result = asyncio.run(run())
    queue.put({"statuses": result, "seconds": round(time.perf_counter() - started, 2)})


def _storm(base: str, urls: list[str], queue: multiprocessing.Queue) -> None:
    async def run() -> dict[str, int]:
        outcomes: Counter[str] = Counter()
        timeout = aiohttp.ClientTimeout(total=STORM_PATIENCE)
        async with aiohttp.ClientSession(timeout=timeout) as session:

            async def one(url: str) -> None:
                try:
                    headers = {"PRIVATE-TOKEN": worlds.READER_TOKEN}
                    async with session.get(base + url, headers=headers) as r:
                        await r.read()
                        outcomes[str(r.status)] += 1
                except TimeoutError:
                    outcomes["gave up"] += 1
                except aiohttp.ClientError as exc:
                    outcomes[type(exc).__name__] += 1

            await asyncio.gather(*(one(url) for url in urls))
        return dict(outcomes)

    queue.put({"outcomes": asyncio.run(run()), "left_at": time.time()})


async def cold_caller(base: str, url: str, delay: float) -> tuple[int, float]:
    await asyncio.sleep(delay)
    started = time.perf_counter()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session,
        session.get(base + url, headers={"PRIVATE-TOKEN": "tok-admin"}) as response,
    ):
        await response.read()
        return response.status, (time.perf_counter() - started) * 1000


def summary(latencies: list[float]) -> tuple[float, float, int]:
    return percentile(latencies, 50), percentile(latencies, 99), len(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--flood", type=int, default=3000)
    parser.add_argument("--storm", type=int, default=30)
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--proxy-setting", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    print_machine()
    today = date.today()
    window = worlds.Window.ending_yesterday(today)
    settings: dict[str, str | int | float] = {"recent_answer_ttl": 0, "permission_ttl": 3600}
    settings.update(dict(item.split("=", 1) for item in args.proxy_setting))
    ctx = multiprocessing.get_context("fork")
    with (
        FakeProcess("group", today.isoformat(), projects=GROUP_PROJECTS) as fake,
        ProxyProcess(fake.url, settings) as proxy,
    ):
        urls = warm_urls(window)
        for url in urls:  # the answers and rita's decisions, cached
            status, body, _ = proxy.get(url, worlds.READER_TOKEN)
            assert status == 200, body
        fake.set_latency(args.latency)
        rows = []

        alone = asyncio.run(legit_phase(proxy.url, urls, args.duration))
        rows.append(("alone", *summary(alone)))

        fake.reset()
        queue = ctx.Queue()
        flood = ctx.Process(target=_flood, args=(proxy.url, urls[0], args.flood, queue))
        flood.start()

        async def during_flood() -> tuple[list[float], tuple[int, float]]:
            legit, cold = await asyncio.gather(
                legit_phase(proxy.url, urls, args.duration),
                cold_caller(proxy.url, urls[1], 0.5),
            )
            return legit, cold

        flooded, (cold_status, cold_ms) = asyncio.run(during_flood())
        flood_result = queue.get(timeout=300)
        flood.join()
        flood_calls = fake.calls()
        rows.append(("junk-token flood", *summary(flooded)))

        storm_urls = [
            f"/api/v4/projects/{pid}/dora/metrics?{window.shifted(-n).query(metric)}"
            for n in range(max(1, args.storm // len(STORM_PROJECTS) + 1))
            for pid in STORM_PROJECTS
            for metric in ("lead_time_for_changes",)
        ][: args.storm]
        fake.reset()
        storm = ctx.Process(target=_storm, args=(proxy.url, storm_urls, queue))
        storm.start()

        async def during_storm() -> tuple[list[float], dict, int]:
            loop = asyncio.get_running_loop()

            async def watch() -> tuple[dict, int]:
                result = await loop.run_in_executor(None, queue.get, True, 300)
                left = await loop.run_in_executor(None, fake.calls)
                await asyncio.sleep(1.0)  # the proxy notices the disconnects (a busy loop lags)
                at_leave = await loop.run_in_executor(None, fake.calls)
                result["first_second"] = at_leave["total"] - left["total"]
                await asyncio.sleep(3.0)
                after = await loop.run_in_executor(None, fake.calls)
                result["after_by_kind"] = {
                    kind: n - at_leave["by_kind"].get(kind, 0)
                    for kind, n in after["by_kind"].items()
                    if n != at_leave["by_kind"].get(kind, 0)
                }
                return result, after["total"] - at_leave["total"]

            legit, (result, after) = await asyncio.gather(
                legit_phase(proxy.url, urls, args.duration), watch()
            )
            return legit, result, after

        stormed, storm_result, calls_after = asyncio.run(during_storm())
        storm.join()
        rows.append(("cold storm", *summary(stormed)))

    base_p50, base_p99 = rows[0][1], rows[0][2]
    table = markdown_table(
        ["phase", "p50 ms", "p99 ms", "requests", "p50 / alone", "p99 / alone"],
        [
            (name, f"{p50:.2f}", f"{p99:.2f}", n, f"{p50 / base_p50:.2f}", f"{p99 / base_p99:.2f}")
            for name, p50, p99, n in rows
        ],
    )
    print(table)
    user_calls = flood_calls["by_kind"].get("user", 0)
    junk = args.flood
    print(
        json.dumps(
            {
                "cold_caller": {"status": cold_status, "ms": round(cold_ms, 1)},
                "flood": flood_result,
                "flood_upstream_calls": flood_calls["by_kind"],
                "user_calls_per_junk_token": round(user_calls / junk, 3),
                "storm": storm_result["outcomes"],
                "storm_calls_after_by_kind": storm_result["after_by_kind"],
                "storm_upstream_calls_in_the_second_after_callers_left": storm_result[
                    "first_second"
                ],
                "storm_upstream_calls_1_to_4_s_after_callers_left": calls_after,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
