"""Operator's calls to GitLab: `dora-proxy check` (can this token feed the proxy?) and
`dora-proxy webhooks` (the hooks that keep the cache fresh), through python-gitlab.

Unlike the request path (client.py) this runs once from a shell, synchronously, with the
operator's own token. Every failure becomes a `Finding` in plain words with its fix, never a
traceback; the token is never printed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import gitlab
import gitlab.exceptions
import requests

from proxy import USER_AGENT

REPORTER = 20
ROLE_NAMES = {0: "no access", 5: "Minimal access", 10: "Guest", 15: "Planner", 20: "Reporter"}
ROLE_NAMES |= {30: "Developer", 40: "Maintainer", 50: "Owner"}
# The receiver the proxy serves (proxy/web/webhooks.py) and the events it acts on.
WEBHOOK_PATH = "/-/webhooks/gitlab"
HOOK_EVENTS = {
    "deployment_events": True,
    "issues_events": True,
    "confidential_issues_events": True,
}
_OTHER_EVENTS = (
    "push_events",
    "tag_push_events",
    "merge_requests_events",
    "note_events",
    "confidential_note_events",
    "job_events",
    "pipeline_events",
    "wiki_page_events",
    "releases_events",
)
HOOK_EVENTS_SHOWN = ("deployment", "issues", "confidential issues")
# Every event switched off explicitly: GitLab turns push events on by default.
WANTED_HOOK = HOOK_EVENTS | dict.fromkeys(_OTHER_EVENTS, False)

FIX_SCOPE = "create a token with the read_api scope (api works too) and use that one"
FIX_TOKEN = "the token is unknown, expired or revoked: create a new one with the read_api scope"
FIX_ROLE = "give the token's user the Reporter role (or higher) on {what}"
FIX_REACH = "check upstream_url, DNS, firewalls, proxies and TLS between here and GitLab"


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the `check` report: what was tried, whether it worked, the fix if not."""

    what: str
    ok: bool
    detail: str
    fix: str | None = None


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    def add(self, what: str, ok: bool, detail: str, fix: str | None = None) -> bool:
        self.findings.append(Finding(what, ok, detail, fix))
        return ok


