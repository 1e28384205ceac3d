"""`dora-proxy demo`: the proxy in front of a seeded fake GitLab, both on loopback sockets, with
ready-to-paste curl lines. Imported only by that command, never when `serve` runs."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from proxy.app import create_app
from proxy.demo.seed import DEMO_PROJECTS, DEMO_TOKENS, build_demo_world
from proxy.demo.server import FakeGitLab
from proxy.settings import Settings


async def run_demo(settings: Settings) -> None:
    # SIGTERM and SIGINT end the demo normally, so the caller's cleanup (the temporary cache
    # directory, which holds the server secret) runs; the default SIGTERM kills at once.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    today = datetime.now(UTC).astimezone(settings.tz).date()
    fake = FakeGitLab(build_demo_world(today))
    upstream_url = await fake.start("127.0.0.1", 0)
    settings = replace(settings, upstream_url=upstream_url)
    runner = web.AppRunner(create_app(settings), access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    base = f"http://{settings.host}:{settings.port}"
    print(demo_banner(base, upstream_url, DEMO_PROJECTS, DEMO_TOKENS), flush=True)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        with contextlib.suppress(Exception):
            await runner.cleanup()
            await fake.close()


def demo_banner(
    base: str, upstream_url: str, projects: dict[int, str], tokens: dict[str, Any]
) -> str:
    reporter = tokens.get("demo-reporter", next(iter(tokens.values())))
    first_id, first_path = next(iter(projects.items()))
    group = first_path.split("/")[0]
    encoded = first_path.replace("/", "%2F")
    lines = [
        f"gitlab-dora-proxy demo: proxy on {base}, fake GitLab on {upstream_url}",
        "Demo tokens: " + ", ".join(tokens) + "  (reporter can read metrics, guest gets 401)",
        "Projects: " + ", ".join(f"{pid} {path}" for pid, path in projects.items()),
        "",
        "Try:",
        f"  curl -s -H 'PRIVATE-TOKEN: {reporter}' "
        f"'{base}/api/v4/projects/{first_id}/dora/metrics?metric=deployment_frequency'",
        f"  curl -s -H 'PRIVATE-TOKEN: {reporter}' "
        f"'{base}/api/v4/projects/{encoded}/dora/metrics?metric=lead_time_for_changes"
        "&interval=monthly'",
        f"  curl -s -H 'PRIVATE-TOKEN: {reporter}' "
        f"'{base}/api/v4/groups/{group}/dora/metrics?metric=change_failure_rate&interval=all'",
        f"  curl -s -H 'PRIVATE-TOKEN: {tokens.get('demo-guest', reporter)}' "
        f"'{base}/api/v4/projects/{first_id}/dora/metrics?metric=deployment_frequency'",
        "",
        f"Dashboard (token {reporter}): {base}/-/dashboard?group={group}",
        "",
        "Ctrl-C stops both. The demo is not for production: its GitLab is made up.",
    ]
    return "\n".join(lines)
