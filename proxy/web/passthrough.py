"""Pass-through: every other GitLab API call goes to the upstream untouched, so the proxy can be
a tool's whole GitLab URL (`projects.get`, listings, uploads), not just its DORA endpoint.

One shared `aiohttp.ClientSession` (opened in the app's cleanup context, a bounded connector, no
cookie jar: a jar would hand one caller's cookies to the next) carries each request: method, raw
path and query, the caller's own headers (credentials included) minus hop-by-hop ones, and the
body streamed from the caller's socket. The answer is streamed back chunk by chunk, so an
artifact of hundreds of MB never sits in memory; nothing is cached and no header value is
logged. Compressed bodies stay compressed (no decoding on the way through).

`Link` and `Location` headers naming the upstream's base URL are rewritten to the proxy's public
base URL (`public_url`, else the scheme and host the caller used), so a client paging through
a listing stays on the proxy.

Fairness: one client address has at most `client_forward_limit` forwarded requests in flight
and `client_forward_queue` waiting (`ClientGate`); past that, 429 with `Retry-After` at once,
counted in `dora_proxy_forwarded_refused`. Without it one client could hold all
`MAX_CONNECTIONS` upstream connections and every other caller's forwarded request would wait.

Deadlines: the upstream must answer the headers within `request_deadline` and each read within
`upstream_timeout` (504 before the headers; the connection is cut if a body stalls after them);
an unreachable upstream is 502. Both as the DORA routes answer them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from proxy.client_gate import ClientGate
from proxy.errors import BadGateway, GatewayTimeout
from proxy.settings import Settings
from proxy.telemetry.prometheus import TELEMETRY
from proxy.web.client_address import client_of
from proxy.web.routing import json_error

log = structlog.get_logger("proxy.passthrough")

READ_METHODS = frozenset({"GET", "HEAD"})
# RFC 9110 §7.6.1 connection-specific headers, plus Host (set from the upstream URL) and
# Content-Length (recomputed by aiohttp from the body it relays).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        # answered by aiohttp's server already (100 Continue); the upstream gets a plain request
        "expect",
    }
)
# Added to every forwarded request; a request arriving with it came back from our own upstream
# (`upstream_url` pointing at an nginx that routes to this proxy): refused with 508, not looped.
VIA = "1.1 gitlab-dora-proxy"
LOOP_DETECTED = {"message": "508 Loop Detected"}
CHUNK = 64 * 1024
MAX_CONNECTIONS = 100  # upstream connections in flight at once; more callers wait their turn
MODES = ("all", "read-only", "off")


class PassThrough:
    """The upstream as seen by forwarded requests: base URL, mode, one client session."""

    def __init__(self, settings: Settings) -> None:
        self.upstream = (settings.upstream_url or "").rstrip("/")
        self.mode = settings.pass_through
        self.public_url = (settings.public_url or "").rstrip("/") or None
        self.deadline = settings.request_deadline
        self.read_timeout = settings.upstream_timeout
        self.gate = ClientGate(
            settings.client_forward_limit, settings.client_forward_queue, "forwarded requests"
        )
        self._session: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        return self.mode != "off" and bool(self.upstream)

    def allows(self, method: str) -> bool:
        return self.mode == "all" or (self.mode == "read-only" and method in READ_METHODS)

    async def start(self) -> None:
        """Open the one client session every forwarded request shares (on the app's loop)."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=self.read_timeout, sock_read=self.read_timeout
            ),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
        )

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("the pass-through session opens with the app (cleanup context)")
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def public_base(self, request: web.Request) -> str:
        return self.public_url or f"{request.scheme}://{request.host}"

    def upstream_url(self, raw_path: str) -> URL:
        return URL(self.upstream + raw_path, encoded=True)

    async def open(
        self,
        method: str,
        raw_path: str,
        headers: Iterable[tuple[str, str]],
        data: object = None,
        *,
        streamed_body: bool = False,
    ) -> aiohttp.ClientResponse:
        """Send one request upstream and wait for its headers (502/504 as `ProxyError`s).
        The caller must release the response.

        The headers must come within `request_deadline`, except after a streamed upload:
        sending hundreds of MB may take longer than any request deadline, so there each chunk
        of the body must arrive within `upstream_timeout` (`_paced`) and the answer must start
        within `upstream_timeout` of the body's end (aiohttp's read timeout)."""
        what = f"{method} {raw_path.split('?', 1)[0]}"
        try:
            async with asyncio.timeout(None if streamed_body else self.deadline):
                return await self.session.request(
                    method,
                    self.upstream_url(raw_path),
                    headers=CIMultiDict(headers),
                    data=data,
                    allow_redirects=False,
                    compress=None,
                )
        except TimeoutError:  # aiohttp's read/connect timeouts are TimeoutErrors too
            raise GatewayTimeout(detail=f"{what}: upstream did not answer in time") from None
        except aiohttp.ClientError as error:
            raise BadGateway(
                detail=f"{what}: upstream unreachable ({type(error).__name__})"
            ) from None


def forwarded_headers(request: web.Request) -> list[tuple[str, str]]:
    """The caller's headers as the upstream should see them: credentials (PRIVATE-TOKEN,
    Authorization, JOB-TOKEN, Cookie) kept, connection-specific ones dropped, the caller's
    address appended to `X-Forwarded-For` (GitLab's per-IP limits and logs, when it trusts
    the proxy) and the proxy's `Via` mark added."""
    headers = request.headers
    named = {
        token.strip().lower() for token in headers.get("Connection", "").split(",") if token.strip()
    }
    forwarded = [
        (name, value)
        for name, value in headers.items()
        if name.lower() not in HOP_BY_HOP
        and name.lower() not in named
        and name.lower() != "x-forwarded-for"
    ]
    chain = [value for value in headers.getall("X-Forwarded-For", ()) if value.strip()]
    if request.remote:
        chain.append(request.remote)
    if chain:
        forwarded.append(("X-Forwarded-For", ", ".join(chain)))
    forwarded.append(("Via", VIA))
    return forwarded


