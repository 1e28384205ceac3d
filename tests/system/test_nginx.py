"""deploy/nginx-in-front-of-gitlab.conf, as shipped: `nginx -t` accepts it, and a real nginx on
loopback running it sends the DORA REST paths and /api/graphql to the proxy and everything
else straight to GitLab (the fake). Only the two upstream addresses and the listen port are
replaced. Skipped with the reason when nginx is not installed (.ci/run installs it).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from tests.scenarios.s01_s05 import S1

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx-in-front-of-gitlab.conf"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)
RITA = {"PRIVATE-TOKEN": "tok-rita"}

pytestmark = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed (apt-get install nginx-light)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def configured(tmp_path: Path, *, listen: int, proxy: str, gitlab: str) -> Path:
    text = CONF.read_text()
    for old, new in (
        ("server 127.0.0.1:8080;", f"server {proxy};"),
        ("server 127.0.0.1:8081;", f"server {gitlab};"),
        ("listen 80;", f"listen 127.0.0.1:{listen};"),
        ("pid /tmp/nginx-dora-gitlab.pid;", f"pid {tmp_path}/nginx.pid;"),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    # temp files of a non-root run, and no access log noise in the test output
    text = text.replace(
        "http {",
        f"http {{\n    client_body_temp_path {tmp_path}/body;\n"
        f"    proxy_temp_path {tmp_path}/proxy;\n",
        1,
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    return conf


def test_the_shipped_file_passes_nginx_t(tmp_path: Path) -> None:
    conf = configured(tmp_path, listen=free_port(), proxy="127.0.0.1:1", gitlab="127.0.0.1:2")
    result = subprocess.run(
        [NGINX, "-t", "-q", "-p", str(tmp_path), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr


async def test_nginx_routes_dora_to_the_proxy_and_the_rest_to_gitlab(
    start_stack, tmp_path: Path
) -> None:
    stack = await start_stack(S1.world())
    fake_hostport = stack.fake.url.removeprefix("http://")
    proxy_hostport = stack.base_url.removeprefix("http://")
    listen = free_port()
    conf = configured(tmp_path, listen=listen, proxy=proxy_hostport, gitlab=fake_hostport)
    process = await asyncio.create_subprocess_exec(
        NGINX,
        "-p",
        str(tmp_path),
        "-c",
        str(conf),
        "-g",
        "daemon off;",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{listen}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(100):
                try:
                    async with session.get(f"{base}/api/v4/version"):
                        break
                except aiohttp.ClientError:
                    await asyncio.sleep(0.05)
            # DORA REST, by numeric id and by encoded path: answered by the proxy
            for ref in ("11", "s1%2Fapp"):
                url = URL(
                    f"{base}/api/v4/projects/{ref}/dora/metrics?metric=deployment_frequency"
                    "&start_date=2020-10-03&end_date=2021-01-03",
                    encoded=True,
                )
                async with session.get(url, headers=RITA) as response:
                    assert response.status == 200, await response.text()
                    assert "X-Dora-Proxy-Cache" in response.headers
            # GraphQL DORA: answered by the proxy
            query = (
                '{ project(fullPath: "s1/app") { dora { metrics(startDate: "2020-10-03", '
                'endDate: "2021-01-03", interval: ALL) { deploymentFrequency } } } }'
            )
            async with session.post(
                f"{base}/api/graphql", json={"query": query}, headers=RITA
            ) as response:
                body = await response.json()
                assert (
                    body["data"]["project"]["dora"]["metrics"][0]["deploymentFrequency"] is not None
                )
            assert stack.fake.graphql_calls == []
            # anything else: straight to GitLab, the proxy never sees it
            stack.fake.reset_calls()
            async with session.get(f"{base}/api/v4/projects/11", headers=RITA) as response:
                assert response.status == 200
                assert "Via" not in response.headers or "dora" not in response.headers["Via"]
            [call] = stack.fake.calls
            assert call.path == "/api/v4/projects/11"
            metrics = await (await stack.client.get("/metrics")).text()
            assert 'route="passthrough"' not in metrics
            # a GraphQL document without DORA goes through the proxy to GitLab
            async with session.post(
                f"{base}/api/graphql", json={"query": "{ currentUser { username } }"}, headers=RITA
            ) as response:
                assert json.loads(await response.text()) == {
                    "data": {"currentUser": {"username": "rita"}}
                }
    finally:
        process.terminate()
        _, err = await asyncio.wait_for(process.communicate(), 10)
    assert b"[emerg]" not in err, err.decode()
