"""The built-in demo's story holds at any hour and across restarts, and `landun run` fails fast
and whole when a part cannot start."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from alerts.standards import builtin_profiles
from domain.limits import limits_for_site
from domain.model import SiteKind
from domain.registry import load_registry
from domain.timeutil import now_ms
from landun.demo import (
    FAILING_LINE,
    FAILING_SITE,
    FAILING_WATER_SITE,
    demo_anchor,
    demo_devices,
    demo_loggers,
    demo_registry_path,
    demo_settings,
)
from landun.system import RunConfig
from simulators.pool_model import PoolModel
from simulators.water_model import WaterModel
from tests.conftest import demo_config, start_system, wait_for

SHANGHAI = timedelta(hours=8)
# A fixed week (Monday 2026-11-30 to Sunday 2026-12-06), at four hours of the day in Shanghai.
WEEK = [datetime(2026, 11, 30, tzinfo=UTC) + timedelta(days=d) for d in range(7)]
HOURS = (2, 8, 13, 20)
ANCHORS = [
    int((day + timedelta(hours=h) - SHANGHAI).timestamp() * 1000) for day in WEEK for h in HOURS
]


def backfilled_chlorine(anchor: int) -> dict[str, list[float]]:
    """Free chlorine each demo pool publishes in the backfill of a first start at `anchor`."""
    registry = load_registry(demo_registry_path())
    devices = demo_devices(registry, anchor) + demo_loggers(registry, anchor)
    settings = demo_settings(anchor, anchor, None)
    out: dict[str, list[float]] = {}
    for d in devices:
        if type(d.model) is not PoolModel:  # a WaterModel is a PoolModel too
            continue
        values = out.setdefault(d.site_id, [])
        t = settings.start_ms or 0
        while t < anchor:
            sample = d.model.sample(t)
            if sample is not None and t >= (settings.publish_from_ms or 0):
                values.append(sample.values["free_chlorine"])
            t += settings.interval_s * 1000
    return out


@pytest.mark.parametrize(
    "anchor", ANCHORS, ids=lambda a: datetime.fromtimestamp(a / 1000, UTC).isoformat()
)
def test_failing_pool_is_over_its_limit_and_the_others_within_theirs_at_any_hour(anchor: int):
    registry = load_registry(demo_registry_path())
    profiles = builtin_profiles()
    chlorine = backfilled_chlorine(anchor)
    assert chlorine.keys() == {s.id for s in registry.sites.values() if s.kind == SiteKind.POOL}
    for site_id, values in chlorine.items():
        limit = limits_for_site(registry.sites[site_id], profiles)["free_chlorine"]
        assert len(values) >= 359
        if site_id == FAILING_SITE:
            # Below the limit through the whole backfill: the alert opens on the first batch.
            assert max(values) < limit.min, site_id
        else:
            assert limit.min <= min(values) and max(values) <= limit.max, site_id


def backfilled_water(anchor: int) -> dict[tuple[str, str], list[float]]:
    """(site, parameter) -> the values each demo water supply publishes in the backfill of a
    first start at `anchor`, for the parameters its profile limits."""
    registry = load_registry(demo_registry_path())
    profiles = builtin_profiles()
    settings = demo_settings(anchor, anchor, None)
    out: dict[tuple[str, str], list[float]] = {}
    for d in demo_devices(registry, anchor):
        if not isinstance(d.model, WaterModel):
            continue
        limits = limits_for_site(registry.sites[d.site_id], profiles)
        t = settings.start_ms or 0
        while t < anchor:
            sample = d.model.sample(t)
            if sample is not None and t >= (settings.publish_from_ms or 0):
                for parameter, value in sample.values.items():
                    if parameter in limits:
                        out.setdefault((d.site_id, parameter), []).append(value)
            t += settings.interval_s * 1000
    return out


@pytest.mark.parametrize(
    "anchor", ANCHORS, ids=lambda a: datetime.fromtimestamp(a / 1000, UTC).isoformat()
)
def test_failing_water_supply_is_below_the_tap_minimum_and_the_other_within_gb5749(anchor: int):
    registry = load_registry(demo_registry_path())
    profiles = builtin_profiles()
    values = backfilled_water(anchor)
    water = {s.id for s in registry.sites.values() if s.kind == SiteKind.DRINKING_WATER}
    assert {site for site, _ in values} == water and FAILING_WATER_SITE in water
    for (site_id, parameter), series in values.items():
        limit = limits_for_site(registry.sites[site_id], profiles)[parameter]
        assert len(series) >= 359
        if (site_id, parameter) == (FAILING_WATER_SITE, "free_chlorine"):
            assert max(series) < limit.min, site_id  # the alert opens on the first batch
        else:
            assert not any(limit.violated(v) for v in series), (site_id, parameter)


def test_demo_anchor_is_kept_and_renewed_when_too_old(tmp_path: Path):
    now = 1_796_000_000_000
    assert demo_anchor(tmp_path, now) == now
    assert demo_anchor(tmp_path, now + 3_600_000) == now  # a restart keeps the demo's past
    later = now + 8 * 24 * 3_600_000
    assert demo_anchor(tmp_path, later) == later  # too old to replay: a new past
    (tmp_path / "demo-anchor.txt").write_text("garbage")
    assert demo_anchor(tmp_path, later) == later


def _readings(running, device: str) -> list[dict]:
    r = running.http.get(
        "/api/v1/readings",
        params={
            "device": device,
            "parameter": "ph",
            "start": "2020-01-01T00:00:00Z",
            "limit": 5000,
        },
    )
    r.raise_for_status()
    return r.json()


def _demo_config(broker, data_dir: Path) -> RunConfig:
    return demo_config(broker.url, data_dir, f"landun-demo-{data_dir.parent.name}", simulators=True)


def test_demo_opens_the_failing_pools_alert_at_once_and_a_restart_continues_its_data(
    broker, tmp_path: Path
):
    data_dir = tmp_path / "var"
    started = now_ms()
    running = start_system(_demo_config(broker, data_dir))
    try:
        alert = wait_for(
            lambda: [
                a
                for a in running.http.get("/api/v1/alerts", params={"site": FAILING_SITE}).json()
                if a["rule_id"] == "range:free_chlorine" and a["status"] == "open"
            ],
            timeout=60,
            what="the failing pool's alert",
        )[0]
        assert alert["severity"] == "critical"
        water = wait_for(
            lambda: [
                a
                for a in running.http.get(
                    "/api/v1/alerts", params={"site": FAILING_WATER_SITE}
                ).json()
                if a["rule_id"] == "range:free_chlorine" and a["status"] == "open"
            ],
            timeout=60,
            what="the failing water supply's alert",
        )[0]
        assert water["limit"]["min"] == 0.05 and water["limit"]["standard"] == "GB 5749-2022"
        # The disinfection unit's failing steam cabinet: a cycle alert well within 90 s.
        cycle = wait_for(
            lambda: [
                a
                for a in running.http.get("/api/v1/alerts", params={"site": "tw-xh-01"}).json()
                if a["rule_id"] == "cycle:noncompliant" and a["device_id"] == FAILING_LINE
            ],
            timeout=60,
            what="the failing steam cabinet's cycle alert",
        )[0]
        assert cycle["evidence"]["cycles"] and cycle["limit"]["min"] == 100.0
        first = wait_for(
            lambda: len(r := _readings(running, "pool-xh-01-wq")) >= 360 and r,
            what="the six-hour backfill",
        )
        # The HJ 212 logger of pool-cn-03 is fed too, through the gateway.
        wait_for(lambda: len(_readings(running, "pool-cn-03-hj")) >= 360, what="HJ 212 backfill")
        sites = {s["id"]: s["current"]["status"] for s in running.http.get("/api/v1/sites").json()}
        assert sites[FAILING_SITE] == "over_limit"
        assert "no_data" not in sites.values()
    finally:
        running.stop()
    assert (data_dir / "demo-anchor.txt").read_text().strip().isdigit()

    running = start_system(_demo_config(broker, data_dir))
    try:
        wait_for(lambda: running.judged(), what="the restart's messages judged")
        again = _readings(running, "pool-xh-01-wq")
        times = [r["ts"] for r in again]
        assert len(times) == len(set(times))
        # The same past, continued: nothing re-sent with other times or values.
        assert again[: len(first)] == first
        assert len(again) - len(first) <= (now_ms() - started) // 60_000 + 2
        opened = [
            a
            for a in running.http.get("/api/v1/alerts", params={"site": FAILING_SITE}).json()
            if a["rule_id"] == "range:free_chlorine"
        ]
        assert [a["id"] for a in opened] == [alert["id"]]
        hospital = running.http.get("/api/v1/alerts", params={"site": "hosp-xh-01"}).json()
        assert not [a for a in hospital if a["rule_id"].startswith("custody:duplicate")]
    finally:
        running.stop()


def _landun(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "landun.cli", "run", "--no-simulators", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _one_clear_line(proc: subprocess.CompletedProcess, hint: str) -> None:
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.startswith("landun: ")]
    assert len(lines) == 1 and hint in lines[0], proc.stderr


def test_a_second_instance_on_a_busy_port_exits_before_touching_the_first(system, broker, tmp_path):
    connects = system.metric("landun_ingest_connects_total")
    proc = _landun(
        "--port", str(system.system.api_port),
        "--broker", broker.url,
        "--client-id", system.system.config.client_id,
        "--data-dir", str(tmp_path / "second"),
    )  # fmt: skip
    _one_clear_line(proc, "--port")
    assert "Landun is running" not in proc.stdout
    # The first instance's ingest session was never taken over.
    assert system.metric("landun_ingest_connects_total") == connects
    assert system.anon.get("/healthz").json()["broker_connected"] is True


def test_a_busy_embedded_broker_port_gives_one_line_and_no_traceback(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _landun("--port", "0", "--broker-port", str(port), "--data-dir", str(tmp_path))
    _one_clear_line(proc, "--broker-port 0")


def test_a_busy_hj212_port_gives_one_line(broker, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = _landun(
            "--port", "0", "--broker", broker.url, "--hj212-port", str(port),
            "--data-dir", str(tmp_path),
        )  # fmt: skip
    _one_clear_line(proc, "--hj212-port")
