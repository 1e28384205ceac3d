"""Micro-benchmarks behind the cold-path findings: CPU per upstream call, cost per cache write.

    .venv/bin/python -m bench.bench_micro [--calls 1000] [--writes 5000]

Upstream call: `Upstream._get_sync` (python-gitlab over requests, what every upstream call runs
in a worker thread) against the fake GitLab without latency, one thread, compared with the same
call when the session does not consult the environment per request (`trust_env = False`: no
proxy variables, no .netrc lookups), with a bare requests session, and with urllib3 alone.

Cache write: `DiskStorage.set` one at a time (what the facts layer does per day and per
deployment) against diskcache `set` calls inside one transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import diskcache
import requests
import urllib3

from bench import worlds
from bench.common import FakeProcess, print_machine
from proxy.cache.disk import DiskStorage
from proxy.credentials import Credential
from proxy.upstream import Upstream


def per_call(label: str, calls: list[Callable[[], object]]) -> None:
    calls[0]()
    cpu, wall = time.process_time(), time.perf_counter()
    for call in calls:
        call()
    n = len(calls)
    print(
        f"| {label} | {(time.process_time() - cpu) / n * 1e3:.2f} "
        f"| {(time.perf_counter() - wall) / n * 1e3:.2f} |",
        flush=True,
    )


def upstream_calls(n: int) -> None:
    today = date.today()
    world = worlds.cold_project_world(today)
    paths = [f"/projects/100/deployments/{d}/merge_requests" for d in list(world.deployments)[:n]]
    with FakeProcess("project", today.isoformat()) as fake:
        upstream = Upstream(fake.url, timeout=10, concurrency=1, max_retries=0)
        gl = upstream.client(Credential(worlds.READER_TOKEN, "private"))
        print("| one upstream call (deployment MRs, 1 page) | CPU ms | wall ms |\n|---|---|---|")

        def via_upstream(path: str) -> Callable[[], object]:
            return lambda: upstream._get_sync(gl, "deployment_mrs", "GET", path, None, 0.0)

        per_call("Upstream._get_sync (python-gitlab, requests)", [via_upstream(p) for p in paths])
        gl.session.trust_env = False
        per_call("… with session.trust_env = False", [via_upstream(p) for p in paths])
        session = requests.Session()
        session.headers["PRIVATE-TOKEN"] = worlds.READER_TOKEN
        base = fake.url + "/api/v4"
        per_call(
            "requests.Session.get + .json()",
            [lambda p=p: session.get(base + p, params={"per_page": 100}).json() for p in paths],
        )
        session.trust_env = False
        per_call(
            "… with trust_env = False",
            [lambda p=p: session.get(base + p, params={"per_page": 100}).json() for p in paths],
        )
        pool = urllib3.HTTPConnectionPool("127.0.0.1", int(fake.url.rsplit(":", 1)[1]), maxsize=1)
        headers = {"PRIVATE-TOKEN": worlds.READER_TOKEN}
        per_call(
            "urllib3 pool.request + json.loads",
            [
                lambda p=p: json.loads(pool.request("GET", "/api/v4" + p, headers=headers).data)
                for p in paths
            ],
        )


def micros(label: str, started: float, n: int) -> None:
    print(f"| {label} | {(time.perf_counter() - started) / n * 1e6:.0f} |", flush=True)


async def cache_writes(n: int) -> None:
    value = b'[{"id":123456,"environment_id":1000,"finished_at":"2026-09-01T10:00:00Z"}]' * 3
    with tempfile.TemporaryDirectory() as temp:
        storage = DiskStorage(Path(temp) / "a", size_limit=1 << 30)
        print("\n| cache write | µs per entry |\n|---|---|")
        started = time.perf_counter()
        for i in range(n):
            await storage.set(f"v1|x|project:{i}|deployments|2026-09-01", value, 604800)
        micros("DiskStorage.set, awaited one by one", started, n)
        started = time.perf_counter()
        await asyncio.gather(
            *(
                storage.set(f"v1|x|project:{i}|incidents|g0|2026-09-01", value, 604800)
                for i in range(n)
            )
        )
        micros("DiskStorage.set, all gathered", started, n)
        started = time.perf_counter()
        for i in range(n):
            await storage.get(f"v1|x|project:{i}|deployments|2026-09-01")
        micros("(DiskStorage.get, a hit)", started, n)
        await storage.close()
        cache = diskcache.Cache(str(Path(temp) / "b"), eviction_policy="least-recently-stored")
        started = time.perf_counter()
        with cache.transact():
            for i in range(n):
                cache.set(f"v1|x|project:{i}|deployments|2026-09-01", value, expire=604800)
        micros("diskcache set × n in one transaction", started, n)
        cache.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=5000)
    args = parser.parse_args()
    print_machine()
    upstream_calls(args.calls)
    asyncio.run(cache_writes(args.writes))


if __name__ == "__main__":
    main()
