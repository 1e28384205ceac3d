"""Per-client-address turns: one client cannot take a shared resource from everyone else.

Used for uncached permission checks (proxy/permissions.py: each costs upstream calls from the
small permission pool) and for requests forwarded upstream (proxy/web/passthrough.py and
proxy/web/graphql.py: each holds one of the pass-through's 100 upstream connections). Past
`limit` in flight and `waiting` more queued, a client's next request answers 429 at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from proxy.errors import TooManyRequests

WAITING_PER_CLIENT = 256  # requests of one client address waiting for a turn (default)


class ClientGate:
    """At most `limit` requests in flight per client address (0: no limit), and at most
    `waiting` more waiting for their turn; past that, 429 (`TooManyRequests`) at once.

    A flood from one address waits its turn behind its own requests (and is refused past the
    waiting room) instead of filling what every other caller shares. `what` names the work in
    the refusal's detail (logs, `X-Dora-Proxy-Upstream-Error`); `refused` counts refusals.
    """

    def __init__(
        self, limit: int, waiting: int = WAITING_PER_CLIENT, what: str = "permission checks"
    ) -> None:
        self.limit = limit
        self.waiting = waiting
        self.what = what
        self._clients: dict[str, _ClientTurns] = {}
        self.refused = 0

    @contextlib.asynccontextmanager
    async def enter(self, client: str | None) -> AsyncIterator[None]:
        if not self.limit or client is None:
            yield
            return
        turns = self._clients.get(client)
        if turns is None:
            turns = self._clients[client] = _ClientTurns(asyncio.Semaphore(self.limit))
        if turns.semaphore.locked() and turns.waiting >= self.waiting:
            self.refused += 1
            raise TooManyRequests(
                1, detail=f"over {self.limit + self.waiting} {self.what} from one client"
            )
        turns.users += 1
        turns.waiting += 1
        try:
            try:
                await turns.semaphore.acquire()
            finally:
                turns.waiting -= 1
            try:
                yield
            finally:
                turns.semaphore.release()
        finally:
            turns.users -= 1
            if turns.users == 0:
                self._clients.pop(client, None)


@dataclass(slots=True)
class _ClientTurns:
    semaphore: asyncio.Semaphore
    users: int = 0  # requests in flight or waiting
    waiting: int = 0
