"""Upstream facts: the raw data the DORA computation needs, as plain immutable values.

These are what `upstream` produces, what the cache stores (as JSON bytes, never pickle) and what
`metrics` consumes. Instants are aware UTC datetimes; the day a fact belongs to is decided later,
in the configured time zone, by the pure computation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson


@dataclass(frozen=True, slots=True)
class Environment:
    id: int
    name: str
    tier: str
    state: str = "available"


@dataclass(frozen=True, slots=True)
class Deployment:
    """A successful deployment; `finished_at` is `deployable.finished_at` or else `updated_at`."""

    id: int
    environment_id: int
    finished_at: datetime
    # The deployment job's id, for people (the drill-down links to its page), not for the
    # arithmetic. One small int, not a URL: a large group decodes tens of thousands of these.
    job_id: int | None = None


@dataclass(frozen=True, slots=True)
class MergeRequest:
    id: int
    merged_at: datetime | None
    iid: int | None = None  # for people (the drill-down); absent in entries cached before
    web_url: str | None = None


@dataclass(frozen=True, slots=True)
class Incident:
    """An issue of type incident; `closed_at` is set only while the incident is closed."""

    id: int
    created_at: datetime
    closed_at: datetime | None = None
    iid: int | None = None  # for people (the drill-down); absent in entries cached before
    web_url: str | None = None


@dataclass(frozen=True)
class ProjectFacts:
    """Everything about one project that the four metrics need for one window.

    `merge_requests` maps a deployment id to the MRs GitLab linked to it; it is only filled when
    lead time is asked for (None means "not fetched", which `metrics` treats as no MRs).
    """

    project_id: int
    environments: tuple[Environment, ...] = ()
    deployments: tuple[Deployment, ...] = ()
    incidents: tuple[Incident, ...] = ()
    merge_requests: Mapping[int, tuple[MergeRequest, ...]] | None = field(default=None)


@dataclass(frozen=True, slots=True)
class UserInfo:
    """The caller as GitLab knows them: what the permission rules need."""

    id: int
    is_admin: bool
    is_auditor: bool


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """A project or group as looked up upstream: its numeric id and full path."""

    id: int
    full_path: str


_fromisoformat = datetime.fromisoformat


def parse_time(value: str) -> datetime:
    """Parse GitLab's ISO 8601 timestamps (`Z` or a numeric offset) into aware UTC datetimes.

    GitLab writes UTC with `Z` (`2026-03-01T10:00:00.500Z`) and the facts cache with `+00:00`;
    `fromisoformat` reads both straight to a UTC datetime (Python 3.11+), and a cold group request
    parses ~55 000 of them. Anything else (another offset, spaces, a lowercase `z`, no offset)
    takes the exact path, whose answer the fast one only ever repeats
    (tests/unit/test_facts_codec.py).
    """
    try:
        parsed = _fromisoformat(value)
    except (ValueError, TypeError):
        return _parse_time_exact(value)
    return parsed if parsed.tzinfo is UTC else _parse_time_exact(value)


def _parse_time_exact(value: str) -> datetime:
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    """Render an instant as GitLab does: UTC with milliseconds and `Z`."""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _time_or_none(value: str | None) -> datetime | None:
    return parse_time(value) if value else None


def _encode_time(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def environments_to_json(items: tuple[Environment, ...]) -> list[dict]:
    return [{"id": e.id, "name": e.name, "tier": e.tier, "state": e.state} for e in items]


def environments_from_json(data: list[dict]) -> tuple[Environment, ...]:
    return tuple(Environment(d["id"], d["name"], d["tier"], d["state"]) for d in data)


def _people(record: dict, iid: int | None, web_url: str | None) -> dict:
    """Add the optional fields for people (iid, web_url) only when known: entries stay as
    small as before, and entries cached before these fields existed still decode."""
    if iid is not None:
        record["iid"] = iid
    if web_url is not None:
        record["web_url"] = web_url
    return record


def deployments_to_json(items: tuple[Deployment, ...]) -> list[dict]:
    return [
        {"id": d.id, "environment_id": d.environment_id, "finished_at": _encode_time(d.finished_at)}
        if d.job_id is None
        else {
            "id": d.id,
            "environment_id": d.environment_id,
            "finished_at": _encode_time(d.finished_at),
            "job_id": d.job_id,
        }
        for d in items
    ]


def deployments_from_json(data: list[dict]) -> tuple[Deployment, ...]:
    return tuple(
        Deployment(d["id"], d["environment_id"], parse_time(d["finished_at"]), d.get("job_id"))
        for d in data
    )


def merge_requests_to_json(items: tuple[MergeRequest, ...]) -> list[dict]:
    return [
        _people({"id": m.id, "merged_at": _encode_time(m.merged_at)}, m.iid, m.web_url)
        for m in items
    ]


def merge_requests_from_json(data: list[dict]) -> tuple[MergeRequest, ...]:
    return tuple(
        MergeRequest(d["id"], _time_or_none(d["merged_at"]), d.get("iid"), d.get("web_url"))
        for d in data
    )


def incidents_to_json(items: tuple[Incident, ...]) -> list[dict]:
    return [
        _people(
            {
                "id": i.id,
                "created_at": _encode_time(i.created_at),
                "closed_at": _encode_time(i.closed_at),
            },
            i.iid,
            i.web_url,
        )
        for i in items
    ]


def incidents_from_json(data: list[dict]) -> tuple[Incident, ...]:
    return tuple(
        Incident(
            d["id"],
            parse_time(d["created_at"]),
            _time_or_none(d["closed_at"]),
            d.get("iid"),
            d.get("web_url"),
        )
        for d in data
    )


def dumps(data: object) -> bytes:
    """Compact JSON bytes, as every answer body is written (json, for the exact bytes)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def dump_entry(data: object) -> bytes:
    """A facts cache entry as compact JSON bytes (orjson: ~10x json's speed on the ~36 000 day
    lists of a cold 200-project group).

    Records may be given as they are: orjson writes a dataclass as the object of its fields
    and an instant as `isoformat()` does, so `Deployment`s encode as `deployments_to_json`
    does, except that an unknown optional field (`job_id`, `iid`, `web_url`) is written as null
    instead of left out; the `*_from_json` readers take both (tests/unit/test_facts_codec.py).
    """
    return orjson.dumps(data)


def loads(data: bytes) -> object:
    """A cache entry, written by `dump_entry` or (earlier versions) by `dumps`."""
    return orjson.loads(data)
