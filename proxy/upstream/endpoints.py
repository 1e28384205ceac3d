"""The upstream endpoints the proxy reads: their paths and queries, and GitLab's JSON turned into
fact records. Pure: no I/O; `session.py` makes the calls.

Valid JSON that is not shaped like GitLab's answer (a missing key, a list for a dict, a bad
timestamp) raises `Malformed`, which the session turns into a 502 naming the call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

import msgspec

from proxy.facts import (
    ContainerInfo,
    Deployment,
    Environment,
    Incident,
    MergeRequest,
    UserInfo,
    parse_time,
)

Json = dict[str, Any]
# Everything a GitLab answer of the wrong shape can raise while being read.
MALFORMED = (KeyError, TypeError, ValueError, AttributeError, OverflowError)

_NO_JOB: Json = {}  # read only: a deployment without a job (created through the API)

GROUP_PROJECTS_QUERY = {
    "include_subgroups": "true",
    "with_shared": "false",
    "order_by": "id",
    "sort": "asc",
    "simple": "true",
}


def encode_segment(id_or_path: str) -> str:
    """One URL path segment for an id or full path, whatever the caller sent.

    python-gitlab does not encode path arguments of http_request, and `requests` would read a
    raw `#` as a fragment, `?` as a query and resolve `.`/`..` segments (`/projects/..`
    became `GET /api/v4/`). Everything but unreserved characters is percent-encoded, and a
    segment of dots has its dots encoded too, so the upstream sees the caller's id as one
    opaque segment and answers 404 for nonsense, as GitLab itself would.
    """
    segment = quote(id_or_path, safe="")
    if segment.strip(".") == "":
        segment = segment.replace(".", "%2E")
    return segment


def utc_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def user(data: Json) -> UserInfo:
    return UserInfo(
        id=int(data["id"]),
        is_admin=data.get("is_admin") is True,
        is_auditor=data.get("is_auditor") is True,
    )


def project(data: Json) -> ContainerInfo:
    return ContainerInfo(id=int(data["id"]), full_path=str(data["path_with_namespace"]))


def group(data: Json) -> ContainerInfo:
    return ContainerInfo(id=int(data["id"]), full_path=str(data["full_path"]))


def access_level(data: Json) -> int:
    """Effective access level of a `members/all/:user` answer; 0 for a blocked or pending member."""
    state = data.get("membership_state", "active")
    if data.get("state", "active") != "active" or state != "active":
        return 0
    return int(data["access_level"] or 0)


def group_projects(items: Iterable[Json], group: ContainerInfo) -> list[ContainerInfo]:
    """The group's own and descendant projects, by id; a project shared into it is not one."""
    prefix = group.full_path + "/"
    projects = []
    for item in items:
        namespace = str((item.get("namespace") or {}).get("full_path", ""))
        if namespace == group.full_path or namespace.startswith(prefix):
            projects.append(ContainerInfo(int(item["id"]), str(item["path_with_namespace"])))
    return sorted(projects, key=lambda p: p.id)


def environments(items: Iterable[Json]) -> tuple[Environment, ...]:
    return tuple(
        Environment(
            int(i["id"]),
            str(i["name"]),
            str(i.get("tier") or "other"),
            str(i.get("state") or "available"),
        )
        for i in items
    )


def deployments_query(finished_after: datetime, finished_before: datetime) -> dict[str, str]:
    return {
        "status": "success",
        "order_by": "finished_at",
        "sort": "asc",
        "finished_after": utc_text(finished_after),
        "finished_before": utc_text(finished_before),
    }


# ---- typed pages ------------------------------------------------------------------------------
# A deployments page is ~90 KB of JSON of which `deployments()` reads six fields: decoded into
# these structs (msgspec, in the worker thread), a page costs a quarter of building every dict
# with orjson, and its rows are not tracked by the garbage collector (a cold 200-project group
# reads 600 pages; building their dicts was most of the request's CPU, collections included).
# The types are strict on purpose: a page they do not describe exactly (a string id, a float, an
# empty environment object, a number out of int64, not a list...) is not decoded this way but
# the generic way (`decode_typed` answers None), so odd data gives the very answer it gave
# before: a 502 naming the call, a skipped row, or a retried page.
_Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class EnvironmentRef(msgspec.Struct, gc=False):
    id: _Int64


