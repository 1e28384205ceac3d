"""DORA values for Prometheus: the configured containers' metrics as gauges on /metrics.

`export = "project:PATH,group:PATH,..."` names the containers; `export_token` is the credential
every refresh uses (never logged, never a label). A background task asks the service, through
the same permission check, answer cache and facts cache as any caller, for each container's
`interval=all` value of each metric over [today − export_window_days, today], production tier,
and keeps the numbers in memory; a scrape only reads that memory, so it never waits on GitLab.

Bounded: one container at a time, each refresh of a container within `request_deadline`,
then a pause of `export_interval`. A container that fails keeps its last values, is logged
once when it starts failing (and once when it recovers), and never stops the others. A null
value (no data) leaves that sample out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta

import structlog
from aiohttp import web
from multidict import MultiDict
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proxy.credentials import Credential
from proxy.errors import ProxyError
from proxy.query import METRICS
from proxy.service import DoraRequest, DoraService
from proxy.settings import Settings
from proxy.telemetry.prometheus import TELEMETRY

log = structlog.get_logger("proxy.dora_export")

GAUGES = {
    "deployment_frequency": (
        "gitlab_dora_deployment_frequency",
        "Deployments per day over the export window (GitLab's interval=all value).",
    ),
    "lead_time_for_changes": (
        "gitlab_dora_lead_time_for_changes_seconds",
        "Median lead time for changes over the export window, in seconds.",
    ),
    "time_to_restore_service": (
        "gitlab_dora_time_to_restore_service_seconds",
        "Median time to restore service over the export window, in seconds.",
    ),
    "change_failure_rate": (
        "gitlab_dora_change_failure_rate",
        "Incidents per deployment over the export window (0 to 1 and beyond).",
    ),
}
REFRESHED = (
    "gitlab_dora_export_refreshed_timestamp_seconds",
    "Unix time of the last successful refresh of a container's exported values.",
)
LABELS = ("kind", "target")


@dataclass(frozen=True, slots=True)
class Target:
    kind: str  # "project" or "group"
    path: str  # id or full path, as configured (the `target` label)


def parse_targets(text: str | None) -> list[Target]:
    """`project:a/b,group:c` → targets, in order, without repeats (settings checked the form)."""
    targets: list[Target] = []
    for item in (text or "").split(","):
        kind, _, path = item.strip().partition(":")
        target = Target(kind, path.strip())
        if kind in ("project", "group") and target.path and target not in targets:
            targets.append(target)
    return targets


class DoraExport(Collector):
    """The exported values (in memory) and the task that refreshes them."""

    def __init__(
        self,
        service: DoraService,
        targets: list[Target],
        token: str | None,
        *,
        window_days: int,
        interval: float,
        deadline: float,
    ) -> None:
        self.service = service
        self.targets = targets
        self._credential = Credential(token, "private") if token else None
        self.window_days = window_days
        self.interval = interval
        self.deadline = deadline
        self.values: dict[Target, dict[str, float | None]] = {}
        self.refreshed: dict[Target, float] = {}
        self.failing: set[Target] = set()
        self.rounds = 0  # completed refresh rounds (for tests and logs)

    # ---- Prometheus ---------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        values = dict(self.values)
        for metric, (name, doc) in GAUGES.items():
            family = GaugeMetricFamily(name, doc, labels=LABELS)
            for target, by_metric in values.items():
                value = by_metric.get(metric)
                if value is not None:
                    family.add_metric([target.kind, target.path], value)
            yield family
        family = GaugeMetricFamily(*REFRESHED, labels=LABELS)
        for target, when in dict(self.refreshed).items():
            family.add_metric([target.kind, target.path], when)
        yield family

    def describe(self) -> Iterator[Metric]:
        for name, doc in (*GAUGES.values(), REFRESHED):
            yield GaugeMetricFamily(name, doc, labels=LABELS)

    # ---- refreshing ---------------------------------------------------------------------------
    async def refresh_target(self, target: Target) -> dict[str, float | None]:
        """The four interval=all values of one container, through the service (and its cache)."""
        today = self.service.today()
        params = MultiDict(
            {
                "interval": "all",
                "start_date": (today - timedelta(days=self.window_days)).isoformat(),
                "end_date": today.isoformat(),
                "environment_tiers[]": "production",
            }
        )
        values: dict[str, float | None] = {}
        for metric in METRICS:
            params["metric"] = metric
            answer = await self.service.answer(
                DoraRequest(target.kind, target.path, params.copy()), self._credential
            )
            value = json.loads(answer.body)[0]["value"]
            values[metric] = float(value) if value is not None else None
        return values

    async def refresh(self) -> None:
        """One round over every target; a failure is logged once per failing spell."""
        for target in self.targets:
            try:
                async with asyncio.timeout(self.deadline):
                    values = await self.refresh_target(target)
            except (ProxyError, TimeoutError) as exc:
                self._failed(target, _describe(exc))
                continue
            except Exception as exc:  # never let one container stop the export
                self._failed(target, type(exc).__name__)
                continue
            self.values[target] = values
            self.refreshed[target] = time.time()
            if target in self.failing:
                self.failing.discard(target)
                log.info("dora_export_recovered", kind=target.kind, target=target.path)
        self.rounds += 1

    def _failed(self, target: Target, reason: str) -> None:
        if target not in self.failing:
            self.failing.add(target)
            log.warning("dora_export_failed", kind=target.kind, target=target.path, reason=reason)

    async def run(self) -> None:
        """Refresh now, then every `interval` seconds, until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(self.interval)


def _describe(exc: BaseException) -> str:
    """Status and GitLab's message (never a credential: error bodies carry none)."""
    if isinstance(exc, ProxyError):
        message = exc.body.get("message") or exc.body.get("error") or ""
        return f"{exc.status} {message}".strip()
    return "deadline exceeded"


EXPORT = web.AppKey("dora_export", DoraExport)


def setup(app: web.Application, settings: Settings, service_key: web.AppKey) -> None:
    """When `export` is set: start the refresher with the app, stop it on shutdown."""
    targets = parse_targets(settings.export)
    if not targets:
        return

    async def context(app: web.Application) -> AsyncIterator[None]:
        export = DoraExport(
            app[service_key],
            targets,
            settings.export_token,
            window_days=settings.export_window_days,
            interval=settings.export_interval,
            deadline=settings.request_deadline,
        )
        app[EXPORT] = export
        registry = app[TELEMETRY].registry
        registry.register(export)
        task = asyncio.create_task(export.run(), name="dora-export")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            registry.unregister(export)

    app.cleanup_ctx.append(context)
