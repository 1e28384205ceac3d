"""Issue 14: the dashboard's time to four drawn charts and its weight, for a cached 90-day project.

    .venv/bin/python -m bench.bench_dashboard [--repeats 10]

World: the cold-project world of bench_cold_project (one project, ten deployments a day with
1–3 MRs each, incidents) in its own fake GitLab process; the proxy is `python -m proxy serve`.
The window is the 90 days ending yesterday, interval daily. One page load fills the caches;
then each repeat opens the page in a fresh browser context (empty browser cache, token already
in sessionStorage) and measures, in the page's own clock, the time from navigation start to the
`dora-ready` mark (set right after the four charts are drawn), plus every response's bytes on
the wire (headers + encoded body) and the number of requests.

Baselines, measured in the same run: the same data requests the page makes (four metrics, the
summary and the levels), sent by this process in parallel over one aiohttp session; and a fresh
browser context navigating to a one-file page of the proxy (its icon) until the load event:
together, what the page cannot be faster than. Browser: Debian's /usr/bin/chromium (never a
downloaded one).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import date

import aiohttp
from playwright.async_api import async_playwright

from bench import worlds
from bench.common import FakeProcess, ProxyProcess, markdown_table, median, print_machine

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
METRICS = (
    "deployment_frequency",
    "lead_time_for_changes",
    "time_to_restore_service",
    "change_failure_rate",
)


async def page_load(browser, url: str) -> tuple[float, int, int]:
    """(ms from navigation start to the four charts, bytes on the wire, requests)."""
    context = await browser.new_context()
    await context.add_init_script(
        f"sessionStorage.setItem('dora-proxy-token', '{worlds.READER_TOKEN}')"
    )
    page = await context.new_page()
    requests = []
    page.on("requestfinished", lambda request: requests.append(request))
    await page.goto(url)
    await page.wait_for_selector("body[data-ready=true]", timeout=30_000)
    ready = await page.evaluate("performance.getEntriesByName('dora-ready')[0].startTime")
    await page.wait_for_load_state("networkidle")
    total = 0
    for request in requests:
        sizes = await request.sizes()
        total += sizes["responseHeadersSize"] + sizes["responseBodySize"]
    await context.close()
    return ready, total, len(requests)


async def bare_navigation(browser, url: str) -> float:
    """ms from navigation start to the load event of a one-file page (the browser's floor)."""
    context = await browser.new_context()
    page = await context.new_page()
    await page.goto(url)
    ms = await page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd")
    await context.close()
    return ms


async def bare_requests(base: str, query: str) -> float:
    """ms for the page's data requests, all at once, from Python (the baseline)."""
    paths = [f"/api/v4/projects/100/dora/metrics?metric={m}&{query}" for m in METRICS]
    paths += [f"/-/api/v1/projects/100/dora/summary?{query}", "/-/api/v1/dora/levels"]
    headers = {"PRIVATE-TOKEN": worlds.READER_TOKEN}
    async with aiohttp.ClientSession(base) as session:
        started = time.perf_counter()

        async def one(path: str) -> None:
            async with session.get(path, headers=headers) as response:
                assert response.status == 200, (path, response.status)
                await response.read()

        await asyncio.gather(*(one(p) for p in paths))
        return (time.perf_counter() - started) * 1000


async def run(repeats: int) -> None:
    today = date.today()
    window = worlds.Window.ending_yesterday(today)
    query = f"start_date={window.start.isoformat()}&end_date={window.end.isoformat()}"
    print_machine()
    with (
        FakeProcess("project", today.isoformat()) as fake,
        ProxyProcess(fake.url) as proxy,
    ):
        url = f"{proxy.url}/-/dashboard?project=100&{query}"
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=ARGS
            )
            cold, _, _ = await page_load(browser, url)  # fills the proxy's caches
            print(f"first load (cold proxy cache): {cold:.0f} ms", flush=True)
            loads = [await page_load(browser, url) for _ in range(repeats)]
            icon = f"{proxy.url}/-/dashboard/static/favicon.svg"
            floor = [await bare_navigation(browser, icon) for _ in range(repeats)]
            await browser.close()
        bare = [await bare_requests(proxy.url, query) for _ in range(repeats)]
    ready = [ms for ms, _, _ in loads]
    weight = {b for _, b, _ in loads}
    count = {n for _, _, n in loads}
    rows = [
        ("navigation → four charts drawn (median)", f"{median(ready):.0f} ms"),
        ("navigation → four charts drawn (max)", f"{max(ready):.0f} ms"),
        ("baseline: the page's 6 data requests from Python (median)", f"{median(bare):.1f} ms"),
        ("ratio page / data requests", f"{median(ready) / median(bare):.1f}"),
        ("baseline: navigation to a one-file page (median)", f"{median(floor):.0f} ms"),
        ("ratio page / one-file navigation", f"{median(ready) / median(floor):.1f}"),
        ("bytes on the wire (headers + encoded bodies)", f"{max(weight)} B"),
        ("requests", str(max(count))),
    ]
    print(markdown_table(["measure", f"value ({repeats} warm loads)"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    asyncio.run(run(args.repeats))


if __name__ == "__main__":
    main()
