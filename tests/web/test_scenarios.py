"""End-to-end acceptance: every scenario of spec §10 against the proxy and a real fake GitLab.

One test per scenario (one stack, one world), looping over its cases and collecting every
mismatch, so a failure lists all the case ids that differ rather than stopping at the first.
Each answer must match the spec's status and body byte for byte, with `Content-Type:
application/json`.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, time

import pytest
from yarl import URL

from tests.scenarios import SCENARIOS, Case, Scenario, s2, scenarios

SCENARIO_NAMES = [scenario.name for scenario in SCENARIOS]


def _current(name: str) -> Scenario:
    """The scenario as of now: S2 is rebuilt for today's date at test time, not import time."""
    return next(scenario for scenario in scenarios() if scenario.name == name)


async def _send(stack, case: Case) -> tuple[int, str, str]:
    """GET the case's raw target (no re-encoding of `%2F` or `[]`); status, content type, body."""
    root = str(stack.client.make_url("/")).rstrip("/")
    url = URL(f"{root}{case.target}", encoded=True)
    async with stack.client.session.get(url, headers=case.headers) as response:
        return response.status, response.content_type, await response.text()


def _describe(case: Case, status: int, content_type: str, body: str) -> str | None:
    problems = []
    if status != case.status:
        problems.append(f"status {status}, expected {case.status}")
    if content_type != "application/json":
        problems.append(f"content type {content_type!r}")
    if body != case.body:
        problems.append(f"body\n      got      {body}\n      expected {case.body}")
    if not problems:
        return None
    caller = ", ".join(f"{k}: {v}" for k, v in case.headers.items()) or "anonymous"
    return f"{case.id}  GET {case.target}  ({caller})\n    " + "\n    ".join(problems)


@pytest.mark.parametrize("name", SCENARIO_NAMES)
async def test_scenario(name: str, start_stack) -> None:
    scenario = _current(name)
    stack = await start_stack(scenario.world(), time_zone=scenario.time_zone)
    mismatches = []
    for case in scenario.cases:
        status, content_type, body = await _send(stack, case)
        problem = _describe(case, status, content_type, body)
        if problem:
            mismatches.append(problem)
    assert not mismatches, (
        f"{len(mismatches)} of {len(scenario.cases)} cases of {scenario.name} differ:\n"
        + "\n".join(mismatches)
    )


# ---- the data itself (no stack needed) --------------------------------------------------------

SPEC_ROWS = {  # rows per scenario table in §10
    "S1": 13, "S2": 12, "S3": 8, "S4": 5, "S5": 30, "S6": 30, "S7": 6, "S8": 12, "S9": 3,
    "S10": 9, "S11": 3, "S12": 2, "S13": 6, "S14": 7, "S15": 7, "S16": 13, "S17": 7, "S18": 4,
    "S19": 4, "S20": 6, "S21": 5,
}  # fmt: skip


def test_every_spec_row_is_encoded_once_per_variant() -> None:
    rows: dict[str, set[int]] = {}
    ids: list[str] = []
    for scenario in SCENARIOS:
        for case in scenario.cases:
            ids.append(case.id)
            match = re.fullmatch(r"(S\d+)\.(\d+)(\[[^\]]+\])?", case.id)
            assert match, case.id
            rows.setdefault(match[1], set()).add(int(match[2]))
            json.loads(case.body)  # every expected body is JSON
            assert case.path.startswith("/api/v4/") and case.path.endswith("/dora/metrics")
    assert len(ids) == len(set(ids)), "duplicate case ids"
    assert {name: sorted(numbers) for name, numbers in rows.items()} == {
        name: list(range(1, count + 1)) for name, count in SPEC_ROWS.items()
    }


def test_s2_matches_the_worked_example() -> None:
    """T = 2026-05-31, the spec's worked example: clamped months, N = 93, the boundary dates."""
    cases = {case.id: case for case in s2(date(2026, 5, 31)).cases}
    body_l = (
        '[{"date":"2026-02-28","value":1},{"date":"2026-03-31","value":2},'
        '{"date":"2026-04-30","value":1},{"date":"2026-05-30","value":1},'
        '{"date":"2026-05-31","value":2}]'
    )
    assert cases["S2.1"].body == body_l
    assert cases["S2.3"].body == '[{"date":null,"value":0.07526881720430108}]'
    assert cases["S2.5"].query.endswith("end_date=2026-02-28")
    assert cases["S2.6"].query.endswith("end_date=2026-01-31")
    assert cases["S2.7"].query.endswith("end_date=2026-08-27")
    assert cases["S2.8"].query.endswith("end_date=2026-08-28")
    assert cases["S2.9"].query.endswith("start_date=2025-12-02")
    assert cases["S2.9"].body == (
        '[{"date":"2026-01-31","value":1},{"date":"2026-02-27","value":1},' + body_l[1:]
    )
    assert cases["S2.10"].query.endswith("start_date=2025-12-01")
    assert cases["S2.12"].query.endswith("start_date=2026-06-01")


@pytest.mark.parametrize(
    "today",
    [date(2026, 5, 31), date(2026, 3, 31), date(2024, 2, 29), date(2025, 1, 1)],
    ids=str,
)
async def test_s2_with_a_pinned_clock(today: date, start_stack) -> None:
    """S2 on clamping dates (the worked example, month ends, leap day, new year), T pinned."""
    scenario = s2(today)
    noon = datetime.combine(today, time(12), tzinfo=UTC)
    stack = await start_stack(scenario.world(), now=noon)
    mismatches = []
    for case in scenario.cases:
        problem = _describe(case, *await _send(stack, case))
        if problem:
            mismatches.append(problem)
    assert not mismatches, f"T = {today}:\n" + "\n".join(mismatches)
