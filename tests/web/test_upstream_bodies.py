"""An upstream body cut short or stalled half-way: retried, then a JSON 502/504, never a 500.

The proxy reads each upstream body in one read after the headers (proxy/upstream/client.py,
`_read_body`), outside requests' own body handling, so failures in the body surface from
urllib3 and are mapped here. The fake GitLab always writes whole bodies, so a bare TCP server
on 127.0.0.1 plays the upstream: it answers every request with complete headers and a body
shorter than its Content-Length, then closes (or, stalled, keeps the socket open).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from yarl import URL

from proxy.demo.world import World

TARGET = (
    "/api/v4/projects/11/dora/metrics?metric=deployment_frequency"
    "&start_date=2021-01-01&end_date=2021-01-31"
)
SETTINGS = {"upstream_max_retries": 2, "upstream_timeout": 0.4, "request_deadline": 10.0}


@dataclass
class CutBodies:
    """Answers `200` with `Content-Length: 100` and 10 bytes of body; `stall`: then waits."""

    stall: bool = False
    requests: list[str] = field(default_factory=list)
    url: str = ""
    world: World = field(default_factory=World)
    _server: asyncio.Server | None = None

    async def start(self) -> CutBodies:
        self._server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            self.requests.append(request.split(b" ")[1].decode())
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n" + b'{"id": 12,'
            )
            await writer.drain()
            if self.stall:
                await asyncio.sleep(3)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


async def fetch(stack) -> tuple[int, str, str]:
    url = URL(f"{stack.base_url}{TARGET}", encoded=True)
    async with stack.client.session.get(url, headers={"PRIVATE-TOKEN": "tok-maria"}) as r:
        assert r.content_type == "application/json", await r.text()
        return r.status, await r.text(), r.headers.get("X-Dora-Proxy-Upstream-Error", "")


async def test_a_body_cut_short_is_retried_then_a_bad_gateway(start_stack) -> None:
    upstream = await CutBodies().start()
    try:
        stack = await start_stack(World(), fake=upstream, **SETTINGS)
        status, body, failed = await fetch(stack)
    finally:
        await upstream.close()
    assert (status, body) == (502, '{"message":"502 Bad Gateway"}')
    assert failed == "GET /user: connection failed"
    assert upstream.requests == ["/api/v4/user"] * (1 + SETTINGS["upstream_max_retries"])


async def test_a_body_stalled_half_way_times_out(start_stack) -> None:
    upstream = await CutBodies(stall=True).start()
    try:
        stack = await start_stack(World(), fake=upstream, **SETTINGS)
        status, body, failed = await fetch(stack)
    finally:
        await upstream.close()
    assert (status, body) == (504, '{"message":"504 Gateway Timeout"}')
    assert failed == "GET /user: timed out"
    assert upstream.requests == ["/api/v4/user"] * (1 + SETTINGS["upstream_max_retries"])
