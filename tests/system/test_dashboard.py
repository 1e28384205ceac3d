"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright).

The proxy and the fake GitLab run on 127.0.0.1 as in tests/web; the browser loads
/-/dashboard from the proxy, and every request it makes and every console message is recorded.
What the page shows is compared with what the proxy's API answers for the same parameters.

Never `playwright install`: the browser is /usr/bin/chromium (`.ci/run` installs it with apt).
Without it these tests skip, unless DORA_PROXY_REQUIRE_BROWSER=1 (set by `.ci/run`) makes the
absence a failure. DORA_PROXY_WRITE_SCREENSHOTS=1 writes docs/dashboard-*.png.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from tests.team_world import METRICS, NOW, build_team

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
REQUIRED = os.environ.get("DORA_PROXY_REQUIRE_BROWSER") == "1"
WRITE_SCREENSHOTS = os.environ.get("DORA_PROXY_WRITE_SCREENSHOTS") == "1"
DOCS = Path(__file__).resolve().parents[2] / "docs"
CAPTIONS = {
    "deployment_frequency": "Deployment frequency",
    "lead_time_for_changes": "Lead time for changes",
    "time_to_restore_service": "Time to restore service",
    "change_failure_rate": "Change failure rate",
}
RITA = {"PRIVATE-TOKEN": "tok-rita"}
WINDOW = "start_date=2024-02-01&end_date=2024-03-31"

