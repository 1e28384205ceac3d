"""The only door to the upstream GitLab: python-gitlab, run off the event loop.

python-gitlab is synchronous and its own retries sleep in the calling thread, so every HTTP call
runs in one bounded ThreadPoolExecutor (the global bound on in-flight upstream calls), with
python-gitlab's retries switched off; retries, backoff and rate-limit waits happen here with
`asyncio.sleep`, so neither the loop nor a worker is held while waiting. Pagination is followed
page by page (each page is one retried call) through `rel="next"`, never trusting totals.

Each proxy request builds its own `gitlab.Gitlab` client with the caller's credential (no shared
session, cookies refused), so a caller only ever sees what GitLab shows that credential.
Everything returned is plain data (`facts` dataclasses or small info records); every failure
becomes a `ProxyError` or `UpstreamStatus`. No message ever carries a credential.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import email.utils
import functools
import http.cookiejar
import json
import math
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

import gitlab
import gitlab.exceptions
import requests
import requests.adapters
import structlog

from proxy import USER_AGENT
from proxy.errors import BadGateway, GatewayTimeout, ServiceUnavailable
from proxy.facts import Deployment, Environment, Incident, MergeRequest, parse_time

PER_PAGE = 100
FORBIDDEN_MEANS_EMPTY = frozenset(
    {"environments", "deployments", "deployment_mrs", "project_issues", "group_issues"}
)
log = structlog.get_logger("proxy.upstream")


class Credential:
    """A caller credential in the header form it arrived in; never logged, never stored.

    Treat as immutable. A plain slotted class: every request makes one (a frozen dataclass
    costs five times more), and unlike a tuple it cannot be serialised field by field into a
    log line: anything that renders it gets the redacted `repr`."""

    __slots__ = ("kind", "token")

    def __init__(self, token: str, kind: str) -> None:
        self.token = token
        self.kind = kind  # "private" (PRIVATE-TOKEN) or "bearer" (Authorization: Bearer)

    def __repr__(self) -> str:  # keeps tokens out of tracebacks and debug output
        return f"Credential(kind={self.kind!r}, token=<redacted>)"


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: int
    is_admin: bool
    is_auditor: bool


@dataclass(frozen=True, slots=True)
class ContainerInfo:
    """A project or group as looked up upstream: its numeric id and full path."""

    id: int
    full_path: str


@dataclass(frozen=True, slots=True)
class Page:
    """One upstream answer: its JSON, parsed once in the worker thread, and its response."""

    data: Any
    response: requests.Response


class UpstreamStatus(Exception):
    """The upstream answered a definite HTTP error (4xx) the caller may need to see."""

    def __init__(self, status: int, body: Any, headers: dict[str, str], call: str) -> None:
        super().__init__(f"{call} answered {status}")
        self.status = status
        self.body = body
        self.headers = headers
        self.call = call


class _Retryable(Exception):
    def __init__(self, reason: str, *, timeout: bool = False, wait: float | None = None) -> None:
        super().__init__(reason)
        self.timeout = timeout
        self.wait = wait


class _RateLimited(Exception):
    def __init__(self, wait: float | None, remaining: str | None = None) -> None:
        super().__init__("rate limited")
        self.wait = wait
        self.remaining = remaining


@dataclass
class CallStats:
    """Upstream calls made on behalf of one proxy request (read by the request log).

    `in_flight` names the calls started and not yet answered, so a request that runs out of
    its deadline can say which upstream call it was waiting for. `rate_limit_waited` is the
    time already spent waiting out 429s: the cap on waiting applies per proxy request.
    """

    calls: Counter[str] = field(default_factory=Counter)
    in_flight: list[str] = field(default_factory=list)
    rate_limit_waited: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.calls.values())


CURRENT_STATS: contextvars.ContextVar[CallStats | None] = contextvars.ContextVar(
    "upstream_call_stats", default=None
)

# kind, status (int or "error"), seconds — for Prometheus metrics and tests.
CallObserver = Callable[[str, str, float], None]


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Refuse every cookie: a `_gitlab_session` cookie would be a credential."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


def _retry_after_seconds(headers: Any) -> float | None:
    """Seconds to wait from `Retry-After` (seconds or HTTP date), else `RateLimit-Reset`.

    None when neither header gives a usable finite value: another proxy's garbage must not
    raise here (that would answer 500) nor produce an infinite wait.
    """
    value = (headers.get("Retry-After") or "").strip()
    if value:
        try:
            seconds = float(value)
        except ValueError:
            try:
                parsed = email.utils.parsedate_to_datetime(value)
                seconds = (parsed - datetime.now(UTC)).total_seconds()
            except (TypeError, ValueError, OverflowError):  # garbage, or a date without zone
                seconds = math.nan
        if math.isfinite(seconds):
            return max(0.0, seconds)
    reset = (headers.get("RateLimit-Reset") or "").strip()
    if reset:
        try:
            seconds = float(reset) - time.time()
        except ValueError:
            return None
        if math.isfinite(seconds):
            return max(0.0, seconds)
    return None


class Upstream:
    """Bounded, retrying access to one GitLab instance."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        concurrency: int = 8,
        max_retries: int = 3,
        rate_limit_max_wait: float = 5.0,
        observer: CallObserver | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._origin = urlsplit(self.base_url)[:2]
        self.timeout = timeout
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.rate_limit_max_wait = rate_limit_max_wait
        self.observer = observer
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="upstream")
        self._proxies = requests.utils.get_environ_proxies(self.base_url)
        self._ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        # python-gitlab's errors drop the response headers (Retry-After, WWW-Authenticate):
        # a session hook remembers each worker thread's last response.
        self._last_response = threading.local()

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ---- clients ------------------------------------------------------------------------------
    def client(self, credential: Credential | None) -> gitlab.Gitlab:
        """A fresh python-gitlab client for one proxy request and one credential."""
        kwargs: dict[str, Any] = {}
        if credential is not None:
            key = "private_token" if credential.kind == "private" else "oauth_token"
            kwargs[key] = credential.token
        gl = gitlab.Gitlab(
            self.base_url,
            timeout=self.timeout,
            user_agent=USER_AGENT,
            retry_transient_errors=False,
            **kwargs,
        )
        session = gl.session
        # requests re-reads proxy variables and ~/.netrc from the environment on every call
        # (a fifth of a call's CPU); read once at start-up instead.
        session.trust_env = False
        session.proxies.update(self._proxies)
        if self._ca_bundle:
            gl.ssl_verify = self._ca_bundle
        session.cookies.set_policy(_NoCookies())
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=1, pool_maxsize=self.concurrency, max_retries=0
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.hooks["response"].append(self._remember_response)
        return gl

    def _remember_response(self, response: requests.Response, **_: Any) -> None:
        """Keep the last response of this thread; refuse redirects to another origin."""
        self._last_response.value = response
        if response.is_redirect:
            location = response.headers.get("Location", "")
            target = urlsplit(requests.compat.urljoin(response.url, location))
            if target[:2] != self._origin:
                raise requests.exceptions.InvalidURL("upstream redirected to another origin")

    # ---- one HTTP call, retried ---------------------------------------------------------------
    async def _get(
        self, gl: gitlab.Gitlab, kind: str, path: str, query: dict[str, Any] | None = None
    ) -> Page:
        """GET one page, parsed once in the worker thread; raises ProxyError or UpstreamStatus.

        5xx answers, dropped connections, timeouts and malformed JSON are retried up to
        `max_retries` times with exponential backoff (a GET is safe to repeat), then answer 502
        (504 for timeouts). A 429 is waited out (Retry-After, else RateLimit-Reset, else backoff)
        while the proxy request's total rate-limit wait stays within `rate_limit_max_wait`;
        beyond that the caller gets 503 with Retry-After at once. Every wait is an
        `asyncio.sleep`: neither the event loop nor a worker thread is held.
        """
        call = _call_name(path)
        loop = asyncio.get_running_loop()
        stats = CURRENT_STATS.get()
        waited = 0.0  # this call's rate-limit waits, for calls made outside a proxy request
        attempt = 0
        while True:
            if stats is not None:
                stats.calls[kind] += 1
                stats.in_flight.append(call)
            started = time.monotonic()
            cancelled = False
            try:
                return await loop.run_in_executor(
                    self._executor,
                    functools.partial(self._get_sync, gl, kind, call, path, query, started),
                )
            except asyncio.CancelledError:
                cancelled = True  # the request's deadline names the call it was waiting for
                raise
            except _RateLimited as limited:
                wait = limited.wait if limited.wait is not None else _backoff(attempt, 0.5)
                spent = stats.rate_limit_waited if stats is not None else waited
                if spent + wait > self.rate_limit_max_wait or attempt >= self.max_retries:
                    raise ServiceUnavailable(
                        math.ceil(wait),
                        detail=f"{call}: rate limited upstream (would wait {wait:.1f} s more)",
                    ) from None
                log.info(
                    "upstream_rate_limited",
                    call=call,
                    wait_s=round(wait, 3),
                    ratelimit_remaining=limited.remaining,
                )
                waited += wait
                if stats is not None:
                    stats.rate_limit_waited += wait
            except _Retryable as failure:
                if attempt >= self.max_retries:
                    if failure.timeout:
                        raise GatewayTimeout(detail=f"{call}: {failure}") from None
                    raise BadGateway(detail=f"{call}: {failure}") from None
                wait = _backoff(attempt, 0.1)
                log.info("upstream_retry", call=call, reason=str(failure), attempt=attempt + 1)
            finally:
                if stats is not None and not cancelled:
                    stats.in_flight.remove(call)
            attempt += 1
            await asyncio.sleep(wait)

    def _get_sync(
        self,
        gl: gitlab.Gitlab,
        kind: str,
        call: str,
        path: str,
        query: dict[str, Any] | None,
        started: float,
    ) -> Page:
        status: str = "error"
        try:
            try:
                response = gl.http_request(
                    "get",
                    path,
                    query_data=query,
                    obey_rate_limit=False,
                    retry_transient_errors=False,
                    max_retries=0,
                )
            except (
                gitlab.exceptions.GitlabHttpError,
                gitlab.exceptions.GitlabAuthenticationError,
            ) as exc:
                status = str(exc.response_code)
                code = exc.response_code or 0
                last = getattr(self._last_response, "value", None)
                headers = last.headers if last is not None else {}
                if code == 429:
                    raise _RateLimited(
                        _retry_after_seconds(headers), headers.get("RateLimit-Remaining")
                    ) from None
                if code >= 500:
                    raise _Retryable(f"upstream answered {code}") from None
                body: Any
                try:
                    body = json.loads(exc.response_body or b"")
                except ValueError:
                    body = {"message": str(exc.error_message)}
                kept = {name: headers[name] for name in ("WWW-Authenticate",) if name in headers}
                raise UpstreamStatus(code, body, kept, call) from None
            except requests.exceptions.Timeout:
                status = "timeout"
                raise _Retryable("timed out", timeout=True) from None
            except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError):
                status = "connection_error"
                raise _Retryable("connection failed") from None
            except (requests.exceptions.RequestException, gitlab.exceptions.GitlabError) as exc:
                # Redirect off the origin, invalid URL, python-gitlab's own refusals.
                raise BadGateway(detail=f"{call}: {type(exc).__name__}") from None
            except (UnicodeError, ValueError) as exc:
                # http.client refuses what it cannot put on the wire; never a 500.
                raise BadGateway(
                    detail=f"{call}: request not sendable ({type(exc).__name__})"
                ) from None
            status = str(response.status_code)
            try:
                data = response.json()
            except ValueError:
                status = "malformed"
                raise _Retryable("malformed JSON") from None
            return Page(data, response)
        finally:
            if self.observer is not None:
                self.observer(kind, status, time.monotonic() - started)

    async def _list(
        self, gl: gitlab.Gitlab, kind: str, path: str, query: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """Every item of a paginated list, following rel=next; de-duplicated by id."""
        items: dict[Any, dict[str, Any]] = {}
        url: str | None = path
        params: dict[str, Any] | None = {**query, "per_page": PER_PAGE}
        while url is not None:
            try:
                fetched = await self._get(gl, kind, url, params)
            except UpstreamStatus as exc:
                if exc.status == 403 and kind in FORBIDDEN_MEANS_EMPTY:
                    # A disabled feature (issues, environments): GitLab's DORA would find no
                    # rows there either. Counted as empty, and logged.
                    log.warning("upstream_forbidden_as_empty", call=exc.call, kind=kind)
                    return []
                raise BadGateway(detail=f"{exc.call}: upstream answered {exc.status}") from None
            page = fetched.data
            if not isinstance(page, list):
                raise BadGateway(detail=f"GET {path}: expected a list")
            for item in page:
                if not isinstance(item, dict) or not isinstance(item.get("id"), int | str):
                    raise BadGateway(detail=f"GET {path}: malformed item")
                items.setdefault(item["id"], item)
            url = self._next_page(fetched.response)
            params = None  # the next link carries the query
        return list(items.values())

    def _next_page(self, response: requests.Response) -> str | None:
        next_url = response.links.get("next", {}).get("url")
        if next_url:
            if urlsplit(next_url)[:2] != self._origin:
                raise BadGateway(detail="pagination link leaves the upstream origin")
            return next_url
        next_page = response.headers.get("X-Next-Page")
        if next_page:
            parts = urlsplit(response.url)
            query = "&".join(p for p in parts.query.split("&") if not p.startswith("page="))
            return f"{parts.scheme}://{parts.netloc}{parts.path}?{query}&page={next_page}"
        return None

    # ---- the eleven endpoints -----------------------------------------------------------------
    async def fetch_user(self, gl: gitlab.Gitlab) -> UserInfo:
        data = (await self._get(gl, "user", "/user")).data
        with _answer_shape("GET /user"):
            return UserInfo(
                id=int(data["id"]),
                is_admin=data.get("is_admin") is True,
                is_auditor=data.get("is_auditor") is True,
            )

    async def fetch_project(self, gl: gitlab.Gitlab, id_or_path: str) -> ContainerInfo:
        path = f"/projects/{_encode(id_or_path)}"
        data = (await self._get(gl, "project", path)).data
        with _answer_shape(f"GET {path}"):
            return ContainerInfo(id=int(data["id"]), full_path=str(data["path_with_namespace"]))

    async def fetch_group(self, gl: gitlab.Gitlab, id_or_path: str) -> ContainerInfo:
        path = f"/groups/{_encode(id_or_path)}"
        data = (await self._get(gl, "group", path, {"with_projects": "false"})).data
        with _answer_shape(f"GET {path}"):
            return ContainerInfo(id=int(data["id"]), full_path=str(data["full_path"]))

    async def fetch_access_level(
        self, gl: gitlab.Gitlab, container: str, container_id: int, user_id: int
    ) -> int:
        """Effective access level (inherited and shared included); 0 when not a member."""
        path = f"/{container}s/{container_id}/members/all/{user_id}"
        try:
            data = (await self._get(gl, f"{container}_members", path)).data
        except UpstreamStatus as exc:
            if exc.status == 404:
                return 0
            raise
        with _answer_shape(f"GET {path}"):
            state = data.get("membership_state", "active")
            if data.get("state", "active") != "active" or state != "active":
                return 0
            return int(data["access_level"] or 0)

    async def fetch_group_projects(
        self, gl: gitlab.Gitlab, group: ContainerInfo
    ) -> list[ContainerInfo]:
        items = await self._list(
            gl,
            "group_projects",
            f"/groups/{group.id}/projects",
            {
                "include_subgroups": "true",
                "with_shared": "false",
                "order_by": "id",
                "sort": "asc",
                "simple": "true",
            },
        )
        prefix = group.full_path + "/"
        projects = []
        with _answer_shape(f"GET /groups/{group.id}/projects"):
            for item in items:
                namespace = str((item.get("namespace") or {}).get("full_path", ""))
                if namespace == group.full_path or namespace.startswith(prefix):
                    projects.append(
                        ContainerInfo(int(item["id"]), str(item["path_with_namespace"]))
                    )
        return sorted(projects, key=lambda p: p.id)

    async def fetch_environments(
        self, gl: gitlab.Gitlab, project_id: int
    ) -> tuple[Environment, ...]:
        path = f"/projects/{project_id}/environments"
        items = await self._list(gl, "environments", path, {})
        with _answer_shape(f"GET {path}"):
            return tuple(
                Environment(
                    int(i["id"]),
                    str(i["name"]),
                    str(i.get("tier") or "other"),
                    str(i.get("state") or "available"),
                )
                for i in items
            )

    async def fetch_deployments(
        self,
        gl: gitlab.Gitlab,
        project_id: int,
        finished_after: datetime,
        finished_before: datetime,
    ) -> tuple[Deployment, ...]:
        """Successful deployments whose finish time lies in [finished_after, finished_before)."""
        items = await self._list(
            gl,
            "deployments",
            f"/projects/{project_id}/deployments",
            {
                "status": "success",
                "order_by": "finished_at",
                "sort": "asc",
                "finished_after": _utc(finished_after),
                "finished_before": _utc(finished_before),
            },
        )
        result = []
        with _answer_shape(f"GET /projects/{project_id}/deployments"):
            for item in items:
                if item.get("status") != "success" or not item.get("environment"):
                    continue
                deployable = item.get("deployable") or {}
                finished = deployable.get("finished_at") or item.get("updated_at")
                if not finished:
                    continue
                result.append(
                    Deployment(
                        int(item["id"]),
                        int(item["environment"]["id"]),
                        parse_time(finished),
                        _optional_int(item.get("iid")),
                        _optional_str(deployable.get("web_url")),
                    )
                )
        return tuple(result)

    async def fetch_deployment_merge_requests(
        self, gl: gitlab.Gitlab, project_id: int, deployment_id: int
    ) -> tuple[MergeRequest, ...]:
        path = f"/projects/{project_id}/deployments/{deployment_id}/merge_requests"
        items = await self._list(gl, "deployment_mrs", path, {})
        with _answer_shape(f"GET {path}"):
            return tuple(
                MergeRequest(
                    int(i["id"]),
                    parse_time(i["merged_at"]) if i.get("merged_at") else None,
                    _optional_int(i.get("iid")),
                    _optional_str(i.get("web_url")),
                )
                for i in items
            )

    async def fetch_project_incidents(
        self, gl: gitlab.Gitlab, project_id: int, updated_after: datetime
    ) -> tuple[Incident, ...]:
        """Incidents updated since `updated_after`: a superset of those created or closed since."""
        path = f"/projects/{project_id}/issues"
        items = await self._list(gl, "project_issues", path, _incident_query(updated_after))
        with _answer_shape(f"GET {path}"):
            return tuple(_incident(i) for i in items if _is_incident(i))

    async def fetch_group_incidents(
        self, gl: gitlab.Gitlab, group_id: int, updated_after: datetime
    ) -> dict[int, list[Incident]]:
        """Incidents of every project below the group (archived included), by project id."""
        query = {**_incident_query(updated_after), "non_archived": "false"}
        path = f"/groups/{group_id}/issues"
        items = await self._list(gl, "group_issues", path, query)
        by_project: dict[int, list[Incident]] = {}
        with _answer_shape(f"GET {path}"):
            for item in items:
                if _is_incident(item):
                    by_project.setdefault(int(item["project_id"]), []).append(_incident(item))
        return by_project


@contextlib.contextmanager
def _answer_shape(call: str) -> Iterator[None]:
    """Valid JSON that is not shaped like GitLab's answer (a missing key, a list for a dict, a
    bad timestamp) is a bad upstream answer: 502 naming the call, never a 500."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise BadGateway(detail=f"{call}: unexpected answer ({type(exc).__name__})") from None


def _encode(id_or_path: str) -> str:
    """One URL path segment for an id or full path, whatever the caller sent.

    python-gitlab does not encode path arguments of http_request, and `requests` would read a
    raw `#` as a fragment, `?` as a query and resolve `.`/`..` segments (`/projects/..`
    became `GET /api/v4/`). Everything but unreserved characters is percent-encoded, and a
    segment of dots has its dots encoded too, so the upstream sees the caller's id as one
    opaque segment and answers 404 for nonsense, as GitLab itself would.
    """
    segment = quote(id_or_path, safe="")
    if segment.strip(".") == "":
        segment = segment.replace(".", "%2E")
    return segment


def _call_name(path: str) -> str:
    """`GET /projects/11/deployments`: method and path, never the query (or a host)."""
    if "://" in path:  # a next-page link: keep the path below /api/v4
        path = urlsplit(path).path.split("/api/v4", 1)[-1]
    return f"GET {path.split('?')[0]}"


def _backoff(attempt: int, base: float) -> float:
    """Exponential backoff with ±20 % jitter, so retrying callers do not stampede together."""
    return base * 2**attempt * random.uniform(0.8, 1.2)


def _utc(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _incident_query(updated_after: datetime) -> dict[str, str]:
    return {
        "issue_type": "incident",
        "updated_after": _utc(updated_after),
        "order_by": "updated_at",
        "sort": "asc",
        "scope": "all",
    }


def _is_incident(item: dict[str, Any]) -> bool:
    return item.get("issue_type") == "incident" or item.get("type") == "INCIDENT"


def _incident(item: dict[str, Any]) -> Incident:
    closed = item.get("closed_at") if item.get("state") == "closed" else None
    return Incident(
        int(item["id"]),
        parse_time(item["created_at"]),
        parse_time(closed) if closed else None,
        _optional_int(item.get("iid")),
        _optional_str(item.get("web_url")),
    )


def _optional_int(value: Any) -> int | None:
    """An iid for people: kept when GitLab sent an integer, else left out (never a 502)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _optional_str(value: Any) -> str | None:
    """A web_url for people: kept when it is an http(s) link, else left out."""
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return value
    return None
