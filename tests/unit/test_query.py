"""Query parsing and validation (spec §1, §2, scenarios S2 and S5) at the function level.

Queries go through yarl, exactly as aiohttp hands them to a handler (`request.query`), so
percent-decoding, `+` as space and blank values behave as in production.
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import MultiDict
from yarl import URL

from proxy.errors import (
    BAD_INTERVAL,
    BAD_METRIC,
    BAD_TIERS,
    RANGE_TOO_LONG,
    START_NOT_BEFORE_END,
    TOKEN_IN_QUERY,
    BadRequest,
)
from proxy.query import (
    DoraQuery,
    UncheckedQuery,
    default_start_date,
    parse_date,
    parse_query,
    validate_query,
)

TODAY = date(2026, 5, 31)  # S2's worked example: default start 2026-02-28
Q = "start_date=2022-01-20&end_date=2022-03-03"
DF = "deployment_frequency"


def query(text: str):
    """The query string as aiohttp's `request.query` presents it."""
    return URL("/api/v4/projects/51/dora/metrics?" + text).query if text else URL("/").query


def check(text: str, today: date = TODAY) -> DoraQuery:
    """Both steps, as the service runs them (permission sits between them)."""
    return validate_query(parse_query(query(text), today))


def step1_error(text: str, today: date = TODAY) -> dict:
    with pytest.raises(BadRequest) as info:
        parse_query(query(text), today)
    assert info.value.status == 400
    return info.value.body


def step4_error(text: str, today: date = TODAY) -> dict:
    unchecked = parse_query(query(text), today)  # step 1 must pass
    with pytest.raises(BadRequest) as info:
        validate_query(unchecked)
    assert info.value.status == 400
    return info.value.body


def dq(start: str, end: str, interval: str = "daily", tiers=("production",), metric=DF):
    return DoraQuery(metric, interval, date.fromisoformat(start), date.fromisoformat(end), tiers)


RANGE = {"message": RANGE_TOO_LONG}
ORDER = {"message": START_NOT_BEFORE_END}
INTERVAL = {"message": BAD_INTERVAL}
METRIC = {"message": BAD_METRIC}
TIER = {"message": BAD_TIERS}

# --- S5: every case, at the function level -------------------------------------------------------

# Step-1 failures: answered before permission, key "error".
S5_STEP1 = [
    ("S5.5", "", {"error": "metric is missing"}),
    ("S5.20", "start_date=2022-01-20", {"error": "metric is missing"}),  # gus: still 400
    (
        "S5.21",
        f"metric={DF}&start_date=2021-02-30&end_date=2021-03-31",
        {"error": "start_date is invalid"},
    ),
    ("S5.22", f"metric={DF}&start_date=2021-03-01&end_date=foo", {"error": "end_date is invalid"}),
    ("S5.23", "start_date=foo", {"error": "metric is missing, start_date is invalid"}),
    ("S5.27", f"metric[]={DF}&{Q}", {"error": "metric is invalid"}),
]

# Step-4 failures: answered after permission, key "message", first failing check only.
S5_STEP4 = [
    ("S5.1", f"metric={DF}&start_date=2021-03-03&end_date=2022-03-03", RANGE),
    ("S5.2", f"metric={DF}&start_date=2022-03-03&end_date=2021-03-03", ORDER),
    ("S5.3", f"metric={DF}&interval=unknown&{Q}", INTERVAL),
    ("S5.4", f"metric=unknown&{Q}", METRIC),
    ("S5.6", f"metric={DF}&environment_tiers[]=unknown&{Q}", TIER),
    ("S5.8", f"metric={DF}&start_date=2022-03-03&end_date=2022-03-03", ORDER),
    ("S5.10", f"metric={DF}&start_date=2021-01-01&end_date=2021-07-01", RANGE),
    ("S5.11", "metric=unknown&interval=unknown&start_date=2021-01-01&end_date=2021-12-31", RANGE),
    ("S5.12", f"metric={DF}&interval=unknown&start_date=2022-03-03&end_date=2022-03-01", ORDER),
    ("S5.13", f"metric=unknown&interval=unknown&{Q}", INTERVAL),
    ("S5.14", f"metric=unknown&environment_tiers[]=unknown&{Q}", METRIC),
    (
        "S5.15",
        f"metric={DF}&environment_tiers[]=production&environment_tiers[]=bogus&{Q}",
        TIER,
    ),
    ("S5.16", f"metric={DF}&interval=DAILY&{Q}", INTERVAL),
    ("S5.17", f"metric=Deployment_frequency&{Q}", METRIC),
    ("S5.18", f"metric={DF}&environment_tiers[]=Production&{Q}", TIER),
    # S5.19 is a Guest: 401 comes first at the service level; the query itself fails 4c.
    ("S5.19", f"metric={DF}&interval=unknown&{Q}", INTERVAL),
    ("S5.24", f"metric=&{Q}", METRIC),
    ("S5.25", f"metric={DF}&interval=&{Q}", INTERVAL),
    ("S5.26", f"metric={DF}&environment_tiers[]=&{Q}", TIER),
]