if not CHROMIUM.exists() and not REQUIRED:
    pytest.skip("no /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)

from playwright.async_api import async_playwright  # noqa: E402


class Recorder:
    """Every request the page makes and every console error or uncaught exception."""

    def __init__(self, page) -> None:
        self.requests: list[str] = []
        self.tokens: dict[str, str | None] = {}  # data request URL -> its PRIVATE-TOKEN header
        self.errors: list[str] = []
        page.on("request", self._request)
        page.on(
            "console",
            lambda message: message.type == "error" and self.errors.append(message.text),
        )
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    def _request(self, request) -> None:
        self.requests.append(request.url)
        if "/api/v4/" in request.url or "/dora/facts" in request.url or "/summary" in request.url:
            self.tokens[request.url] = request.headers.get("private-token")

    def other_origins(self, base_url: str) -> list[str]:
        origin = urlsplit(base_url)[:2]
        return [url for url in self.requests if urlsplit(url)[:2] != origin]


@pytest.fixture
async def browser() -> AsyncIterator[object]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def open_view(browser, stack, query: str, token: str = "tok-rita"):
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    recorder = Recorder(page)
    await page.goto(f"{stack.base_url}/-/dashboard?{query}")
    await page.get_by_label("Access token").fill(token)
    await page.get_by_role("button", name="Show").click()
    await page.wait_for_selector("body[data-ready]", timeout=15_000)
    return context, page, recorder


async def api_json(stack, path: str) -> object:
    status, body = await stack.get(path, RITA)
    assert status == 200, body
    return json.loads(body)


async def figure_rows(page, metric: str) -> list[tuple[str, object]]:
    figure = page.locator("figure").filter(
        has=page.locator("figcaption", has_text=CAPTIONS[metric])
    )
    assert await figure.locator("svg").count() == 1
    rows = figure.locator("tr[data-date]")
    return [
        (await row.get_attribute("data-date"), json.loads(await row.get_attribute("data-value")))
        for row in await rows.all()
    ]


async def test_project_view_shows_the_apis_answers_and_drills_down(world, start_stack, browser):
    build_team(world)
    stack = await start_stack(world, now=NOW)
    context, page, recorder = await open_view(browser, stack, f"project=team%2Fapi&{WINDOW}")
    assert await page.get_attribute("body", "data-ready") == "true"
    for metric in METRICS:
        answer = await api_json(
            stack, f"/api/v4/projects/team%2Fapi/dora/metrics?metric={metric}&{WINDOW}"
        )
        assert await figure_rows(page, metric) == [
            (point["date"], point["value"]) for point in answer
        ]
    # The URL is the view (bookmarkable), the token is in sessionStorage only.
    assert "tok-rita" not in unquote(page.url)
    assert "project=team%2Fapi" in page.url or "project=team/api" in unquote(page.url)
    assert await page.evaluate("sessionStorage.getItem('dora-proxy-token')") == "tok-rita"
    assert await page.evaluate("localStorage.length") == 0
    assert await context.cookies() == []
    # The DORA level is shown per metric, and the thresholds are cited.
    assert await page.locator("figure [data-level]").count() == 4
    assert "2023" in await page.locator("#levels-cite").inner_text()

    # Drill-down: the first bar of Deployment frequency lists that day's deployments.
    facts = await api_json(stack, f"/-/api/v1/projects/team%2Fapi/dora/facts?{WINDOW}")
    figure = page.locator("figure[data-metric=deployment_frequency]")
    bar = figure.locator("rect.bar").first
    day = await bar.get_attribute("data-date")
    await bar.click()
    await page.wait_for_selector("#drill:not([hidden])")
    listed = page.locator("#drill-body table tbody tr")
    expected = [d for d in facts["deployments"] if d["day"] == day]
    assert expected and await listed.count() == len(expected)
    assert day in await page.locator("#drill-title").inner_text()

    # Every data request carried the token as a header, and no URL ever held it.
    assert len(recorder.tokens) == 6  # four metrics, the summary, the facts
    assert set(recorder.tokens.values()) == {"tok-rita"}
    assert not any("tok-rita" in unquote(url) for url in recorder.requests)
    if WRITE_SCREENSHOTS:
        await page.screenshot(path=str(DOCS / "dashboard-project.png"), full_page=True)
    assert recorder.other_origins(stack.base_url) == []
    assert recorder.errors == []
    await context.close()


async def test_controls_change_the_url_and_the_view(world, start_stack, browser):
    build_team(world)
    stack = await start_stack(world, now=NOW)
    context, page, recorder = await open_view(browser, stack, f"project=41&{WINDOW}")
    await page.get_by_label("Interval").select_option("monthly")
    await page.wait_for_function("location.search.includes('interval=monthly')")
    await page.wait_for_selector("body[data-ready=true]")
    rows = await figure_rows(page, "deployment_frequency")
    answer = await api_json(
        stack,
        f"/api/v4/projects/41/dora/metrics?metric=deployment_frequency&interval=monthly&{WINDOW}",
    )
    assert rows == [(p["date"], p["value"]) for p in answer]
    assert [d for d, _ in rows] == ["2024-02-01", "2024-03-01"]
    # A reload of the bookmarked URL in a new tab (same session) shows the same view.
    await page.reload()
    await page.wait_for_selector("body[data-ready=true]")
    assert await figure_rows(page, "deployment_frequency") == rows
    assert recorder.other_origins(stack.base_url) == []
    assert recorder.errors == []
    await context.close()


async def test_group_view_lists_the_projects_the_group_counts(world, start_stack, browser):
    build_team(world)
    stack = await start_stack(world, now=NOW)
    query = f"{WINDOW}&interval=all"
    context, page, recorder = await open_view(browser, stack, f"group=team&{query}")
    for metric in METRICS:
        answer = await api_json(stack, f"/api/v4/groups/team/dora/metrics?metric={metric}&{query}")
        assert await figure_rows(page, metric) == [("", answer[0]["value"])]
    table = page.locator("table").filter(has=page.locator("caption", has_text="Projects"))
    rows = table.locator("tr[data-project]")
    assert sorted([await r.get_attribute("data-project") for r in await rows.all()]) == [
        "team/api",
        "team/web",
    ]
    for row in await rows.all():
        path = await row.get_attribute("data-project")
        for metric in METRICS:
            answer = await api_json(
                stack,
                f"/api/v4/projects/{path.replace('/', '%2F')}/dora/metrics?metric={metric}&{query}",
            )
            cell = row.locator(f"td[data-metric={metric}]")
            assert json.loads(await cell.get_attribute("data-value")) == answer[0]["value"]
    # Sortable: a metric's column sorts highest first, a second click reverses.
    sort = table.get_by_role("button", name="Deployment frequency")
    await sort.click()
    descending = [await r.get_attribute("data-project") for r in await rows.all()]
    await sort.click()
    ascending = [await r.get_attribute("data-project") for r in await rows.all()]
    assert descending == list(reversed(ascending)) == ["team/api", "team/web"]
    if WRITE_SCREENSHOTS:
        await page.screenshot(path=str(DOCS / "dashboard-group.png"), full_page=True)

    # A click on a project opens that project's view with the same window.
    await rows.filter(has_text="team/web").click()
    await page.wait_for_url("**project=team%2Fweb**")
    await page.wait_for_selector("body[data-ready=true]")
    answer = await api_json(
        stack, f"/api/v4/projects/team%2Fweb/dora/metrics?metric=change_failure_rate&{query}"
    )
    assert await figure_rows(page, "change_failure_rate") == [("", answer[0]["value"])]
    assert recorder.other_origins(stack.base_url) == []
    assert recorder.errors == []
    await context.close()


@pytest.mark.parametrize(
    ("token", "query", "alert"),
    [
        ("tok-wrong", "project=41", "401: 401 Unauthorized"),
        ("tok-nina", "project=41", "404: 404 Project Not Found"),
        ("tok-gus", "group=team", "401: You do not have permission to access dora metrics."),
        (
            "tok-rita",
            "project=41&start_date=2024-03-01&end_date=2024-02-01",
            "400: The start date must be earlier than the end date.",
        ),
    ],
)
async def test_errors_show_the_apis_status_and_message(
    world, start_stack, browser, token, query, alert
):
    build_team(world)
    stack = await start_stack(world, now=NOW)
    context, page, recorder = await open_view(browser, stack, query, token)
    assert await page.get_by_role("alert").inner_text() == alert
    assert await page.locator("figure").count() == 0
    assert recorder.other_origins(stack.base_url) == []
    # The only console errors are the browser's own notes about the failed responses.
    assert all("Failed to load resource" in error for error in recorder.errors)
    await context.close()


async def test_the_page_is_served_with_a_strict_content_security_policy(world, start_stack):
    stack = await start_stack(world, now=NOW)
    response = await stack.client.get("/-/dashboard")
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "'unsafe-inline'" not in policy
    html = await response.text()
    assert "<script>" not in html and "style=" not in html and "<style" not in html
    assert "http" not in html.replace('"http://www.w3.org', "")  # no other origin named
