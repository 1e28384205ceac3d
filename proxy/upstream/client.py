"""Bounded, retrying transport to the upstream GitLab: python-gitlab, run off the event loop.

python-gitlab is synchronous and its own retries sleep in the calling thread, so every HTTP call
runs in one bounded ThreadPoolExecutor (the global bound on in-flight upstream calls), with
python-gitlab's retries switched off; retries, backoff and rate-limit waits happen here with
`asyncio.sleep`, so neither the loop nor a worker is held while waiting. Pagination is followed
page by page (each page is one retried call) through `rel="next"`, never trusting totals.

Each proxy request reaches it through its own `UpstreamSession` (session.py), which builds a
`gitlab.Gitlab` client with the caller's credential (no shared session, cookies refused), so a
caller only ever sees what GitLab shows that credential. Retry rules live in retry.py (pure),
endpoint shapes in endpoints.py. Every failure becomes a `ProxyError` or `UpstreamStatus`; no
message ever carries a credential.
"""

from __future__ import annotations

import asyncio
import functools
import http.cookiejar
import json
import math
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import gitlab
import gitlab.exceptions
import gitlab.v4.objects  # at start-up, not in the first Gitlab() (~0.1 s of a first request)
import orjson
import requests
import requests.adapters
import requests.cookies
import requests.sessions
import requests.structures
import structlog
import urllib3.exceptions

from proxy import USER_AGENT
from proxy.credentials import Credential
from proxy.errors import BadGateway, GatewayTimeout, ServiceUnavailable
from proxy.upstream.calls import CURRENT_STATS, CallObserver
from proxy.upstream.endpoints import TYPED_PAGES
from proxy.upstream.retry import RetryPolicy, retry_after_seconds

if TYPE_CHECKING:
    from proxy.upstream.session import UpstreamSession

PER_PAGE = 100
# Calls a permission check makes: they run in a small pool of their own, so a caller's check
# never queues behind bulk data fetches (and a flood of checks never starves data fetches).
PERMISSION_KINDS = frozenset({"user", "project", "group", "project_members", "group_members"})
FORBIDDEN_MEANS_EMPTY = frozenset(
    {"environments", "deployments", "deployment_mrs", "project_issues", "group_issues"}
)
log = structlog.get_logger("proxy.upstream")
_ID_TYPES = (int, str)  # an item's id; built once (`int | str` in the loop built a union per item)


@dataclass(frozen=True, slots=True)
class Page:
    """One upstream answer: its JSON, parsed once in the worker thread, and its response.

    `typed`: `data` is a list of the kind's rows (endpoints.TYPED_PAGES), not GitLab's dicts."""

    data: Any
    response: requests.Response
    typed: bool = False


class _Pool:
    """One thread pool and how many calls it holds (running or waiting)."""

    def __init__(self, executor: ThreadPoolExecutor, workers: int) -> None:
        self.executor = executor
        self.workers = workers
        self.pending = 0
        self._lock = threading.Lock()

    def started(self) -> None:
        with self._lock:
            self.pending += 1

    def finished(self, _: Future[Any] | None) -> None:  # in a worker thread, or the loop's
        with self._lock:
            self.pending -= 1


class UpstreamStatus(Exception):
    """The upstream answered a definite HTTP error (4xx) the caller may need to see."""

    def __init__(self, status: int, body: Any, headers: dict[str, str], call: str) -> None:
        super().__init__(f"{call} answered {status}")
        self.status = status
        self.body = body
        self.headers = headers
        self.call = call


class _Retryable(Exception):
    def __init__(self, reason: str, *, timeout: bool = False) -> None:
        super().__init__(reason)
        self.timeout = timeout


class _RateLimited(Exception):
    def __init__(self, wait: float | None, remaining: str | None = None) -> None:
        super().__init__("rate limited")
        self.wait = wait
        self.remaining = remaining


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """Refuse every cookie: a `_gitlab_session` cookie would be a credential."""

    def set_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return False


class _NoCookieJar(requests.cookies.RequestsCookieJar):
    """A jar that keeps nothing: no `Set-Cookie` is read (one header parse per call saved), no
    `Cookie` header is ever written. A `_gitlab_session` cookie would be a credential."""

    def set_cookie(self, cookie: http.cookiejar.Cookie, *args: Any, **kwargs: Any) -> None:
        return None

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def add_cookie_header(self, request: Any) -> None:
        return None


