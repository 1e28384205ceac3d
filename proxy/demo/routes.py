"""The fake's route table: which GitLab endpoint a raw path is, and its URL-decoded arguments."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from proxy.demo import admin_routes

API_PREFIX = "/api/v4"

DATA_KINDS = frozenset(
    {
        "environments",
        "deployments",
        "deployment_mrs",
        "project_issues",
        "group_issues",
        "group_projects",
    }
)


@dataclass(frozen=True)
class Route:
    kind: str
    args: tuple[str, ...]  # URL-decoded dynamic segments, in order


PATTERNS: tuple[tuple[tuple[str | None, ...], str], ...] = (
    (("user",), "user"),
    (("projects", None), "project"),
    (("projects", None, "members", "all", None), "project_members"),
    (("projects", None, "environments"), "environments"),
    (("projects", None, "deployments"), "deployments"),
    (("projects", None, "deployments", None, "merge_requests"), "deployment_mrs"),
    (("projects", None, "issues"), "project_issues"),
    (("groups", None), "group"),
    (("groups", None, "members", "all", None), "group_members"),
    (("groups", None, "projects"), "group_projects"),
    (("groups", None, "issues"), "group_issues"),
    *admin_routes.PATTERNS,  # /version and webhooks (admin_routes.py)
)


def route_for(raw_path: str) -> Route | None:
    """Match a raw (still percent-encoded) path; `None` for anything the fake does not serve.

    Splitting before decoding keeps `s1%2Fapp` one segment, as GitLab's router does.
    """
    if not raw_path.startswith(API_PREFIX + "/"):
        return None
    segments = raw_path[len(API_PREFIX) + 1 :].split("/")
    for pattern, kind in PATTERNS:
        if len(pattern) != len(segments):
            continue
        args: list[str] = []
        for expected, actual in zip(pattern, segments, strict=True):
            if expected is None:
                if not actual:
                    break
                args.append(unquote(actual))
            elif expected != actual:
                break
        else:
            return Route(kind, tuple(args))
    return None
