"""python-gitlab as a client of the proxy: the drop-in promise, checked with a real client.

python-gitlab is synchronous (requests), so each call runs in a worker thread while the event
loop keeps serving the proxy and the fake GitLab on real ports.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import gitlab
import pytest
from gitlab.utils import EncodedId

from tests.scenarios import Case
from tests.scenarios.s01_s05 import S1, S5

Q = {"start_date": "2020-10-03", "end_date": "2021-01-03"}


def _expected(scenario_cases: tuple[Case, ...], case_id: str) -> Any:
    case = next(case for case in scenario_cases if case.id == case_id)
    return json.loads(case.body)


async def _with_client(stack, token: str, call: Callable[[gitlab.Gitlab], Any]) -> Any:
    """Run `call` with a python-gitlab client of the proxy, in a thread."""
    base = str(stack.client.make_url("/")).rstrip("/")

    def run() -> Any:
        with gitlab.Gitlab(url=base, private_token=token, timeout=30) as gl:
            return call(gl)

    return await asyncio.to_thread(run)


async def test_project_metrics_read_through_python_gitlab(start_stack) -> None:
    stack = await start_stack(S1.world())

    def read(gl: gitlab.Gitlab) -> dict[str, Any]:
        path = f"/projects/{EncodedId('s1/app')}/dora/metrics"
        return {
            "S1.1": gl.http_get(
                "/projects/11/dora/metrics", {"metric": "deployment_frequency", **Q}
            ),
            "S1.4": gl.http_get(
                "/projects/11/dora/metrics", {"metric": "change_failure_rate", **Q}
            ),
            # GitLab's array form, sent by requests as environment_tiers%5B%5D=…
            "S1.7": gl.http_get(
                "/groups/10/dora/metrics",
                {
                    "metric": "change_failure_rate",
                    "environment_tiers[]": ["production", "staging"],
                    **Q,
                },
            ),
            "S1.1 by path": gl.http_get(path, {"metric": "deployment_frequency", **Q}),
        }

    got = await _with_client(stack, "tok-rita", read)
    assert got == {
        "S1.1": _expected(S1.cases, "S1.1[projects/11]"),
        "S1.4": _expected(S1.cases, "S1.4[projects/11]"),
        "S1.7": _expected(S1.cases, "S1.7[groups/10]"),
        "S1.1 by path": _expected(S1.cases, "S1.1[projects/s1%2Fapp]"),
    }
    assert got["S1.4"] == [
        {"date": "2021-01-01", "value": 7.0},
        {"date": "2021-01-02", "value": 4.0},
    ]
    assert all(isinstance(item["value"], int) for item in got["S1.1"])


async def test_validation_error_raises_gitlab_http_error(start_stack) -> None:
    stack = await start_stack(S5.world())

    def read(gl: gitlab.Gitlab) -> Any:
        return gl.http_get(
            "/projects/51/dora/metrics",
            {
                "metric": "deployment_frequency",
                "interval": "unknown",
                "start_date": "2022-01-20",
                "end_date": "2022-03-03",
            },
        )

    with pytest.raises(gitlab.GitlabHttpError) as raised:
        await _with_client(stack, "tok-rita", read)
    assert raised.value.response_code == 400
    assert raised.value.error_message == "The interval must be one of all,monthly,daily."
    assert json.loads(raised.value.response_body) == _expected(S5.cases, "S5.3[projects/51]")


async def test_missing_permission_raises_authentication_error(start_stack) -> None:
    """python-gitlab turns every 401 into GitlabAuthenticationError (not a GitlabHttpError)."""
    stack = await start_stack(S1.world())

    def read(gl: gitlab.Gitlab) -> Any:
        return gl.http_get("/projects/11/dora/metrics", {"metric": "deployment_frequency", **Q})

    with pytest.raises(gitlab.GitlabAuthenticationError) as raised:
        await _with_client(stack, "tok-gus", read)
    assert raised.value.response_code == 401
    assert raised.value.error_message == "You do not have permission to access dora metrics."
