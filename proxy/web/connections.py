"""Client connections stay bounded: open-files limit raised, a connection cap, idle ones closed.

With the common container soft limit of 1,024 open files, about a thousand idle connections
(nothing sent) used to exhaust the descriptors: accept() failed in a loop, the cache and the
upstream could not open a file or a socket, and the proxy stopped answering everyone. Here:

- at start the soft RLIMIT_NOFILE is raised to the hard limit (no privilege needed);
- at most `max_connections` client connections are open at once, and never more than the
  open-files limit minus a reserve for the cache, the upstream pool and the logs, and at most
  `max_client_connections` from one peer address: a connection past a cap is closed as soon as
  it is accepted (counted and logged, rate-limited);
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
BACKLOG = 1024
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
    """Closes connections accepted past `cap`, or past `per_client` from one peer address
    (0: no per-client cap), as soon as they are accepted (installed on aiohttp's `web.Server`).
    """

    def __init__(
        self, cap: int, per_client: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cap = cap
        self.per_client = per_client
        self.refused = 0
        self._clock = clock
        self._logged_at = -float("inf")
        self._refused_since_log = 0
        self._by_peer: dict[str, int] = {}
        self._peer_of: dict[int, str] = {}

    def install(self, server: web.Server) -> None:
        accepted = server.connection_made
        lost = server.connection_lost
        connections: dict[Any, Any] = server._connections  # aiohttp's own map of open ones

        def connection_made(handler: Any, transport: asyncio.Transport) -> None:
            accepted(handler, transport)
            peer = transport.get_extra_info("peername")
            address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
            count = self._by_peer.get(address, 0) + 1
            self._by_peer[address] = count
            self._peer_of[id(handler)] = address
            if len(connections) > self.cap or (self.per_client and count > self.per_client):
                self._refuse()
                transport.abort()

        def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
            address = self._peer_of.pop(id(handler), None)
            if address is not None:
                left = self._by_peer.get(address, 1) - 1
                if left > 0:
                    self._by_peer[address] = left
                else:
                    self._by_peer.pop(address, None)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    def _refuse(self) -> None:
        self.refused += 1
        self._refused_since_log += 1
        now = self._clock()
        if now - self._logged_at >= _LOG_EVERY:
            log.warning(
                "connections_refused",
                max_connections=self.cap,
                max_client_connections=self.per_client,
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
    max_client_connections: int = 0,
) -> None:
    """Serve until SIGTERM/SIGINT; in-flight requests drain for `shutdown_timeout` seconds.

    Raises OSError when the address cannot be bound."""
    soft, hard = raise_open_files_limit()
    cap = connection_cap(max_connections, soft)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    limits = ConnectionCap(cap, max_client_connections)
    main = loop.create_task(_serve(app, host, port, limits, shutdown_timeout, announce, soft, hard))
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
    limits: ConnectionCap,
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
        limits.install(runner.server)  # type: ignore[arg-type]
        # A deeper accept queue than aiohttp's 128: a burst of connections waits for the loop
        # instead of being dropped by the kernel.
        site = web.TCPSite(runner, host, port, backlog=BACKLOG)
        await site.start()
        log.info(
            "connection_limits",
            host=host,
            port=port,
            max_connections=limits.cap,
            max_client_connections=limits.per_client,
            open_files=[soft, hard],
        )
        announce(f"======== Running on http://{host}:{port} ========\n(Press CTRL+C to quit)")
        while True:
            await asyncio.sleep(3600)
    finally:
        await runner.cleanup()
