"""GitLab's GraphQL DORA fields (spec §11), answered from the same REST answers.

Three jobs, no I/O of its own:
- `plan`: is a document purely DORA (answered here), mixed (split: DORA here, the rest
  upstream), or not DORA at all (forwarded untouched)? Decided on graphql-core's AST, fragments
  and inline fragments resolved; the two halves of a split are new documents with fragments
  inlined and unused variables dropped, so each validates on its own.
- `SCHEMA` and its resolvers: the DORA part of GitLab's schema, executed by graphql-core
  (aliases, variables, fragments, `__typename`, argument coercion and error paths for free).
  Resolvers reach data only through a `Backend` (visibility, one REST answer per metric, the
  group's projects with rows), so the permission rules and caches are exactly the REST ones.
- `merge`: one answer from the upstream's half and ours, errors from both.
"""

from __future__ import annotations

import asyncio
import calendar
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any, Protocol

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    build_schema,
    get_operation_ast,
    visit,
)
from graphql.language import Visitor

from proxy.errors import BAD_METRIC, BadRequest, NotFound, Unauthorized
from proxy.query import MAX_RANGE_DAYS, default_start_date, parse_date

PROJECTS_RANGE_TOO_LONG = "maximum date range is 180 days."
# GraphQL field -> REST metric
METRIC_FIELDS = {
    "deploymentFrequency": "deployment_frequency",
    "leadTimeForChanges": "lead_time_for_changes",
    "timeToRestoreService": "time_to_restore_service",
    "changeFailureRate": "change_failure_rate",
}
CONTAINERS = ("project", "group")
MAX_FRAGMENT_DEPTH = 32  # nesting of fragment spreads followed when inlining

SCHEMA = build_schema(
    """
    scalar Date
    enum DoraMetricBucketingInterval { DAILY MONTHLY ALL }
    enum DeploymentTier { PRODUCTION STAGING TESTING DEVELOPMENT OTHER }
    type Query {
      project(fullPath: ID!): Project
      group(fullPath: ID!): Group
    }
    type Project { id: ID! name: String! fullPath: ID! dora: Dora }
    type Group { dora: GroupDora }
    type Dora {
      metrics(startDate: Date, endDate: Date, interval: DoraMetricBucketingInterval,
              environmentTiers: [DeploymentTier!]): [DoraMetric!]
    }
    type GroupDora {
      metrics(startDate: Date, endDate: Date, interval: DoraMetricBucketingInterval,
              environmentTiers: [DeploymentTier!]): [DoraMetric!]
      projects(startDate: Date!, endDate: Date!): ProjectConnection
    }
    type ProjectConnection { nodes: [Project!] }
    type DoraMetric {
      date: String
      deploymentFrequency: Float
      leadTimeForChanges: Float
      timeToRestoreService: Float
      changeFailureRate: Float
    }
    """
)


def _as_date(value: Any, argument: str) -> date | None:
    """A `Date` argument (YYYY-MM-DD). The scalar keeps the raw string (graphql-core's default
    for a custom scalar, stable across its versions); it is checked here, as an error of the
    field it is an argument of."""
    if value is None:
        return None
    parsed = parse_date(value) if isinstance(value, str) and len(value) == 10 else None
    if parsed is None:
        raise GraphQLError(f"{argument} is not a valid date (expected YYYY-MM-DD): {value!r}")
    return parsed


# ---- what a resolver may ask -------------------------------------------------------------------
@dataclass(frozen=True)
class Access:
    """A container as the caller sees it: `id` 0 when only its visibility is known."""

    id: int
    full_path: str
    may_read_dora: bool


class Backend(Protocol):
    def today(self) -> date: ...

    async def access(self, container: str, full_path: str) -> Access | None:
        """None: the caller cannot see it."""

    async def metric(
        self, container: str, full_path: str, params: list[tuple[str, str]]
    ) -> list[dict[str, Any]]:
        """The REST answer (parsed) for these REST query parameters; raises `ProxyError`s."""

    async def projects_with_rows(
        self, group_path: str, start: date, end: date
    ) -> list[tuple[int, str]]:
        """(id, full path) of the group's projects with a daily row in the window."""

    async def project_name(self, project_id: int) -> str | None: ...


