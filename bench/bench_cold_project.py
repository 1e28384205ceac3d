"""Issue 2: upstream calls of cold requests for one busy project.

    .venv/bin/python -m bench.bench_cold_project [--repeats 3]

World: one project, one production environment, ten deployments a day (1–3 MRs each) and a few
incidents over the 90-day window plus 10 days before it. The fake GitLab runs in its own process
without latency; the proxy is `python -m proxy serve` with a fresh cache directory per repeat.

Sequence per repeat (one proxy, its cache filling up): the four metrics over the same window,
deployment_frequency first; then a second proxy on an empty cache asks lead_time_for_changes
first ("fully cold"). Reports the fake's calls by kind for each request and the count expected
from the world: 1 user + 1 project + 1 members + 1 environments + deployment pages + incident
pages (+ one merge-request call per production deployment in the window for lead time).
"""

from __future__ import annotations

import argparse
import math
import time
from datetime import date, timedelta

from bench import worlds
from bench.common import FakeProcess, ProxyProcess, markdown_table, median, print_machine

PROJECT = f"/api/v4/projects/{100}/dora/metrics?"
METRICS = (
    "deployment_frequency",
    "lead_time_for_changes",
    "time_to_restore_service",
    "change_failure_rate",
)
PER_PAGE = 100


def expected(today: date, window: worlds.Window) -> dict[str, int]:
    """What the world says each kind of call must cost for this window."""
    world = worlds.cold_project_world(today)
    start = worlds._at(window.start, 0)
    end = worlds._at(window.end + timedelta(days=1), 0)
    in_window = [d for d in world.deployments.values() if start <= d.internal_finished_at < end]
    # the proxy fetches a run of days with one day of margin on each side (time-zone safety)
    with_margin = [
        d
        for d in world.deployments.values()
        if start - timedelta(days=1) <= d.internal_finished_at < end + timedelta(days=1)
    ]
    incidents = [i for i in world.issues.values() if i.updated_at and i.updated_at >= start]
    return {
        "deployments_in_window": len(in_window),
        "deployment_pages_min": max(1, math.ceil(len(in_window) / PER_PAGE)),
        "deployments_fetched": len(with_margin),
        "deployment_pages_fetched": max(1, math.ceil(len(with_margin) / PER_PAGE)),
        "incidents_updated_since_start": len(incidents),
        "incident_pages": max(1, math.ceil(len(incidents) / PER_PAGE)),
    }


def request(proxy: ProxyProcess, fake: FakeProcess, query: str) -> tuple[dict[str, int], float]:
    fake.reset()
    started = time.perf_counter()
    status, body, _ = proxy.get(PROJECT + query, worlds.READER_TOKEN)
    elapsed = time.perf_counter() - started
    if status != 200:
        raise RuntimeError(f"{status}: {body[:200]!r}")
    return fake.calls()["by_kind"], elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.0, help="fake GitLab s per call")
    args = parser.parse_args()
    print_machine()
    today = date.today()
    window = worlds.Window.ending_yesterday(today, 90)
    want = expected(today, window)
    print(f"window {window.start} .. {window.end} (90 days); world: {want}")
    floor = 4 + want["deployment_pages_min"] + want["incident_pages"]
    print(
        f"minimum cold deployment_frequency: 1 user + 1 project + 1 members + 1 environments"
        f" + {want['deployment_pages_min']} deployment pages + {want['incident_pages']} incident"
        f" pages = {floor}; lead time adds {want['deployments_in_window']} merge-request calls"
    )
    settings = {"request_deadline": 600, "log_level": "warning"}
    steps = [(f"{m} (after the previous)", window.query(m)) for m in METRICS]
    steps.append(("lead_time_for_changes, fresh cache", window.query("lead_time_for_changes")))
    calls: dict[str, dict[str, int]] = {}
    times: dict[str, list[float]] = {name: [] for name, _ in steps}
    with FakeProcess("project", today.isoformat(), latency=args.latency) as fake:
        for _ in range(args.repeats):
            with ProxyProcess(fake.url, settings) as proxy:
                for name, query in steps[:-1]:
                    calls[name], elapsed = request(proxy, fake, query)
                    times[name].append(elapsed)
            with ProxyProcess(fake.url, settings) as proxy:
                name, query = steps[-1]
                calls[name], elapsed = request(proxy, fake, query)
                times[name].append(elapsed)
    kinds = sorted({kind for by_kind in calls.values() for kind in by_kind})
    rows = [
        [
            name,
            *(calls[name].get(kind, 0) for kind in kinds),
            sum(calls[name].values()),
            f"{median(times[name]) * 1000:.0f}",
        ]
        for name, _ in steps
    ]
    print(markdown_table(["request", *kinds, "total", "wall ms (median)"], rows))


if __name__ == "__main__":
    main()
