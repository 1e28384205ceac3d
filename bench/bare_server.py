"""The warm-path baseline: a bare aiohttp handler answering fixed bytes on the proxy's routes.

    python -m bench.bare_server --port 8081 --body-file answer.json

Same routes, same body, same caching headers as a proxy cache hit; no middleware, no logging,
no permission check, no cache lookup. What the proxy's warm path costs on top of this is what
the warm-path benchmark measures.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from aiohttp import web


def make_app(body: bytes) -> web.Application:
    headers = {
        "ETag": '"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        "Cache-Control": "private, max-age=86400",
        "Vary": "PRIVATE-TOKEN, Authorization",
    }

    async def answer(_: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/api/v4/projects/{id}/dora/metrics", answer)
    app.router.add_get("/api/v4/groups/{id}/dora/metrics", answer)
    app.router.add_get("/-/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body-file", type=Path, required=True)
    args = parser.parse_args()
    web.run_app(
        make_app(args.body_file.read_bytes()),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
    )


if __name__ == "__main__":
    main()