# ---- the plan ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    kind: str  # "forward", "local" or "split"
    operation: OperationDefinitionNode | None = None
    local: DocumentNode | None = None
    remote: DocumentNode | None = None


def plan(document: DocumentNode, operation_name: str | None) -> Plan:
    """Decide how a parsed document is answered (spec §11.2 rule 7)."""
    operation = get_operation_ast(document, operation_name)
    if operation is None or operation.operation != OperationType.QUERY:
        return Plan("forward", operation)
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    try:
        selections = _inline(operation.selection_set, fragments, 0)
    except _Unresolvable:
        return Plan("forward", operation)
    roots = list(_fields(selections))
    dora_roots = [f for f in roots if f.name.value in CONTAINERS and _has_dora(f)]
    if not dora_roots:
        return Plan("forward", operation)
    inlined = replace(operation, selection_set=selections)
    pure = all(
        f.name.value == "__typename"
        or (
            f.name.value in CONTAINERS
            and all(g.name.value in ("dora", "__typename") for g in _fields(f.selection_set))
        )
        for f in roots
    )
    if pure:
        return Plan("local", operation, local=_document(inlined))
    local = _prune(selections, keep_dora=True)
    remote = _prune(selections, keep_dora=False)
    return Plan(
        "split",
        operation,
        local=_document(replace(operation, selection_set=local)) if local else None,
        remote=_document(replace(operation, selection_set=remote)) if remote else None,
    )


class _Unresolvable(Exception):
    """A spread of an unknown fragment, or fragments nested too deep (a cycle)."""


def _inline(
    selection_set: SelectionSetNode | None,
    fragments: Mapping[str, FragmentDefinitionNode],
    depth: int,
) -> SelectionSetNode | None:
    """The selection set with every fragment spread replaced by an inline fragment."""
    if selection_set is None:
        return None
    if depth > MAX_FRAGMENT_DEPTH:
        raise _Unresolvable
    out: list[Any] = []
    for selection in selection_set.selections:
        if isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is None:
                raise _Unresolvable
            out.append(
                InlineFragmentNode(
                    type_condition=fragment.type_condition,
                    directives=tuple(selection.directives or ()),
                    selection_set=_inline(fragment.selection_set, fragments, depth + 1),
                )
            )
        elif isinstance(selection, InlineFragmentNode):
            out.append(
                replace(
                    selection, selection_set=_inline(selection.selection_set, fragments, depth + 1)
                )
            )
        else:
            out.append(
                replace(
                    selection, selection_set=_inline(selection.selection_set, fragments, depth + 1)
                )
            )
    return SelectionSetNode(selections=tuple(out))


def _fields(selection_set: SelectionSetNode | None) -> Iterable[FieldNode]:
    """The fields of a (fragment-free) selection set, looking through inline fragments."""
    if selection_set is None:
        return
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            yield selection
        elif isinstance(selection, InlineFragmentNode):
            yield from _fields(selection.selection_set)


def _has_dora(field: FieldNode) -> bool:
    return any(g.name.value == "dora" for g in _fields(field.selection_set))


def _prune(selection_set: SelectionSetNode, *, keep_dora: bool) -> SelectionSetNode | None:
    """Root level of one half: containers keep `dora` (ours) or everything else (upstream's)."""
    out: list[Any] = []
    for selection in selection_set.selections:
        if isinstance(selection, InlineFragmentNode):
            inner = _prune(selection.selection_set, keep_dora=keep_dora)
            if inner is not None:
                out.append(replace(selection, selection_set=inner))
        elif selection.name.value in CONTAINERS:
            inner = _prune_container(selection.selection_set, keep_dora=keep_dora)
            if inner is not None:
                out.append(replace(selection, selection_set=inner))
        elif not keep_dora:
            out.append(selection)
    return SelectionSetNode(selections=tuple(out)) if out else None


