"""Deployments pages decoded into typed rows answer exactly as GitLab's dicts did (issue 16).

A deployments page is decoded into the six fields the proxy reads (msgspec, strict types); a
page those types do not describe falls back to the generic decoding, so odd upstream data gives
the answer it gave before: the same count, the same skipped row, the same 502 naming the call,
the same retries of a page that is not JSON as orjson reads it. Each case rewrites the fake's
deployments answer (`faults.body`); the normal answer's counterparts are in
test_upstream_faults.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from tests.web.test_upstream_faults import (
    BAD_GATEWAY,
    FAST,
    FREQUENCY,
    FREQUENCY_BODY,
    HEADER,
    fetch,
    start,
)

CALL = "GET /projects/11/deployments"
# The first of the three deployments (2021-01-01) is not counted.
WITHOUT_THE_FIRST = '[{"date":"2021-01-02","value":1},{"date":"2021-01-03","value":1}]'


def each(change: Callable[[dict], None], first_only: bool = False) -> Callable[[bytes], bytes]:
    """A body rewrite applying `change` to every deployment of the page (or the first)."""

    def rewrite(body: bytes) -> bytes:
        items = json.loads(body)
        for item in items[:1] if first_only else items:
            change(item)
        return json.dumps(items).encode()

    return rewrite


def set_field(*path: str, value: object) -> Callable[[dict], None]:
    def change(item: dict) -> None:
        target = item
        for name in path[:-1]:
            target = target[name]
        target[path[-1]] = value

    return change


def string_ids(item: dict) -> None:
    item["id"] = str(item["id"])
    item["environment"]["id"] = str(item["environment"]["id"])


def replace(old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    def rewrite(body: bytes) -> bytes:
        assert old in body
        return body.replace(old, new, 1)

    return rewrite


# Odd data the generic decoding reads: the typed rows refuse it, the fallback answers as before.
READ_AS_BEFORE = [
    pytest.param(each(string_ids), FREQUENCY_BODY, id="ids as strings"),
    pytest.param(
        each(lambda item: item.update(id=item["id"] + 2**63)),
        FREQUENCY_BODY,
        id="ids beyond int64, within uint64",
    ),
    pytest.param(
        each(set_field("id", value=True), first_only=True), FREQUENCY_BODY, id="boolean id"
    ),
    pytest.param(each(set_field("deployable", value=[])), FREQUENCY_BODY, id="deployable []"),
    pytest.param(
        each(set_field("deployable", "id", value="77")), FREQUENCY_BODY, id="job id a string"
    ),
    pytest.param(
        each(set_field("deployable", "finished_at", value=0)), FREQUENCY_BODY, id="finished_at 0"
    ),
    pytest.param(
        each(set_field("environment", value={}), first_only=True),
        WITHOUT_THE_FIRST,
        id="empty environment object",
    ),
    pytest.param(
        each(set_field("environment", value=""), first_only=True),
        WITHOUT_THE_FIRST,
        id="environment an empty string",
    ),
    pytest.param(
        each(set_field("status", value=["success"]), first_only=True),
        WITHOUT_THE_FIRST,
        id="status a list",
    ),
]


@pytest.mark.parametrize(("rewrite", "answer"), READ_AS_BEFORE)
async def test_odd_rows_the_generic_decoding_reads_answer_as_before(
    start_stack, rewrite: Callable[[bytes], bytes], answer: str
) -> None:
    stack = await start(start_stack)
    stack.fake.faults.only_kinds = {"deployments"}
    stack.fake.faults.body = rewrite
    assert (await fetch(stack, FREQUENCY))[:2] == (200, answer)
    assert len(stack.fake.calls_of("deployments")) == 1


# Odd data the generic decoding refuses: the same 502, naming the call and the reason.
REFUSED_AS_BEFORE = [
    pytest.param(each(set_field("id", value=1.0)), "malformed item", 1, id="float id"),
    pytest.param(
        each(set_field("id", value=2**64)),
        "malformed item",
        1,
        id="id beyond 64 bits (a float to orjson)",
    ),
    pytest.param(
        each(set_field("environment", value=[1])), "unexpected answer (TypeError)", 1, id="env [1]"
    ),
    pytest.param(
        each(set_field("environment", "id", value="x")),
        "unexpected answer (ValueError)",
        1,
        id="environment id not a number",
    ),
    pytest.param(replace(b"[", b"{"), "malformed JSON", 3, id="not JSON"),
    pytest.param(
        replace(b'"ref": "main"', b'"ref": "\xff"'),
        "malformed JSON",
        3,
        id="invalid UTF-8 in a field not read",
    ),
    pytest.param(
        replace(b'"ref": "main"', b'"ref": 1e400'),
        "malformed JSON",
        3,
        id="a number beyond a double in a field not read",
        marks=pytest.mark.xfail(
            strict=True,
            reason="kept difference: the typed rows skip that field without parsing it, "
            "orjson refuses the page (docs/decisions.md)",
        ),
    ),
    pytest.param(
        replace(b'"ref": "main"', b'"ref": ' + b"[" * 1100 + b"]" * 1100),
        "malformed JSON",
        3,
        id="nesting beyond orjson's limit in a field not read",
    ),
]


@pytest.mark.parametrize(("rewrite", "reason", "calls"), REFUSED_AS_BEFORE)
async def test_odd_pages_the_generic_decoding_refuses_answer_502_as_before(
    start_stack, rewrite: Callable[[bytes], bytes], reason: str, calls: int
) -> None:
    stack = await start(start_stack)
    stack.fake.faults.only_kinds = {"deployments"}
    stack.fake.faults.body = rewrite
    status, body, headers = await fetch(stack, FREQUENCY)
    assert (status, body) == (502, BAD_GATEWAY)
    assert headers[HEADER] == f"{CALL}: {reason}"
    assert calls in (1, 1 + FAST["upstream_max_retries"])
    assert len(stack.fake.calls_of("deployments")) == calls
