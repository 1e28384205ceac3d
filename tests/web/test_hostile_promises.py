"""The smaller promises: lifetimes that are not overstated, webhooks that do not get disabled,
JSON for every refusal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from multidict import MultiDict

from proxy.facts import ContainerInfo
from proxy.query import parse_query, validate_query
from proxy.web.handlers import SERVICE
from tests.web.test_upstream_faults import world as small_world
from tests.web.test_webhooks import (
    NOW as HOOK_NOW,
)
from tests.web.test_webhooks import (
    SECRET,
    acme_world,
    deliver,
    deployment_event,
)

MARIA = {"PRIVATE-TOKEN": "tok-maria"}
# 2021-01-03 is the world's last deployment day; the clock moves around its midnight.
TARGET = "/api/v4/projects/11/dora/metrics?metric=deployment_frequency"


def max_age(headers) -> int:
    value = headers["Cache-Control"]
    assert value.startswith("private, max-age="), value
    return int(value.rsplit("=", 1)[1])


async def test_an_answer_from_an_unsettled_day_lives_at_most_the_settle_margin(
    start_stack,
) -> None:
    """Asked five minutes after midnight about yesterday: yesterday is not settled for another
    55 minutes, so the answer is not kept for `answer_ttl_past` (a day)."""
    now = datetime(2021, 1, 4, 0, 5, tzinfo=UTC)
    stack = await start_stack(small_world(), now=now, recent_answer_ttl=0)
    target = f"{TARGET}&start_date=2021-01-01&end_date=2021-01-03"
    response = await stack.client.get(target, headers=MARIA)
    assert response.status == 200 and response.headers["X-Dora-Proxy-Cache"] == "miss"
    assert max_age(response.headers) == stack.settings.facts_settle_margin == 3600

    settled = await start_stack(
        small_world(), now=datetime(2021, 1, 4, 1, 5, tzinfo=UTC), recent_answer_ttl=0
    )
    response = await settled.client.get(target, headers=MARIA)
    assert max_age(response.headers) == settled.settings.answer_ttl_past


async def test_max_age_of_a_hit_is_the_entry_remaining_life(start_stack) -> None:
    """Stored at 23:58 for `answer_ttl_current` (300 s, its range includes that day); asked
    again two minutes later, after midnight, when the same range counts as past: the entry
    has 180 s left, and says so."""
    clock = [datetime(2021, 1, 3, 23, 58, tzinfo=UTC)]
    stack = await start_stack(small_world(), now=lambda: clock[0], recent_answer_ttl=0)
    target = f"{TARGET}&start_date=2021-01-01&end_date=2021-01-03"
    first = await stack.client.get(target, headers=MARIA)
    assert first.headers["X-Dora-Proxy-Cache"] == "miss"
    assert max_age(first.headers) == 300
    clock[0] += timedelta(minutes=2)
    again = await stack.client.get(target, headers=MARIA)
    assert again.headers["X-Dora-Proxy-Cache"] == "hit"
    assert max_age(again.headers) == 180


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("Push Hook", {"object_kind": "push", "project": {"id": 20}}),
        ("Merge Request Hook", {"object_kind": "merge_request", "project": {"id": 20}}),
        ("Pipeline Hook", {"object_kind": "pipeline", "project": {"id": 20}}),
        (None, {"object_kind": "note"}),
        ("Push Hook", {"project": {"id": 20}}),
    ],
    ids=["push", "merge request", "pipeline", "note without header", "header only"],
)
async def test_valid_deliveries_of_unused_events_are_ignored_with_200(
    start_stack, event, payload
) -> None:
    stack = await start_stack(acme_world(), now=HOOK_NOW, webhook_secret=SECRET)
    assert await deliver(stack, payload, event=event) == (200, {"status": "ignored"})


async def test_an_oversize_webhook_body_is_refused_with_json(start_stack) -> None:
    stack = await start_stack(acme_world(), now=HOOK_NOW, webhook_secret=SECRET)
    padding = "x" * (2 * 1024 * 1024)  # over aiohttp's 1 MiB client_max_size
    status, body = await deliver(stack, deployment_event(padding=padding))
    assert status == 413
    assert body == {"error": "413 Request Entity Too Large"}


async def test_an_extension_answer_from_an_unsettled_day_lives_at_most_the_settle_margin(
    start_stack,
) -> None:
    """The dashboard's facts and summary answers follow the DORA answer's lifetime rule: asked
    five minutes after midnight about yesterday, they are kept no longer than the settle margin
    (a late deployment of yesterday must still show up), not `answer_ttl_past`."""
    now = datetime(2021, 1, 4, 0, 5, tzinfo=UTC)
    stack = await start_stack(small_world(), now=now, recent_answer_ttl=0)
    query = "start_date=2021-01-01&end_date=2021-01-03"
    response = await stack.client.get(f"/-/api/v1/projects/11/dora/summary?{query}", headers=MARIA)
    assert response.status == 200
    service = stack.client.app[SERVICE]
    checked = validate_query(
        parse_query(
            MultiDict(
                metric="deployment_frequency", start_date="2021-01-01", end_date="2021-01-03"
            ),
            service.today(),
        )
    )
    _, ttl = await service.extension_key(
        "summary", "project", ContainerInfo(11, "acme/app"), checked
    )
    assert ttl == stack.settings.facts_settle_margin == 3600

    settled = await start_stack(
        small_world(), now=datetime(2021, 1, 4, 1, 5, tzinfo=UTC), recent_answer_ttl=0
    )
    service = settled.client.app[SERVICE]
    _, ttl = await service.extension_key(
        "summary", "project", ContainerInfo(11, "acme/app"), checked
    )
    assert ttl == settled.settings.answer_ttl_past
