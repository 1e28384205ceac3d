"""Query parsing edges that mutation testing found unpinned (docs/mutation.md, spec §1).

Dates: spec §1 accepts `YYYY-MM-DD` and `YYYYMMDD`, optionally followed by `T` and a
time/offset that is ignored. ISO 8601 time spellings (a comma as the decimal sign, an hour-only
offset) are therefore accepted; anything that is not a time after a `T` is rejected. Where the
spec is silent (a space for the `T`, ordinal `YYYYDDD` dates, out-of-range clock values) the
current behaviour is pinned and the decision is in docs/decisions.md.

Unknown parameters are ignored (spec §1), including names that merely start or end like a
known one.
"""

from __future__ import annotations

from datetime import date

import pytest
from yarl import URL

from proxy.errors import BadRequest
from proxy.query import (
    DEFAULT_TIERS,
    UncheckedQuery,
    default_start_date,
    parse_date,
    parse_query,
    validate_query,
)

TODAY = date(2026, 5, 31)
MARCH_1 = date(2021, 3, 1)


def query(text: str):
    """As aiohttp's `request.query` presents it."""
    return URL("/api/v4/projects/1/dora/metrics?" + text).query


@pytest.mark.parametrize(
    "text",
    [
        "2021-03-01T10:00:00,5Z",  # ISO 8601 allows a comma as the decimal sign
        "2021-03-01T10:00:00,123456+01:00",
        "2021-03-01T10:00:00+01",  # hour-only offset
        "2021-03-01T10:00:00-05",
        "2021-03-01T10+01",
        "2021-03-01T10:00:00 01",  # hour-only offset whose "+" arrived as a space
        "2021-03-01T10:00:00-0130",
        "2021-03-01T1000",
        "20210301T10",
        "2021-03-01T10:00:00.123456789Z",  # any number of fraction digits
        # spec silent; the time is checked for shape only (docs/decisions.md)
        "2021-03-01T24:00:00Z",
        "2021-03-01T99:99:99Z",
    ],
)
def test_iso_time_spellings_after_t_are_accepted_and_ignored(text: str) -> None:
    assert parse_date(text) == MARCH_1


@pytest.mark.parametrize(
    "text",
    [
        "2021-03-01T10:00:00.Z",  # a dot with no digits
        "2021-03-01T10:00:00.",
        "2021-03-01T10:00:00,Z",  # a comma with no digits
        "2021-03-01T10:00:00.5.5Z",
        "2021-03-01 10:00:00",  # a space instead of T (spec: "T and a time")
        "2021-03-01 10:00",
        "2021-03-01 10",
        "2021031",  # 7 digits: neither YYYYMMDD nor accepted as ordinal YYYYDDD
        "2021060",  # ordinal date for 2021-03-01 in ISO 8601; spec §1 lists no such form
        "202103011",  # 9 digits
        "2021-03-01T10:00:00+1",  # a one-digit offset
        "2021-03-01T10:00:00+01:0",
        "2021-03-01T10:00:00+01:00:00",
        "2021-03-01T10:0",
        "2021-03-01T1",
        "2021-03-01TZ",
        "2021-03-01T10:00:00ZZ",
        "2021-03-01T10:00:00Z ",
    ],
)
def test_non_time_suffixes_are_rejected(text: str) -> None:
    assert parse_date(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "start_date=2021-03-01T10:00:00,5Z",
        "start_date=2021-03-01T10:00:00%2B01",
        "start_date=2021-03-01T10:00:00+01",  # "+" decodes to a space
    ],
)
def test_accepted_spellings_through_the_query(text: str) -> None:
    parsed = parse_query(query(f"metric=deployment_frequency&{text}&end_date=2021-03-05"), TODAY)
    assert parsed.start_date == MARCH_1


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("start_date=2021-03-01T10:00:00.Z", "start_date is invalid"),
        ("start_date=2021-03-01%2010:00:00", "start_date is invalid"),
        ("end_date=2021031", "end_date is invalid"),
    ],
)
def test_rejected_spellings_through_the_query(text: str, error: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_query(query(f"metric=deployment_frequency&{text}"), TODAY)
    assert info.value.body == {"error": error}


# --- unknown parameters that look like known ones ---------------------------------------------

LOOKALIKES = [
    "start_date_2=x",
    "metric_x=y",
    "end_date2=z",
    "xstart_date=nope",
    "metrics=foo",
    "intervals=hourly",
    "interval_=x",
    "environment_tier=bogus",  # deprecated singular: ignored (spec §1)
    "environment_tiers_x=bogus",
    "start_date_2[]=x",
    "metricx[]=y",
    "Metric=lead_time_for_changes",  # names are case-sensitive
    "START_DATE=x",
]


@pytest.mark.parametrize("lookalike", LOOKALIKES)
def test_lookalike_parameters_are_ignored(lookalike: str) -> None:
    text = f"metric=deployment_frequency&{lookalike}&start_date=2021-03-01&end_date=2021-03-05"
    assert parse_query(query(text), TODAY) == UncheckedQuery(
        "deployment_frequency", "daily", MARCH_1, date(2021, 3, 5), DEFAULT_TIERS
    )


def test_lookalikes_alone_leave_every_default_in_place() -> None:
    parsed = parse_query(query("metric=change_failure_rate&" + "&".join(LOOKALIKES)), TODAY)
    assert parsed == UncheckedQuery(
        "change_failure_rate", "daily", default_start_date(TODAY), TODAY, DEFAULT_TIERS
    )
    checked = validate_query(parsed)
    assert (checked.start_date, checked.end_date) == (date(2026, 2, 28), TODAY)


def test_lookalikes_do_not_stand_in_for_a_missing_metric() -> None:
    with pytest.raises(BadRequest) as info:
        parse_query(query("metric_x=deployment_frequency&metrics=x&metric[x]=y"), TODAY)
    assert info.value.body == {"error": "metric is missing"}
