"""The fake GitLab in its own process, so its CPU time does not share the proxy's event loop.

    python -m bench.fake_process --scenario group --today 2025-06-01 --latency 0.02

Prints one JSON line once serving: {"url": ..., "control": ..., "pid": ...}. The control port
answers GET /calls (counts by kind, and the fake's CPU seconds), POST /reset and
POST /latency?seconds=S. Stops on SIGTERM or when stdin closes.

The deployments list of `FakeGitLab` scans every deployment of the world on each call; with
60 000 deployments that costs the fake milliseconds of CPU per call, which would show up as
proxy wall time. `IndexedFakeGitLab` answers the same bodies from a per-project view instead,
renders each deployment once, at start-up, and encodes pages with orjson: GitLab renders pages
on many workers in parallel (its time is the `--latency`), while this fake renders on one event
loop. Rendering ~5 ms of JSON per deployments page there made 8 concurrent calls queue behind
each other for ~20 ms more than `--latency` (issue 16), time a real GitLab would not add.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import replace
from datetime import date
from typing import Any

import orjson
from aiohttp import web

from bench import worlds
from proxy.demo import DATA_KINDS, FakeGitLab
from proxy.demo.pagination import pagination_headers
from proxy.demo.world import World


class IndexedFakeGitLab(FakeGitLab):
    """FakeGitLab whose deployment list sees only the asked project's deployments.

    The handler is synchronous, so swapping `world` for a view during one call is safe; the
    view shares every other table with the real world.
    """

    def __init__(self, world: World) -> None:
        super().__init__(world)
        by_project: dict[int, dict[int, Any]] = {}
        for dep_id, dep in world.deployments.items():
            by_project.setdefault(dep.project_id, {})[dep_id] = dep
        self._views = {pid: replace(world, deployments=deps) for pid, deps in by_project.items()}
        # The world never changes in this process (the control port has no mutations).
        render = super()._deployment_json
        self._rendered = {dep_id: render(dep) for dep_id, dep in world.deployments.items()}

    def _paginate(self, ctx: Any, params: Any, items: Any, render: Any = lambda item: item) -> Any:
        """FakeGitLab's page, its JSON encoded with orjson (a tenth of json.dumps' time)."""
        start = (params.page - 1) * params.per_page
        chunk = [render(item) for item in items[start : start + params.per_page]]
        headers = pagination_headers(
            f"{ctx.base_url}{ctx.request.raw_path.split('?', 1)[0]}",
            list(ctx.request.query.items()),
            params.page,
            params.per_page,
            len(items),
        )
        return web.Response(
            body=orjson.dumps(chunk),
            headers=headers,
            content_type="application/json",
            charset="utf-8",
        )

    def _deployment_json(self, dep: Any) -> dict[str, Any]:
        rendered = self._rendered.get(dep.id)
        return rendered if rendered is not None else super()._deployment_json(dep)

    def _deployments(self, ctx: Any, args: tuple[str, ...]) -> Any:
        view = self._views.get(int(args[0])) if args[0].isdigit() else None
        if view is None:
            return super()._deployments(ctx, args)
        full, self.world = self.world, view
        try:
            return super()._deployments(ctx, args)
        finally:
            self.world = full


def control_app(fake: FakeGitLab) -> web.Application:
    async def calls(_: web.Request) -> web.Response:
        kinds = Counter(call.kind for call in fake.calls)
        cpu = os.times()
        return web.json_response(
            {
                "total": len(fake.calls),
                "data": sum(n for kind, n in kinds.items() if kind in DATA_KINDS),
                "by_kind": dict(sorted(kinds.items())),
                "cpu_seconds": cpu.user + cpu.system,
            }
        )

    async def reset(_: web.Request) -> web.Response:
        fake.reset_calls()
        return web.json_response({"ok": True})

    async def latency(request: web.Request) -> web.Response:
        fake.faults.latency = float(request.query["seconds"])
        return web.json_response({"latency": fake.faults.latency})

    app = web.Application()
    app.router.add_get("/calls", calls)
    app.router.add_post("/reset", reset)
    app.router.add_post("/latency", latency)
    return app


async def serve(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    world = worlds.build(args.scenario, date.fromisoformat(args.today), args.projects)
    fake = IndexedFakeGitLab(world) if args.indexed else FakeGitLab(world)
    fake.faults.latency = args.latency
    url = await fake.start("127.0.0.1", 0)
    runner = web.AppRunner(control_app(fake), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    control = f"http://127.0.0.1:{runner.addresses[0][1]}"
    print(
        json.dumps(
            {
                "url": url,
                "control": control,
                "pid": os.getpid(),
                "build_seconds": round(time.perf_counter() - started, 2),
            }
        ),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.read(1) else None)
    await stop.wait()
    await runner.cleanup()
    await fake.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=("project", "group"), required=True)
    parser.add_argument("--today", required=True)
    parser.add_argument("--projects", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--no-index", dest="indexed", action="store_false")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
