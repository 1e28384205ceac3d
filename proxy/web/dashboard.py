"""GET /-/dashboard: the page, and its few static files, served by the proxy itself.

The page is static: one HTML file, one stylesheet, one script that draws its charts as SVG
(docs/decisions.md says why no chart library). Everything it shows it reads from the proxy's
own API with the caller's token, which lives in the browser's sessionStorage only. The files are
read once at start-up (package data, so they ship in the wheel) and served from memory with a
strict Content-Security-Policy: nothing but this origin, no inline script or style.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from proxy.errors import NotFound
from proxy.web.routing import add_route

PATH = "/-/dashboard"
STATIC = "/-/dashboard/static"
_ROOT = Path(__file__).parent / "static"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True, slots=True)
class _File:
    body: bytes
    gzipped: bytes
    content_type: str
    etag: str


def _load() -> dict[str, _File]:
    files = {}
    for path in sorted(_ROOT.iterdir()):
        if path.suffix in _TYPES and path.is_file():
            body = path.read_bytes()
            files[path.name] = _File(
                body,
                gzip.compress(body, 9, mtime=0),
                _TYPES[path.suffix],
                '"' + hashlib.sha256(body).hexdigest()[:24] + '"',
            )
    return files


FILES = web.AppKey("dashboard_files", dict)


def _serve(request: web.Request, name: str, cache_control: str) -> web.Response:
    file = request.app[FILES].get(name)
    if file is None:
        raise NotFound({"message": "404 Not Found"})
    headers = {
        **_SECURITY_HEADERS,
        "Content-Type": file.content_type,
        "ETag": file.etag,
        "Cache-Control": cache_control,
        "Vary": "Accept-Encoding",
    }
    if file.etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=file.gzipped, headers=headers)
    return web.Response(body=file.body, headers=headers)


async def page(request: web.Request) -> web.Response:
    """The dashboard page; its query parameters are read by the script, not here."""
    return _serve(request, "index.html", "no-cache")


async def static(request: web.Request) -> web.Response:
    """One of the page's files (a fixed set, read at start-up: no path from the URL is opened).

    Revalidated on each load (ETag): a new release never meets an old script."""
    return _serve(request, request.match_info["name"], "no-cache")


def setup(app: web.Application) -> None:
    app[FILES] = _load()
    add_route(app, "GET", PATH, page, "dashboard")
    add_route(app, "GET", STATIC + "/{name}", static, "dashboard_static")
