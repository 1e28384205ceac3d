"""@gitbeaker/rest (Node.js), used as a new user would with the proxy as its GitLab host:
current user, a project by path, a group's projects over three pages (every `Link` naming the
proxy), then the DORA REST call. The script is tests/system/js/session.mjs; its packages are
installed by `.ci/run` (`npm ci` in tests/system/js). Skipped with the reason when Node.js or
the packages are missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.web.test_passthrough import many_projects_world

JS = Path(__file__).parent / "js"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="Node.js is not installed"),
    pytest.mark.skipif(
        not (JS / "node_modules" / "@gitbeaker" / "rest").is_dir(),
        reason="run `npm ci` in tests/system/js (.ci/run does)",
    ),
]


async def test_gitbeaker_session_through_the_proxy(start_stack) -> None:
    stack = await start_stack(many_projects_world())
    env = {**os.environ, "DORA_PROXY_URL": stack.base_url, "GITLAB_TOKEN": "tok-rita"}
    process = await asyncio.create_subprocess_exec(
        NODE,  # type: ignore[arg-type]
        "session.mjs",
        cwd=JS,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()[-2000:]
    result = json.loads(out.decode().strip().splitlines()[-1])

    assert result["username"] == "rita"
    assert result["project"] == "s1/app"
    assert len(result["listed"]) == 13 and len(set(result["listed"])) == 13
    assert len(result["links"]) == 3
    for link in result["links"]:
        assert f"<{stack.base_url}/api/v4/groups/10/projects?" in link
        assert stack.fake.url not in link
    status, body = await stack.get(
        "/api/v4/projects/11/dora/metrics?metric=deployment_frequency"
        "&start_date=2020-10-03&end_date=2021-01-03",
        {"PRIVATE-TOKEN": "tok-rita"},
    )
    assert status == 200
    assert result["metrics"] == json.loads(body)
    # gitbeaker paged itself: every page was asked of the fake through the proxy
    assert len([c for c in stack.fake.calls_of("group_projects")]) >= 3 + 3