def _prune_container(
    selection_set: SelectionSetNode | None, *, keep_dora: bool
) -> SelectionSetNode | None:
    """Inside `project`/`group`: None when nothing but `__typename` would be left."""
    if selection_set is None:
        return None
    out: list[Any] = []
    wanted = False
    for selection in selection_set.selections:
        if isinstance(selection, InlineFragmentNode):
            inner = _prune_container(selection.selection_set, keep_dora=keep_dora)
            if inner is not None:
                out.append(replace(selection, selection_set=inner))
                wanted = True
            continue
        name = selection.name.value
        if name == "__typename":
            out.append(selection)
        elif (name == "dora") == keep_dora:
            out.append(selection)
            wanted = True
    return SelectionSetNode(selections=tuple(out)) if wanted else None


def _document(operation: OperationDefinitionNode) -> DocumentNode:
    """A one-operation document whose variable definitions are the ones it uses."""
    used: set[str] = set()

    class Uses(Visitor):
        def enter_variable(self, node: VariableNode, *_: Any) -> None:
            used.add(node.name.value)

    visit(replace(operation, variable_definitions=()), Uses())
    definitions = tuple(
        d for d in operation.variable_definitions or () if d.variable.name.value in used
    )
    return DocumentNode(definitions=(replace(operation, variable_definitions=definitions),))


# ---- resolvers ---------------------------------------------------------------------------------
class Root:
    """Query's fields; `info.context` is the caller's `Backend`."""

    async def project(self, info: Any, fullPath: str) -> ProjectNode | None:
        access = await info.context.access("project", fullPath)
        return None if access is None else ProjectNode(access)

    async def group(self, info: Any, fullPath: str) -> GroupNode | None:
        access = await info.context.access("group", fullPath)
        return None if access is None else GroupNode(access)


class ProjectNode:
    def __init__(self, access: Access, name: str | None = None) -> None:
        self.access = access
        self.dora = DoraNode("project", access)
        self.fullPath = access.full_path
        self.id = f"gid://gitlab/Project/{access.id}"
        self._name = name

    async def name(self, info: Any) -> str | None:
        if self._name is None:
            self._name = await info.context.project_name(self.access.id)
        return self._name


class GroupNode:
    def __init__(self, access: Access) -> None:
        self.dora = DoraNode("group", access)


class DoraNode:
    def __init__(self, container: str, access: Access) -> None:
        self.container = container
        self.access = access

    async def metrics(
        self,
        info: Any,
        startDate: date | None = None,
        endDate: date | None = None,
        interval: str | None = None,
        environmentTiers: list[str] | None = None,
    ) -> list[dict[str, Any]] | None:
        startDate, endDate = _as_date(startDate, "startDate"), _as_date(endDate, "endDate")
        if not self.access.may_read_dora:
            return None  # spec §11.2 rule 5: no permission is null without an error
        names = selected_fields(info)
        wanted = [field for field in METRIC_FIELDS if field in names]
        bucketing = (interval or "DAILY").lower()
        params: list[tuple[str, str]] = [("interval", bucketing)]
        if startDate is not None:
            params.append(("start_date", startDate.isoformat()))
        if endDate is not None:
            params.append(("end_date", endDate.isoformat()))
        params += [("environment_tiers[]", tier.lower()) for tier in environmentTiers or ()]
        backend: Backend = info.context
        if not wanted:
            # No metric field: REST's metric error, after the range and interval checks that
            # come first in GitLab's order (an empty metric fails only the metric check).
            await _raise_for(
                backend.metric(self.container, self.access.full_path, [("metric", ""), *params])
            )
            raise GraphQLError(BAD_METRIC)
        answers = await asyncio.gather(
            *(
                backend.metric(
                    self.container,
                    self.access.full_path,
                    [("metric", METRIC_FIELDS[field]), *params],
                )
                for field in wanted
            ),
            return_exceptions=True,
        )
        for answer in answers:
            if isinstance(answer, Unauthorized | NotFound):
                return None
            if isinstance(answer, BadRequest):
                raise GraphQLError(str(answer.body.get("message") or answer.body.get("error")))
            if isinstance(answer, BaseException):
                raise answer
        today = backend.today()
        start = startDate or default_start_date(today)
        end = endDate or today
        return metric_rows(
            dict(zip(wanted, answers, strict=True)),  # type: ignore[arg-type]
            bucketing,
            start,
            end,
            fill="date" in names,
        )

    async def projects(
        self,
        info: Any,
        startDate: date,
        endDate: date,
    ) -> dict[str, Any] | None:
        startDate = _as_date(startDate, "startDate")  # type: ignore[assignment]
        endDate = _as_date(endDate, "endDate")  # type: ignore[assignment]
        if (endDate - startDate).days > MAX_RANGE_DAYS:
            raise GraphQLError(PROJECTS_RANGE_TOO_LONG)
        if not self.access.may_read_dora:
            return None
        found = await info.context.projects_with_rows(self.access.full_path, startDate, endDate)
        return {
            "nodes": [ProjectNode(Access(pid, path, True)) for pid, path in found],
        }