def looped(request: web.Request) -> bool:
    """True when this request is one the proxy itself forwarded (see `VIA`)."""
    return any(VIA in value for value in request.headers.getall("Via", ()))


def rewrite_links(value: str, upstream: str, public: str) -> str:
    """`Link`: each `<upstream...>` target moved to the public base URL."""
    return value.replace(f"<{upstream}/", f"<{public}/").replace(f"<{upstream}>", f"<{public}>")


def rewrite_location(value: str, upstream: str, public: str) -> str:
    if value == upstream or value.startswith(upstream + "/") or value.startswith(upstream + "?"):
        return public + value[len(upstream) :]
    return value


def answer_headers(
    upstream_headers: CIMultiDictProxy[str], upstream: str, public: str
) -> CIMultiDict[str]:
    named = {
        token.strip().lower()
        for token in upstream_headers.get("Connection", "").split(",")
        if token.strip()
    }
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in upstream_headers.items():
        lowered = name.lower()
        if lowered in HOP_BY_HOP or lowered in named or lowered == "content-length":
            continue
        if lowered == "link":
            value = rewrite_links(value, upstream, public)
        elif lowered == "location":
            value = rewrite_location(value, upstream, public)
        out.add(name, value)
    return out


async def relay(
    request: web.Request, upstream_response: aiohttp.ClientResponse, public: str, upstream: str
) -> web.StreamResponse:
    """Stream `upstream_response` to the caller (status, headers, body in chunks). A body of
    known length up to one chunk is read and sent with the headers in one write (most API
    answers: half the system calls of a streamed answer)."""
    headers = answer_headers(upstream_response.headers, upstream, public)
    length = upstream_response.content_length
    if length is not None and length <= CHUNK and request.method != "HEAD":
        try:
            body = await upstream_response.read()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise BadGateway(
                detail=f"{request.method} {request.path}: upstream body failed "
                f"({type(error).__name__})"
            ) from None
        return web.Response(
            status=upstream_response.status,
            reason=upstream_response.reason,
            headers=headers,
            body=body,
        )
    response = web.StreamResponse(
        status=upstream_response.status, reason=upstream_response.reason, headers=headers
    )
    if length is not None:
        response.content_length = length
    await response.prepare(request)
    try:
        async for chunk in _chunks(upstream_response):
            await response.write(chunk)
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as error:
        # The status is sent: the only honest signal left is a cut connection.
        log.warning(
            "passthrough_body_failed",
            method=request.method,
            path=request.path,
            error=type(error).__name__,
        )
        if request.transport is not None:
            request.transport.abort()
        return response
    await response.write_eof()
    return response


async def _paced(content: aiohttp.StreamReader, idle: float) -> AsyncIterator[bytes]:
    """The caller's body, chunk by chunk as it arrives; a caller silent for `idle` seconds
    mid-body ends the request (504) instead of holding an upstream connection forever."""
    while True:
        async with asyncio.timeout(idle):
            chunk = await content.readany()
        if not chunk:
            return
        yield chunk


async def _chunks(upstream_response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    async for chunk in upstream_response.content.iter_chunked(CHUNK):
        yield chunk


async def forward(request: web.Request, passthrough: PassThrough) -> web.StreamResponse:
    """Forward `request` as it came (method, raw path and query, headers, streamed body)."""
    if not passthrough.allows(request.method):
        return json_error(405, {"error": "405 Not Allowed"}, {"Allow": "GET, HEAD"})
    if looped(request):
        return json_error(508, LOOP_DETECTED)
    data = _paced(request.content, passthrough.read_timeout) if request.body_exists else None
    async with passthrough.gate.enter(client_of(request)):  # one upstream connection, held
        upstream_response = await passthrough.open(
            request.method,
            request.raw_path,
            forwarded_headers(request),
            data,
            streamed_body=data is not None,
        )
        try:
            return await relay(
                request, upstream_response, passthrough.public_base(request), passthrough.upstream
            )
        finally:
            upstream_response.release()


PASS_THROUGH = web.AppKey("pass_through", PassThrough)


async def handle(request: web.Request) -> web.StreamResponse:
    """The catch-all's hand-off for /api/v4/ paths no route has."""
    return await forward(request, request.app[PASS_THROUGH])


def setup(app: web.Application, settings: Settings) -> PassThrough | None:
    """Put the pass-through on `app`; its client session opens and closes with the app (also
    when `pass_through` is off: GraphQL DORA answers look up project names with it). Returns
    None when requests are not to be forwarded."""
    passthrough = PassThrough(settings)
    app[PASS_THROUGH] = passthrough
    if TELEMETRY in app:
        app[TELEMETRY].count_refusals(
            "forwarded_refused",
            "Requests to forward upstream (pass-through, forwarded GraphQL) answered 429 "
            "because their client address was past client_forward_limit + client_forward_queue.",
            lambda: passthrough.gate.refused,
        )

    async def session(app: web.Application) -> AsyncIterator[None]:
        await passthrough.start()
        try:
            yield
        finally:
            await passthrough.close()

    app.cleanup_ctx.append(session)
    return passthrough if passthrough.enabled else None