# Valid queries: answered 200 (or 401 for a Guest, S5.7, decided by permissions, not here).
S5_VALID = [
    ("S5.7", f"metric={DF}&{Q}", dq("2022-01-20", "2022-03-03")),
    (
        "S5.9",
        f"metric={DF}&interval=all&start_date=2021-01-01&end_date=2021-06-30",
        dq("2021-01-01", "2021-06-30", "all"),  # span exactly 180 days
    ),
    (
        "S5.28",
        f"metric={DF}&environment_tiers[]=production&environment_tiers[]=production"
        "&start_date=2021-03-01&end_date=2021-03-31",
        dq("2021-03-01", "2021-03-31"),  # duplicate tier counted once
    ),
    (
        "S5.29",
        f"metric={DF}&foo=bar&start_date=2021-03-01&end_date=2021-03-31",
        dq("2021-03-01", "2021-03-31"),
    ),
    ("S5.30", f"metric={DF}&{Q}", dq("2022-01-20", "2022-03-03")),
]


@pytest.mark.parametrize(("text", "body"), [c[1:] for c in S5_STEP1], ids=[c[0] for c in S5_STEP1])
def test_s5_step1_errors(text, body):
    assert step1_error(text) == body


@pytest.mark.parametrize(("text", "body"), [c[1:] for c in S5_STEP4], ids=[c[0] for c in S5_STEP4])
def test_s5_step4_errors(text, body):
    assert step4_error(text) == body


@pytest.mark.parametrize(
    ("text", "expected"), [c[1:] for c in S5_VALID], ids=[c[0] for c in S5_VALID]
)
def test_s5_valid(text, expected):
    assert check(text) == expected


def test_s5_covers_every_case():
    ids = {c[0] for c in S5_STEP1 + S5_STEP4 + S5_VALID}
    assert ids == {f"S5.{n}" for n in range(1, 31)}


# --- S2: default dates ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("today", "start"),
    [
        (date(2026, 5, 31), date(2026, 2, 28)),  # spec example: day clamped
        (date(2026, 3, 31), date(2025, 12, 31)),  # spec example: across the year
        (date(2024, 5, 31), date(2024, 2, 29)),  # leap year keeps the 29th
        (date(2024, 5, 29), date(2024, 2, 29)),
        (date(2024, 5, 30), date(2024, 2, 29)),
        (date(2100, 5, 31), date(2100, 2, 28)),  # century, not a leap year
        (date(2000, 5, 31), date(2000, 2, 29)),  # 400-year rule: leap year
        (date(2024, 2, 29), date(2023, 11, 29)),
        (date(2026, 1, 31), date(2025, 10, 31)),
        (date(2026, 12, 31), date(2026, 9, 30)),
        (date(2026, 7, 31), date(2026, 4, 30)),
        (date(2026, 1, 1), date(2025, 10, 1)),
        (date(2026, 6, 15), date(2026, 3, 15)),
    ],
)
def test_default_start_date(today, start):
    assert default_start_date(today) == start