async def _raise_for(call: Any) -> None:
    """Await a REST answer only for the error it raises, as a GraphQL error."""
    try:
        await call
    except BadRequest as error:
        raise GraphQLError(str(error.body.get("message") or error.body.get("error"))) from None


def selected_fields(info: Any) -> set[str]:
    """Names (not aliases) of the fields selected on this field's rows, fragments resolved."""
    names: set[str] = set()
    fragments = info.fragments

    def collect(selection_set: SelectionSetNode | None, depth: int) -> None:
        if selection_set is None or depth > MAX_FRAGMENT_DEPTH:
            return
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                names.add(selection.name.value)
            elif isinstance(selection, InlineFragmentNode):
                collect(selection.selection_set, depth + 1)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = fragments.get(selection.name.value)
                if fragment is not None:
                    collect(fragment.selection_set, depth + 1)

    for node in info.field_nodes:
        collect(node.selection_set, 0)
    return names


def metric_rows(
    answers: Mapping[str, list[dict[str, Any]]],
    interval: str,
    start: date,
    end: date,
    *,
    fill: bool,
) -> list[dict[str, Any]]:
    """Rows of §11.2 rules 2 and 3 from one REST answer per selected metric field."""
    by_date: dict[str | None, dict[str, Any]] = {}
    for field, answer in answers.items():
        for element in answer:
            by_date.setdefault(element["date"], {})[field] = element["value"]
    if interval == "all":
        dates: list[str | None] = [None]
    elif fill:
        dates = [day.isoformat() for day in _buckets(interval, start, end)]
    else:
        dates = sorted(d for d in by_date if d is not None)
    return [
        {"date": day, **{field: by_date.get(day, {}).get(field) for field in answers}}
        for day in dates
    ]


def _buckets(interval: str, start: date, end: date) -> Iterable[date]:
    if interval == "daily":
        for offset in range((end - start).days + 1):
            yield start + timedelta(days=offset)
        return
    month = start.replace(day=1)
    while month <= end:
        yield month
        month += timedelta(days=calendar.monthrange(month.year, month.month)[1])


# ---- merging a split answer --------------------------------------------------------------------
def merge(remote: Mapping[str, Any], local: Mapping[str, Any]) -> dict[str, Any]:
    """One GraphQL answer from the upstream's and ours: data merged key by key (a null object
    on either side stays null), errors of both."""
    errors = list(remote.get("errors") or []) + list(local.get("errors") or [])
    if "data" not in remote or (remote.get("data") is None and remote.get("errors")):
        return {"errors": errors}  # the upstream refused the document: so would GitLab
    remote_data, local_data = remote.get("data"), local.get("data")
    data = remote_data if local_data is None else _merge_values(remote_data, local_data)
    result: dict[str, Any] = {"data": data}
    if errors:
        result["errors"] = errors
    return result


def _merge_values(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        merged = dict(a)
        for key, value in b.items():
            merged[key] = _merge_values(merged[key], value) if key in merged else value
        return merged
    return a
