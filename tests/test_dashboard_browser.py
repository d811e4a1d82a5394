"""The dashboard in a real browser (Debian's Chromium driven by Playwright) against the whole
running system: log in, watch a simulated pool go over its limit in the live feed, acknowledge
the alert from the page, and see the site's charts render."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from domain.mqtt_connection import BrokerAddress
from domain.registry import load_registry
from domain.timeutil import now_ms
from landun.demo import FAILING_SITE, demo_devices, demo_registry_path, demo_settings
from simulators.runner import SimulatorRunner
from tests.conftest import ADMIN_PASSWORD, Publisher, demo_config, start_system, wait_for

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


def last_time_at(hour: int, now: int) -> int:
    """The latest moment not after `now` at `hour`:00 in Asia/Shanghai (UTC+8)."""
    t = (now + 8 * HOUR) // (24 * HOUR) * (24 * HOUR) + hour * HOUR - 8 * HOUR
    return t if t <= now else t - 24 * HOUR


def demo_pools(broker_url: str, anchor: int) -> SimulatorRunner:
    """The demo's MQTT pools as a first `landun run` started at `anchor` sends them: six hours of
    history, the failing pool (pool-xh-03) below its chlorine limit, as a buffer flush."""
    registry = load_registry(demo_registry_path())
    devices = [d for d in demo_devices(registry, anchor) if d.site_id.startswith("pool-")]
    settings = replace(demo_settings(anchor, anchor, None), end_ms=anchor)
    return SimulatorRunner(
        BrokerAddress.parse(broker_url), devices, settings, client_id="browser-test-sim"
    )


# The demo's story started at four hours of the day in Shanghai, whatever the hour CI runs at.
HOURS = (2, 8, 13, 20)


@pytest.mark.parametrize("hour", HOURS)
def test_inspector_sees_pool_go_over_limit_acknowledges_and_charts_render(
    broker, tmp_path: Path, browser, hour: int
):
    running = start_system(demo_config(broker.url, tmp_path / "var", "landun-ingest-browser"))
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
        assert row.locator(".badge").inner_text() == "暂无数据"  # nothing reported yet

        sim = demo_pools(broker.url, last_time_at(hour, now_ms()))
        # Screenshots from the run whose story ends nearest to now.
        shots = SHOTS if hour == max(HOURS, key=lambda h: last_time_at(h, now_ms())) else None
        sim.start()
        wait_for(lambda: sim.finished, timeout=60, what="the simulated backfill")
        sim.stop()

        # The live feed shows the new alert without a reload (later changes may follow it).
        page.locator("#feed-list li", has_text="新告警").first.wait_for(timeout=20_000)
        assert FAILING_SITE in page.locator("#feed-list").inner_text()
        page.locator("tr[data-site='pool-xh-03'] .badge", has_text="超标").wait_for(timeout=20_000)
        # A healthy pool of the demo.
        page.locator("tr[data-site='pool-xh-01'] .badge", has_text="正常").wait_for(timeout=20_000)
        if shots:
            page.screenshot(path=f"{shots}/overview.png", full_page=True)

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
        if shots:
            page.screenshot(path=f"{shots}/site.png", full_page=True)

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


def test_water_site_page_shows_its_parameters_with_gb5749_limits_and_its_tanks(
    broker, tmp_path: Path, browser
):
    running = start_system(demo_config(broker.url, tmp_path / "var", "landun-ingest-water"))
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    device = Publisher(broker.url, "browser-test-water")
    try:
        start = now_ms() - HOUR
        for i in range(30):
            values = {"free_chlorine": 0.03, "ph": 7.3, "turbidity": 0.2, "conductivity": 410}
            values |= {"temperature": 19.0, "pressure": 0.33, "tank_level": 2.0 + 0.01 * i}
            device.publish("water-xh-01-wq", {"ts": start + i * 60_000, "values": values})
        record = {"ts": start, "tank_id": "T1", "operator": "王师傅", "contractor": "清源公司"}
        for event in ("tank_cleaned", "tank_disinfected"):
            device.publish("water-xh-01-tank", record | {"event": event}, "events")
        wait_for(
            lambda: running.http.get("/api/v1/sites/water-xh-01/tanks").json(),
            what="the tank record",
        )
        page.goto(running.base_url + "/")
        page.fill("#username", "admin")
        page.fill("#password", ADMIN_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("#sites tbody tr")
        page.goto(running.base_url + "/#/site/water-xh-01/h24")
        chlorine = ".chart[data-parameter='free_chlorine']"
        page.wait_for_selector(f"{chlorine} canvas")
        assert page.locator(".chart").count() == 7
        heading = page.locator(f"{chlorine} h3").inner_text()
        assert "游离性余氯" in heading and "0.05–2 mg/L" in heading
        assert "≤1 NTU" in page.locator(".chart[data-parameter='turbidity'] h3").inner_text()
        assert "二次供水" in page.locator("p.muted").first.inner_text()
        page.wait_for_selector("#tanks tr[data-tank='T1']")
        assert "清源公司" in page.locator("#tanks").inner_text()

        page.click("#lang")
        page.wait_for_selector(f"{chlorine} canvas")
        page.locator(f"{chlorine} h3", has_text="Free chlorine").wait_for()
        assert "Secondary supply" in page.locator("p.muted").first.inner_text()
        assert not [m for m in console if "Content Security Policy" in m], console
    finally:
        device.close()
        page.close()
        running.stop()
