"""GitLab's JSON turned into fact records (proxy/upstream/endpoints.py), without a socket.

The fake GitLab (tests/web) exercises the same parsers over HTTP; here each rule of spec §3.3
and each path-encoding hazard is pinned on its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.facts import ContainerInfo, Deployment, Environment, Incident, MergeRequest, UserInfo
from proxy.upstream import endpoints


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def dep(id_: int, **fields: object) -> dict:
    item: dict = {"id": id_, "status": "success", "environment": {"id": 7}}
    item.update(fields)
    return item


# --- deployments ------------------------------------------------------------------------------


def test_deployment_finish_time_is_the_jobs_finish_time() -> None:
    item = dep(
        1,
        deployable={"finished_at": "2026-03-01T10:00:00.500Z"},
        updated_at="2026-03-01T11:00:00Z",
    )
    assert endpoints.deployments([item]) == (Deployment(1, 7, utc("2026-03-01T10:00:00.500")),)


@pytest.mark.parametrize(
    "deployable",
    [None, {}, {"finished_at": None}],
    ids=["no deployable (API-created)", "empty deployable", "job not finished"],
)
def test_deployment_without_finished_at_falls_back_to_updated_at(deployable) -> None:
    item = dep(2, deployable=deployable, updated_at="2026-03-01T12:30:00+01:00")
    assert endpoints.deployments([item]) == (Deployment(2, 7, utc("2026-03-01T11:30:00")),)


@pytest.mark.parametrize(
    "status", ["created", "running", "failed", "canceled", "skipped", "blocked"]
)
def test_unsuccessful_deployments_are_skipped(status: str) -> None:
    item = dep(3, status=status, updated_at="2026-03-01T11:00:00Z")
    assert endpoints.deployments([item]) == ()


@pytest.mark.parametrize(
    "item",
    [
        dep(4, environment=None, updated_at="2026-03-01T11:00:00Z"),
        {"id": 4, "status": "success", "updated_at": "2026-03-01T11:00:00Z"},
        dep(4, deployable=None, updated_at=None),
        dep(4, deployable={"finished_at": None}),
    ],
    ids=["null environment", "no environment", "no time at all", "no updated_at"],
)
def test_deployments_without_environment_or_time_are_skipped(item: dict) -> None:
    assert endpoints.deployments([item]) == ()


def test_deployments_keep_order_and_ids() -> None:
    items = [
        dep(10, updated_at="2026-03-02T00:00:00Z", environment={"id": 8}),
        dep(11, status="failed", updated_at="2026-03-02T00:00:00Z"),
        dep(9, updated_at="2026-03-01T00:00:00Z"),
    ]
    assert [(d.id, d.environment_id) for d in endpoints.deployments(items)] == [(10, 8), (9, 7)]


@pytest.mark.parametrize(
    "item",
    [
        dep(5, updated_at="yesterday"),
        dep(5, environment={"name": "production"}, updated_at="2026-03-01T00:00:00Z"),
        dep("five", updated_at="2026-03-01T00:00:00Z"),
    ],
)
def test_malformed_deployment_raises_a_malformed_error(item: dict) -> None:
    with pytest.raises(endpoints.MALFORMED):
        endpoints.deployments([item])


def test_deployments_query() -> None:
    berlin = timezone(timedelta(hours=1))
    query = endpoints.deployments_query(
        datetime(2026, 3, 1, 0, 0, tzinfo=berlin), utc("2026-03-05T23:59:59.999")
    )
    assert query == {
        "status": "success",
        "order_by": "finished_at",
        "sort": "asc",
        "finished_after": "2026-02-28T23:00:00Z",
        "finished_before": "2026-03-05T23:59:59Z",
    }


# --- merge requests ---------------------------------------------------------------------------


def test_merge_requests_keep_unmerged_as_none() -> None:
    items = [
        {"id": 1, "merged_at": "2026-03-01T09:59:58.300Z"},
        {"id": 2, "merged_at": None},
        {"id": 3},
    ]
    assert endpoints.merge_requests(items) == (
        MergeRequest(1, utc("2026-03-01T09:59:58.300")),
        MergeRequest(2, None),
        MergeRequest(3, None),
    )


# --- incidents --------------------------------------------------------------------------------


def test_incidents_by_issue_type_or_work_item_type() -> None:
    items = [
        {
            "id": 1,
            "issue_type": "incident",
            "created_at": "2026-03-01T10:00:00Z",
            "state": "opened",
        },
        {"id": 2, "type": "INCIDENT", "created_at": "2026-03-01T10:00:00Z", "state": "opened"},
        {"id": 3, "issue_type": "issue", "type": "ISSUE", "created_at": "2026-03-01T10:00:00Z"},
        {"id": 4, "type": "incident", "created_at": "2026-03-01T10:00:00Z"},  # case matters
    ]
    assert [i.id for i in endpoints.incidents(items)] == [1, 2]


def test_incident_closed_at_only_while_closed() -> None:
    items = [
        {
            "id": 1,
            "issue_type": "incident",
            "created_at": "2026-03-01T10:00:00Z",
            "state": "closed",
            "closed_at": "2026-03-01T12:00:00Z",
        },
        {  # reopened: GitLab may keep the old closed_at
            "id": 2,
            "issue_type": "incident",
            "created_at": "2026-03-01T10:00:00Z",
            "state": "opened",
            "closed_at": "2026-03-01T12:00:00Z",
        },
        {
            "id": 3,
            "issue_type": "incident",
            "created_at": "2026-03-01T10:00:00Z",
            "state": "closed",
            "closed_at": None,
        },
    ]
    assert endpoints.incidents(items) == (
        Incident(1, utc("2026-03-01T10:00:00"), utc("2026-03-01T12:00:00")),
        Incident(2, utc("2026-03-01T10:00:00"), None),
        Incident(3, utc("2026-03-01T10:00:00"), None),
    )


def test_incidents_by_project() -> None:
    items = [
        {"id": 1, "project_id": 5, "issue_type": "incident", "created_at": "2026-03-01T10:00:00Z"},
        {"id": 2, "project_id": 6, "issue_type": "issue", "created_at": "2026-03-01T10:00:00Z"},
        {"id": 3, "project_id": 5, "issue_type": "incident", "created_at": "2026-03-02T10:00:00Z"},
        {"id": 4, "project_id": 7, "type": "INCIDENT", "created_at": "2026-03-02T10:00:00Z"},
    ]
    grouped = endpoints.incidents_by_project(items)
    assert {project: [i.id for i in found] for project, found in grouped.items()} == {
        5: [1, 3],
        7: [4],
    }


def test_incidents_query() -> None:
    assert endpoints.incidents_query(utc("2026-03-01T00:00:00.750")) == {
        "issue_type": "incident",
        "updated_after": "2026-03-01T00:00:00Z",
        "order_by": "updated_at",
        "sort": "asc",
        "scope": "all",
    }


# --- containers and members -------------------------------------------------------------------

GROUP = ContainerInfo(9, "grp")


def project_in(id_: int, namespace: str | None, name: str = "p") -> dict:
    return {
        "id": id_,
        "path_with_namespace": f"{namespace or 'x'}/{name}",
        "namespace": {"full_path": namespace} if namespace is not None else None,
    }


def test_group_projects_are_own_and_descendant_projects_by_id() -> None:
    items = [
        project_in(30, "grp/sub/deeper"),
        project_in(10, "grp"),
        project_in(20, "grp/sub"),
        project_in(40, "other"),  # shared into the group: not one of its projects
        project_in(50, "grp2"),  # a prefix of the name is not a parent
        project_in(60, "grp-x/sub"),
        project_in(70, None),
        {"id": 80, "path_with_namespace": "y/p"},
    ]
    assert endpoints.group_projects(items, GROUP) == [
        ContainerInfo(10, "grp/p"),
        ContainerInfo(20, "grp/sub/p"),
        ContainerInfo(30, "grp/sub/deeper/p"),
    ]


def test_group_projects_query_excludes_shared_projects() -> None:
    assert endpoints.GROUP_PROJECTS_QUERY == {
        "include_subgroups": "true",
        "with_shared": "false",
        "order_by": "id",
        "sort": "asc",
        "simple": "true",
    }


def test_containers_and_user() -> None:
    assert endpoints.project({"id": "5", "path_with_namespace": "g/p"}) == ContainerInfo(5, "g/p")
    assert endpoints.group({"id": 9, "full_path": "g/s"}) == ContainerInfo(9, "g/s")
    assert endpoints.user({"id": 1, "is_admin": True}) == UserInfo(1, True, False)
    assert endpoints.user({"id": 1, "is_auditor": True}) == UserInfo(1, False, True)
    # only a JSON true counts: a string "true" is not an admin flag
    assert endpoints.user({"id": 1, "is_admin": "true", "is_auditor": 1}) == UserInfo(
        1, False, False
    )


@pytest.mark.parametrize(
    ("member", "level"),
    [
        ({"access_level": 30}, 30),
        ({"access_level": 30, "state": "active", "membership_state": "active"}, 30),
        ({"access_level": 30, "state": "blocked"}, 0),
        ({"access_level": 30, "membership_state": "awaiting"}, 0),
        ({"access_level": None}, 0),
    ],
)
def test_access_level(member: dict, level: int) -> None:
    assert endpoints.access_level(member) == level


def test_environments_default_tier_and_state() -> None:
    items = [
        {"id": 1, "name": "production", "tier": "production", "state": "stopped"},
        {"id": 2, "name": "review/x", "tier": None, "state": None},
        {"id": 3, "name": "legacy"},
    ]
    assert endpoints.environments(items) == (
        Environment(1, "production", "production", "stopped"),
        Environment(2, "review/x", "other", "available"),
        Environment(3, "legacy", "other", "available"),
    )


# --- path segments ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "segment"),
    [
        ("42", "42"),
        ("grp/sub/proj", "grp%2Fsub%2Fproj"),
        ("/", "%2F"),
        (".", "%2E"),  # would be resolved away as "this directory"
        ("..", "%2E%2E"),  # would climb to /api/v4/
        ("...", "%2E%2E%2E"),
        ("a.b", "a.b"),  # dots inside a name stay as they are
        ("../x", "..%2Fx"),  # not a dot segment once the slash is encoded
        ("#", "%23"),  # would start a fragment
        ("?", "%3F"),  # would start a query
        ("a b", "a%20b"),
        ("%2F", "%252F"),  # already-encoded input is encoded again: opaque
        ("ü", "%C3%BC"),
        ("grp/proj?private_token=x#y", "grp%2Fproj%3Fprivate_token%3Dx%23y"),
    ],
)
def test_encode_segment(raw: str, segment: str) -> None:
    assert endpoints.encode_segment(raw) == segment


def test_utc_text_drops_fraction_and_converts_to_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert endpoints.utc_text(datetime(2026, 3, 1, 1, 30, 5, 999999, tzinfo=plus_two)) == (
        "2026-02-28T23:30:05Z"
    )


# --- fields for people (the drill-down), never for the arithmetic -----------------------------


def test_drill_down_fields_are_kept_when_well_formed() -> None:
    (deployment,) = endpoints.deployments(
        [dep(1, deployable={"id": 77, "finished_at": "2026-03-01T10:00:00Z"})]
    )
    assert deployment.job_id == 77
    (mr,) = endpoints.merge_requests(
        [{"id": 1, "iid": 5, "web_url": "https://gitlab.example.com/g/p/-/merge_requests/5"}]
    )
    assert (mr.iid, mr.web_url) == (5, "https://gitlab.example.com/g/p/-/merge_requests/5")
    (incident,) = endpoints.incidents(
        [
            {
                "id": 1,
                "iid": 9,
                "web_url": "http://gitlab.local/g/p/-/issues/9",
                "issue_type": "incident",
                "created_at": "2026-03-01T10:00:00Z",
            }
        ]
    )
    assert (incident.iid, incident.web_url) == (9, "http://gitlab.local/g/p/-/issues/9")


@pytest.mark.parametrize("value", [None, "5", 5.0, True, False, [5]])
def test_an_odd_iid_or_job_id_is_dropped_not_a_502(value: object) -> None:
    assert endpoints.optional_int(value) is None


@pytest.mark.parametrize(
    "value",
    [None, "", "javascript:alert(1)", "ftp://gitlab/x", "//gitlab/x", "/g/p/-/issues/1", 5],
)
def test_a_web_url_that_is_not_an_http_link_is_dropped(value: object) -> None:
    assert endpoints.optional_url(value) is None


def test_integers_and_http_links_are_kept() -> None:
    assert endpoints.optional_int(0) == 0
    assert endpoints.optional_int(12) == 12
    assert endpoints.optional_url("https://x/y") == "https://x/y"


# --- typed deployments pages (issue 16) ---------------------------------------------------------
# Any JSON value a field might hold: the right type, the wrong ones, and the edges of int64.
ODD = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0.0, 1.5, -(2**63), 2**63 - 1, 2**63]),
    st.sampled_from(["", "success", "failed", "2026-03-01T10:00:00Z", "2026-03-01", "x", "7"]),
    st.just([]),
    st.just({}),
)

TIMES = st.sampled_from(["2026-03-01T10:00:00.500Z", "2026-03-01T12:30:00+01:00", ""])
ENVIRONMENT = st.fixed_dictionaries({"id": st.integers(0, 9)})
AS_GITLAB_WRITES = st.fixed_dictionaries(
    {
        "id": st.integers(0, 5),
        "status": st.sampled_from(["success", "success", "failed"]),
        "environment": st.one_of(ENVIRONMENT, ENVIRONMENT, st.none()),
        "updated_at": st.one_of(TIMES, st.none()),
    },
    optional={
        "deployable": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {}, optional={"id": st.integers(0, 99), "finished_at": st.none() | TIMES}
            ),
        ),
        "ref": st.just("main"),  # a field not read
    },
)
FIELDS = [
    ("id",),
    ("status",),
    ("environment",),
    ("environment", "id"),
    ("deployable",),
    ("deployable", "id"),
    ("deployable", "finished_at"),
    ("updated_at",),
    ("ref",),
]


def _odd_field(item: dict, path: tuple[str, ...], value: object) -> dict:
    """`item` with one field (when its parent is an object) set to an odd value."""
    target = item
    for name in path[:-1]:
        target = target.get(name)
        if not isinstance(target, dict):
            return item
    target[path[-1]] = value
    return item


ITEM = st.one_of(
    AS_GITLAB_WRITES,
    st.builds(_odd_field, AS_GITLAB_WRITES, st.sampled_from(FIELDS), ODD),
)


def _outcome(parse: Callable[[list], object], items: list) -> object:
    try:
        return parse(items)
    except endpoints.MALFORMED as exc:
        return type(exc)


@given(st.one_of(st.lists(ITEM, max_size=4), ODD))
def test_a_typed_page_reads_exactly_what_the_generic_one_reads(page: object) -> None:
    """Whatever a page holds, typed rows either refuse it (the generic path then reads it) or
    give the very records (or the very error) that GitLab's dicts give; only int ids pass."""
    content = json.dumps(page).encode()
    rows = endpoints.TYPED_PAGES["deployments"](content)
    if rows is None:
        return
    items = orjson.loads(content)
    assert isinstance(items, list)
    assert [row.id for row in rows] == [item["id"] for item in items]
    assert all(type(item["id"]) is int for item in items)
    assert _outcome(endpoints.deployments, rows) == _outcome(endpoints.deployments, items)


def test_a_well_formed_page_is_decoded_typed() -> None:
    page = [dep(1, deployable={"id": 77, "finished_at": "2026-03-01T10:00:00Z"}, user=None)]
    rows = endpoints.TYPED_PAGES["deployments"](json.dumps(page).encode())
    assert rows is not None and type(rows[0]) is endpoints.DeploymentRow
    assert endpoints.deployments(rows) == endpoints.deployments(page)
