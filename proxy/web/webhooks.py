"""`POST /-/webhooks/gitlab`: GitLab's deployment and incident events drop stale cache entries.

A delivery is only a "project X changed" signal (upstream-gitlab-api.md §9): nothing in the
payload is trusted as data, the next query re-reads GitLab. What one signal drops:

- deployment succeeded → the project's environment list and deployment days not yet settled;
- incident opened, closed, reopened or updated (also a type change to or from incident) → every
  cached incident day of the project;
- in both cases the answer caches of the project and of each ancestor group (bumped generation),
  so the next query recomputes from the fresh facts. The `|stale` copies stay: they are what a
  later upstream failure falls back to.

Authentication: `X-Gitlab-Token` must equal `webhook_secret` (constant-time comparison; the
header is never logged). Without a configured secret the route is not registered at all: a POST
answers exactly what any unknown path does (404), the OpenAPI document omits it, and a proxy that
never opted in exposes nothing. Replies: 401 wrong or missing token, 400 malformed or
unknown payload (nothing changed), 413 (JSON) for a body over aiohttp's limit, 503 with
Retry-After when the cache cannot record the invalidation, 200 `{"status": "ok" | "ignored" |
"duplicate"}`; a valid delivery of an event the metrics do not use (push, merge request,
pipeline...) is 200 "ignored", since GitLab disables hooks that keep failing.

System hooks (GitLab's admin area, same URL and secret) that can change who may read a project
or group drop the permission decisions kept with `system_hooks` on (`membership_event`).

Invalidation normally finishes before the 200 (a handful of storage deletes and increments), so
the next query is fresh once GitLab has its answer. It may wait for a deployment fetch of the same
project already running (whose result could predate the event); after `INLINE_WAIT` seconds the
delivery is answered anyway and the invalidation completes in the background, because GitLab
disables hooks that keep timing out.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from proxy.cache.base import StorageError
from proxy.errors import ServiceUnavailable
from proxy.facts import dumps
from proxy.service import Change
from proxy.web.handlers import SERVICE
from proxy.web.routing import add_route

log = structlog.get_logger("proxy.webhooks")

PATH = "/-/webhooks/gitlab"
RECENT_KEYS_KEPT = 1024
INLINE_WAIT = 2.0  # seconds a delivery waits for its invalidation before answering anyway

DEPLOYMENT_EVENTS = frozenset({"Deployment Hook"})
ISSUE_EVENTS = frozenset({"Issue Hook", "Confidential Issue Hook"})
EVENT_OF_KIND = {"deployment": DEPLOYMENT_EVENTS, "issue": ISSUE_EVENTS, "work_item": ISSUE_EVENTS}
KIND_OF_EVENT = {
    "Deployment Hook": "deployment",
    "Issue Hook": "issue",
    "Confidential Issue Hook": "issue",
}


MEMBERSHIP_EVENTS = frozenset(
    {
        "user_add_to_team",
        "user_remove_from_team",
        "user_update_for_team",
        "user_add_to_group",
        "user_remove_from_group",
        "user_update_for_group",
        "user_destroy",
        "user_rename",
        "project_destroy",
        "project_rename",
        "project_transfer",
        "group_destroy",
        "group_rename",
    }
)

_KIND = re.compile(r"[a-z][a-z_]{0,63}")
_EVENT = re.compile(r"[A-Z][A-Za-z ]{0,62} Hook")


class BadPayload(Exception):
    """The delivery is not a well-formed event we understand; answered 400, nothing changes."""


class RecentKeys:
    """The last few `Idempotency-Key`s seen, so a retried delivery is processed once."""

    def __init__(self, size: int = RECENT_KEYS_KEPT) -> None:
        self.size = size
        self._keys: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def add(self, key: str) -> None:
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self.size:
            self._keys.popitem(last=False)


@dataclass(frozen=True, slots=True)
class Receiver:
    """The receiver's state on the app: the secret, the recent delivery keys and the
    invalidations still running after their delivery was answered (referenced until done)."""

    secret: str
    recent: RecentKeys
    background: set[asyncio.Task[None]]


RECEIVER = web.AppKey("webhook_receiver", Receiver)


def setup(app: web.Application, secret: str | None) -> None:
    """Register the route if a secret is configured; the service is read at request time."""
    if not secret:
        return
    app[RECEIVER] = Receiver(secret, RecentKeys(), set())
    add_route(app, "POST", PATH, receive, "gitlab_webhook")


def _reply(status: int, body: dict[str, object]) -> web.Response:
    return web.Response(status=status, body=dumps(body), content_type="application/json")


def authentic(header: str | None, secret: str) -> bool:
    """Constant-time comparison; bytes so that non-ASCII input cannot raise."""
    if header is None:
        return False
    return hmac.compare_digest(header.encode("utf-8", "surrogateescape"), secret.encode())


async def receive(request: web.Request) -> web.Response:
    receiver = request.app[RECEIVER]
    if not authentic(request.headers.get("X-Gitlab-Token"), receiver.secret):
        log.warning("webhook_rejected", reason="bad token")
        return _reply(401, {"message": "401 Unauthorized"})

    idempotency_key = request.headers.get("Idempotency-Key", "").strip()
    if idempotency_key and idempotency_key in receiver.recent:
        return _reply(200, {"status": "duplicate"})
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:  # JSON like every other refusal
        log.info("webhook_refused", reason="body too large")
        return _reply(exc.status, {"error": "413 Request Entity Too Large"})
    try:
        payload = json.loads(raw)
        change = classify(request.headers.get("X-Gitlab-Event"), payload)
    except (ValueError, RecursionError, BadPayload) as exc:  # bad JSON, bad UTF-8, deep nesting
        reason = str(exc) if isinstance(exc, BadPayload) else "body is not valid JSON"
        log.info(
            "webhook_refused", reason=reason, gitlab_event=request.headers.get("X-Gitlab-Event")
        )
        return _reply(400, {"error": reason})

    if change is None and membership_event(payload):
        try:
            await request.app[SERVICE].membership_changed()
        except StorageError as exc:  # 503: GitLab delivers again later
            raise ServiceUnavailable(5, detail=f"invalidation: {exc}") from None
        log.info("system_hook", event_name=payload["event_name"], outcome="permissions")
        return _reply(200, {"status": "ok"})
    if change is not None:
        task = asyncio.ensure_future(request.app[SERVICE].invalidate(change))
        done, _ = await asyncio.wait({task}, timeout=INLINE_WAIT)
        if task in done:
            try:
                task.result()
            except StorageError as exc:  # 503: GitLab delivers again later
                raise ServiceUnavailable(5, detail=f"invalidation: {exc}") from None
        else:
            receiver.background.add(task)
            task.add_done_callback(_background_done(receiver))
    if idempotency_key:
        receiver.recent.add(idempotency_key)
    log.info(
        "webhook",
        gitlab_event=request.headers.get("X-Gitlab-Event"),
        outcome="ignored" if change is None else f"invalidated {change.facts}",
        project_id=None if change is None else change.project_id,
    )
    return _reply(200, {"status": "ignored" if change is None else "ok"})


def _background_done(receiver: Receiver) -> Callable[[asyncio.Task[None]], None]:
    def done(task: asyncio.Task[None]) -> None:
        receiver.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook_invalidation_failed", error=repr(task.exception()))

    return done


def classify(event: str | None, payload: Any) -> Change | None:
    """The change an event signals; None for an event that cannot affect any metric.

    The kind comes from `object_kind`, or from `X-Gitlab-Event` when the payload lacks it; when
    both are given they must agree.
    """
    if not isinstance(payload, dict):
        raise BadPayload("payload must be a JSON object")
    kind = payload.get("object_kind")
    if kind is not None and (not isinstance(kind, str) or not _KIND.fullmatch(kind)):
        raise BadPayload("object_kind must be a lowercase name")
    if kind is None:
        if event is None or not _EVENT.fullmatch(event):
            raise BadPayload("object_kind missing and X-Gitlab-Event not a GitLab event")
        if event not in KIND_OF_EVENT:
            return None  # a valid delivery of an event the metrics do not use (push, ...)
        kind = KIND_OF_EVENT[event]
    if kind not in EVENT_OF_KIND:
        # Push, merge request, pipeline...: valid deliveries the metrics do not use. Answered
        # 2xx "ignored": GitLab disables a hook that keeps failing, and with it the events
        # that matter. Only a header claiming an event we use contradicts it.
        if event in KIND_OF_EVENT:
            raise BadPayload("X-Gitlab-Event does not match object_kind")
        return None
    if event is not None and event not in EVENT_OF_KIND[kind]:
        raise BadPayload("X-Gitlab-Event does not match object_kind")
    project_id, path = _project(payload)
    if kind == "deployment":
        status = payload.get("status")
        if status is not None and not isinstance(status, str):
            raise BadPayload("status must be a string")
        # Only a success adds a deployment the metrics count; start, failure and cancel do not.
        if status not in (None, "success"):
            return None
        return Change("deployments", project_id, path)
    if not _maybe_incident(kind, payload):
        return None
    return Change("incidents", project_id, path)


def membership_event(payload: Any) -> bool:
    """A system hook that can change who may read a project or group: a member added, removed
    or given another role, a user deleted or renamed, a project or group moved, renamed or
    deleted. (GitLab sends none for a group transfer or a group share: `membership_ttl`.)"""
    return isinstance(payload, dict) and payload.get("event_name") in MEMBERSHIP_EVENTS


def _project(payload: dict[str, Any]) -> tuple[int, str | None]:
    project = payload.get("project")
    if not isinstance(project, dict):
        raise BadPayload("project object missing")
    project_id = project.get("id")
    if type(project_id) is not int or project_id <= 0:
        raise BadPayload("project.id must be a positive integer")
    path = project.get("path_with_namespace")
    if path is not None and (not isinstance(path, str) or not path.strip("/")):
        raise BadPayload("project.path_with_namespace must be a non-empty string")
    return project_id, path


def _maybe_incident(kind: str, payload: dict[str, Any]) -> bool:
    """Is, or was before this change, the issue an incident?

    A work item whose payload names no type at all (seen on some GitLab versions) counts as a
    possible incident: dropping incident days needlessly costs one re-read, missing one a wrong
    answer until the TTL ends.
    """
    attributes = payload.get("object_attributes")
    if not isinstance(attributes, dict):
        raise BadPayload("object_attributes object missing")
    changes = payload.get("changes")
    changes = changes if isinstance(changes, dict) else {}
    seen: list[object] = [attributes.get("type"), attributes.get("issue_type")]
    for field in ("type", "issue_type"):
        change = changes.get(field)
        if isinstance(change, dict):
            seen += [change.get("previous"), change.get("current")]
    if any(isinstance(value, str) and value.lower() == "incident" for value in seen):
        return True
    return kind == "work_item" and all(value is None for value in seen)
