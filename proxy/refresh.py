"""Answers served lately, computed again in the background before anyone waits for them.

After a deployment or incident webhook the answers that include its project are invalidated;
without this the next request of each (a wall display, a CI job) would recompute it, and fetch
the project's fresh facts, while its caller waits. Instead the webhook's change starts one
background pass over the answers asked in the last `window` seconds that the change touches,
each asked again exactly as it was asked (same raw parameters, so default dates still mean
"ending today"), with the credential of its latest caller: the permission check runs as for
any request, and the next request finds a cache hit.

The same list renews an answer before its safety lifetime ends (`webhook_ttl`: the net for a
missed delivery, an edited tier): the facts of recent days of its projects are dropped and read
again, as a webhook would have them, and the answers are computed again (`due`), so the hourly
expiry does not land on a caller either.

The credentials are kept in process memory only, for `window` seconds after their last request
(SECURITY.md). At most `limit` answers are remembered (the least recently asked go first) and
at most `MAX_PASSES` passes run at once; past that a change is left to the next request.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass

from proxy.credentials import Credential
from proxy.facts import ContainerInfo

MAX_PASSES = 4
# Set inside a background pass: its requests neither extend an answer's window nor replace
# the credential of the caller who asked it.
IN_PASS: ContextVar[bool] = ContextVar("dora_proxy_in_refresh_pass", default=False)


@dataclass(slots=True)
class HotAnswer:
    container: str  # "project" or "group"
    id_or_path: str  # as the caller asked
    params: tuple[tuple[str, str], ...]  # the raw query, in order
    info: ContainerInfo  # the project or group it resolved to
    credential: Credential
    last_asked: float
    fresh_until: float = math.inf  # when its cached copy ends (set once it is served)

    def served(self, max_age: float, now: float) -> None:
        self.fresh_until = now + max_age


class HotAnswers:
    def __init__(
        self, window: float, limit: int = 1000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self.limit = limit
        self._clock = clock
        self._answers: OrderedDict[tuple, HotAnswer] = OrderedDict()

    def now(self) -> float:
        return self._clock()

    def note(
        self,
        container: str,
        id_or_path: str,
        params: Iterable[tuple[str, str]],
        info: ContainerInfo,
        credential: Credential | None,
    ) -> HotAnswer | None:
        """An answer is being served to `credential` (anonymous callers are not remembered:
        their answers are public ones, asked again by the next caller at no cost to anyone)."""
        if credential is None or self.window <= 0:
            return None
        params = tuple(params)
        key = (container, info.id, params)
        previous = self._answers.get(key)
        if IN_PASS.get():  # asked again by a background pass: not by anyone
            return previous
        self._answers.pop(key, None)
        hot = self._answers[key] = HotAnswer(
            container, id_or_path, params, info, credential, self._clock()
        )
        if previous is not None:
            hot.fresh_until = previous.fresh_until
        while len(self._answers) > self.limit:
            self._answers.popitem(last=False)
        return hot

    def forget(self, credential: Credential) -> int:
        """Drop every answer remembered with `credential` (refused upstream); how many."""
        same = (credential.kind, credential.token)
        keys = [
            key
            for key, hot in self._answers.items()
            if (hot.credential.kind, hot.credential.token) == same
        ]
        for key in keys:
            del self._answers[key]
        return len(keys)

    def drop(self, hot: HotAnswer) -> None:
        """Forget one answer (its caller was refused it)."""
        key = (hot.container, hot.info.id, hot.params)
        if self._answers.get(key) is hot:
            del self._answers[key]

    def _live(self) -> list[HotAnswer]:
        now = self._clock()
        for key in [k for k, hot in self._answers.items() if now - hot.last_asked > self.window]:
            del self._answers[key]
        return list(self._answers.values())

    def touched_by(self, project_id: int, groups: Iterable[str]) -> list[HotAnswer]:
        """The answers asked within `window` that include project `project_id` (its own, and
        those of `groups`, its ancestors); older ones are forgotten on the way."""
        groups = set(groups)
        return [
            hot
            for hot in self._live()
            if (hot.container == "project" and hot.info.id == project_id)
            or (hot.container == "group" and hot.info.full_path.strip("/") in groups)
        ]

    def due(self, within: float) -> list[HotAnswer]:
        """The answers asked within `window` whose cached copy ends in the next `within`
        seconds."""
        limit = self._clock() + within
        return [hot for hot in self._live() if hot.fresh_until <= limit]
