"""Drinking water end to end on real parts (broker, ingest, SQLite, alert engine, HTTP API):
readings judged against GB 5749-2022, tank cleaning records and their interval rule, and the
precise reasons hostile records get."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from alerts.settings_files import use_config_dir
from domain.timeutil import now_ms
from tests.conftest import demo_config, start_system, wait_for

SITE = "water-xh-01"
ANALYZER = "water-xh-01-wq"
TANK_LOG = "water-xh-01-tank"
MINUTE = 60_000
DAY = 1440 * MINUTE


def record(ts: int, seq: int, free_chlorine: float, turbidity: float) -> dict:
    return {
        "ts": ts,
        "seq": seq,
        "values": {
            "free_chlorine": free_chlorine,
            "ph": 7.3,
            "turbidity": turbidity,
            "conductivity": 420,
            "temperature": 19.5,
            "pressure": 0.33,
            "tank_level": 2.1,
        },
    }


def _alerts(system, **params) -> list[dict]:
    return system.http.get("/api/v1/alerts", params={"site": SITE, **params}).json()


def test_low_chlorine_and_turbid_water_raise_alerts_with_their_gb5749_clauses(system, publisher):
    start = now_ms() - 40 * MINUTE
    # 20 minutes of chlorine below the 0.05 mg/L tap minimum and turbidity over 1 NTU.
    for i in range(21):
        publisher.publish(ANALYZER, record(start + i * MINUTE, i, 0.03, 1.6))
    alerts = wait_for(
        lambda: len(a := _alerts(system)) >= 2 and a, what="the chlorine and turbidity alerts"
    )
    by_rule = {a["rule_id"]: a for a in alerts}
    assert set(by_rule) == {"range:free_chlorine", "range:turbidity"}
    chlorine = by_rule["range:free_chlorine"]
    assert chlorine["family"] == "compliance" and chlorine["worst_value"] == 0.03
    assert (chlorine["limit"]["min"], chlorine["limit"]["max"]) == (0.05, 2.0)
    assert (
        chlorine["limit"]["standard"] == "GB 5749-2022" and "末梢水" in chlorine["limit"]["clause"]
    )
    assert by_rule["range:turbidity"]["limit"]["max"] == 1.0
    # The site page's limits: every GB 5749 parameter the profile sets, with its clause.
    limits = {x["parameter"]: x for x in system.http.get(f"/api/v1/sites/{SITE}/limits").json()}
    assert {"free_chlorine", "chlorine_dioxide", "turbidity", "ph", "tds"} <= set(limits)
    assert limits["ph"]["text"] == "6.5–8.5 pH" and limits["tds"]["text"] == "≤1000 mg/L"
    # The public page (扫码知卫生) of a water supply reads as over the limit, under GB 5749.
    link = system.http.get(f"/api/v1/sites/{SITE}/public-link").json()
    page = system.anon.get(link["url"].removeprefix(system.base_url)).text
    assert "生活饮用水水质卫生状况" in page and "超标" in page and "GB 5749-2022" in page
    site = system.http.get(f"/api/v1/sites/{SITE}").json()
    assert (site["kind"], site["subtype"], site["profile"]) == (
        "drinking_water",
        "secondary_supply",
        "gb5749-2022",
    )


def test_water_within_gb5749_raises_nothing(system, publisher):
    start = now_ms() - 40 * MINUTE
    for i in range(21):
        publisher.publish(ANALYZER, record(start + i * MINUTE, i, 0.35 + 0.01 * (i % 3), 0.2))
    wait_for(
        lambda: (
            len(system.http.get("/api/v1/readings", params={"device": ANALYZER}).json()) == 21 * 7
        ),
        what="the readings stored",
    )
    wait_for(lambda: system.judged(), what="the readings judged")
    assert _alerts(system) == []


@pytest.fixture
def short_interval(tmp_path: Path) -> Iterator[Path]:
    """A config dir whose tanks.toml asks for cleaning every 20 days (a quarterly rule shortened
    so that a record the ingest accepts, at most 30 days old, can already be overdue)."""
    packaged = Path(__file__).parents[1] / "alerts" / "data" / "tanks.toml"
    config = tmp_path / "config"
    config.mkdir()
    (config / "tanks.toml").write_text(
        packaged.read_text("utf-8").replace("days = 183", "days = 20"), "utf-8"
    )
    use_config_dir(config)
    yield config
    use_config_dir(None)


def test_a_tank_past_its_interval_raises_an_alert_and_a_new_record_clears_it(
    broker, publisher, tmp_path, short_interval
):
    running = start_system(demo_config(broker.url, tmp_path / "var", f"landun-{tmp_path.name}"))
    try:
        done = now_ms() - 25 * DAY
        for event in ("tank_cleaned", "tank_disinfected"):
            publisher.publish(
                TANK_LOG,
                {"ts": done, "event": event, "tank_id": "T1", "operator": "王师傅"},
                kind="events",
            )
        rule = "tank:cleaning_overdue:T1"
        alert = wait_for(
            lambda: [a for a in _alerts(running) if a["rule_id"] == rule], what="overdue alert"
        )[0]
        assert alert["status"] == "open" and alert["family"] == "compliance"
        assert alert["evidence"]["tank_id"] == "T1" and 4.9 < alert["evidence"]["days_late"] < 5.1
        assert alert["limit"]["max"] == 20 and "半年" in alert["limit"]["clause"]
        tanks = running.http.get(f"/api/v1/sites/{SITE}/tanks").json()
        assert [(t["tank_id"], len(t["records"])) for t in tanks] == [("T1", 2)]
        assert tanks[0]["records"][0]["operator"] == "王师傅"

        today = now_ms() - MINUTE
        publisher.publish(
            TANK_LOG,
            [
                {
                    "ts": today,
                    "event": e,
                    "tank_id": "T1",
                    "operator": "王师傅",
                    "contractor": "某公司",
                }
                for e in ("tank_cleaned", "tank_disinfected")
            ],
            kind="events",
        )
        wait_for(
            lambda: (
                next(a for a in _alerts(running) if a["rule_id"] == rule)["status"] == "resolved"
            ),
            what="the alert resolved by the new record",
        )
    finally:
        running.stop()


BAD_RECORDS = [
    ({"ts": 1, "event": "tank_cleaned", "tank_id": "T1"}, "operator: Field required"),
    (
        {"ts": "now", "event": "tank_emptied", "tank_id": "T1", "operator": "x"},
        "event: Input should be 'tank_cleaned' or 'tank_disinfected'",
    ),
    (
        {"ts": "2026-12-01T08:00:00", "event": "tank_cleaned", "tank_id": "T1", "operator": "x"},
        "has no zone offset",
    ),
    (
        {"ts": 0, "event": "tank_cleaned", "tank_id": "../T1", "operator": "x"},
        "tank_id: String should match pattern",
    ),
    (
        {"ts": 0, "event": "tank_cleaned", "tank_id": "T1", "operator": "x", "by": "y"},
        "by: Extra inputs are not permitted",
    ),
    ([], "empty array"),
    (b"\xff\xfe", "not UTF-8"),
]


def test_hostile_tank_records_are_dead_lettered_with_precise_reasons(system, publisher):
    for payload, _ in BAD_RECORDS:
        publisher.publish(TANK_LOG, payload, kind="events")
    # Records from a device that is not a tank log are refused too.
    good = {"ts": now_ms() - MINUTE, "event": "tank_cleaned", "tank_id": "T1", "operator": "x"}
    publisher.publish(ANALYZER, good, kind="events")
    publisher.publish(TANK_LOG, good, kind="events")  # and ingest goes on

    def dead() -> list[dict]:
        items = system.http.get("/api/v1/dead-letters", params={"limit": 100}).json()["items"]
        return items if len(items) == len(BAD_RECORDS) + 1 else []

    reasons = [d["reason"] for d in reversed(wait_for(dead, what="every bad record refused"))]
    for (_, want), reason in zip(BAD_RECORDS, reasons, strict=False):
        assert want in reason, (want, reason)
    assert f"device {ANALYZER} is a water_analyzer" in reasons[-1]
    tanks = wait_for(
        lambda: system.http.get(f"/api/v1/sites/{SITE}/tanks").json(), what="the good record"
    )
    assert [len(t["records"]) for t in tanks] == [1]
    assert system.http.get("/healthz").json()["status"] == "ok"


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def test_tank_rule_on_a_fixed_clock_counts_from_the_older_job_and_turns_critical(tmp_path):
    """The production wiring (Core.build) on a fixed clock: a tank only cleaned is due an
    interval after the cleaning; a month past due the alert is critical; a disinfection alone
    does not clear it until both jobs are newer than the interval."""
    from domain.registry import load_registry
    from ingest.pipeline import RawMessage
    from landun.demo import demo_registry_path
    from landun.system import Core
    from store.base import AlertQuery

    t0 = 1_796_000_000_000
    clock = Clock(t0)
    core = Core.build(load_registry(demo_registry_path()), tmp_path / "l.db", clock=clock)
    topic = f"landun/v1/devices/{TANK_LOG}/events"

    def send(ts: int, event: str) -> None:
        body = {"ts": ts, "event": event, "tank_id": "T2", "operator": "李"}
        assert core.pipeline.process([RawMessage(topic, _json(body), clock.ms)])

    def alert() -> dict | None:
        core.engine.tick(clock.ms)  # what the rule changed on the last tick is saved on this one
        found = [
            a
            for a in core.store.list_alerts(AlertQuery(limit=10))
            if a.rule_id == "tank:cleaning_overdue:T2"
        ]
        return (
            {"status": str(found[0].status), "severity": str(found[0].severity)} if found else None
        )

    try:
        send(t0 - DAY, "tank_cleaned")
        clock.ms = t0 - DAY + 183 * DAY - MINUTE
        core.engine.tick(clock.ms)
        assert alert() is None  # not yet due
        clock.ms += 2 * MINUTE
        core.engine.tick(clock.ms)
        assert alert() == {"status": "open", "severity": "warning"}
        clock.ms += 31 * DAY
        core.engine.tick(clock.ms)
        assert alert() == {"status": "open", "severity": "critical"}
        send(clock.ms - MINUTE, "tank_disinfected")  # the cleaning is still too old
        core.engine.tick(clock.ms)
        assert alert() == {"status": "open", "severity": "critical"}
        send(clock.ms - MINUTE, "tank_cleaned")
        core.engine.tick(clock.ms)
        assert alert() == {"status": "resolved", "severity": "critical"}
    finally:
        core.close()


def _json(body: dict) -> bytes:
    import json

    return json.dumps(body, ensure_ascii=False).encode()
