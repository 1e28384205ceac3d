"""The fast paths of the facts codec give exactly what the plain ones give (issue 16).

`parse_time` reads GitLab's `Z` timestamps (and the cache's `+00:00`) with one `fromisoformat`;
`dump_entry` writes cache entries with orjson, records included as they are. Both run tens of
thousands of times in a cold group request; neither may change a single answer.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy import facts as f
from proxy.facts import Deployment, Environment, Incident, MergeRequest

INSTANTS = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


def same(a: datetime, b: datetime) -> bool:
    """Equal as values *and* as text: `==` alone would accept another time zone."""
    return a == b and a.tzinfo is b.tzinfo and a.isoformat() == b.isoformat()


def gitlab_texts(instant: datetime, offset: timezone) -> list[str]:
    """The ways a timestamp may reach `parse_time`: GitLab's, the cache's, and odd ones."""
    millis = instant.strftime("%Y-%m-%dT%H:%M:%S.") + f"{instant.microsecond // 1000:03d}"
    local = instant.astimezone(offset)
    return [
        millis + "Z",  # GitLab
        instant.strftime("%Y-%m-%dT%H:%M:%SZ"),
        instant.isoformat(),  # the facts cache (+00:00, microseconds when set)
        local.isoformat(),  # another offset
        millis + "z",
        f" {millis}Z ",
        instant.replace(tzinfo=None).isoformat(),  # no offset: taken as UTC
        instant.date().isoformat(),
    ]


@given(INSTANTS, OFFSETS)
def test_parse_time_fast_path_gives_the_exact_answer(instant: datetime, offset: timezone) -> None:
    for text in gitlab_texts(instant, offset):
        assert same(f.parse_time(text), f._parse_time_exact(text)), text
        assert f.parse_time(text).tzinfo is UTC


@pytest.mark.parametrize(
    "text", ["", "Z", "2026-13-01T00:00:00Z", "yesterday", "2026-03-01T25:00Z"]
)
def test_parse_time_refuses_what_the_exact_path_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        f._parse_time_exact(text)
    with pytest.raises(ValueError):
        f.parse_time(text)


@pytest.mark.parametrize("value", [None, 17, 1.5, ["2026-03-01T00:00:00Z"], {"a": 1}])
def test_parse_time_of_a_non_string_is_malformed_as_before(value: object) -> None:
    """A wrong JSON type must still raise what endpoints.MALFORMED turns into a 502."""
    from proxy.upstream.endpoints import MALFORMED

    with pytest.raises(MALFORMED):
        f._parse_time_exact(value)  # type: ignore[arg-type]
    with pytest.raises(MALFORMED):
        f.parse_time(value)  # type: ignore[arg-type]


@given(
    st.lists(
        st.tuples(
            st.integers(1, 2**62),
            st.integers(1, 2**31),
            INSTANTS,
            st.none() | st.integers(1, 2**40),
        ),
        max_size=5,
    )
)
def test_deployments_written_as_records_read_back_as_before(rows: list) -> None:
    deployments = tuple(Deployment(*row) for row in rows)
    entry = f.dump_entry(deployments)
    assert f.deployments_from_json(f.loads(entry)) == deployments  # type: ignore[arg-type]
    # The same JSON as the explicit encoder, but for unknown optional fields written as null.
    explicit = f.deployments_to_json(deployments)
    for written, expected in zip(json.loads(entry), explicit, strict=True):
        assert {k: v for k, v in written.items() if v is not None} == expected


def test_every_record_kind_round_trips_through_an_entry() -> None:
    at = datetime(2026, 3, 1, 10, 0, 0, 500000, tzinfo=UTC)
    environments = (
        Environment(1, "production", "production"),
        Environment(2, "s", "staging", "stopped"),
    )
    mrs = (MergeRequest(3, at, 9, "https://gitlab.test/mr/9"), MergeRequest(4, None))
    incidents = (Incident(5, at, at + timedelta(hours=1), 2, None), Incident(6, at))
    assert f.environments_from_json(f.loads(f.dump_entry(environments))) == environments  # type: ignore[arg-type]
    assert f.merge_requests_from_json(f.loads(f.dump_entry(mrs))) == mrs  # type: ignore[arg-type]
    assert f.incidents_from_json(f.loads(f.dump_entry(incidents))) == incidents  # type: ignore[arg-type]


def test_a_month_entry_mixes_entries_read_back_and_fresh_records() -> None:
    """`_write_days` merges a month read from the cache (plain JSON) with fresh records."""
    at = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    old = f.loads(
        b'{"2026-03-01":[1.5,[{"id":1,"environment_id":2,"finished_at":"2026-03-01T07:00:00+00:00"}]]}'
    )
    month = {**old, "2026-03-02": [2.5, (Deployment(7, 2, at, 70),)]}  # type: ignore[dict-item]
    decoded = f.loads(f.dump_entry(month))
    assert f.deployments_from_json(decoded["2026-03-01"][1]) == (  # type: ignore[index]
        Deployment(1, 2, datetime(2026, 3, 1, 7, tzinfo=UTC)),
    )
    assert f.deployments_from_json(decoded["2026-03-02"][1]) == (Deployment(7, 2, at, 70),)  # type: ignore[index]


def test_entries_written_by_the_json_codec_still_read() -> None:
    """Caches filled by earlier versions (json.dumps, optional fields left out) stay readable."""
    at = datetime(2026, 3, 1, 10, tzinfo=UTC)
    incidents = (Incident(5, at, None, None, None),)
    old_bytes = f.dumps(f.incidents_to_json(incidents))
    assert f.incidents_from_json(f.loads(old_bytes)) == incidents  # type: ignore[arg-type]
