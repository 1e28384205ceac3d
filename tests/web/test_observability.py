"""`GET /metrics`, `/-/readiness`, `/-/liveness` and `/-/health`, through real HTTP.

The counters are read back by parsing the exposition text the way Prometheus would, so a test
sees exactly what a scrape sees.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families

from proxy.demo import DATA_KINDS
from proxy.demo.world import REPORTER, World
from proxy.web.probes import READINESS

NOW = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)
RITA = {"PRIVATE-TOKEN": "tok-rita"}
PAST = (
    "/api/v4/projects/20/dora/metrics?metric=deployment_frequency"
    "&start_date=2024-01-01&end_date=2024-02-29"
)
TODAY = "/api/v4/projects/20/dora/metrics?metric=deployment_frequency"


def small_world() -> World:
    """Project acme/web (20), deploying to production in January, February and today."""
    world = World().add_cast()
    acme = world.add_group(10, "acme")
    world.add_member(12, acme, REPORTER)
    web = world.add_project(20, "web", acme)
    production = world.add_environment(web, "production", "production")
    for day in ("2024-01-05", "2024-02-10", "2024-03-15"):
        world.deploy(production, f"{day}T09:00:00Z", mrs=[f"{day}T07:00:00Z"])
    return world


async def scrape(stack) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], str]:
    """Every sample of /metrics by (name, sorted labels), and the raw text."""
    response = await stack.client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = await response.text()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, text


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: dict, name: str, **labels: str) -> float:
    """Sum over every label set containing `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


# ---- /metrics ----------------------------------------------------------------------------------


async def test_counters_move_with_requests(start_stack) -> None:
    stack = await start_stack(small_world(), now=NOW)
    before, _ = await scrape(stack)
    assert value(before, "dora_proxy_http_requests_total", route="project_dora", status="200") == 0
    assert value(before, "dora_proxy_computations_in_flight") == 0

    cold = await stack.client.get(PAST, headers=RITA)
    assert cold.status == 200
    data_calls = len(stack.fake.data_calls())
    after_cold, _ = await scrape(stack)
    assert value(after_cold, "dora_proxy_cache_misses_total", layer="answer") == 1
    assert value(after_cold, "dora_proxy_cache_hits_total", layer="answer") == 0
    assert value(after_cold, "dora_proxy_cache_misses_total", layer="facts") > 0
    assert value(after_cold, "dora_proxy_shared_lock_total", outcome="acquired") == 1
    upstream = total(after_cold, "dora_proxy_upstream_requests_total", status="200")
    assert upstream == len(stack.fake.calls) and upstream >= data_calls > 0
    assert value(
        after_cold, "dora_proxy_upstream_requests_total", kind="deployments", status="200"
    ) == len(stack.fake.calls_of("deployments"))
    assert total(after_cold, "dora_proxy_upstream_request_duration_seconds_count") == upstream
    assert value(after_cold, "dora_proxy_computations_in_flight") == 0

    warm = await stack.client.get(PAST, headers=RITA)
    assert warm.status == 200
    after_warm, _ = await scrape(stack)
    # The repeat comes from the seconds-long memory of recent answers, before the answer cache.
    assert value(after_warm, "dora_proxy_cache_hits_total", layer="recent") == 1
    assert value(after_warm, "dora_proxy_cache_misses_total", layer="recent") == 1
    assert value(after_warm, "dora_proxy_cache_hits_total", layer="answer") == 0
    assert value(after_warm, "dora_proxy_cache_misses_total", layer="answer") == 1
    stack.app_service().recent.clear()
    again = await stack.client.get(PAST, headers=RITA)
    assert again.status == 200
    after_again, _ = await scrape(stack)
    assert value(after_again, "dora_proxy_cache_hits_total", layer="answer") == 1
    assert (
        value(after_again, "dora_proxy_http_requests_total", route="project_dora", status="200")
        == 3
    )
    assert (
        value(
            after_again,
            "dora_proxy_http_request_duration_seconds_count",
            route="project_dora",
            status="200",
        )
        == 3
    )
    # Scrapes count too, under their route name (a scrape is counted after its own answer).
    assert value(after_again, "dora_proxy_http_requests_total", route="metrics", status="200") == 3
    assert total(after_again, "dora_proxy_upstream_requests_total") == upstream  # nothing new


async def test_errors_and_unmatched_paths_are_counted_by_route_not_by_path(start_stack) -> None:
    stack = await start_stack(small_world(), now=NOW)
    assert (await stack.client.get(PAST, headers={"PRIVATE-TOKEN": "tok-unknown"})).status == 401
    assert (await stack.client.get("/api/v4/projects/20/dora/metrics", headers=RITA)).status == 400
    assert (await stack.client.get("/nothing/here/tok-rita")).status == 404
    samples, text = await scrape(stack)
    assert value(samples, "dora_proxy_http_requests_total", route="project_dora", status="401") == 1
    assert value(samples, "dora_proxy_http_requests_total", route="project_dora", status="400") == 1
    assert value(samples, "dora_proxy_http_requests_total", route="unmatched", status="404") == 1
    assert value(samples, "dora_proxy_upstream_requests_total", kind="user", status="401") == 1
    # No credential and no raw path in any label.
    for secret in ("tok-rita", "tok-unknown", "/api/v4/projects/20", "/nothing"):
        assert secret not in text


async def test_stale_answers_are_counted(start_stack) -> None:
    stack = await start_stack(
        small_world(),
        now=NOW,
        answer_ttl_current=0.3,
        facts_ttl_recent=0.3,
        upstream_max_retries=0,
    )
    assert (await stack.client.get(TODAY, headers=RITA)).status == 200
    await asyncio.sleep(0.5)
    stack.fake.faults.status_codes = [502] * 20
    stack.fake.faults.only_kinds = set(DATA_KINDS)

    stale = await stack.client.get(TODAY, headers=RITA)
    assert stale.status == 200 and stale.headers["X-Dora-Proxy-Stale"] == "true"
    samples, _ = await scrape(stack)
    assert value(samples, "dora_proxy_stale_answers_total") == 1
    assert total(samples, "dora_proxy_upstream_requests_total", status="502") >= 1


async def test_every_app_counts_on_its_own(start_stack) -> None:
    first = await start_stack(small_world(), now=NOW)
    second = await start_stack(small_world(), now=NOW)
    assert (await first.client.get(PAST, headers=RITA)).status == 200
    samples, _ = await scrape(second)
    assert value(samples, "dora_proxy_http_requests_total", route="project_dora", status="200") == 0
    assert total(samples, "dora_proxy_upstream_requests_total") == 0


# ---- probes ------------------------------------------------------------------------------------


async def test_health_and_liveness_answer_ok(start_stack) -> None:
    stack = await start_stack(small_world(), now=NOW)
    for path in ("/-/health", "/-/liveness"):
        response = await stack.client.get(path)
        assert response.status == 200
        assert (await response.json())["status"] == "ok"


async def test_readiness_checks_the_cache_and_probes_upstream_anonymously(start_stack) -> None:
    stack = await start_stack(small_world(), now=NOW)
    response = await stack.client.get("/-/readiness")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ok"
    assert body["checks"] == {"cache": "ok", "permission_queue": "ok"}
    assert await stack.client.app[READINESS].upstream.wait() == "ok"
    (call,) = stack.fake.calls  # one anonymous call to an allowed endpoint, answered 401
    assert (call.kind, call.token, call.status) == ("user", None, 401)
    assert (await (await stack.client.get("/-/health")).json())["upstream"] == "ok"
    samples, _ = await scrape(stack)
    assert value(samples, "dora_proxy_upstream_up") == 1


async def test_an_unreachable_upstream_is_reported_but_leaves_readiness_alone(start_stack) -> None:
    """Every replica shares one GitLab: a GitLab blip must not empty the load balancer."""
    stack = await start_stack(small_world(), now=NOW)
    await stack.fake.close()
    response = await stack.client.get("/-/readiness")
    assert response.status == 200
    state = await stack.client.app[READINESS].upstream.wait()
    assert state.startswith("unreachable")
    health = await stack.client.get("/-/health")
    assert health.status == 200
    assert (await health.json()) == {"status": "ok", "upstream": state}
    samples, _ = await scrape(stack)
    assert value(samples, "dora_proxy_upstream_up") == 0


async def test_upstream_5xx_and_timeouts_are_reported_not_unready(start_stack) -> None:
    stack = await start_stack(small_world(), now=NOW, upstream_timeout=0.3)
    stack.fake.faults.only_kinds = {"user"}
    stack.fake.faults.status_codes = [503]
    assert (await stack.client.get("/-/readiness")).status == 200
    assert await stack.client.app[READINESS].upstream.wait() == "answered 503"

    stack.fake.faults.hang = 2.0
    stack.client.app[READINESS].upstream._checked_at = -1e9  # probe again now
    response = await stack.client.get("/-/readiness")
    assert response.status == 200
    assert await stack.client.app[READINESS].upstream.wait() == "no answer within 0.3s"


async def test_readiness_says_the_cache_is_degraded(start_stack) -> None:
    """A broken cache is served around (answers uncached): ready, and saying what is wrong."""
    stack = await start_stack(small_world(), now=NOW)
    await stack.storage.close()  # as good as a full disk or a Redis gone away
    response = await stack.client.get("/-/readiness")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "degraded" and body["degraded"] == ["cache"]
    assert body["checks"]["cache"].startswith("degraded:")


async def test_request_histograms_agree_with_the_request_counters(start_stack) -> None:
    stack = await start_stack(small_world(), now=NOW)
    for target, headers in [
        (PAST, RITA),  # miss
        (PAST, RITA),  # recent
        (TODAY, RITA),
        (PAST, {"PRIVATE-TOKEN": "tok-unknown"}),  # 401
        ("/api/v4/projects/20/dora/metrics", RITA),  # 400
        ("/nothing/here", None),  # 404
        ("/-/health", None),
    ]:
        await stack.client.get(target, headers=headers)
    assert (await stack.client.post("/-/health")).status == 405
    await scrape(stack)
    samples, text = await scrape(stack)

    requests = {
        dict(labels)["route"] + " " + dict(labels)["status"]: count
        for (name, labels), count in samples.items()
        if name == "dora_proxy_http_requests_total"
    }
    assert requests == {
        "project_dora 200": 3,
        "project_dora 401": 1,
        "project_dora 400": 1,
        "unmatched 404": 1,
        "unmatched 405": 1,
        "health 200": 1,
        "metrics 200": 1,  # the first scrape: the one being answered is not counted yet
    }
    histogram = "dora_proxy_http_request_duration_seconds"
    for family in text_string_to_metric_families(text):
        if family.name != histogram:
            continue
        series: dict[tuple[str, str], dict[str, float]] = {}
        for sample in family.samples:
            labels = dict(sample.labels)
            key = (labels.pop("route"), labels.pop("status"))
            suffix = sample.name.removeprefix(histogram)
            series.setdefault(key, {})[suffix + labels.get("le", "")] = sample.value
        assert {f"{route} {status}" for route, status in series} == set(requests)
        for (route, status), values in series.items():
            buckets = sorted(
                (float(name.removeprefix("_bucket")), count)
                for name, count in values.items()
                if name.startswith("_bucket")
            )
            assert len(buckets) == 15 and buckets[-1][0] == float("inf")
            counts = [count for _, count in buckets]
            assert counts == sorted(counts), (route, status, buckets)  # cumulative
            assert counts[-1] == values["_count"] == requests[f"{route} {status}"]
            assert values["_sum"] > 0
        break
    else:
        raise AssertionError(f"no {histogram} in the exposition")


async def test_recent_lookups_are_counted_as_they_hit_and_miss(start_stack) -> None:
    stack = await start_stack(small_world(), now=NOW, recent_answer_ttl=0.2)

    async def recent_counts() -> tuple[float, float]:
        samples, _ = await scrape(stack)
        return (
            value(samples, "dora_proxy_cache_hits_total", layer="recent"),
            value(samples, "dora_proxy_cache_misses_total", layer="recent"),
        )

    async def layer(target: str, headers=RITA) -> str:
        response = await stack.client.get(target, headers=headers)
        assert response.status == 200
        return response.headers["X-Dora-Proxy-Cache"]

    assert await recent_counts() == (0, 0)
    assert await layer(PAST) == "miss"
    assert await recent_counts() == (0, 1)
    assert await layer(PAST) == "recent"
    assert await layer(PAST) == "recent"
    assert await recent_counts() == (2, 1)
    assert await layer(TODAY) == "miss"  # another URL
    unknown = await stack.client.get(PAST, headers={"PRIVATE-TOKEN": "tok-unknown"})
    assert unknown.status == 401  # another caller: looked up, then refused
    assert await recent_counts() == (2, 3)
    assert (await stack.client.get("/nothing/here")).status == 404  # no lookup at all
    assert await recent_counts() == (2, 3)
    await asyncio.sleep(0.25)  # forgotten
    assert await layer(PAST) == "hit"
    assert await layer(PAST) == "recent"
    assert await recent_counts() == (3, 4)