class _CallSession(requests.Session):
    """The requests session under python-gitlab's `http_request`, without the per-call merging
    that cannot change anything here (issue 16: a cold group's lead time makes 27 863 calls).

    `Session.request` merges each call's settings with the session's through `merge_setting`,
    whose `to_key_val_list` makes a runtime-protocol `isinstance` check (slow before Python 3.12)
    for every mapping: ~0.1 ms of a call's ~1 ms of worker CPU, for a session whose params,
    auth and cookies are always empty and whose environment is never read (`trust_env` off).
    The same request is prepared: session headers updated with the call's (a `None` value
    drops one), the call's params and auth, the session's hooks, proxies, stream, verify and
    cert where the call gives none. Anything else (cookies, a body, files, session auth or
    params, `trust_env`) takes requests' own path."""

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        if (
            self.trust_env
            or self.auth is not None
            or self.params
            or request.cookies
            or request.files
            or request.data
            or request.json is not None
        ):
            return super().prepare_request(request)
        headers = requests.structures.CaseInsensitiveDict(self.headers)
        if request.headers:
            headers.update(request.headers)
        for name in [name for name, value in headers.items() if value is None]:
            del headers[name]
        prepared = requests.PreparedRequest()
        prepared.prepare(
            method=str(request.method).upper(),
            url=request.url,
            headers=headers,
            params=request.params,
            auth=request.auth,
            cookies=self.cookies,
            hooks=requests.sessions.merge_hooks(request.hooks, self.hooks),
        )
        return prepared

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        if self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        merged = {**self.proxies, **(proxies or {})}
        return {
            "proxies": {key: value for key, value in merged.items() if value is not None},
            "stream": self.stream if stream is None else stream,
            "verify": self.verify if verify is None else verify,
            "cert": self.cert if cert is None else cert,
        }


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
        max_pages: int = 1000,
        max_items: int = 100_000,
        queue_limit: int = 100,
        check_concurrency: int = 4,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._origin = urlsplit(self.base_url)[:2]
        self.timeout = timeout
        self.concurrency = concurrency
        self.retry = RetryPolicy(max_retries, rate_limit_max_wait)
        self.observer = observer
        self.max_pages = max_pages  # bounds on one listing (get_list)
        self.max_items = max_items
        self._executor = ThreadPoolExecutor(concurrency, thread_name_prefix="upstream")
        self._checks = ThreadPoolExecutor(check_concurrency, thread_name_prefix="upstream-checks")
        # Calls submitted and not finished, per pool; past workers + queue_limit: 503 at once.
        self.queue_limit = queue_limit
        self._pools = {
            "data": _Pool(self._executor, concurrency),
            "checks": _Pool(self._checks, check_concurrency),
        }
        self._proxies = requests.utils.get_environ_proxies(self.base_url)
        self._ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        # python-gitlab's errors drop the response headers (Retry-After, WWW-Authenticate):
        # a session hook remembers each worker thread's last response.
        self._last_response = threading.local()

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._checks.shutdown(wait=False, cancel_futures=True)

    def saturated(self) -> str | None:
        """Why new permission checks are refused right now (their queue is full), or None."""
        pool = self._pools["checks"]
        if pool.pending >= pool.workers + self.queue_limit:
            return f"permission check queue full ({pool.pending - pool.workers} calls waiting)"
        return None

    async def _run(self, kind: str, call: str, work: functools.partial[Page]) -> Page:
        """`work` in its pool: permission checks in their own, bounded by `queue_limit` calls
        waiting (then 503 at once); data fetches in the main one, bounded per computation by
        the service (`max_computations`), since one computation fans out many calls at once.

        A call still waiting for a worker when its caller is cancelled never starts
        (`asyncio.wrap_future` cancels the pool's future), so work nobody waits for leaves
        the queue at once; a call already running finishes within `timeout`."""
        checks = kind in PERMISSION_KINDS
        pool = self._pools["checks" if checks else "data"]
        if checks and pool.pending >= pool.workers + self.queue_limit:
            raise ServiceUnavailable(
                1, detail=f"{call}: permission check queue full ({self.queue_limit} waiting)"
            )
        pool.started()
        try:
            future = pool.executor.submit(work)
        except RuntimeError:  # shut down: the proxy is stopping
            pool.finished(None)
            raise ServiceUnavailable(1, detail=f"{call}: shutting down") from None
        future.add_done_callback(pool.finished)
        return await asyncio.wrap_future(future)

    def session(self, credential: Credential | None) -> UpstreamSession:
        """The door for one proxy request: typed fetches with this caller's credential."""
        from proxy.upstream.session import UpstreamSession

        return UpstreamSession(self, credential)

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
            session=_CallSession(),
            **kwargs,
        )
        session = gl.session
        # requests re-reads proxy variables and ~/.netrc from the environment on every call
        # (a fifth of a call's CPU); read once at start-up instead.
        session.trust_env = False
        session.proxies.update(self._proxies)
        if self._ca_bundle:
            gl.ssl_verify = self._ca_bundle
        session.cookies = _NoCookieJar()
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
    async def get_page(
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
                return await self._run(
                    kind,
                    call,
                    functools.partial(self._get_sync, gl, kind, call, path, query, started),
                )
            except asyncio.CancelledError:
                cancelled = True  # the request's deadline names the call it was waiting for
                raise
            except _RateLimited as limited:
                wait = self.retry.rate_limit_wait(attempt, limited.wait)
                spent = stats.rate_limit_waited if stats is not None else waited
                if not self.retry.may_wait(attempt, wait, spent):
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
                backoff = self.retry.after_failure(attempt)
                if backoff is None:
                    if failure.timeout:
                        raise GatewayTimeout(detail=f"{call}: {failure}") from None
                    raise BadGateway(detail=f"{call}: {failure}") from None
                wait = backoff
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
                    streamed=True,
                )
                content = _read_body(response)
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
                        retry_after_seconds(headers, time.time()),
                        headers.get("RateLimit-Remaining"),
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
            except (requests.exceptions.Timeout, urllib3.exceptions.ReadTimeoutError):
                status = "timeout"
                raise _Retryable("timed out", timeout=True) from None
            except (
                requests.exceptions.ConnectionError,
                requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError,  # the body cut short, or undecodable
            ):
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
            decode_typed = TYPED_PAGES.get(kind)
            if decode_typed is not None:
                rows = decode_typed(content)
                if rows is not None:
                    return Page(rows, response, typed=True)
                # Not shaped as the rows expect: the generic path answers as it always did.
            try:
                # orjson straight from the bytes: ~3x faster than requests' .json() (which
                # decodes to str first), and this runs for every upstream page, in the worker.
                data = orjson.loads(content)
            except ValueError:
                status = "malformed"
                raise _Retryable("malformed JSON") from None
            return Page(data, response)
        finally:
            if self.observer is not None:
                self.observer(kind, status, time.monotonic() - started)

    async def get_list(
        self, gl: gitlab.Gitlab, kind: str, path: str, query: dict[str, Any]
    ) -> list[Any]:
        """Every item of a paginated list, following rel=next; de-duplicated by id: GitLab's
        dicts, or the kind's rows for pages decoded typed (endpoints.TYPED_PAGES).

        Bounded whatever the upstream sends (a cache in front of GitLab that ignores the query
        string answers every page with a link to itself): a next link or page number already
        followed, a page that brings no new id, more than `max_pages` pages or `max_items`
        items stop the listing with a 502 naming the call. Nothing of it is kept.
        """
        items: dict[Any, Any] = {}
        url: str | None = path
        params: dict[str, Any] | None = {**query, "per_page": PER_PAGE}
        seen = _SeenPages()
        call = _call_name(path)
        while url is not None:
            if seen.pages >= self.max_pages:
                raise BadGateway(detail=f"{call}: more than {self.max_pages} pages")
            try:
                fetched = await self.get_page(gl, kind, url, params)
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
            before = len(items)
            if fetched.typed:  # rows: an int id each, by construction
                for row in page:
                    items.setdefault(row.id, row)
            else:
                for item in page:
                    if not isinstance(item, dict) or not isinstance(item.get("id"), _ID_TYPES):
                        raise BadGateway(detail=f"GET {path}: malformed item")
                    items.setdefault(item["id"], item)
            if len(items) > self.max_items:
                raise BadGateway(detail=f"{call}: more than {self.max_items} items")
            url = self._next_page(fetched.response)
            if url is not None:
                if len(items) == before:
                    raise BadGateway(detail=f"{call}: pagination repeats (a page with no new id)")
                if not seen.first_visit(url, fetched.response):
                    raise BadGateway(detail=f"{call}: pagination repeats (next page seen before)")
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


