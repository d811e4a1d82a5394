"""The public status page (扫码知卫生) on the real running system: an admin gets a site's link and
QR code, the public sees the venue's status without logging in, nothing more than configured,
a rotated id shows nothing, the page is cacheable and rate-limited; and at phone size in a real
browser."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import httpx
import pytest

from api.auth import token_hash
from api.public_page import load_public_settings
from api.routes_public import RateLimiter
from domain.timeutil import now_ms
from store.base import Principal
from tests.conftest import ADMIN_PASSWORD, Publisher, RunningSystem, wait_for
from tests.test_dashboard_browser import (  # the browser fixture
    CHROMIUM,
    SHOTS,
    browser,  # noqa: F401
)

SITE = "pool-xh-03"
DEVICE = "pool-xh-03-wq"
GOOD, BAD = 0.567, 0.123  # free chlorine, limit 0.3-1.0 mg/L; values that must never show


def _publish_history(broker_url: str) -> int:
    """Ten good then fifteen low free-chlorine minutes ending now; returns the last time."""
    start = now_ms() - 30 * 60_000
    batch = [
        {"ts": start + i * 60_000, "values": {"free_chlorine": GOOD if i < 10 else BAD}}
        for i in range(25)
    ]
    pub = Publisher(broker_url, "public-page-test")
    try:
        pub.publish(DEVICE, batch)
    finally:
        pub.close()
    return batch[-1]["ts"]


def _page_path(link: dict) -> str:
    return httpx.URL(link["url"]).path


def test_public_page_shows_status_only_rotates_caches_and_limits(system: RunningSystem, broker):
    admin, anon = system.http, system.anon
    system.system.core.store.add_user("insp", "x", "inspector", ["310104"])
    token = "public-page-test-token"
    system.system.core.store.add_token(
        token_hash(token), Principal("insp", "inspector", ("310104",)), None
    )
    insp = httpx.Client(base_url=system.base_url, headers={"Authorization": f"Bearer {token}"})
    assert insp.get(f"/api/v1/sites/{SITE}/public-link").status_code == 403
    assert anon.get(f"/api/v1/sites/{SITE}/public-link").status_code == 401
    assert admin.get("/api/v1/sites/nowhere/public-link").status_code == 404

    link = admin.get(f"/api/v1/sites/{SITE}/public-link").json()
    assert link["url"].startswith(system.base_url + "/p/")
    assert admin.get(f"/api/v1/sites/{SITE}/public-link").json() == link  # stable until rotated
    svg = admin.get(link["qr_svg"])
    assert svg.headers["content-type"] == "image/svg+xml" and "<svg" in svg.text
    png = admin.get(link["qr_png"])
    assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    assert anon.get(link["qr_svg"]).status_code == 401  # the code would give the id away

    first = anon.get(_page_path(link))
    assert first.status_code == 200, first.text
    assert "康健社区游泳池" in first.text and "暂无数据" in first.text
    assert "max-age=60" in first.headers["cache-control"]
    assert (
        anon.get(_page_path(link), headers={"If-None-Match": first.headers["etag"]}).status_code
        == 304
    )

    last_ts = _publish_history(broker.url)
    wait_for(
        lambda: admin.get("/api/v1/sites/" + SITE).json()["current"]["status"] == "over_limit",
        what="the pool over its limit",
    )
    rotated = admin.post(f"/api/v1/sites/{SITE}/public-link/rotate").json()
    assert rotated["url"] != link["url"]
    old = anon.get(_page_path(link))
    unknown = anon.get("/p/" + "x" * 24)
    assert old.status_code == unknown.status_code == 404
    assert old.text == unknown.text and "康健" not in old.text  # reveals nothing

    page = anon.get(_page_path(rotated)).text
    assert "超标" in page
    assert "近 30 天合格率" in page and "40.0%" in page  # 10 of 25 valid minutes within limits
    shanghai = datetime.fromtimestamp(last_ts / 1000, UTC).astimezone(ZoneInfo("Asia/Shanghai"))
    assert shanghai.strftime("%Y-%m-%d %H:%M") in page
    alert = admin.get("/api/v1/alerts", params={"site": SITE}).json()[0]
    for secret in (str(GOOD), str(BAD), alert["message"], DEVICE, "free_chlorine", "游离性余氯"):
        assert secret not in page
    assert "<script" not in page and "style=" not in page  # holds under a strict CSP
    assert anon.get("/static/public.css").status_code == 200

    # Hostile ids get the same plain 404.
    for bad in ("A" * 5000, "%00%ff", "%3Cscript%3E", "x"):
        r = anon.get("/p/" + bad)
        assert r.status_code == 404 and r.text == unknown.text

    # The page is rate-limited per client address.
    serving = load_public_settings().serving
    statuses = [anon.get("/p/" + "y" * 24) for _ in range(serving.requests_per_window + 1)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, "no 429 within one window's allowance"
    assert 1 <= int(limited[0].headers["retry-after"]) <= serving.window_s
    insp.close()


def test_rate_limiter_windows_and_bounded_memory():
    limiter = RateLimiter(requests=2, window_s=60, max_clients=3)
    assert limiter.retry_after("a", 1000.0) is None
    assert limiter.retry_after("a", 1001.0) is None
    assert limiter.retry_after("a", 1010.0) == 50
    assert limiter.retry_after("a", 1060.0) is None  # a new window
    for i in range(1000):
        limiter.retry_after(f"10.0.{i // 256}.{i % 256}", 1061.0)
    assert len(limiter._windows) == 3


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it)")
def test_public_page_on_a_phone(system: RunningSystem, broker, browser):  # noqa: F811
    _publish_history(broker.url)
    wait_for(
        lambda: (
            system.http.get("/api/v1/sites/" + SITE).json()["current"]["status"] == "over_limit"
        ),
        what="the pool over its limit",
    )
    link = system.http.get(f"/api/v1/sites/{SITE}/public-link").json()
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
    problems: list[str] = []  # CSP refusals and failed loads (the browser's own favicon aside)
    page.on("console", lambda m: problems.append(m.text) if "Refused" in m.text else None)
    page.on(
        "response",
        lambda r: (
            problems.append(r.url)
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    try:
        page.goto(link["url"])
        assert page.locator("h1").inner_text() == "康健社区游泳池 (Kangjian Community Pool)"
        assert page.locator("dd.status").inner_text() == "超标"
        # The stylesheet applied: the status is a red badge, and nothing overflows a phone.
        color = page.eval_on_selector("dd.status", "e => getComputedStyle(e).backgroundColor")
        assert color == "rgb(192, 38, 45)"
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        assert not problems
        if SHOTS:
            page.screenshot(path=f"{SHOTS}/public.png", full_page=True)

        # An admin gets the same link and its QR code from the dashboard's site page.
        page.goto(system.base_url + "/")
        page.fill("#username", "admin")
        page.fill("#password", ADMIN_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("#sites tbody tr")
        page.goto(system.base_url + f"/#/site/{SITE}/h24")
        page.click("#public-qr")
        page.wait_for_selector("#public-link svg")
        assert page.locator("#public-link a").inner_text() == link["url"]
    finally:
        page.close()
