"""A hostile upstream: listings that cycle or never end are stopped, with a 502 naming the call.

The fake GitLab's `Faults.pagination` rewrites list answers the way a cache in front of GitLab
that ignores the query string would (a next link to the same page, or page 1 again under new
page numbers), or never ends (fresh ids on every page). Each must cost a bounded number of
upstream calls, answer 502 JSON, leave nothing cached, and stop calling once answered.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.web.test_upstream_faults import BAD_GATEWAY, FREQUENCY, HEADER, fetch, start


@pytest.mark.parametrize(
    ("mode", "overrides", "reason", "most_calls"),
    [
        ("same_link", {}, "pagination repeats (next page seen before)", 2),
        ("same_ids", {}, "pagination repeats (a page with no new id)", 2),
        ("endless", {"upstream_max_pages": 5}, "more than 5 pages", 5),
        ("endless", {"upstream_max_items": 250}, "more than 250 items", 3),
    ],
)
async def test_a_listing_that_never_ends_answers_502_and_stops(
    start_stack, mode: str, overrides: dict[str, int], reason: str, most_calls: int
) -> None:
    stack = await start(start_stack, **overrides)
    stack.fake.faults.pagination = mode
    stack.fake.faults.only_kinds = {"deployments"}
    status, body, headers = await fetch(stack, FREQUENCY)
    assert (status, body) == (502, BAD_GATEWAY)
    assert headers[HEADER] == f"GET /projects/11/deployments: {reason}"
    calls = len(stack.fake.calls_of("deployments"))
    assert 1 <= calls <= most_calls
    await asyncio.sleep(0.3)
    assert len(stack.fake.calls_of("deployments")) == calls, "no call after the answer"

    stack.fake.faults.pagination = None  # nothing of the broken listing was cached
    status, body, headers = await fetch(stack, FREQUENCY)
    assert status == 200
    assert headers["X-Dora-Proxy-Cache"] == "miss"


async def test_the_default_bounds_are_sized_for_big_projects(start_stack) -> None:
    """The defaults let a listing of tens of thousands of items through (README says so)."""
    stack = await start(start_stack)
    service = stack.app_service()
    assert service.upstream.max_pages * 100 >= 100_000
    assert service.upstream.max_items >= 100_000