class JobRef(msgspec.Struct, gc=False):
    id: _Int64 | None = None
    finished_at: str | None = None


class DeploymentRow(msgspec.Struct, gc=False):
    """The fields of one deployment that `deployments()` reads; the rest is skipped."""

    id: _Int64
    status: str | None = None
    environment: EnvironmentRef | None = None
    deployable: JobRef | None = None
    updated_at: str | None = None


_TYPED_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeError)


def _typed(decode: Callable[[bytes], list[Any]]) -> Callable[[bytes], list[Any] | None]:
    def decode_typed(content: bytes) -> list[Any] | None:
        try:
            # msgspec skips the fields it is not asked for without checking their UTF-8;
            # orjson refuses a page with invalid UTF-8 anywhere (retried, then 502): so must this.
            content.decode()
            return decode(content)
        except _TYPED_ERRORS:
            return None

    return decode_typed


# The list kinds decoded into rows; a row's `id` is an int (get_list's "malformed item" check
# holds by construction) and the kind's parser reads rows as it reads dicts.
TYPED_PAGES: dict[str, Callable[[bytes], list[Any] | None]] = {
    "deployments": _typed(msgspec.json.Decoder(list[DeploymentRow]).decode),
}


def deployments(items: Iterable[Json | DeploymentRow]) -> tuple[Deployment, ...]:
    """Successful deployments with an environment; finished at the job's finish time, else the
    deployment's last update (spec §3.2). Written flat: a cold 200-project group reads ~55 000.

    Items are GitLab's dicts, or `DeploymentRow`s of a typed page (the same rules, read from
    fields whose types the decoding already checked)."""
    result = []
    append = result.append
    for item in items:
        if type(item) is DeploymentRow:
            if item.status != "success" or item.environment is None:
                continue
            job = item.deployable
            finished = (job.finished_at if job is not None else None) or item.updated_at
            if not finished:
                continue
            append(
                Deployment(
                    item.id,
                    item.environment.id,
                    parse_time(finished),
                    job.id if job is not None else None,
                )
            )
            continue
        if item.get("status") != "success":
            continue
        environment = item.get("environment")
        if not environment:
            continue
        deployable = item.get("deployable") or _NO_JOB
        finished = deployable.get("finished_at") or item.get("updated_at")
        if not finished:
            continue
        job_id = deployable.get("id")
        append(
            Deployment(
                int(item["id"]),
                int(environment["id"]),
                parse_time(finished),
                # optional_int, inlined: JSON gives exactly int (or bool, which is not kept)
                job_id if type(job_id) is int else None,
            )
        )
    return tuple(result)


def merge_requests(items: Iterable[Json]) -> tuple[MergeRequest, ...]:
    return tuple(
        MergeRequest(
            int(i["id"]),
            parse_time(i["merged_at"]) if i.get("merged_at") else None,
            optional_int(i.get("iid")),
            optional_url(i.get("web_url")),
        )
        for i in items
    )


def incidents_query(updated_after: datetime) -> dict[str, str]:
    return {
        "issue_type": "incident",
        "updated_after": utc_text(updated_after),
        "order_by": "updated_at",
        "sort": "asc",
        "scope": "all",
    }


def is_incident(item: Json) -> bool:
    return item.get("issue_type") == "incident" or item.get("type") == "INCIDENT"


def incident(item: Json) -> Incident:
    closed = item.get("closed_at") if item.get("state") == "closed" else None
    return Incident(
        int(item["id"]),
        parse_time(item["created_at"]),
        parse_time(closed) if closed else None,
        optional_int(item.get("iid")),
        optional_url(item.get("web_url")),
    )


def optional_int(value: Any) -> int | None:
    """An iid for people (the drill-down): kept when GitLab sent an integer, else None (never a
    502: the arithmetic does not need it)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def optional_url(value: Any) -> str | None:
    """A web_url for people: kept when it is an http(s) link, else None."""
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return value
    return None


def incidents(items: Iterable[Json]) -> tuple[Incident, ...]:
    return tuple(incident(i) for i in items if is_incident(i))


def incidents_by_project(items: Iterable[Json]) -> dict[int, list[Incident]]:
    by_project: dict[int, list[Incident]] = {}
    for item in items:
        if is_incident(item):
            by_project.setdefault(int(item["project_id"]), []).append(incident(item))
    return by_project
