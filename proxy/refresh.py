"""Answers served lately, so a webhook's change can be computed again in the background.

After a deployment or incident webhook the answers that include its project are invalidated;
without this the next request of each (a wall display, a CI job) would recompute it, and fetch
the project's fresh facts, while its caller waits. Instead the webhook's change starts one
background pass over the answers asked in the last `window` seconds that the change touches,
each asked again exactly as it was asked (same raw parameters, so default dates still mean
"ending today"), with the credential of its latest caller: the permission check runs as for
any request, and the next request finds a cache hit.

The credentials are kept in process memory only, for `window` seconds after their last request
(SECURITY.md). At most `limit` answers are remembered (the least recently asked go first) and
at most `MAX_PASSES` passes run at once; past that a change is left to the next request.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from proxy.credentials import Credential

MAX_PASSES = 4


@dataclass(slots=True)
class HotAnswer:
    container: str  # "project" or "group"
    id_or_path: str  # as the caller asked
    params: tuple[tuple[str, str], ...]  # the raw query, in order
    project_id: int | None  # the project's id (project answers)
    group_path: str | None  # the group's full path (group answers)
    credential: Credential
    last_asked: float


class HotAnswers:
    def __init__(
        self, window: float, limit: int = 1000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self.limit = limit
        self._clock = clock
        self._answers: OrderedDict[tuple, HotAnswer] = OrderedDict()

    def note(
        self,
        container: str,
        id_or_path: str,
        params: Iterable[tuple[str, str]],
        resolved: tuple[int, str],
        credential: Credential | None,
    ) -> None:
        """An answer was served to `credential` (anonymous callers are not remembered: their
        answers are public ones, asked again by the next caller at no cost to anyone)."""
        if credential is None or self.window <= 0:
            return
        container_id, full_path = resolved
        params = tuple(params)
        key = (container, container_id, params)
        self._answers.pop(key, None)
        self._answers[key] = HotAnswer(
            container,
            id_or_path,
            params,
            container_id if container == "project" else None,
            full_path.strip("/") if container == "group" else None,
            credential,
            self._clock(),
        )
        while len(self._answers) > self.limit:
            self._answers.popitem(last=False)

    def touched_by(self, project_id: int, groups: Iterable[str]) -> list[HotAnswer]:
        """The answers asked within `window` that include project `project_id` (its own, and
        those of `groups`, its ancestors); older ones are forgotten on the way."""
        now = self._clock()
        for key in [k for k, hot in self._answers.items() if now - hot.last_asked > self.window]:
            del self._answers[key]
        groups = set(groups)
        return [
            hot
            for hot in self._answers.values()
            if hot.project_id == project_id or hot.group_path in groups
        ]

    def __len__(self) -> int:
        return len(self._answers)
