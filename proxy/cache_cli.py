"""`dora-proxy cache warm|stats|clear`: operating the cache from a shell or a nightly job."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from typing import TextIO

from proxy.credentials import Credential
from proxy.errors import ProxyError
from proxy.query import INTERVALS, METRICS
from proxy.service import DoraRequest
from proxy.settings import ConfigError, Settings

CACHE_COMMAND_TIMEOUT = 30.0  # seconds `cache stats` / `cache clear` wait for the backend


def run(args: argparse.Namespace, settings: Settings) -> int:
    from proxy.cache.base import StorageError

    try:
        if args.cache_command == "stats":
            return asyncio.run(asyncio.wait_for(_stats(settings), CACHE_COMMAND_TIMEOUT))
        if args.cache_command == "clear":
            return asyncio.run(asyncio.wait_for(_clear(settings), CACHE_COMMAND_TIMEOUT))
    except (StorageError, OSError, TimeoutError) as exc:
        # A broken cache is exactly when these are run: one line and a non-zero status.
        reason = str(exc) or f"no answer within {CACHE_COMMAND_TIMEOUT:g} s"
        print(f"dora-proxy: cache error: {reason}".splitlines()[0], file=sys.stderr)
        return 1
    token = os.environ.get(args.token_env, "")
    if not token:
        raise ConfigError(f"{args.token_env}: required by cache warm (a token that can read them)")
    if not (args.project or args.group):
        raise ConfigError("cache warm: name at least one --project or --group")
    targets = [("project", p) for p in args.project] + [("group", g) for g in args.group]
    return asyncio.run(warm(settings, Credential(token, "private"), targets))


async def _stats(settings: Settings) -> int:
    from proxy.app import open_settings_storage

    storage = open_settings_storage(settings)
    try:
        print(json.dumps(await storage.stats(), sort_keys=True))
    finally:
        await storage.close()
    return 0


async def _clear(settings: Settings) -> int:
    from proxy.app import open_settings_storage

    storage = open_settings_storage(settings)
    try:
        removed = await storage.clear()
        print(json.dumps({"removed": removed}))
    finally:
        await storage.close()
    return 0


@dataclass
class Progress:
    """A one-line progress bar on a terminal; plain lines otherwise (nightly job logs)."""

    total: int
    # Looked up per Progress, not at import: sys.stderr may have been replaced since.
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    done: int = 0

    def step(self, label: str, outcome: str) -> None:
        self.done += 1
        if self.stream.isatty():
            width = 30
            filled = width * self.done // max(self.total, 1)
            bar = "#" * filled + "-" * (width - filled)
            end = "\n" if self.done == self.total else ""
            self.stream.write(f"\r[{bar}] {self.done}/{self.total} {label[:40]:<40} {outcome}{end}")
        else:
            self.stream.write(f"{self.done}/{self.total} {label} {outcome}\n")
        self.stream.flush()


async def warm(settings: Settings, credential: Credential, targets: list[tuple[str, str]]) -> int:
    """Compute every metric × interval for the default window of each target."""
    from proxy.app import build_service

    service = build_service(settings, batch=True)
    failures = 0
    progress = Progress(total=len(targets) * len(METRICS) * len(INTERVALS))
    try:
        for container, ref in targets:
            for metric in METRICS:
                for interval in INTERVALS:
                    request = DoraRequest(container, ref, {"metric": metric, "interval": interval})
                    label = f"{container} {ref} {metric} {interval}"
                    try:
                        answer = await service.answer(request, credential)
                        progress.step(label, answer.cache)
                    except ProxyError as exc:
                        failures += 1
                        progress.step(label, f"error {exc.status} {json.dumps(exc.body)}")
    finally:
        await service.close()
    return 1 if failures else 0
