"""Grape-style parameter checks of the fake: GitLab's enumerations, coercions and messages."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from proxy.demo.replies import Reply
from proxy.demo.times import parse_time

DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100

DEPLOYMENT_ORDER = ("id", "iid", "created_at", "updated_at", "finished_at", "ref")
DEPLOYMENT_STATUSES = ("created", "running", "success", "failed", "canceled", "skipped", "blocked")
ISSUE_TYPES = ("issue", "incident", "test_case", "requirement", "task", "ticket")
ISSUE_STATES = ("opened", "closed", "all")
ISSUE_ORDER = (
    "created_at",
    "due_date",
    "label_priority",
    "milestone_due",
    "popularity",
    "priority",
    "relative_position",
    "title",
    "updated_at",
    "weight",
)
ISSUE_SCOPES = ("created_by_me", "assigned_to_me", "all", "created-by-me", "assigned-to-me")
ENVIRONMENT_STATES = ("available", "stopping", "stopped")
PROJECT_ORDER = (
    "id",
    "name",
    "path",
    "created_at",
    "updated_at",
    "last_activity_at",
    "similarity",
    "star_count",
    "storage_size",
    "repository_size",
    "wiki_size",
    "packages_size",
)
MR_STATES = ("opened", "closed", "locked", "merged", "all")
SORTS = ("asc", "desc")
# Grape/dry-types boolean coercion, case-insensitive.
_TRUE = frozenset({"true", "1", "t", "yes", "y", "on"})
_FALSE = frozenset({"false", "0", "f", "no", "n", "off"})


class Params:
    """Grape-style parameter checks: collect every error, then answer them joined by `, `."""

    def __init__(self, query: dict[str, str]) -> None:
        self.query = query
        self.errors: list[str] = []
        self.page = 1
        self.per_page = DEFAULT_PER_PAGE

    def choice(self, name: str, allowed: Sequence[str], default: str | None = None) -> str | None:
        value = self.query.get(name)
        if value is None:
            return default
        if value not in allowed:
            self.errors.append(f"{name} does not have a valid value")
            return default
        return value

    def time(self, name: str) -> datetime | None:
        value = self.query.get(name)
        if value is None:
            return None
        try:
            return parse_time(value)
        except ValueError:
            self.errors.append(f"{name} is invalid")
            return None

    def boolean(self, name: str, default: bool) -> bool:
        value = self.query.get(name)
        if value is None:
            return default
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        self.errors.append(f"{name} is invalid")
        return default

    def integer(self, name: str, default: int) -> int:
        value = self.query.get(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            self.errors.append(f"{name} is invalid")
            return default

    def check(self) -> None:
        if self.errors:
            raise Reply(400, {"error": ", ".join(self.errors)})


def page_params(params: Params) -> tuple[int, int]:
    """`page` and `per_page`, declared first on every GitLab list; per_page clamps to 100."""
    page = params.integer("page", 1)
    per_page = params.integer("per_page", DEFAULT_PER_PAGE)
    if page < 1:
        page = 1
    if per_page < 1:
        per_page = DEFAULT_PER_PAGE
    params.page, params.per_page = page, min(per_page, MAX_PER_PAGE)
    return params.page, params.per_page
