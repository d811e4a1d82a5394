"""The dashboard's details in a real browser (Debian's Chromium driven by Playwright) against
the running system with known data: /docs with the network cut off, 24-hour chart axes, the
English switch leaving no Chinese but the data itself, and "Print evidence" printing the
record's own page. Nothing here depends on the hour of day: the data is placed relative to now
and judged by the limits alone."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from domain.timeutil import now_ms
from store.base import AuditEntry
from tests.conftest import (
    ADMIN_PASSWORD,
    Publisher,
    RunningSystem,
    demo_config,
    start_system,
    wait_for,
)
from tests.test_dashboard_browser import CHROMIUM, browser  # noqa: F401 (the fixture)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (CI installs it)"
)
MINUTE = 60_000
HAN = re.compile(r"[\u3400-\u9fff\uff08\uff09\uff0c\uff1a\u3001\u3002]")


@pytest.fixture
def seeded(broker, tmp_path: Path) -> Iterator[tuple[RunningSystem, dict]]:
    """pool-xh-03's free chlorine at 0.2 mg/L for the last 20 minutes: an open alert."""
    running = start_system(  # no offline alerts appearing mid-test
        demo_config(broker.url, tmp_path / "var", "landun-ingest-ui-browser", tick_s=3600.0)
    )
    pub = Publisher(broker.url, "ui-browser-device")
    start = now_ms() - 20 * MINUTE
    try:
        batch = [
            {"ts": start + i * MINUTE, "values": {"free_chlorine": 0.2 + 0.01 * (i % 2)}}
            for i in range(20)
        ]
        pub.publish("pool-xh-03-wq", batch)

        def alert():
            found = running.http.get(
                "/api/v1/alerts", params={"device": "pool-xh-03-wq", "rule": "range:free_chlorine"}
            ).json()
            return found[0] if found else None

        yield running, wait_for(alert, what="the low-chlorine alert")
    finally:
        pub.close()
        running.stop()


def _log_in(page, running: RunningSystem) -> None:
    page.goto(running.base_url + "/")
    page.fill("#username", "admin")
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("#sites tbody tr")


def test_docs_render_with_the_network_cut_off(seeded, browser):  # noqa: F811
    running, _ = seeded
    own = urlsplit(running.base_url).netloc
    page = browser.new_page()
    elsewhere: list[str] = []

    def only_the_app(route):
        if urlsplit(route.request.url).netloc == own:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_app)
    try:
        page.goto(running.base_url + "/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
        assert "Landun API" in page.locator(".swagger-ui .info .title").inner_text()
        page.wait_for_selector(".opblock-tag", timeout=20_000)
        assert page.locator(".opblock").count() > 20
        assert elsewhere == []
    finally:
        page.close()


def test_english_switch_charts_and_printed_evidence(seeded, browser):  # noqa: F811
    running, alert = seeded
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.goto(running.base_url + "/")
        page.fill("#username", "admin")
        page.fill("#password", "not the password")
        page.click("button[type=submit]")
        page.locator("#login-error", has_text="登录失败").wait_for()  # no eval: the CSP forbids it
        assert page.locator("#login-error").inner_text() == "登录失败: 用户名或密码错误"
        _log_in(page, running)
        # The chart's time axis is a 24-hour clock on the Chinese page.
        page.goto(running.base_url + "/#/site/pool-xh-03/h24")
        page.wait_for_selector(".chart[data-parameter='free_chlorine'] canvas")
        ticks = page.eval_on_selector(
            ".chart[data-parameter='free_chlorine']", "b => b.plot.axes[0]._values"
        )
        assert ticks and all(re.fullmatch(r"\d\d:\d\d", v) for v in ticks), ticks
        # 06:00 UTC is 14:00 in Shanghai, written as such in both languages.
        two_pm = page.evaluate("fmtAxisTimes([Date.UTC(2026, 0, 5, 6) / 1000], 3600)")
        assert two_pm == ["14:00"]

        # The evidence page in Chinese: rule name, unit, worst value, and its hash; the
        # escalation's entries in a section of their own.
        notice = AuditEntry(alert["id"], now_ms(), "escalation", "notification_queued",
                            "王经理 via sms 138****0001")  # fmt: skip
        running.system.core.store.append_audit([notice])
        page.goto(running.base_url + f"/#/alert/{alert['id']}")
        page.wait_for_selector("dl.facts")
        facts = page.locator("dl.facts").inner_text()
        assert "游离性余氯超出限值" in facts and "mg/L" in facts and "None" not in facts
        record = running.http.get(f"/api/v1/alerts/{alert['id']}/evidence").json()
        assert record["sha256"] in facts
        assert page.locator("#readings th").first.inner_text() == "时间"
        notices = page.locator("#notifications").inner_text()
        assert "通知待发 王经理 via sms 138****0001" in notices

        # Print evidence prints the record's own page (in a frame), not the dashboard.
        page.click("#do-print")
        frame = page.frame_locator("#print-frame")
        frame.locator("h1").wait_for(state="attached")  # a frame of no size: printed, not shown
        assert "在线监测证据记录" in frame.locator("h1").text_content()
        assert record["sha256"] in frame.locator("body").text_content()

        # In English, what is left in Chinese is the data: names, addresses, standards' text.
        sites = running.http.get("/api/v1/sites").json()
        data = [s["name"] for s in sites] + [s["address"] for s in sites]
        data += [record["limit"]["clause"], record["limit"]["standard"]]
        data += [x["name"].split(" (")[0] for x in sites]
        data.append("中文")  # the switch back names its language in that language
        data.append("王经理")

        def chinese_left() -> list[str]:
            text = page.locator("body").inner_text()
            for d in sorted(data, key=len, reverse=True):
                text = text.replace(d, "")
            return [line for line in text.splitlines() if HAN.search(line)]

        page.click("#lang")
        page.wait_for_selector("dl.facts")
        assert page.locator("#readings th").first.inner_text() == "Time"
        assert "Free chlorine outside its limit" in page.locator("dl.facts").inner_text()
        assert "Notice queued 王经理" in page.locator("#notifications").inner_text()
        assert chinese_left() == []
        page.goto(running.base_url + "/#/")
        page.wait_for_selector("#sites tbody tr")
        page.locator("#feed-state", has_text=re.compile(r"\S")).wait_for()
        assert chinese_left() == []
        page.goto(running.base_url + "/#/site/pool-xh-03/h24")
        page.wait_for_selector(".chart[data-parameter='free_chlorine'] canvas")
        assert chinese_left() == []
        assert page.title().startswith("Landun monitoring")
    finally:
        page.close()
