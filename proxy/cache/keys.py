"""Every cache key the proxy writes, in one place (pure string formatting, no I/O).

`<namespace>|<scope>|<kind>[|<part>...]`, where the namespace names the key format version,
the upstream and the time zone (day-keyed facts depend on both), and the scope is
`project:<id>` or `group:<id or path>`. No key ever holds a credential or a digest of one:
answers are shared between callers who each proved access (proxy/permissions.py).

Also the names of in-process locks and single flights, so two pieces of code that must meet on
one name cannot drift apart.
"""

from __future__ import annotations

import hashlib
from datetime import date

FORMAT_VERSION = "v2"  # v2: settled days of facts in one entry per month


def namespace_for(upstream_url: str, time_zone: str) -> str:
    """Key prefix: format version, upstream and time zone."""
    identity = f"{upstream_url.rstrip('/')}|{time_zone}"
    return f"{FORMAT_VERSION}|{hashlib.sha256(identity.encode()).hexdigest()[:12]}"


class CacheKeys:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace

    def _project(self, project_id: int, *parts: object) -> str:
        return "|".join((self.namespace, f"project:{project_id}", *map(str, parts)))

    # ---- answers ------------------------------------------------------------------------------
    def answer(self, container: str, container_id: int, params: str, generation: str) -> str:
        """A computed answer; `generation` moves when a webhook reports a change."""
        return f"{self._answer_base(container, container_id, params)}|g{generation}"

    def stale_answer(self, container: str, container_id: int, params: str) -> str:
        """The last answer computed, kept longer: served when the upstream fails."""
        return f"{self._answer_base(container, container_id, params)}|stale"

    def _answer_base(self, container: str, container_id: int, params: str) -> str:
        return f"{self.namespace}|answer|{container}:{container_id}|{params}"

    def membership_generation(self) -> str:
        """Bumped by system hooks (membership, project, group changes): kept permission
        decisions made under another value are decided again, on every replica."""
        return f"{self.namespace}|membership-generation"

    def answers_generation(self, container: str, ref: int | str) -> str:
        """Bumped by webhooks; a project by id, a group by full path (payloads carry paths)."""
        return f"{self.namespace}|{container}:{ref}|answers-generation"

    # ---- facts --------------------------------------------------------------------------------
    def group_projects(self, group_id: int) -> str:
        return f"{self.namespace}|group:{group_id}|projects"

    def environments(self, project_id: int) -> str:
        return self._project(project_id, "environments")

    def deployments(self, project_id: int, day: date) -> str:
        """A recent (not yet settled) day's deployments."""
        return self._project(project_id, "deployments", day.isoformat())

    def deployments_month(self, project_id: int, month: str) -> str:
        """The settled days of one month (`YYYY-MM`): {day: deployments} for the days fetched."""
        return self._project(project_id, "deployments-month", month)

    def merge_requests(self, project_id: int, deployment_id: int) -> str:
        return self._project(project_id, "merge-requests", deployment_id)

    def young_merge_requests(self, project_id: int, deployment_id: int) -> str:
        """The MR list of a deployment younger than 10 minutes: kept until then only."""
        return self._project(project_id, "merge-requests", deployment_id, "young")

    def incidents(self, project_id: int, generation: str, day: date) -> str:
        """A recent day's incidents (created or closed that day)."""
        return self._project(project_id, "incidents", f"g{generation}", day.isoformat())

    def incidents_month(self, project_id: int, generation: str, month: str) -> str:
        """The settled days of one month: {day: incidents} for the days fetched."""
        return self._project(project_id, "incidents-month", f"g{generation}", month)

    def incidents_generation(self, project_id: int) -> str:
        return self._project(project_id, "incidents-generation")

    # ---- in-process locks and flights (never stored) ------------------------------------------
    def deployments_lock(self, project_id: int) -> str:
        return self._project(project_id, "deployments-lock")

    def deployments_run(self, project_id: int, first: date, last: date) -> str:
        return self._project(project_id, "deployments-run", first, last)

    def incidents_lock(self, project_id: int) -> str:
        return self._project(project_id, "incidents-lock")

    def incidents_run(self, project_id: int, first: date, last: date) -> str:
        return self._project(project_id, "incidents-run", first, last)

    def group_incidents_lock(self, group_id: int) -> str:
        return f"{self.namespace}|group:{group_id}|incidents-lock"


def lock_key(key: str) -> str:
    """The shared lock of a cross-process single flight over `key`."""
    return f"{key}|lock"
