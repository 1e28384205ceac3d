"""Prometheus metrics for one proxy app (served by proxy/web/probes.py at `GET /metrics`).

Each app owns a `CollectorRegistry` of its own (never prometheus_client's global one), so tests
that run several apps in one process count separately. Labels are route names, layer and kind
names, and status codes: never a raw path (ids, paths and tokens would explode cardinality and
leak) and never a credential.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

T = TypeVar("T")

PREFIX = "dora_proxy"
# Seconds; DORA answers range from a cache hit (ms) to a cold group computation (tens of s).
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60)
UPSTREAM_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
UNMATCHED = "unmatched"  # route label for requests no route matched (404/405)


class Telemetry:
    """Every metric the proxy exports, registered in one private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = RequestSeries(
            f"{PREFIX}_http_requests",
            "HTTP requests answered, by route name and status code.",
            f"{PREFIX}_http_request_duration_seconds",
            "Time to answer an HTTP request, by route name and status code.",
            REQUEST_BUCKETS,
        )
        r.register(self.requests)
        self.cache_lookups = CacheLookups(
            f"{PREFIX}_cache_hits",
            "Cache lookups that found an entry, by layer (recent, answer, facts).",
            f"{PREFIX}_cache_misses",
            "Cache lookups that found nothing, by layer (recent, answer, facts).",
        )
        r.register(self.cache_lookups)
        self.upstream_calls = Counter(
            f"{PREFIX}_upstream_requests",
            "HTTP calls to the upstream GitLab, by endpoint kind and outcome (status code, "
            "timeout, connection_error, malformed, error).",
            ("kind", "status"),
            registry=r,
        )
        self.upstream_seconds = Histogram(
            f"{PREFIX}_upstream_request_duration_seconds",
            "Duration of one upstream HTTP call (one page), by endpoint kind.",
            ("kind",),
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        self.computations = Gauge(
            f"{PREFIX}_computations_in_flight",
            "Answer computations running in this process right now.",
            registry=r,
        )
        self.stale_answers = Counter(
            f"{PREFIX}_stale_answers",
            "Expired answers served because the upstream failed.",
            registry=r,
        )
        self.shared_lock = Counter(
            f"{PREFIX}_shared_lock",
            "Cold answers by what the cross-process lock decided: acquired (computed here), "
            "shared (another process computed it), took_over (its holder gave up), timed_out.",
            ("outcome",),
            registry=r,
        )

    # ---- call sites -----------------------------------------------------------------------
    def cache_lookup(self, layer: str, hit: bool) -> None:
        """A lookup in one cache layer (event-loop thread only, see `CacheLookups`)."""
        key = (layer, hit)
        counts = self.cache_lookups.counts
        counts[key] = counts.get(key, 0) + 1

    def upstream_call(self, kind: str, status: str, seconds: float) -> None:
        """`Upstream`'s observer (runs in its worker threads; prometheus_client is thread-safe)."""
        self.upstream_calls.labels(kind, status).inc()
        self.upstream_seconds.labels(kind).observe(seconds)

    def stale_served(self) -> None:
        self.stale_answers.inc()

    def lock_outcome(self, outcome: str) -> None:
        self.shared_lock.labels(outcome).inc()

    async def computing(self, work: Awaitable[T]) -> T:
        """Await `work`, counted in the in-flight gauge meanwhile."""
        with self.computations.track_inprogress():
            return await work

    def count_refusals(self, name: str, doc: str, read: Callable[[], int]) -> None:
        """A counter kept by its owner (e.g. a `ClientGate`'s `refused`), read at scrape time."""
        self.registry.register(ReadCounter(f"{PREFIX}_{name}", doc, read))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestSeries(Collector):
    """Requests by route and status: a counter and a duration histogram, from one series.

    Updated on every request, on the event loop's thread only, so a plain dict and list do:
    prometheus_client's own metrics take a lock and resolve label children per update, which
    a cache hit of a few tens of microseconds felt. Read by the registry at scrape time (on
    the same thread: the scrape is a request)."""

    def __init__(
        self, name: str, doc: str, histogram: str, histogram_doc: str, bounds: tuple[float, ...]
    ) -> None:
        self.name, self.doc = name, doc
        self.histogram, self.histogram_doc = histogram, histogram_doc
        self.bounds = bounds
        # (route, status) -> [sum of seconds, count per bucket ..., count above the last bound]
        self.series: dict[tuple[str, int], list[float]] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        series = self.series.get((route, status))
        if series is None:
            series = self.series[route, status] = [0.0] * (len(self.bounds) + 2)
        series[0] += seconds
        series[1 + bisect.bisect_left(self.bounds, seconds)] += 1

    def collect(self) -> Iterator[Metric]:
        labels = ("route", "status")
        requests = CounterMetricFamily(self.name, self.doc, labels=labels)
        seconds = HistogramMetricFamily(self.histogram, self.histogram_doc, labels=labels)
        for (route, status), series in list(self.series.items()):
            cumulative = list(itertools.accumulate(series[1:]))
            buckets = [
                (floatToGoString(bound), count)
                for bound, count in zip(self.bounds, cumulative, strict=False)
            ]
            buckets.append(("+Inf", cumulative[-1]))
            requests.add_metric([route, str(status)], cumulative[-1])
            seconds.add_metric([route, str(status)], buckets, sum_value=series[0])
        yield requests
        yield seconds

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.doc, labels=("route", "status"))
        yield HistogramMetricFamily(self.histogram, self.histogram_doc, labels=("route", "status"))


class CacheLookups(Collector):
    """Cache hits and misses by layer, counted in a plain dict on the event loop's thread
    (every request looks up the recent answers: see `RequestSeries` for why no lock)."""

    def __init__(self, hits: str, hits_doc: str, misses: str, misses_doc: str) -> None:
        self.families = ((hits, hits_doc, True), (misses, misses_doc, False))
        self.counts: dict[tuple[str, bool], int] = {}
        self._counted_elsewhere: dict[str, Callable[[], tuple[int, int]]] = {}

    def count(self, layer: str, hits_and_misses: Callable[[], tuple[int, int]]) -> None:
        """A layer that counts its own lookups: read (hits, misses) from it at scrape time."""
        self._counted_elsewhere[layer] = hits_and_misses

    def collect(self) -> Iterator[Metric]:
        counts = dict(self.counts)
        for layer, hits_and_misses in self._counted_elsewhere.items():
            hits, misses = hits_and_misses()
            counts[layer, True] = counts.get((layer, True), 0) + hits
            counts[layer, False] = counts.get((layer, False), 0) + misses
        for name, doc, hit in self.families:
            family = CounterMetricFamily(name, doc, labels=("layer",))
            for (layer, found), count in sorted(counts.items()):
                if found is hit:
                    family.add_metric([layer], count)
            yield family

    def describe(self) -> Iterator[Metric]:
        for name, doc, _ in self.families:
            yield CounterMetricFamily(name, doc, labels=("layer",))


class ReadCounter(Collector):
    """One unlabelled counter whose value its owner keeps (no lock, no second copy)."""

    def __init__(self, name: str, doc: str, read: Callable[[], int]) -> None:
        self.name, self.doc, self.read = name, doc, read

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.doc)
        family.add_metric([], self.read())
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.doc)


TELEMETRY = web.AppKey("telemetry", Telemetry)
