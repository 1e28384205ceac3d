"""Query string to `DoraQuery`, with GitLab's checks in GitLab's order (spec §1 and §2).

Checking happens in two calls because the permission check (spec step 3) sits between them:

- `parse_query` is steps 0 and 1: refuse tokens in the URL, then presence and date syntax, then
  defaults. It runs before anything is asked upstream; its errors use the key ``error``.
- `validate_query` is step 4: range, interval, metric, tiers, first failure wins. It runs only
  once the caller may read the container; its errors use the key ``message``.

Step 1 reports one problem per scalar parameter, in the order metric, start_date, end_date,
interval, joined with ``", "``. A parameter sent in array form (``metric[]=x``) is reported as
``<name> is invalid`` *instead of* missing or invalid: that is what GitLab's parameter library says
for an array where a string belongs (Rack turns ``metric[]=x`` into ``metric: ["x"]``), hence
``metric[]=x`` alone gives ``{"error":"metric is invalid"}`` (scenario S5.27), and
``metric[]=x&start_date=foo`` gives ``{"error":"metric is invalid, start_date is invalid"}``.

Pure: no I/O and no clock; the caller passes today's date in the configured time zone.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Protocol

from proxy.errors import (
    BAD_INTERVAL,
    BAD_METRIC,
    BAD_TIERS,
    RANGE_TOO_LONG,
    START_NOT_BEFORE_END,
    TOKEN_IN_QUERY,
    BadRequest,
)

__all__ = [
    "DEFAULT_INTERVAL",
    "DEFAULT_TIERS",
    "INTERVALS",
    "MAX_RANGE_DAYS",
    "METRICS",
    "TIERS",
    "DoraQuery",
    "QueryItems",
    "UncheckedQuery",
    "default_start_date",
    "parse_date",
    "parse_query",
    "validate_query",
]

METRICS = (
    "deployment_frequency",
    "lead_time_for_changes",
    "time_to_restore_service",
    "change_failure_rate",
)
INTERVALS = ("all", "monthly", "daily")
# GitLab's environment tiers, in its canonical order (answers list tiers in this order).
TIERS = ("production", "staging", "testing", "development", "other")
DEFAULT_INTERVAL = "daily"
DEFAULT_TIERS = ("production",)
MAX_RANGE_DAYS = 180  # largest valid end - start; 181 calendar days inclusive

# Refused in any letter case and in any bracket form (`private_token[]`): a token in a URL leaks
# into access logs whatever GitLab would have made of the spelling.
_TOKEN_PARAMS = frozenset({"private_token", "access_token", "job_token"})
_SCALARS = ("metric", "start_date", "end_date", "interval")  # also the step-1 report order
_TIERS_SCALAR = "environment_tiers"
_TIERS_ARRAY = "environment_tiers[]"

# YYYY-MM-DD or YYYYMMDD, then optionally T and a time with an optional offset. The time is checked
# for shape only and then ignored. A space may stand for the offset's "+", because an unencoded
# "+" in a query string decodes to a space ("...T10:00:00+01:00" arrives as "...T10:00:00 01:00").
_DATE = re.compile(
    r"(?:(?P<y1>[0-9]{4})-(?P<m1>[0-9]{2})-(?P<d1>[0-9]{2})"
    r"|(?P<y2>[0-9]{4})(?P<m2>[0-9]{2})(?P<d2>[0-9]{2}))"
    r"(?:[Tt][0-9]{2}(?::?[0-9]{2}(?::?[0-9]{2}(?:[.,][0-9]+)?)?)?"
    r"(?:[Zz]|[-+ ][0-9]{2}(?::?[0-9]{2})?)?)?"
)


class QueryItems(Protocol):
    """What a query needs to offer: every (key, value) pair, repeats included, in order.

    `multidict.MultiDict`, aiohttp's `request.query` and a plain `dict` all qualify.
    """

    def items(self) -> Iterable[tuple[str, str]]: ...


@dataclass(frozen=True, slots=True)
class UncheckedQuery:
    """A query after step 1: `metric` present, dates well-formed, defaults applied.

    `environment_tiers` holds the given values in order of appearance, unchecked and possibly
    repeated (`""` for an empty `environment_tiers[]=`).
    """

    metric: str
    interval: str
    start_date: date
    end_date: date
    environment_tiers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DoraQuery:
    """A fully valid query; tiers deduplicated and in canonical order (`TIERS`)."""

    metric: str
    interval: str
    start_date: date
    end_date: date
    environment_tiers: tuple[str, ...]


def default_start_date(today: date) -> date:
    """Today minus 3 calendar months, day clamped to the target month (2026-05-31 → 2026-02-28).

    Depends on today only, never on a given end_date (spec §1).
    """
    months = today.year * 12 + (today.month - 1) - 3
    year, month = divmod(months, 12)
    month += 1
    return date(year, month, min(today.day, calendar.monthrange(year, month)[1]))


def parse_date(text: str) -> date | None:
    """A calendar date from `YYYY-MM-DD` or `YYYYMMDD` (time suffix ignored); None if invalid."""
    match = _DATE.fullmatch(text)
    if match is None:
        return None
    year = match["y1"] or match["y2"]
    month = match["m1"] or match["m2"]
    day = match["d1"] or match["d2"]
    try:
        return date(int(year), int(month), int(day))
    except ValueError:  # 2021-02-30, month 13, year 0000
        return None


def parse_query(query: QueryItems, today: date) -> UncheckedQuery:
    """Steps 0 and 1 of spec §2; raises `BadRequest` with key "error" on the first failing step.

    Rules (spec §1): a repeated scalar parameter keeps its last value; an empty start_date or
    end_date counts as absent; `environment_tiers[]` values and scalar `environment_tiers` values
    are united (an empty scalar value adds nothing, an empty `[]` value adds the tier ""); no
    tiers at all means the default `("production",)`. Unknown parameters, including the
    deprecated singular `environment_tier`, are ignored.
    """
    pairs = list(query.items())
    if any(_base_name(key).lower() in _TOKEN_PARAMS for key, _ in pairs):
        raise BadRequest({"error": TOKEN_IN_QUERY})

    scalars: dict[str, str] = {}
    array_form: set[str] = set()
    tiers: list[str] = []
    for key, value in pairs:
        if key == _TIERS_ARRAY:
            tiers.append(value)
        elif key == _TIERS_SCALAR:
            if value:
                tiers.append(value)
        elif key in _SCALARS:
            scalars[key] = value  # last one wins
        elif key.endswith("[]") and key[:-2] in _SCALARS:
            array_form.add(key[:-2])

    errors: list[str] = []
    dates: dict[str, date | None] = {}
    for name in _SCALARS:
        value = scalars.get(name)
        if name in array_form:
            errors.append(f"{name} is invalid")
        elif name == "metric" and value is None:
            errors.append("metric is missing")
        elif name in ("start_date", "end_date") and value:
            dates[name] = parse_date(value)
            if dates[name] is None:
                errors.append(f"{name} is invalid")
    if errors:
        raise BadRequest({"error": ", ".join(errors)})

    return UncheckedQuery(
        metric=scalars["metric"],
        interval=scalars.get("interval", DEFAULT_INTERVAL),
        start_date=dates.get("start_date") or default_start_date(today),
        end_date=dates.get("end_date") or today,
        environment_tiers=tuple(tiers) or DEFAULT_TIERS,
    )


def validate_query(query: UncheckedQuery) -> DoraQuery:
    """Step 4 of spec §2 in order 4a range, 4b start < end, 4c interval, 4d metric, 4e tiers.

    Raises `BadRequest` with key "message" for the first failing check.
    """
    span = (query.end_date - query.start_date).days
    if span > MAX_RANGE_DAYS:  # a reversed range is negative here and fails the next check
        raise BadRequest({"message": RANGE_TOO_LONG})
    if span <= 0:
        raise BadRequest({"message": START_NOT_BEFORE_END})
    if query.interval not in INTERVALS:
        raise BadRequest({"message": BAD_INTERVAL})
    if query.metric not in METRICS:
        raise BadRequest({"message": BAD_METRIC})
    given = set(query.environment_tiers)
    if not given <= set(TIERS):
        raise BadRequest({"message": BAD_TIERS})
    return DoraQuery(
        metric=query.metric,
        interval=query.interval,
        start_date=query.start_date,
        end_date=query.end_date,
        environment_tiers=tuple(tier for tier in TIERS if tier in given),
    )


def _base_name(key: str) -> str:
    """`private_token[]` and `private_token[x]` → `private_token`."""
    return key.split("[", 1)[0]