@given(st.dates(min_value=date(1900, 1, 1), max_value=date(2999, 12, 31)))
def test_default_start_is_three_calendar_months_back(today):
    start = default_start_date(today)
    assert (today.year * 12 + today.month) - (start.year * 12 + start.month) == 3
    assert start.day == today.day or (start.day < today.day and (start + timedelta(1)).day == 1)
    assert 89 <= (today - start).days <= 92  # S2: N = span + 1 is 90…93


def test_defaults_apply_when_absent():
    assert check(f"metric={DF}") == dq("2026-02-28", "2026-05-31")


@pytest.mark.parametrize("today", [date(2026, 5, 31), date(2026, 3, 31), date(2024, 5, 31)])
def test_s2_boundaries(today):
    t3 = default_start_date(today)
    iso = date.isoformat
    ok = parse_query(query(f"metric={DF}"), today)
    assert (ok.start_date, ok.end_date) == (t3, today)  # S2.1-S2.3
    assert check(f"metric={DF}&start_date=&end_date=", today) == validate_query(ok)  # S2.4
    assert step4_error(f"metric={DF}&end_date={iso(t3)}", today) == ORDER  # S2.5
    t4 = date(t3.year - (t3.month == 1), (t3.month - 2) % 12 + 1, 1)  # any day a month earlier
    assert step4_error(f"metric={DF}&end_date={iso(t4)}", today) == ORDER  # S2.6
    end180 = t3 + timedelta(days=180)
    assert check(f"metric={DF}&end_date={iso(end180)}", today).end_date == end180  # S2.7
    end181 = t3 + timedelta(days=181)
    assert step4_error(f"metric={DF}&end_date={iso(end181)}", today) == RANGE  # S2.8
    start180 = today - timedelta(days=180)
    assert check(f"metric={DF}&start_date={iso(start180)}", today).start_date == start180  # S2.9
    start181 = iso(today - timedelta(days=181))
    assert step4_error(f"metric={DF}&start_date={start181}", today) == RANGE  # S2.10
    assert step4_error(f"metric={DF}&start_date={iso(today)}", today) == ORDER  # S2.11
    tomorrow = iso(today + timedelta(days=1))
    assert step4_error(f"metric={DF}&start_date={tomorrow}", today) == ORDER  # S2.12


def test_s2_worked_example():
    # T = 2026-05-31: S2.7 end 2026-08-27, S2.9 start 2025-12-02.
    assert check(f"metric={DF}&end_date=2026-08-27").end_date == date(2026, 8, 27)
    assert step4_error(f"metric={DF}&end_date=2026-08-28") == RANGE
    assert check(f"metric={DF}&start_date=2025-12-02").start_date == date(2025, 12, 2)
    assert step4_error(f"metric={DF}&start_date=2025-12-01") == RANGE


def test_default_start_ignores_given_end_date():
    q = parse_query(query(f"metric={DF}&end_date=2026-04-01"), TODAY)
    assert q.start_date == date(2026, 2, 28)


# --- dates ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "2021-03-01",
        "20210301",
        "2021-03-01T10:00:00Z",
        "2021-03-01T10:00:00.123Z",
        "2021-03-01T10:00:00+01:00",
        "2021-03-01T23:30:00-05:00",
        "2021-03-01T10:00",
        "2021-03-01T10",
        "20210301T100000Z",
        "20210301T100000+0100",
        "2021-03-01T10:00:00 01:00",  # an unencoded "+" arrives as a space
        "2021-03-01t10:00:00z",
    ],
)
def test_date_accepted_forms(text):
    assert parse_date(text) == date(2021, 3, 1)


@pytest.mark.parametrize(
    "text",
    [
        "2021-02-30",  # does not exist
        "2021-02-29",  # not a leap year
        "2021-13-01",
        "2021-00-10",
        "0000-01-01",
        "20210230",
        "2021-3-1",
        "2021-0301",
        "202103-01",
        "21-03-01",
        "Mar 1 2021",  # Ruby's Date.parse would take it; the proxy does not
        "2021/03/01",
        "2021-03-01T",
        "2021-03-01Tfoo",
        "2021-03-01 ",
        " 2021-03-01",
        "2021-03-01\n",
        "٢٠٢١-٠٣-٠١",  # non-ASCII digits
        "foo",
    ],
)
def test_date_rejected_forms(text):
    assert parse_date(text) is None


