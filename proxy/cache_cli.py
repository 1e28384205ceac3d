"""`dora-proxy cache warm|stats|clear`: operating the cache from a shell or a nightly job.

`warm` draws a progress bar (tqdm) on a terminal and writes one plain line per item otherwise
(job logs); `clear` asks before emptying a cache on a terminal and refuses without one unless
`--yes` is given (the cache may be shared by every replica); `stats` changes nothing on disk: a
disk cache that does not exist yet is reported empty, not created.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from proxy.credentials import Credential
from proxy.errors import ProxyError
from proxy.query import INTERVALS, METRICS
from proxy.service import DoraRequest
from proxy.settings import ConfigError, Settings


def run(args: argparse.Namespace, settings: Settings) -> int:
    from proxy.cache.base import StorageError

    try:
        if args.cache_command == "stats":
            return asyncio.run(_stats(settings))
        if args.cache_command == "clear":
            return asyncio.run(_clear(settings, yes=args.yes))
    except (StorageError, OSError) as exc:
        # A broken cache is exactly when these are run: one line and a non-zero status (each
        # backend bounds its own waits: Redis's socket timeout, SQLite's busy timeout).
        reason = str(exc) or type(exc).__name__
        print(f"dora-proxy: cache error: {reason}".splitlines()[0], file=sys.stderr)
        return 1
    token = os.environ.get(args.token_env, "")
    if not token:
        raise ConfigError(f"{args.token_env}: required by cache warm (a token that can read them)")
    if not (args.project or args.group):
        raise ConfigError("cache warm: name at least one --project or --group")
    targets = [("project", p) for p in args.project] + [("group", g) for g in args.group]
    return asyncio.run(warm(settings, Credential(token, "private"), targets))


def _missing_disk_cache(settings: Settings) -> Path | None:
    """The disk cache's directory when it has no database yet (opening it would create one)."""
    if settings.cache_url:
        return None
    directory = Path(settings.cache_dir)
    from diskcache.core import DBNAME

    return None if (directory / DBNAME).exists() else directory


async def _stats(settings: Settings) -> int:
    from proxy.app import open_settings_storage

    if _missing_disk_cache(settings) is not None:
        stats: dict[str, Any] = {"backend": "disk", "entries": 0, "bytes": 0, "exists": False}
        stats["size_limit"] = settings.cache_size_limit
        print(json.dumps(stats, sort_keys=True))
        return 0
    storage = open_settings_storage(settings)
    try:
        print(json.dumps(await storage.stats(), sort_keys=True))
    finally:
        await storage.close()
    return 0


def _confirm(question: str) -> bool:
    """Ask on the terminal; anything but y/yes (or end of input) is a no."""
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


async def _clear(settings: Settings, *, yes: bool = False) -> int:
    from proxy.app import open_settings_storage

    missing = _missing_disk_cache(settings)
    if missing is not None:
        print(json.dumps({"removed": 0, "exists": False}))
        return 0
    where = "Redis (cache_url)" if settings.cache_url else f"disk cache {settings.cache_dir}"
    if not yes and not sys.stdin.isatty():
        print(
            f"dora-proxy: refusing to empty the {where} without confirmation: no terminal "
            "to ask on; pass --yes to clear it anyway",
            file=sys.stderr,
        )
        return 1
    storage = open_settings_storage(settings)
    try:
        if not yes:
            entries = (await storage.stats()).get("entries", "?")
            if not _confirm(f"Empty the {where} ({entries} entries, shared by every replica)?"):
                print("Nothing removed.", file=sys.stderr)
                return 1
        removed = await storage.clear()
        print(json.dumps({"removed": removed}))
    finally:
        await storage.close()
    return 0


@dataclass
class Progress:
    """A tqdm progress bar on a terminal; one plain line per item otherwise (nightly job logs)."""

    total: int
    # Looked up per Progress, not at import: sys.stderr may have been replaced since.
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    done: int = 0
    _bar: Any = None

    def __post_init__(self) -> None:
        if self.stream.isatty():
            # A terminal that reports no size (a bare pty) would get an empty bar: assume 80.
            sized = _columns(self.stream) > 0
            self._bar = tqdm(
                total=self.total,
                file=self.stream,
                unit="answer",
                dynamic_ncols=sized,
                ncols=None if sized else 80,
            )

    def step(self, label: str, outcome: str) -> None:
        self.done += 1
        if self._bar is not None:
            if outcome.startswith("error"):
                self._bar.write(f"{label} {outcome}", file=self.stream)
            self._bar.set_postfix_str(f"{label[:40]} {outcome[:20]}", refresh=False)
            self._bar.update(1)
            if self.done >= self.total:
                self.close()
        else:
            self.stream.write(f"{self.done}/{self.total} {label} {outcome}\n")
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError):
        return 0


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
        progress.close()
        await service.close()
    return 1 if failures else 0
