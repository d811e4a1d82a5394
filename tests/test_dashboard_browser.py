"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against the whole
running system: log in, watch a simulated pool go over its limit in the live feed, acknowledge
the alert from the page, and see the site's charts render."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from domain.timeutil import now_ms
from landun.demo import demo_registry_path
from landun.system import RunConfig
from simulators.faults import Fault, FaultKind
from simulators.pool_model import PoolModel, opening_intervals
from simulators.runner import RunnerSettings, SimDevice, SimulatorRunner
from tests.conftest import ADMIN_PASSWORD, Publisher, start_system, wait_for

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (CI installs it)"
)
HOUR = 3_600_000
# Set LANDUN_SCREENSHOTS=docs/screenshots to refresh the README's pictures.
SHOTS = os.environ.get("LANDUN_SCREENSHOTS")


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()


def failing_pool(broker_url: str) -> SimulatorRunner:
    """pool-xh-03 with a dosing pump that failed hours ago, sent as a buffer flush."""
    now = now_ms()
    start = now - 8 * HOUR
    # With no bathers (the pool is shut at night) chlorine falls too slowly to cross its limit:
    # go back until the pump fails four opening hours before now, whatever the time of day.
    while sum(hi - lo for lo, hi in opening_intervals(start + HOUR, now)) < 4 * HOUR:
        start -= HOUR
    fault = Fault(FaultKind.DOSING_PUMP_FAILURE, start + HOUR, now + HOUR)
    model = PoolModel("pool-xh-03-wq", 3, faults=[fault], start_ms=start)
    from ingest.mqtt import BrokerAddress

    return SimulatorRunner(
        BrokerAddress.parse(broker_url),
        [SimDevice("pool-xh-03", "pool-xh-03-wq", model)],
        RunnerSettings(start_ms=start, backfill_until_ms=now, end_ms=now),
        client_id="browser-test-sim",
    )


def test_inspector_sees_pool_go_over_limit_acknowledges_and_charts_render(
    broker, tmp_path: Path, browser
):
    running = start_system(
        RunConfig(
            port=0,
            broker_url=broker.url,
            data_dir=tmp_path / "var",
            registry_path=demo_registry_path(),
            simulators=False,
            client_id="landun-ingest-browser",
        )
    )
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    try:
        page.goto(running.base_url + "/")
        assert page.locator("h1").inner_text() == "登录"  # zh-CN by default
        page.fill("#username", "admin")
        page.fill("#password", ADMIN_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("#sites tbody tr")
        assert page.locator("#feed-state").inner_text() in ("已连接，新告警将自动出现", "")
        # Waits by selector: a string predicate would be eval'd in the page, which its CSP forbids.
        page.wait_for_selector("#feed-state:not(:empty)")
        row = page.locator("tr[data-site='pool-xh-03']")
        assert row.locator(".badge").inner_text() == "正常"

        sim = failing_pool(broker.url)
        sim.start()
        wait_for(lambda: sim.finished, timeout=60, what="the simulated backfill")
        sim.stop()

        # The live feed shows the new alert without a reload (later changes may follow it).
        page.locator("#feed-list li", has_text="新告警").first.wait_for(timeout=20_000)
        assert "pool-xh-03" in page.locator("#feed-list").inner_text()
        page.locator("tr[data-site='pool-xh-03'] .badge", has_text="超标").wait_for(timeout=20_000)
        if SHOTS:
            page.screenshot(path=f"{SHOTS}/overview.png", full_page=True)

        alert = next(
            a
            for a in running.http.get("/api/v1/alerts", params={"site": "pool-xh-03"}).json()
            if a["rule_id"] == "range:free_chlorine"
        )
        page.click(f"tr[data-alert='{alert['id']}'] a")
        page.wait_for_selector("#do-ack")
        assert "游离性余氯" in page.locator("dl.facts").inner_text()
        page.click("#do-ack")
        page.wait_for_selector("h1 .acknowledged")
        assert running.http.get(f"/api/v1/alerts/{alert['id']}").json()["status"] == "acknowledged"

        page.goto(running.base_url + "/#/site/pool-xh-03/h24")
        page.wait_for_selector(".chart[data-parameter='free_chlorine'] canvas")
        size = page.eval_on_selector(
            ".chart[data-parameter='free_chlorine'] canvas", "c => [c.width, c.height]"
        )
        assert size[0] > 200 and size[1] > 100
        assert page.locator(".chart").count() == 6
        if SHOTS:
            page.screenshot(path=f"{SHOTS}/site.png", full_page=True)

        # A medical institution's page shows its bag ledger and daily totals.
        scanner = Publisher(broker.url, "browser-test-scanner")
        t0 = now_ms() - 3 * HOUR
        bag = {"bag_id": "HX-1", "category": "sharps", "weight_kg": 1.5, "department": "ICU"}
        scanner.publish("hosp-xh-01-scan", {"ts": t0, "event": "bag_collected", **bag}, "events")
        scanner.close()
        wait_for(
            lambda: running.http.get("/api/v1/sites/hosp-xh-01/waste/bags").json(),
            what="the bag in the ledger",
        )
        page.goto(running.base_url + "/#/site/hosp-xh-01/h24")
        page.wait_for_selector("#waste-bags tr[data-bag='HX-1']")
        assert "损伤性" in page.locator("#waste-bags").inner_text()
        assert page.locator("#waste-daily tbody tr").count() == 7

        page.click("#lang")
        page.goto(running.base_url + "/#/")
        page.wait_for_selector("#sites tbody tr")
        assert page.locator("h1").inner_text() == "Sites"
        # The page works under its Content-Security-Policy: nothing was refused.
        assert not [m for m in console if "Content Security Policy" in m], console
    finally:
        page.close()
        running.stop()