def test_leap_day_exists_in_leap_year():
    assert parse_date("2024-02-29") == date(2024, 2, 29)


def test_date_params_take_the_calendar_date_only():
    q = check(f"metric={DF}&start_date=2022-01-20T23:59:59-12:00&end_date=20220303T000000Z")
    assert (q.start_date, q.end_date) == (date(2022, 1, 20), date(2022, 3, 3))


def test_date_with_encoded_plus_offset():
    q = check(f"metric={DF}&start_date=2022-01-20T10:00:00%2B01:00&end_date=2022-03-03")
    assert q.start_date == date(2022, 1, 20)


# --- step 1 combinations -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "start_date=foo&end_date=bar",
            "metric is missing, start_date is invalid, end_date is invalid",
        ),
        ("end_date=2021-02-30", "metric is missing, end_date is invalid"),
        (f"metric={DF}&start_date=x&end_date=y", "start_date is invalid, end_date is invalid"),
        # Array form of a scalar: reported in that parameter's place, instead of missing/invalid.
        (f"interval[]=all&{Q}", "metric is missing, interval is invalid"),
        (f"metric={DF}&interval[]=all&{Q}", "interval is invalid"),
        (f"metric={DF}&start_date[]=2022-01-20&end_date=2022-03-03", "start_date is invalid"),
        (f"metric={DF}&end_date[]=2022-03-03", "end_date is invalid"),
        (f"metric={DF}&metric[]={DF}&{Q}", "metric is invalid"),  # both forms: still invalid
        ("metric[]=x&start_date=foo", "metric is invalid, start_date is invalid"),
        (
            "metric[]=x&start_date[]=y&end_date=z&interval[]=w",
            "metric is invalid, start_date is invalid, end_date is invalid, interval is invalid",
        ),
    ],
)
def test_step1_errors_joined_in_order(text, error):
    assert step1_error(text) == {"error": error}


def test_metric_missing_beats_step4_problems():
    assert step1_error("interval=bad&start_date=2020-01-01&end_date=2022-01-01") == {
        "error": "metric is missing"
    }


def test_parameter_names_are_case_sensitive():
    assert step1_error(f"Metric={DF}") == {"error": "metric is missing"}


def test_repeated_scalar_last_wins():
    q = check(f"metric=unknown&metric={DF}&interval=all&interval=monthly&start_date=2022-01-01&{Q}")
    assert q == dq("2022-01-20", "2022-03-03", "monthly")
    assert step4_error(f"metric={DF}&metric=unknown&{Q}") == METRIC


def test_empty_dates_are_absent():
    assert check(f"metric={DF}&start_date=&end_date=") == dq("2026-02-28", "2026-05-31")
    assert check(f"metric={DF}&start_date=2026-05-01&start_date=") == dq("2026-02-28", "2026-05-31")


def test_unchecked_query_keeps_raw_values():
    got = parse_query(
        query(
            "metric=x&interval=y&environment_tiers[]=b&environment_tiers[]=a&start_date=2022-03-03"
        ),
        TODAY,
    )
    assert got == UncheckedQuery("x", "y", date(2022, 3, 3), TODAY, ("b", "a"))


# --- tiers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tiers", "expected"),
    [
        ("", ("production",)),
        ("environment_tiers=", ("production",)),  # empty scalar → default
        ("environment_tiers=staging", ("staging",)),  # S3.5: scalar form accepted
        ("environment_tiers[]=staging", ("staging",)),
        ("environment_tier=staging", ("production",)),  # S3.6: deprecated singular ignored
        ("environment_tiers=staging&environment_tiers[]=production", ("production", "staging")),
        ("environment_tiers=other&environment_tiers=testing", ("testing", "other")),
        ("environment_tiers=&environment_tiers[]=staging", ("staging",)),
        (
            "environment_tiers[]=other&environment_tiers[]=development&environment_tiers[]=testing"
            "&environment_tiers[]=staging&environment_tiers[]=production&environment_tiers[]=other",
            ("production", "staging", "testing", "development", "other"),
        ),
        ("environment_tiers[]=staging&environment_tiers[]=staging", ("staging",)),
    ],
)
def test_tiers(tiers, expected):
    assert check(f"metric={DF}&{Q}&{tiers}").environment_tiers == expected


