"""Client connections stay bounded: open-files limit raised, a connection cap, idle ones closed.

With the common container soft limit of 1,024 open files, about a thousand idle connections
(nothing sent) used to exhaust the descriptors: accept() failed in a loop, the cache and the
upstream could not open a file or a socket, and the proxy stopped answering everyone. Here:

- at start the soft RLIMIT_NOFILE is raised to the hard limit (no privilege needed);
- at most `max_connections` client connections are open at once, and never more than the
  open-files limit minus a reserve for the cache, the upstream pool and the logs: a
  connection past the cap is closed as soon as it is accepted (counted and logged, rate-limited);
- a connection that sends no request within `idle_connection_timeout` seconds is closed
  (aiohttp's keep-alive timer, armed at accept: see proxy/app.py).

`serve` runs the app like `web.run_app` (SIGTERM/SIGINT drain in-flight requests for
`shutdown_timeout` seconds) but keeps hold of the server object to install the cap.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.web_runner import GracefulExit

log = structlog.get_logger("proxy.connections")

RESERVED_FILES = 128  # descriptors kept for the cache, the upstream pool, logs and the loop
MIN_CONNECTIONS = 16
_LOG_EVERY = 10.0  # seconds between two "connections refused" lines


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (capped at 2**20); (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, 2**20) if hard != resource.RLIM_INFINITY else 2**20
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def connection_cap(max_connections: int, soft_limit: int) -> int:
    """`max_connections`, kept below the open-files limit minus the reserve."""
    if soft_limit == resource.RLIM_INFINITY:
        return max_connections
    return max(MIN_CONNECTIONS, min(max_connections, soft_limit - RESERVED_FILES))


class ConnectionCap:
    """Closes connections accepted past `cap` (installed on aiohttp's `web.Server`)."""

    def __init__(self, cap: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.cap = cap
        self.refused = 0
        self._clock = clock
        self._logged_at = -float("inf")
        self._refused_since_log = 0

    def install(self, server: web.Server) -> None:
        accepted = server.connection_made
        connections: dict[Any, Any] = server._connections  # aiohttp's own map of open ones

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            accepted(handler, transport)
            if len(connections) > self.cap:
                self._refuse()
                transport.abort()

        server.connection_made = connection_made  # type: ignore[method-assign]

    def _refuse(self) -> None:
        self.refused += 1
        self._refused_since_log += 1
        now = self._clock()
        if now - self._logged_at >= _LOG_EVERY:
            log.warning(
                "connections_refused",
                max_connections=self.cap,
                refused=self._refused_since_log,
            )
            self._logged_at = now
            self._refused_since_log = 0


def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    max_connections: int,
    shutdown_timeout: float,
    announce: Callable[[str], None],
) -> None:
    """Serve until SIGTERM/SIGINT; in-flight requests drain for `shutdown_timeout` seconds.

    Raises OSError when the address cannot be bound."""
    soft, hard = raise_open_files_limit()
    cap = connection_cap(max_connections, soft)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    main = loop.create_task(_serve(app, host, port, cap, shutdown_timeout, announce, soft, hard))
    try:
        loop.run_until_complete(main)
    except (GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()
        with contextlib.suppress(asyncio.CancelledError, GracefulExit, KeyboardInterrupt):
            loop.run_until_complete(main)
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        asyncio.set_event_loop(None)


async def _serve(
    app: web.Application,
    host: str,
    port: int,
    cap: int,
    shutdown_timeout: float,
    announce: Callable[[str], None],
    soft: int,
    hard: int,
) -> None:
    runner = web.AppRunner(
        app, access_log=None, shutdown_timeout=shutdown_timeout, handle_signals=True
    )
    await runner.setup()
    try:
        ConnectionCap(cap).install(runner.server)  # type: ignore[arg-type]
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("listening", host=host, port=port, max_connections=cap, open_files=[soft, hard])
        announce(f"======== Running on http://{host}:{port} ========\n(Press CTRL+C to quit)")
        while True:
            await asyncio.sleep(3600)
    finally:
        await runner.cleanup()
