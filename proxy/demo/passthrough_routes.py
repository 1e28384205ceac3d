"""Fake GitLab endpoints that write or stream, for the proxy's pass-through tests.

- `PUT /api/v4/projects/:id/packages/generic/:package/:version/:file` stores a body (generic
  package upload, GitLab's raw-body upload API); `GET` the same path downloads it; `DELETE`
  removes it. The package named `generated` serves `<size>.bin` made on the fly (a repeating
  pattern, `size` bytes, in chunks), so a test can download hundreds of MB nobody holds;
  the package `moved` answers 302 with a `Location` naming the same file under `generated`.
- `POST /api/v4/projects/:id/issues` creates nothing but answers 201 with what it received.

Every request lands in `fake.received` (method, path, body length and SHA-256, content type),
so a test can check what arrived. Authentication as GitLab: a token the world does not know is
401; anonymous writes are 401.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from aiohttp import web

if TYPE_CHECKING:
    from proxy.demo.server import FakeGitLab

PACKAGE_PATH = "/api/v4/projects/{id}/packages/generic/{package}/{version}/{file}"
GENERATED = "generated"
MOVED = "moved"  # GET answers 302 to the same file under `generated`
PATTERN = bytes(range(256)) * 256  # 64 KiB
MAX_STORED = 64 * 1024 * 1024  # bytes one stored upload may keep in memory (tests stay small)


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    length: int
    sha256: str
    content_type: str
    headers: dict[str, str]  # every header received (tokens included: tests only, never logged)


def pattern_bytes(size: int) -> bytes:
    """The first `size` bytes `generated` serves (for small checks)."""
    return (PATTERN * (size // len(PATTERN) + 1))[:size]


def register(fake: FakeGitLab) -> None:
    """Add the routes to `fake.app` (called before its catch-all is registered)."""
    fake.received = []  # type: ignore[attr-defined]
    fake.packages = {}  # type: ignore[attr-defined]
    routes = _Routes(fake)
    fake.app.router.add_route("PUT", PACKAGE_PATH, routes.upload)
    fake.app.router.add_route("GET", PACKAGE_PATH, routes.download)
    fake.app.router.add_route("DELETE", PACKAGE_PATH, routes.delete)
    fake.app.router.add_route("POST", "/api/v4/projects/{id}/issues", routes.create_issue)


class _Routes:
    def __init__(self, fake: FakeGitLab) -> None:
        self.fake = fake

    def _user(self, request: web.Request) -> object:
        from proxy.demo.server import _token_of

        token = _token_of(request) or request.headers.get("JOB-TOKEN")
        if token is None:
            return None
        user = self.fake.world.user_for_token(token)
        if user is None:
            raise web.HTTPUnauthorized(
                text='{"message":"401 Unauthorized"}', content_type="application/json"
            )
        return user

    async def _read(self, request: web.Request, *, keep: bool) -> bytes:
        digest = hashlib.sha256()
        kept = bytearray()
        length = 0
        async for chunk in request.content.iter_chunked(64 * 1024):
            digest.update(chunk)
            length += len(chunk)
            if keep and len(kept) < MAX_STORED:
                kept += chunk
        self.fake.received.append(  # type: ignore[attr-defined]
            Received(
                method=request.method,
                path=request.path,
                length=length,
                sha256=digest.hexdigest(),
                content_type=request.headers.get("Content-Type", ""),
                headers=dict(request.headers),
            )
        )
        return bytes(kept)

    def _key(self, request: web.Request) -> tuple[str, ...]:
        info = request.match_info
        return (info["id"], info["package"], info["version"], info["file"])

    async def upload(self, request: web.Request) -> web.Response:
        if self._user(request) is None:
            return web.json_response({"message": "401 Unauthorized"}, status=401)
        body = await self._read(request, keep=True)
        self.fake.packages[self._key(request)] = body  # type: ignore[attr-defined]
        return web.json_response({"message": "201 Created"}, status=201)

    async def download(self, request: web.Request) -> web.StreamResponse:
        self._user(request)
        info = request.match_info
        if info["package"] == MOVED:  # a redirect to the upstream's own URL (GitLab's form)
            target = request.url.with_path(
                request.path.replace(f"/{MOVED}/", f"/{GENERATED}/"), encoded=False
            )
            raise web.HTTPFound(str(target.with_query(None)))
        if info["package"] == GENERATED and info["file"].endswith(".bin"):
            return await self._generated(request, int(info["file"].removesuffix(".bin")))
        body = self.fake.packages.get(self._key(request))  # type: ignore[attr-defined]
        if body is None:
            return web.json_response({"message": "404 Not Found"}, status=404)
        return web.Response(body=body, content_type="application/octet-stream")

    async def _generated(self, request: web.Request, size: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.content_length = size
        await response.prepare(request)
        left = size
        while left > 0:
            chunk = PATTERN[: min(left, len(PATTERN))]
            await response.write(chunk)
            left -= len(chunk)
        await response.write_eof()
        return response

    async def delete(self, request: web.Request) -> web.Response:
        if self._user(request) is None:
            return web.json_response({"message": "401 Unauthorized"}, status=401)
        await self._read(request, keep=False)
        if self.fake.packages.pop(self._key(request), None) is None:  # type: ignore[attr-defined]
            return web.json_response({"message": "404 Not Found"}, status=404)
        return web.Response(status=204)

    async def create_issue(self, request: web.Request) -> web.Response:
        if self._user(request) is None:
            return web.json_response({"message": "401 Unauthorized"}, status=401)
        body = await self._read(request, keep=True)
        if request.content_type == "application/json":
            fields = json.loads(body or b"{}")
        else:
            fields = dict(parse_qsl(body.decode()))
        response = web.json_response(
            {
                "iid": 1,
                "project_id": int(request.match_info["id"]),
                "title": fields.get("title"),
                "description": fields.get("description"),
            },
            status=201,
        )
        # A session cookie as GitLab's Rails sets one: it belongs to this caller only.
        response.set_cookie("_gitlab_session", f"session-of-{request.headers.get('PRIVATE-TOKEN')}")
        return response