class UpstreamProblem(Exception):
    """A call failed; `detail` and `fix` are plain words for the operator."""

    def __init__(self, detail: str, fix: str | None, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix
        self.status = status


def connect(url: str, token: str, timeout: float) -> gitlab.Gitlab:
    """A python-gitlab client for the operator's token (PRIVATE-TOKEN), no retries."""
    gl = gitlab.Gitlab(
        url,
        private_token=token,
        timeout=timeout,
        user_agent=USER_AGENT,
        retry_transient_errors=False,
    )
    gl.session.cookies.clear()
    return gl


def _explain(exc: Exception, what: str) -> UpstreamProblem:
    """GitLab's answer (or the lack of one) as plain words and a fix."""
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        kind = "timed out" if isinstance(exc, requests.exceptions.Timeout) else "no connection"
        return UpstreamProblem(f"GitLab unreachable ({kind})", FIX_REACH)
    if isinstance(exc, gitlab.exceptions.GitlabError):
        status = exc.response_code
        body = _body(exc)
        if status == 401:
            return UpstreamProblem("GitLab refused the token (401 Unauthorized)", FIX_TOKEN, 401)
        if status == 403 and "insufficient_scope" in body:
            return UpstreamProblem(
                "the token lacks the read_api scope (403 insufficient_scope)", FIX_SCOPE, 403
            )
        if status == 403:
            return UpstreamProblem(
                f"GitLab refused to show {what} (403 Forbidden): the role is too low",
                FIX_ROLE.format(what=what),
                403,
            )
        if status == 404:
            return UpstreamProblem(
                f"{what} not found, or not visible to this token (404)",
                f"check the path; the token's user must be a member of {what}",
                404,
            )
        if status is not None and status >= 500:
            return UpstreamProblem(f"GitLab failed ({status})", "try again; see GitLab's logs")
        return UpstreamProblem(f"GitLab answered {status}", None, status)
    return UpstreamProblem(f"unexpected answer ({type(exc).__name__})", None)


def _body(exc: gitlab.exceptions.GitlabError) -> str:
    body = exc.response_body
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")
    return str(body or exc.error_message or "")


def _call(what: str, function: Callable[[], Any]) -> Any:
    try:
        return function()
    except (gitlab.exceptions.GitlabError, requests.exceptions.RequestException) as exc:
        raise _explain(exc, what) from None
    except ValueError as exc:  # a body that is not JSON (a login page, a proxy's error page)
        detail = f"{what}: the answer is not GitLab's JSON ({type(exc).__name__})"
        raise UpstreamProblem(detail, FIX_REACH) from None


def _get(gl: gitlab.Gitlab, what: str, path: str, **query: Any) -> Any:
    return _call(what, lambda: gl.http_get(path, query_data=query))


def _encode(ref: str) -> str:
    return ref if ref.isdigit() else quote(ref, safe="")


# ---- check -------------------------------------------------------------------------------------


def check(gl: gitlab.Gitlab, container: str, ref: str) -> Report:
    """Reachable? Version? Who is the token? Can it read what the proxy reads of `ref`?"""
    report = Report()
    try:
        version = _get(gl, "the version", "/version")
    except UpstreamProblem as problem:
        if problem.status is None:
            report.add("upstream", False, f"{gl.url}: {problem.detail}", problem.fix)
            return report
        report.add("upstream", True, f"{gl.url} answers")
        report.add("token", False, problem.detail, problem.fix)
        return report
    report.add("upstream", True, f"{gl.url} answers")
    report.add("version", True, f"GitLab {version.get('version', 'unknown')}")
    try:
        user = _get(gl, "the token's user", "/user")
    except UpstreamProblem as problem:
        report.add("token", False, problem.detail, problem.fix)
        return report
    admin = user.get("is_admin") is True
    report.add("token", True, f"user {user.get('username')}" + (" (admin)" if admin else ""))
    label = f"{container} {ref}"
    try:
        found = _get(gl, label, f"/{container}s/{_encode(ref)}", **_lookup_query(container))
        report.add(container, True, f"{found.get('path_with_namespace') or found.get('full_path')}")
        if not admin:
            level = _access_level(gl, container, found["id"], user["id"], label)
            name = ROLE_NAMES.get(level, str(level))
            if not report.add(
                "role",
                level >= REPORTER,
                f"{name} on {label}" + ("" if level >= REPORTER else ", below Reporter"),
                None if level >= REPORTER else FIX_ROLE.format(what=label),
            ):
                return report
        project_id = found["id"] if container == "project" else None
        if container == "group":
            _check_group(gl, report, found["id"], label)
            projects = _get(
                gl,
                f"projects of {label}",
                f"/groups/{found['id']}/projects",
                include_subgroups="true",
                per_page=1,
                simple="true",
            )
            if not projects:
                report.add("projects", True, f"{label} has no project yet: nothing more to read")
                return report
            project_id = projects[0]["id"]
        _check_project(gl, report, project_id, container)
    except UpstreamProblem as problem:
        report.add(container, False, problem.detail, problem.fix)
    return report


def _lookup_query(container: str) -> dict[str, str]:
    return {"with_projects": "false"} if container == "group" else {}


def _access_level(gl: gitlab.Gitlab, container: str, cid: int, user_id: int, label: str) -> int:
    """The user's effective level (inherited memberships included), 0 when not a member."""
    try:
        member = _get(gl, label, f"/{container}s/{cid}/members/all/{user_id}")
    except UpstreamProblem as problem:
        if problem.status == 404:
            return 0
        raise
    return int(member.get("access_level", 0))


def _check_group(gl: gitlab.Gitlab, report: Report, group_id: int, label: str) -> None:
    _try(
        report,
        "group issues",
        lambda: _get(
            gl,
            f"issues of {label}",
            f"/groups/{group_id}/issues",
            per_page=1,
            issue_type="incident",
        ),
    )


def _check_project(gl: gitlab.Gitlab, report: Report, project_id: int, container: str) -> None:
    """Each endpoint the proxy reads of a project, one finding each."""
    label = f"project {project_id}"
    prefix = "" if container == "project" else f"{label}: "
    base = f"/projects/{project_id}"
    _try(
        report,
        prefix + "environments",
        lambda: _get(gl, f"environments of {label}", f"{base}/environments", per_page=1),
    )
    deployments = _try(
        report,
        prefix + "deployments",
        lambda: _get(
            gl, f"deployments of {label}", f"{base}/deployments", per_page=1, status="success"
        ),
    )
    if deployments:
        _try(
            report,
            prefix + "merge requests",
            lambda: _get(
                gl,
                f"merge requests of {label}",
                f"{base}/deployments/{deployments[0]['id']}/merge_requests",
                per_page=1,
            ),
        )
    elif deployments is not None:
        report.add(prefix + "merge requests", True, "no deployment yet to read them of")
    _try(
        report,
        prefix + "issues",
        lambda: _get(gl, f"issues of {label}", f"{base}/issues", per_page=1, issue_type="incident"),
    )


def _try(report: Report, what: str, call: Callable[[], Any]) -> Any:
    try:
        result = call()
    except UpstreamProblem as problem:
        report.add(what, False, problem.detail, problem.fix)
        return None
    report.add(what, True, "readable")
    return result


# ---- webhooks ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HookChange:
    action: str  # "created", "updated", "unchanged"
    hook_id: int
    url: str


def _hooks_path(container: str, ref: str) -> str:
    return f"/{container}s/{_encode(ref)}/hooks"


def list_hooks(gl: gitlab.Gitlab, container: str, ref: str) -> list[dict[str, Any]]:
    """Every hook of the project or group (all pages, at most 100 pages of 100)."""
    label = f"{container} {ref}"
    return list(
        _call(
            label,
            lambda: gl.http_list(_hooks_path(container, ref), get_all=True, per_page=100),
        )
    )


def receiver_url(public_url: str) -> str:
    return public_url.rstrip("/") + WEBHOOK_PATH


def install_hook(
    gl: gitlab.Gitlab,
    container: str,
    ref: str,
    public_url: str,
    secret: str,
    *,
    force: bool = False,
) -> HookChange:
    """Create the hook, or bring an existing one with the same URL to the wanted events.

    GitLab never shows a hook's token, so an existing hook whose events already match is left
    alone (a second run changes nothing); `force` rewrites it anyway, e.g. after the secret
    was rotated.
    """
    url = receiver_url(public_url)
    label = f"{container} {ref}"
    wanted = WANTED_HOOK | {"enable_ssl_verification": url.startswith("https://")}
    for hook in list_hooks(gl, container, ref):
        if hook.get("url") != url:
            continue
        if not force and all(hook.get(key) == value for key, value in wanted.items()):
            return HookChange("unchanged", int(hook["id"]), url)
        path = f"{_hooks_path(container, ref)}/{hook['id']}"
        body = {"url": url, "token": secret} | wanted
        _call(label, lambda path=path, body=body: gl.http_put(path, post_data=body))
        return HookChange("updated", int(hook["id"]), url)
    body = {"url": url, "token": secret} | wanted
    created = _call(label, lambda: gl.http_post(_hooks_path(container, ref), post_data=body))
    return HookChange("created", int(created["id"]), url)


def hook_events(hook: dict[str, Any]) -> list[str]:
    return sorted(
        key.removesuffix("_events")
        for key, value in hook.items()
        if key.endswith("_events") and value is True
    )
