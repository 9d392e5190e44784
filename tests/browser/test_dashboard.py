"""The dashboard in a real browser (Debian's Chromium, headless): every page
loads with no console error, no failed request and no request leaving
127.0.0.1; the overview's counts follow the queue live; a dead job's page
shows its error and its retry button queues it again; the AAPL chart draws
candles and an RSI pane ending at what `kiln features` says; with a token,
a page needs the session the login form gives. Screenshots of the
overview and the chart go to docs/."""

from __future__ import annotations

import json
import re
import urllib.request

from conftest import REPO, SAMPLE, TOKEN, Server, kiln

PAGES = ["/ui", "/ui/jobs", "/ui/jobs?state=dead", "/ui/symbols", "/ui/symbols/AAPL", "/ui/events", "/ui/metrics"]


def api(server, method: str, path: str, body: dict | None = None, token: str | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(server.url + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_every_page_loads_cleanly(server, watched, prepared):
    for path in PAGES + [f"/ui/jobs/{prepared['dead']['id']}"]:
        watched.page.goto(server.url + path)
        watched.page.wait_for_load_state("load")
        assert watched.page.locator("main h1").count() == 1, path
    # Let the live stream connect on the last page too.
    watched.page.goto(server.url + "/ui")
    watched.page.wait_for_selector("#live-state.on")
    assert watched.problems == []


def test_overview_counts_follow_the_queue_without_a_reload(server, watched):
    api(server, "POST", "/v1/priorities/low/pause")
    watched.page.goto(server.url + "/ui")
    watched.page.wait_for_selector("#live-state.on")
    queued = watched.page.locator('[data-stat="jobs.queued"]')
    before = int(queued.inner_text())
    marker = watched.page.evaluate("document.body.dataset.updated || ''")
    ids = api(server, "POST", "/v1/compute/batch", {"symbols": ["IBM", "GOOG", "FB"], "features": "sma(7)", "priority": "low"})["job_ids"]
    assert len(ids) == 3, ids
    watched.page.wait_for_function(
        "n => Number(document.querySelector('[data-stat=\"jobs.queued\"]').textContent) === n", arg=before + 3
    )
    assert watched.page.locator('[data-stat="depth.low"]').inner_text() == "3"
    assert watched.page.locator('[data-stat="paused.low"]').inner_text() == "paused"
    # No reload: the page's own marker of stream updates moved, the document did not.
    assert watched.page.evaluate("document.body.dataset.updated") != marker
    assert watched.page.locator('[data-pause-button="low"]').inner_text() == "Resume"
    api(server, "POST", "/v1/priorities/low/resume")
    watched.page.wait_for_function(
        "n => Number(document.querySelector('[data-stat=\"jobs.queued\"]').textContent) === n", arg=before
    )
    assert watched.page.locator('[data-stat="paused.low"]').inner_text() == "running"
    assert watched.page.locator('[data-pause-button="low"]').inner_text() == "Pause"
    (REPO / "docs").mkdir(exist_ok=True)
    watched.page.screenshot(path=str(REPO / "docs" / "dashboard-overview.png"), full_page=True)
    assert watched.problems == []


def test_a_dead_jobs_page_shows_its_error_and_retries_it(server, watched, prepared):
    dead = prepared["dead"]
    api(server, "POST", "/v1/priorities/normal/pause")
    try:
        watched.page.goto(server.url + f"/ui/jobs/{dead['id']}")
        error = watched.page.locator("#last-error").inner_text()
        assert error == dead["last_error"] and error, error
        assert "series_bytes_max" in error or "bytes" in error, error
        watched.page.locator("button.retry").click()
        watched.page.wait_for_selector(".note")
        note = watched.page.locator(".note").inner_text()
        m = re.search(r"queued again as job (\d+)", note)
        assert m, note
        again = api(server, "GET", f"/v1/jobs/{m.group(1)}")
        assert again["state"] == "queued" and again["payload"] == dead["payload"], again
    finally:
        api(server, "POST", "/v1/priorities/normal/resume")
    assert watched.problems == []


def test_the_aapl_chart_draws_candles_and_an_rsi_pane(server, watched, prepared):
    watched.page.goto(server.url + "/ui/symbols/AAPL")
    assert watched.page.locator("#chart rect.candle").count() == 250
    assert watched.page.locator('#chart [data-pane="rsi(14)"]').count() == 1
    assert watched.page.locator('#chart [data-pane="macd(12,26,9)"]').count() == 1
    last = watched.page.locator('[data-label="rsi(14)"]').get_attribute("data-last")
    assert float(last) == prepared["rsi"], (last, prepared["rsi"])
    watched.page.set_viewport_size({"width": 1280, "height": 1400})
    watched.page.screenshot(path=str(REPO / "docs" / "dashboard-chart-aapl.png"), full_page=True)
    assert watched.problems == []


def test_with_a_token_a_page_needs_the_login(browser, tmp_path):
    data = tmp_path / "data"
    kiln("ingest", "--map", "Ticker=symbol,Date=ts", str(SAMPLE), data=data)
    s = Server(data, token=TOKEN)
    try:
        context = browser.new_context()
        page = context.new_page()
        page.goto(s.url + "/ui/jobs")
        # Refused: sent to the login form.
        assert page.url.startswith(s.url + "/ui/login"), page.url
        assert page.locator("main h1").inner_text() == "Sign in"
        page.fill('input[name="token"]', "not-it")
        page.click('button[type="submit"]')
        assert "not the token" in page.locator(".note").inner_text()
        page.fill('input[name="token"]', TOKEN)
        page.click('button[type="submit"]')
        page.wait_for_url(s.url + "/ui/jobs")
        assert page.locator("main h1").inner_text() == "Jobs"
        # The live stream gets through with the session cookie.
        page.goto(s.url + "/ui")
        page.wait_for_selector("#live-state.on")
        context.close()
    finally:
        s.stop()
