"""The whole pipeline on real parts: broker, ingest, SQLite, alert engine, HTTP API."""

from __future__ import annotations

from domain.timeutil import now_ms
from tests.conftest import wait_for

DEVICE = "pool-xh-01-wq"
MINUTE = 60_000


def record(ts: int, seq: int, free_chlorine: float) -> dict:
    return {
        "ts": ts,
        "seq": seq,
        "values": {
            "free_chlorine": free_chlorine,
            "ph": 7.41,
            "turbidity": 0.31,
            "orp": 712,
            "temperature": 27.4,
        },
    }


def test_sustained_low_chlorine_is_stored_and_raises_one_alert_with_its_source(system, publisher):
    start = now_ms() - 30 * MINUTE
    # 20 minutes of free chlorine at 0.12 mg/L, one message a minute, as a sensor would send.
    for i in range(21):
        publisher.publish(DEVICE, record(start + i * MINUTE, i, 0.12))

    def stored():
        r = system.http.get(
            "/api/v1/readings", params={"device": DEVICE, "parameter": "free_chlorine"}
        )
        return r.json() if r.status_code == 200 and len(r.json()) == 21 else None

    rows = wait_for(stored, what="21 free chlorine readings")
    assert {row["value"] for row in rows} == {0.12}
    assert rows[0]["ts"].endswith("Z") and rows[0]["received"].endswith("Z")

    alerts = wait_for(lambda: system.http.get("/api/v1/alerts").json(), what="an alert")
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert["rule_id"] == "range:free_chlorine"
    assert alert["site_id"] == "pool-xh-01"
    assert alert["status"] == "open"
    assert alert["family"] == "compliance"
    assert alert["limit"]["min"] == 0.3 and alert["limit"]["max"] == 1.0
    assert alert["limit"]["standard"] == "GB 37488-2019"
    assert "游离性余氯" in alert["limit"]["clause"]
    assert alert["worst_value"] == 0.12
    assert alert["evidence"]["readings"]["from_ms"] == start
    # Every parameter but free chlorine was inside its limit: nothing else is raised.
    assert {a["parameter"] for a in alerts} == {"free_chlorine"}


def test_bad_json_is_dead_lettered_and_ingest_keeps_going(system, publisher):
    t = now_ms() - MINUTE
    publisher.publish(DEVICE, b"{not json")
    publisher.publish(DEVICE, record(t, 1, 0.6))

    def good_stored():
        r = system.http.get("/api/v1/readings", params={"device": DEVICE})
        return len(r.json()) == 5

    wait_for(good_stored, what="the good message's five readings")
    dead = system.http.get("/api/v1/dead-letters").json()
    assert len(dead["items"]) == 1
    assert dead["items"][0]["reason"].startswith("not JSON: Expecting property name")
    assert dead["items"][0]["raw"] == "{not json"
    assert system.http.get("/healthz").json()["status"] == "ok"


def test_brief_excursion_shorter_than_pending_time_raises_nothing(system, publisher):
    start = now_ms() - 30 * MINUTE
    values = [0.6] * 5 + [0.1] * 5 + [0.6] * 5  # 5 minutes low, pending time is 10
    for i, v in enumerate(values):
        publisher.publish(DEVICE, record(start + i * MINUTE, i, v))
    wait_for(
        lambda: (
            len(system.http.get("/api/v1/readings", params={"device": DEVICE}).json()) == 75
            and system.judged()
        ),
        what="all readings, judged",
    )
    assert system.http.get("/api/v1/alerts").json() == []