class _SeenPages:
    """Next links and page numbers a listing has already followed (a cycle is an error)."""

    def __init__(self) -> None:
        self.pages = 1
        self._urls: set[str] = set()
        self._numbers: set[str] = set()

    def first_visit(self, next_url: str, response: requests.Response) -> bool:
        self.pages += 1
        current = response.headers.get("X-Page")
        if current:
            self._numbers.add(current)
        self._urls.add(response.url)
        number = parse_qs(urlsplit(next_url).query).get("page", [None])[-1]
        if next_url in self._urls or (number is not None and number in self._numbers):
            return False
        self._urls.add(next_url)
        if number is not None:
            self._numbers.add(number)
        return True


def _read_body(response: requests.Response) -> bytes:
    """The whole body in one read (the request was made with `streamed=True`).

    requests' `.content` reads in 10 KB pieces: a 90 KB deployments page took a dozen
    `recv` calls, and the worker gave up the GIL at each and waited to get it back behind the
    event loop and seven other workers (a cold group's calls spent ~60 ms of their ~85 ms
    waiting so, issue 16). One read takes what the socket holds in one or two calls. The
    connection goes back to the pool once the body is read to its end (urllib3 releases it);
    `.content` stays usable for anyone who reads the response later.
    """
    content: bytes = response.raw.read(decode_content=True)
    response._content = content
    response._content_consumed = True
    return content


def _call_name(path: str) -> str:
    """`GET /projects/11/deployments`: method and path, never the query (or a host)."""
    if "://" in path:  # a next-page link: keep the path below /api/v4
        path = urlsplit(path).path.split("/api/v4", 1)[-1]
    return f"GET {path.split('?')[0]}"