@pytest.mark.parametrize(
    "tiers",
    [
        "environment_tiers[]=",  # S5.26: the tier "" fails
        "environment_tiers=bogus",
        "environment_tiers=Production",
        "environment_tiers[]=production&environment_tiers=bogus",
        "environment_tiers[]=production%20",
    ],
)
def test_bad_tiers(tiers):
    assert step4_error(f"metric={DF}&{Q}&{tiers}") == TIER


def test_unknown_parameters_ignored():
    # S4.5: group_project_ids is not a REST parameter.
    assert check(f"metric={DF}&group_project_ids[]=42&foo=bar&{Q}") == dq(
        "2022-01-20", "2022-03-03"
    )


# --- step 4 order --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "body"),
    [
        # 4a before 4b: a reversed range longer than 180 days is "negative", passes 4a, fails 4b.
        ("metric=x&interval=y&start_date=2022-03-03&end_date=2020-01-01", ORDER),
        (
            "metric=x&interval=y&environment_tiers[]=z&start_date=2021-01-01&end_date=2021-07-01",
            RANGE,
        ),
        (
            "metric=x&interval=y&environment_tiers[]=z&start_date=2021-01-01&end_date=2021-01-01",
            ORDER,
        ),
        ("metric=x&interval=y&environment_tiers[]=z&" + Q, INTERVAL),
        ("metric=x&interval=all&environment_tiers[]=z&" + Q, METRIC),
        (f"metric={DF}&interval=all&environment_tiers[]=z&" + Q, TIER),
    ],
)
def test_step4_first_failure_wins(text, body):
    assert step4_error(text) == body


@pytest.mark.parametrize("interval", ["all", "monthly", "daily"])
@pytest.mark.parametrize(
    "metric",
    [
        "deployment_frequency",
        "lead_time_for_changes",
        "time_to_restore_service",
        "change_failure_rate",
    ],
)
def test_every_metric_and_interval_accepted(metric, interval):
    q = check(f"metric={metric}&interval={interval}&{Q}")
    assert (q.metric, q.interval) == (metric, interval)


def test_shortest_window_is_two_days():
    assert check(f"metric={DF}&start_date=2022-03-02&end_date=2022-03-03").start_date == date(
        2022, 3, 2
    )


# --- step 0: tokens in the query -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"metric={DF}&private_token=tok-rita&{Q}",
        f"metric={DF}&access_token=tok-rita&{Q}",
        f"metric={DF}&job_token=tok-rita&{Q}",
        "private_token=tok-rita",  # beats "metric is missing"
        "start_date=foo&job_token=x",  # beats every step-1 error
        "metric[]=x&access_token[]=tok",
        "PRIVATE_TOKEN=tok",
        "Private_Token[]=tok",
        "private_token=",  # even empty: the key alone says the client is misconfigured
    ],
)
def test_token_in_query_refused_first(text):
    body = step1_error(text)
    assert body == {"error": TOKEN_IN_QUERY}
    assert "tok-rita" not in str(body)


def test_token_lookalikes_are_ignored():
    assert check(f"metric={DF}&token=x&private=y&{Q}") == dq("2022-01-20", "2022-03-03")


# --- inputs --------------------------------------------------------------------------------------


def test_accepts_multidict_and_plain_dict():
    md = MultiDict([("metric", "unknown"), ("metric", DF), ("environment_tiers[]", "staging")])
    assert parse_query(md, TODAY).metric == DF
    assert parse_query({"metric": DF}, TODAY).environment_tiers == ("production",)


def test_plus_decodes_to_space_in_values():
    assert step4_error(f"metric=deployment+frequency&{Q}") == METRIC
