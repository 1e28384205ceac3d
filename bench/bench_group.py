"""Issue 3: a cold group request over 200 projects — upstream calls, wall time, peak memory.

    .venv/bin/python -m bench.bench_group [--repeats 3] [--concurrency 8 16] [--latency 0.02]

World: a root group with nested subgroups holding 200 projects, each with a production and a
staging environment, 1–2 deployments a day on each (1–3 MRs per deployment) and 0–3 incidents,
over the 90-day window plus 10 days before it. The fake GitLab runs in its own process and
sleeps `--latency` seconds in every call (network and GitLab time); the proxy is
`python -m proxy serve` with a fresh cache per measurement and `upstream_concurrency` set.

For each concurrency, metric and repeat: one cold group request (timed), then the same request
again (must make no upstream data call). Measured: the fake's calls by kind, the minimum the API
allows (permission calls + list pages + one MR call per deployment in the requested tiers),
wall time against calls × latency / concurrency, the proxy's peak RSS (VmHWM, reset before the
request) above its idle RSS, and CPU seconds of both processes during the request.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import time
from collections import Counter
from datetime import date, timedelta
from typing import Any

from bench import worlds
from bench.common import (
    FakeProcess,
    ProxyProcess,
    cpu_seconds,
    markdown_table,
    median,
    print_machine,
    proc_status,
    reset_peak_rss,
)
from proxy.demo import DATA_KINDS
from proxy.demo.world import World

GROUP = f"/api/v4/groups/{worlds.ROOT_GROUP_ID}/dora/metrics?"
PER_PAGE = 100
METRICS = ("lead_time_for_changes", "deployment_frequency")


def minimum_calls(world: World, window: worlds.Window, metric: str) -> dict[str, int]:
    """The fewest calls the REST API allows for a cold group request (production tier)."""
    start = worlds._at(window.start, 0)
    end = worlds._at(window.end + timedelta(days=1), 0)
    tiers = {e.id: e.tier for e in world.environments.values()}
    per_project: Counter[int] = Counter()
    per_project_production: Counter[int] = Counter()
    mr_calls = 0
    for dep in world.deployments.values():
        finished = dep.internal_finished_at
        if finished is None or not start <= finished < end:
            continue
        per_project[dep.project_id] += 1
        if tiers[dep.environment_id] == "production":
            per_project_production[dep.project_id] += 1
            mr_calls += 1
    incidents = sum(
        1 for i in world.issues.values() if i.issue_type == "incident" and i.updated_at >= start
    )
    projects = len(world.projects)
    minimum = {
        "user": 1,
        "group": 1,
        "group_members": 1,
        "group_projects": max(1, math.ceil(projects / PER_PAGE)),
        "environments": projects,
        "deployments": sum(max(1, math.ceil(n / PER_PAGE)) for n in per_project.values())
        + (projects - len(per_project)),
        "group_issues": max(1, math.ceil(incidents / PER_PAGE)),
        "deployment_mrs": mr_calls if metric == "lead_time_for_changes" else 0,
    }
    # Listing only the production environment's deployments (`environment=` filter) would need:
    production_only = sum(max(1, math.ceil(n / PER_PAGE)) for n in per_project_production.values())
    minimum["_deployments_production_only"] = production_only
    return minimum


def data_calls(by_kind: dict[str, int]) -> int:
    return sum(n for kind, n in by_kind.items() if kind in DATA_KINDS)


def measure(
    fake: FakeProcess, window: worlds.Window, metric: str, concurrency: int
) -> dict[str, Any]:
    settings = {
        "upstream_concurrency": concurrency,
        "request_deadline": 900,
        "log_level": "warning",
    }
    with ProxyProcess(fake.url, settings) as proxy:
        query = window.query(metric)
        time.sleep(0.2)
        idle_rss = proc_status(proxy.pid, "VmRSS")
        reset_peak_rss(proxy.pid)
        fake.reset()
        proxy_cpu, fake_cpu = cpu_seconds(proxy.pid), cpu_seconds(fake.pid)
        loop_cpu = cpu_seconds(proxy.pid, proxy.pid)
        started = time.perf_counter()
        status, body, _ = proxy.get(GROUP + query, worlds.READER_TOKEN)
        wall = time.perf_counter() - started
        if status != 200:
            raise RuntimeError(f"{metric}: {status} {body[:300]!r}")
        result = {
            "wall": wall,
            "calls": fake.calls()["by_kind"],
            "peak_mb": proc_status(proxy.pid, "VmHWM") / 1024,
            "idle_mb": idle_rss / 1024,
            "proxy_cpu": cpu_seconds(proxy.pid) - proxy_cpu,
            "loop_cpu": cpu_seconds(proxy.pid, proxy.pid) - loop_cpu,
            "fake_cpu": cpu_seconds(fake.pid) - fake_cpu,
            # Compared across commits: the same answer, byte for byte.
            "body_sha256": hashlib.sha256(body).hexdigest()[:16],
        }
        fake.reset()
        started = time.perf_counter()
        status, repeat_body, _ = proxy.get(GROUP + query, worlds.READER_TOKEN)
        result["repeat_wall"] = time.perf_counter() - started
        result["repeat_calls"] = fake.calls()["by_kind"]
        assert status == 200 and repeat_body == body
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--latency", type=float, default=0.02)
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--metrics", nargs="+", default=list(METRICS))
    args = parser.parse_args()
    print_machine()
    today = date.today()
    window = worlds.Window.ending_yesterday(today, 90)
    world = worlds.group_world(today, worlds.GroupShape(projects=args.projects))
    print(
        f"world: {len(world.projects)} projects, {len(world.groups)} groups, "
        f"{len(world.deployments)} deployments, {len(world.merge_requests)} MRs, "
        f"{len(world.issues)} incidents; window {window.start} .. {window.end}",
        flush=True,
    )
    results: dict[tuple[int, str], list[dict[str, Any]]] = {}
    fake = FakeProcess("group", today.isoformat(), latency=args.latency, projects=args.projects)
    with fake:
        for repeat in range(args.repeats):
            for concurrency in args.concurrency:
                for metric in args.metrics:
                    r = measure(fake, window, metric, concurrency)
                    results.setdefault((concurrency, metric), []).append(r)
                    print(
                        f"  run {repeat + 1} c={concurrency} {metric}: {r['wall']:.1f}s, "
                        f"{sum(r['calls'].values())} calls, peak {r['peak_mb']:.0f} MB, "
                        f"proxy cpu {r['proxy_cpu']:.1f}s (loop {r['loop_cpu']:.1f}s), "
                        f"fake cpu {r['fake_cpu']:.1f}s; body sha256 {r['body_sha256']}; "
                        f"repeat {r['repeat_wall'] * 1000:.0f} ms, calls {r['repeat_calls']}",
                        flush=True,
                    )
    report(results, world, window, args.latency)


def report(
    results: dict[tuple[int, str], list[dict[str, Any]]],
    world: World,
    window: worlds.Window,
    latency: float,
) -> None:
    print("\ncalls (identical in every run; first run shown) against the minimum:")
    for metric in {metric for _, metric in results}:
        minimum = minimum_calls(world, window, metric)
        made = next(runs[0]["calls"] for (_, m), runs in results.items() if m == metric)
        kinds = sorted(k for k in minimum if not k.startswith("_"))
        rows = [[k, made.get(k, 0), minimum[k]] for k in kinds]
        rows += [[k, n, 0] for k, n in made.items() if k not in minimum]
        total_made, total_min = sum(made.values()), sum(minimum[k] for k in kinds)
        rows.append(["**total**", total_made, total_min])
        print(f"\n{metric}: {total_made / total_min:.3f}× the minimum")
        print(markdown_table(["kind", "made", "minimum"], rows))
        print(
            f"(production-only deployment listing would need "
            f"{minimum['_deployments_production_only']} deployment pages)"
        )
    rows = []
    for (concurrency, metric), runs in sorted(results.items()):
        calls = median([sum(r["calls"].values()) for r in runs])
        bound = calls * latency / concurrency
        wall = median([r["wall"] for r in runs])
        rows.append(
            [
                metric,
                concurrency,
                len(runs),
                f"{calls:.0f}",
                f"{bound:.1f}",
                f"{wall:.1f} ({', '.join(format(r['wall'], '.1f') for r in runs)})",
                f"{wall / bound:.2f}",
                f"{median([r['proxy_cpu'] for r in runs]):.1f}",
                f"{median([r['loop_cpu'] for r in runs]):.1f}",
                f"{median([r['fake_cpu'] for r in runs]):.1f}",
                f"{median([r['peak_mb'] - r['idle_mb'] for r in runs]):.0f}",
                f"{median([r['peak_mb'] for r in runs]):.0f}",
                f"{median([data_calls(r['repeat_calls']) for r in runs]):.0f}",
                f"{median([sum(r['repeat_calls'].values()) for r in runs]):.0f}",
                f"{median([r['repeat_wall'] for r in runs]) * 1000:.0f}",
            ]
        )
    print("\nwall time and memory (medians; individual runs in brackets):")
    print(
        markdown_table(
            [
                "metric",
                "concurrency",
                "runs",
                "calls",
                "bound s",
                "wall s",
                "wall/bound",
                "proxy CPU s",
                "of which event loop",
                "fake CPU s",
                "peak RSS − idle MB",
                "peak RSS MB",
                "repeat: data calls",
                "repeat: all calls",
                "repeat: ms",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
