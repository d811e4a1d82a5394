"""Medical-waste custody: event decoding, the bag ledger, and every custody rule with the exact
time it fires, driven through a real AlertEngine on SQLite (the ledger in the same file) and on
PostgreSQL."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from alerts import custody
from alerts.custody import CustodyRule, default_custody_settings
from alerts.engine import AlertEngine
from alerts.standards import builtin_profiles
from api import routes_waste
from api.auth import token_hash
from api.context import AppContext
from domain.model import Alert, Device, Reading, Severity, Site, SiteKind
from domain.params import default_catalogue
from domain.registry import Registry
from domain.timeutil import now_ms
from domain.waste import WasteCategory, WasteEvent, WasteEventKind, derive_bag
from ingest.decode import DecodeLimits
from ingest.events import decode_items, decode_waste_item
from ingest.kinds import standard_decoders
from ingest.metrics import IngestMetrics
from ingest.mqtt import BrokerAddress, MqttSubscriber, SubscriberSettings
from ingest.pipeline import IngestListener, IngestPipeline
from store.base import AlertQuery, Principal, ReadingQuery, Store
from store.ledger import BagQuery, SqliteLedger, WasteLedger
from store.postgres.ledger import PostgresLedger
from store.postgres.store import PostgresStore
from store.sqlite import SqliteStore
from tests.conftest import Publisher, wait_for
from tests.postgres import fresh_database

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
T0 = 1_795_363_200_000 + 10 * HOUR  # Monday 2026-11-23 10:00 Asia/Shanghai
SITE = "hosp-1"
SCANNER = "hosp-1-scan"
SENSOR = "hosp-1-env"
C = WasteEventKind.COLLECTED
S = WasteEventKind.STORED
H = WasteEventKind.HANDED_OVER


def registry() -> Registry:
    reg = Registry()
    reg.add_site(Site(SITE, "第一人民医院", SiteKind.MEDICAL, "310104"))
    reg.add_device(Device(SCANNER, SITE, "waste_scanner", ()))
    params = ("room_temperature", "room_humidity", "door_open")
    reg.add_device(Device(SENSOR, SITE, "waste_store_sensor", params))
    return reg


def ev(
    kind: WasteEventKind,
    bag: str,
    ts: int,
    weight: float | None = None,
    category: WasteCategory | None = WasteCategory.INFECTIOUS,
    manifest: str | None = None,
    recv: int | None = None,
    device: str = SCANNER,
) -> WasteEvent:
    return WasteEvent(
        device_id=device,
        site_id=SITE,
        event=kind,
        bag_id=bag,
        ts_ms=ts,
        recv_ms=ts if recv is None else recv,
        category=category,
        weight_kg=weight,
        department="ICU" if kind is C else None,
        manifest_id=manifest,
        carrier="处置中心" if kind is H else None,
    )


class Rig:
    """Ledger, store, engine and custody rule on one SQLite file (or PostgreSQL database, given
    its URL), with a settable clock."""

    def __init__(self, path: Path, database_url: str | None = None) -> None:
        self.now = T0
        self.store: Store = PostgresStore(database_url) if database_url else SqliteStore(path)
        self.ledger: WasteLedger = (
            PostgresLedger(database_url) if database_url else SqliteLedger(path)
        )
        self.engine = AlertEngine(
            self.store, registry(), builtin_profiles(), default_catalogue(), clock=lambda: self.now
        )
        self.rule = CustodyRule(self.engine.registry, self.ledger)
        self.engine.rules.append(self.rule)

    def events(self, *events: WasteEvent) -> list[WasteEvent]:
        fresh = self.ledger.record(events)
        self.rule.on_events(fresh, self.engine)
        return fresh

    def tick(self, now: int) -> None:
        self.now = now
        self.engine.tick(now)

    def readings(self, parameter: str, start: int, values: list[float], every: int = MIN) -> None:
        rs = [
            Reading(SENSOR, SITE, parameter, start + i * every, v, recv_ms=start + i * every)
            for i, v in enumerate(values)
        ]
        self.store.write_batch(rs)
        self.engine.on_readings(rs)

    def alerts(self, rule_id: str | None = None) -> list[Alert]:
        return self.store.list_alerts(AlertQuery(rule_id=rule_id))

    def open(self, rule_id: str) -> Alert | None:
        found = [a for a in self.alerts(rule_id) if a.status != "resolved"]
        return found[0] if found else None

    def close(self) -> None:
        self.ledger.close()
        self.store.close()


@contextmanager
def _rig(backend: str, path: Path) -> Iterator[Rig]:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(fresh_database()) if backend == "postgres" else None
        r = Rig(path, url)
        stack.callback(r.close)
        yield r


@pytest.fixture(params=["sqlite", "postgres"])
def rig(request, tmp_path: Path) -> Iterator[Rig]:
    with _rig(request.param, tmp_path / "landun.db") as r:
        yield r


# -- decoding -----------------------------------------------------------------------------------

LIMITS = DecodeLimits()
SCANNER_DEV = Device(SCANNER, SITE, "waste_scanner", ())


def decode(doc: object, recv: int = T0):
    return decode_items(json.dumps(doc).encode(), SCANNER_DEV, recv, LIMITS, decode_waste_item)


def test_decode_object_and_array() -> None:
    one = {
        "ts": "2026-11-23T09:00:00+08:00",
        "event": "bag_collected",
        "bag_id": "B-1",
        "category": "sharps",
        "weight_kg": 1.25,
        "department": "ICU",
    }
    events, reasons = decode(one)
    assert reasons == []
    (e,) = events
    assert (e.event, e.category, e.weight_kg, e.site_id, e.recv_ms) == (
        C,
        WasteCategory.SHARPS,
        1.25,
        SITE,
        T0,
    )
    assert e.ts_ms == T0 - HOUR
    hand = {
        "ts": T0,
        "event": "bag_handed_over",
        "bag_id": "B-1",
        "weight_kg": 1,
        "manifest_id": "M",
    }
    events, reasons = decode([one, hand])
    assert reasons == [] and [e.event for e in events] == [C, H]


def test_decode_refuses_whole_message_with_precise_reasons() -> None:
    good = {"ts": T0, "event": "bag_stored", "bag_id": "B-1"}
    bad = [
        good,
        {"ts": T0, "event": "bag_collected", "bag_id": "B-2"},
        {
            "ts": T0,
            "event": "bag_handed_over",
            "bag_id": "B-3",
            "weight_kg": 250,
            "manifest_id": "M",
        },
        {"ts": T0, "event": "bag_stored", "bag_id": "B-4", "category": "radioactive"},
        {"ts": "2026-11-23T09:00:00", "event": "bag_stored", "bag_id": "B-5"},
    ]
    events, reasons = decode(bad)
    assert events == []
    assert reasons[0] == "[1] bag_collected without category, weight_kg, department"
    assert reasons[1] == "[2] weight_kg=250 outside plausible range 0–100 kg"
    assert reasons[2].startswith("[3] category: Input should be 'infectious'")
    assert "has no zone offset" in reasons[3]
    assert decode(b"not json".decode())[1][0].startswith("payload is a JSON str")
    assert decode([])[1] == ["empty array"]


# -- the ledger ---------------------------------------------------------------------------------


def test_ledger_is_idempotent_and_shares_the_store_file(tmp_path: Path) -> None:
    path = tmp_path / "landun.db"
    store = SqliteStore(path)
    ledger = SqliteLedger(path)
    try:
        events = [ev(C, "B1", T0, 2.0), ev(S, "B1", T0 + 30 * MIN)]
        assert ledger.record(events) == events
        assert ledger.record(events) == []  # redelivered: recorded once
        assert len(ledger.chain(SITE, "B1")) == 2
        assert store.write_batch([Reading(SENSOR, SITE, "room_temperature", T0, 15.0)]) == 1
        assert store.query_readings(ReadingQuery(site_id=SITE))  # both schemas in one file
    finally:
        ledger.close()
        store.close()


def test_stored_before_collected_is_reconciled(rig: Rig) -> None:
    rig.events(ev(S, "B1", T0 + 40 * MIN, category=None, recv=T0 + 41 * MIN))
    bag = rig.ledger.bag(SITE, "B1")
    assert bag.status == "stored" and bag.collected_ms is None
    rig.events(ev(C, "B1", T0, 3.1, recv=T0 + 2 * HOUR))  # the scanner's buffer, flushed late
    bag = rig.ledger.bag(SITE, "B1")
    assert (bag.collected_ms, bag.stored_ms, bag.weight_kg) == (T0, T0 + 40 * MIN, 3.1)
    assert bag.department == "ICU" and bag.duplicates == 0
    assert [e.event for e in rig.ledger.chain(SITE, "B1")] == [C, S]
    assert derive_bag(reversed(rig.ledger.chain(SITE, "B1"))) == bag  # order does not matter


def test_daily_totals_follow_shanghai_midnight(rig: Rig) -> None:
    midnight = 1_795_363_200_000  # 2026-11-23 00:00 +08:00 = 11-22 16:00 UTC
    rig.events(
        ev(C, "late", midnight - MIN, 2.0),
        ev(C, "early", midnight + MIN, 3.0),
        ev(C, "noon", midnight + 12 * HOUR, 1.5, category=WasteCategory.SHARPS),
    )
    totals = rig.ledger.daily_totals(SITE, date(2026, 11, 22), date(2026, 11, 23))
    got = {(t.day.isoformat(), t.category): (t.bags, t.weight_kg) for t in totals}
    assert got == {
        ("2026-11-22", "infectious"): (1, 2.0),
        ("2026-11-23", "infectious"): (1, 3.0),
        ("2026-11-23", "sharps"): (1, 1.5),
    }


def test_bag_queries_and_manifest_totals(rig: Rig) -> None:
    rig.events(
        ev(C, "B1", T0, 2.0),
        ev(C, "B2", T0 + MIN, 3.0),
        ev(S, "B1", T0 + 30 * MIN),
        ev(H, "B1", T0 + 5 * HOUR, 1.9, manifest="M1"),
    )
    assert [b.bag_id for b in rig.ledger.bags(BagQuery(SITE))] == ["B2", "B1"]
    assert [b.bag_id for b in rig.ledger.bags(BagQuery(SITE, status="handed_over"))] == ["B1"]
    assert [b.bag_id for b in rig.ledger.held_bags(SITE)] == ["B2"]
    m = rig.ledger.manifest(SITE, "M1")
    assert (m.bags, m.hospital_kg, m.handed_kg, m.bag_ids) == (1, 2.0, 1.9, ("B1",))


# -- custody rules on the clock -------------------------------------------------------------------


def test_storage_warns_then_escalates_on_the_clock_and_clears_at_handover(rig: Rig) -> None:
    rig.events(ev(C, "B1", T0 - 30 * MIN, 4.0), ev(S, "B1", T0))
    rig.tick(T0 + 44 * HOUR)
    assert rig.open(custody.RULE_STORAGE) is None
    rig.tick(T0 + 44 * HOUR + 1)
    alert = rig.open(custody.RULE_STORAGE)
    assert alert.severity == Severity.WARNING and list(alert.evidence["bags"]) == ["B1"]
    rig.tick(T0 + 48 * HOUR)
    assert rig.open(custody.RULE_STORAGE).severity == Severity.WARNING
    rig.tick(T0 + 48 * HOUR + 1)
    alert = rig.open(custody.RULE_STORAGE)
    assert alert.severity == Severity.CRITICAL and alert.evidence["beyond_limit"] == ["B1"]
    assert alert.limit["max_hours"] == 48 and "第十七条" in alert.limit["clause"]
    rig.tick(T0 + 49 * HOUR)
    assert len(rig.alerts(custody.RULE_STORAGE)) == 1  # one alert, not one per tick
    rig.events(ev(H, "B1", T0 + 50 * HOUR, 4.0, manifest="M1"))
    rig.tick(T0 + 50 * HOUR + MIN)
    assert rig.alerts(custody.RULE_STORAGE)[0].status == "resolved"


def test_overdue_storage_found_only_at_handover_is_still_raised(rig: Rig) -> None:
    rig.events(
        ev(C, "B1", T0, 4.0),
        ev(S, "B1", T0 + 30 * MIN),
        ev(H, "B1", T0 + 60 * HOUR, 4.0, manifest="M1"),
    )
    (alert,) = rig.alerts(custody.RULE_STORAGE)
    assert alert.severity == Severity.CRITICAL and alert.evidence["bags"]["B1"]["held_hours"] > 59


def test_collected_but_not_stored_fires_on_the_clock_and_clears_when_the_scan_arrives(
    rig: Rig,
) -> None:
    rig.events(ev(C, "B1", T0, 2.0))
    rig.tick(T0 + 2 * HOUR)
    assert rig.open(custody.RULE_NOT_STORED) is None
    rig.tick(T0 + 2 * HOUR + 1)
    assert list(rig.open(custody.RULE_NOT_STORED).evidence["bags"]) == ["B1"]
    rig.events(ev(S, "B1", T0 + 30 * MIN, recv=T0 + 3 * HOUR))  # the store scanner was offline
    rig.tick(T0 + 3 * HOUR)
    assert rig.alerts(custody.RULE_NOT_STORED)[0].status == "resolved"


def test_handover_of_an_unrecorded_bag_waits_for_late_scans(rig: Rig) -> None:
    grace = 30 * MIN
    rig.events(ev(H, "X1", T0, 3.0, manifest="M1"))  # never collected nor stored
    rig.events(ev(H, "B2", T0, 2.0, manifest="M1"))  # its earlier scans arrive within the grace
    rig.events(ev(C, "B2", T0 - 5 * HOUR, 2.0, recv=T0 + 10 * MIN))
    rig.events(ev(S, "B2", T0 - 4 * HOUR, recv=T0 + 10 * MIN))
    rig.tick(T0 + grace)
    assert rig.open(custody.RULE_UNRECORDED) is None
    rig.tick(T0 + grace + 1)
    alert = rig.open(custody.RULE_UNRECORDED)
    assert alert.severity == Severity.CRITICAL
    assert list(alert.evidence["bags"]) == ["X1"]  # B2 was reconciled in time
    assert alert.evidence["bags"]["X1"]["missing"] == ["collection", "storage"]
    rig.tick(T0 + 2 * HOUR)
    assert rig.open(custody.RULE_UNRECORDED).count == 1  # judged once


# -- custody rules on events ----------------------------------------------------------------------


def test_weight_loss_per_bag_beyond_tolerance(rig: Rig) -> None:
    rig.events(ev(C, "ok", T0, 5.0), ev(S, "ok", T0 + 10 * MIN))
    rig.events(ev(H, "ok", T0 + 20 * HOUR, 4.85, manifest="M1"))  # 0.15 kg < max(0.1, 0.2)
    assert rig.alerts(custody.RULE_WEIGHT) == []
    rig.events(ev(C, "B2", T0, 5.0), ev(S, "B2", T0 + 10 * MIN))
    rig.events(ev(H, "B2", T0 + 20 * HOUR, 4.7, manifest="M1"))  # 0.3 kg lost
    alert = rig.open(custody.RULE_WEIGHT)
    assert alert.severity == Severity.WARNING
    assert alert.evidence["bags"]["B2"]["loss_kg"] == pytest.approx(0.3)
    assert alert.evidence["bags"]["B2"]["collected_kg"] == 5.0
    rig.events(ev(C, "B3", T0, 4.0), ev(H, "B3", T0 + 20 * HOUR, 3.0, manifest="M1"))
    alert = rig.open(custody.RULE_WEIGHT)
    assert set(alert.evidence["bags"]) == {"B2", "B3"} and alert.severity == Severity.CRITICAL


def test_weight_loss_per_manifest_in_total(rig: Rig) -> None:
    for i in range(10):  # each bag loses 0.15 of 3 kg: within the per-bag tolerance
        rig.events(ev(C, f"B{i}", T0, 3.0), ev(S, f"B{i}", T0 + 10 * MIN))
    rig.events(*(ev(H, f"B{i}", T0 + 20 * HOUR, 2.85, manifest="M9") for i in range(10)))
    assert rig.alerts(custody.RULE_WEIGHT) == []
    alert = rig.open(custody.RULE_MANIFEST)
    entry = alert.evidence["manifests"]["M9"]
    assert (entry["bags"], entry["hospital_kg"], entry["handed_kg"]) == (10, 30.0, 28.5)
    assert alert.severity == Severity.WARNING  # 5 %: over 2 %, under the critical 10 %


def test_duplicate_bag_id_but_not_a_redelivery(rig: Rig) -> None:
    first = ev(C, "B1", T0, 2.0)
    rig.events(first)
    assert rig.events(first) == []  # redelivered: no finding
    assert rig.alerts(custody.RULE_DUPLICATE) == []
    rig.events(ev(C, "B1", T0 + DAY, 2.5))  # the label reused a day later
    alert = rig.open(custody.RULE_DUPLICATE)
    assert alert.evidence["bags"]["B1"]["repeated"] == {"bag_collected": 2}


def test_category_changed_along_the_chain(rig: Rig) -> None:
    rig.events(ev(C, "B1", T0, 2.0))
    rig.events(ev(S, "B1", T0 + 10 * MIN, category=WasteCategory.PHARMACEUTICAL))
    alert = rig.open(custody.RULE_CATEGORY)
    assert alert.evidence["bags"]["B1"]["categories"] == ["infectious", "pharmaceutical"]


# -- store-room telemetry -------------------------------------------------------------------------


def test_store_temperature_only_while_waste_is_held(rig: Rig) -> None:
    rig.readings("room_temperature", T0, [23.0] * 40)  # store empty: not judged
    assert rig.alerts(custody.RULE_TEMPERATURE) == []
    rig.events(ev(C, "B1", T0 + HOUR, 2.0), ev(S, "B1", T0 + HOUR + 30 * MIN))
    start = T0 + 2 * HOUR
    rig.readings("room_temperature", start, [23.0] * 30)  # 29 min over: still pending
    assert rig.alerts(custody.RULE_TEMPERATURE) == []
    rig.readings("room_temperature", start + 30 * MIN, [23.5])  # 30 min: the alert
    alert = rig.open(custody.RULE_TEMPERATURE)
    assert alert.first_ms == start and alert.device_id == SENSOR
    assert alert.evidence["bags_held"] == 1 and alert.limit["max"] == 20.0
    rig.readings("room_temperature", start + 31 * MIN, [15.0] * 11)
    assert rig.alerts(custody.RULE_TEMPERATURE)[0].status == "resolved"


def test_door_open_too_long_on_the_clock_and_after_hours(rig: Rig) -> None:
    opened = T0 + 5 * MIN
    rig.readings("door_open", T0, [0.0] * 5 + [1.0])  # opens at 10:05, then the sensor is quiet
    rig.tick(opened + 30 * MIN)
    assert rig.open(custody.RULE_DOOR_LONG) is None
    rig.tick(opened + 30 * MIN + 1)
    assert rig.open(custody.RULE_DOOR_LONG).evidence["opened"].startswith("2026-11-23T02:05")
    rig.readings("door_open", opened + 40 * MIN, [0.0])
    assert rig.alerts(custody.RULE_DOOR_LONG)[0].status == "resolved"
    assert rig.alerts(custody.RULE_DOOR_HOURS) == []
    night = T0 + 12 * HOUR  # 22:00 local
    rig.readings("door_open", night, [1.0, 1.0, 0.0])
    alert = rig.alerts(custody.RULE_DOOR_HOURS)[0]
    assert alert.status == "resolved" and "outside working hours 07:00-19:00" in alert.message


def test_daily_waste_far_below_the_sites_own_baseline(rig: Rig) -> None:
    day0 = T0 - 14 * DAY
    for d in range(14):
        rig.events(ev(C, f"D{d}", day0 + d * DAY, 90.0 + d))
    rig.events(ev(C, "low", T0, 30.0))  # today (Monday 23 Nov): a third of the usual
    next_midnight = 1_795_363_200_000 + DAY
    rig.tick(next_midnight + 2 * HOUR - 1)  # the day is not settled yet
    assert rig.alerts(custody.RULE_DROP) == []
    rig.tick(next_midnight + 2 * HOUR)
    alert = rig.open(custody.RULE_DROP)
    assert alert.evidence["day"] == "2026-11-23" and alert.evidence["day_kg"] == 30.0
    assert alert.evidence["baseline_kg"] == pytest.approx(96.5)
    rig.tick(next_midnight + 3 * HOUR)
    assert rig.open(custody.RULE_DROP).count == 1


def test_settings_all_name_their_source() -> None:
    s = default_custody_settings()
    assert set(s.sources) == {
        "storage",
        "not_stored",
        "weight",
        "handover",
        "room_temperature",
        "door",
        "daily_drop",
    }
    assert all(src.text and src.confidence for src in s.sources.values())
    assert s.sources["door"].engineering and not s.sources["storage"].engineering
    assert (s.storage_warn_h, s.storage_max_h, s.room.max) == (44, 48, 20.0)


# -- API ----------------------------------------------------------------------------------------


def test_waste_routes_with_jurisdiction_scope(rig: Rig) -> None:
    ctx = AppContext(
        rig.store, rig.engine.registry, default_catalogue(), rig.engine, IngestMetrics()
    )
    ctx.ledger = rig.ledger
    app = FastAPI()
    app.state.ctx = ctx
    app.include_router(routes_waste.router)
    rig.store.add_user("li", "hash", "inspector", ["310104"])
    rig.store.add_user("wang", "hash", "inspector", ["310105"])
    rig.store.add_token(token_hash("mine"), Principal("li", "inspector", ("310104",)), None)
    rig.store.add_token(token_hash("other"), Principal("wang", "inspector", ("310105",)), None)
    midnight = 1_795_363_200_000
    rig.events(
        ev(C, "B1", midnight - MIN, 2.0),
        ev(C, "B2", midnight + HOUR, 3.0, category=WasteCategory.SHARPS),
        ev(S, "B2", midnight + 2 * HOUR),
        ev(H, "B2", midnight + 20 * HOUR, 2.95, manifest="M1"),
    )
    mine = TestClient(app, headers={"Authorization": "Bearer mine"})
    other = TestClient(app, headers={"Authorization": "Bearer other"})
    bags = mine.get(f"/api/v1/sites/{SITE}/waste/bags").json()
    assert [b["bag_id"] for b in bags] == ["B2", "B1"]
    assert bags[0]["status"] == "handed_over" and bags[0]["weight_loss_kg"] == 0.05
    handed = mine.get(f"/api/v1/sites/{SITE}/waste/bags", params={"status": "handed_over"})
    assert [b["bag_id"] for b in handed.json()] == ["B2"]
    chain = mine.get("/api/v1/waste/bags/B2").json()
    assert [e["event"] for e in chain["chain"]] == [
        "bag_collected",
        "bag_stored",
        "bag_handed_over",
    ]
    assert chain["bag"]["manifest_id"] == "M1"
    daily = mine.get(
        f"/api/v1/sites/{SITE}/waste/daily", params={"from": "2026-11-22", "to": "2026-11-24"}
    ).json()
    assert [(d["day"], d["bags"], d["weight_kg"]) for d in daily] == [
        ("2026-11-22", 1, 2.0),
        ("2026-11-23", 1, 3.0),
        ("2026-11-24", 0, 0.0),
    ]
    assert daily[1]["by_category"] == {"sharps": {"bags": 1, "weight_kg": 3.0}}
    assert other.get(f"/api/v1/sites/{SITE}/waste/bags").status_code == 403
    assert other.get("/api/v1/waste/bags/B2").status_code == 404
    assert mine.get("/api/v1/waste/bags/nope").status_code == 404
    assert TestClient(app).get(f"/api/v1/sites/{SITE}/waste/daily").status_code == 401


# -- end to end: a real broker, the MQTT subscriber, the pipeline, SQLite, the engine ------------


@pytest.fixture(params=["sqlite", "postgres"])
def live(request, broker, tmp_path: Path) -> Iterator[Rig]:
    with _rig(request.param, tmp_path / "landun.db") as rig:
        yield from _subscribed(rig, broker)


def _subscribed(rig: Rig, broker) -> Iterator[Rig]:
    pipeline = IngestPipeline(
        rig.store,
        rig.engine.registry,
        standard_decoders(default_catalogue(), waste=rig.ledger),
        listener=IngestListener(
            rig.engine.on_readings, lambda events: rig.rule.on_events(events, rig.engine)
        ),
    )
    sub = MqttSubscriber(pipeline, BrokerAddress.parse(broker.url), SubscriberSettings("waste-e2e"))
    sub.start()
    yield rig
    sub.stop()


def wire(kind: WasteEventKind, bag: str, ts: int, **fields) -> dict:
    return {"ts": ts, "event": str(kind), "bag_id": bag, **fields}


def test_end_to_end_diversion_overdue_storage_and_reconciliation(live: Rig, broker) -> None:
    now = now_ms()
    pub = Publisher(broker.url, "hosp-1-scan")
    try:
        collected = {"category": "infectious", "weight_kg": 4.0, "department": "ICU"}
        # A bag stored before its collection scan arrives (the ward scanner flushes late).
        pub.publish(SCANNER, wire(S, "R1", now - 50 * MIN), "events")
        pub.publish(SCANNER, wire(C, "R1", now - 60 * MIN, **collected), "events")
        # Weight diversion: 4.0 kg collected, 2.9 kg handed over.
        handover = {"weight_kg": 2.9, "manifest_id": "M-1", "carrier": "处置中心"}
        pub.publish(
            SCANNER,
            [
                wire(C, "W1", now - 5 * HOUR, **collected),
                wire(S, "W1", now - 4 * HOUR),
                wire(H, "W1", now - MIN, **handover),
            ],
            "events",
        )
        pub.publish(SCANNER, wire(C, "W1", now - 5 * HOUR, **collected), "events")  # again
        pub.publish(SCANNER, {"ts": now, "event": "bag_lost", "bag_id": "Z"}, "events")
        wait_for(lambda: live.store.dead_letters(), what="the bad event dead-lettered")
        wait_for(lambda: live.open(custody.RULE_WEIGHT), what="the diversion alert")
        wait_for(lambda: (b := live.ledger.bag(SITE, "R1")) and b.collected_ms, what="R1 whole")
    finally:
        pub.close()
    r1 = live.ledger.bag(SITE, "R1")
    assert (r1.collected_ms, r1.stored_ms, r1.status) == (now - 60 * MIN, now - 50 * MIN, "stored")
    weight = live.open(custody.RULE_WEIGHT)
    assert weight.severity == Severity.CRITICAL
    assert weight.evidence["bags"]["W1"]["loss_kg"] == pytest.approx(1.1)
    assert live.open(custody.RULE_MANIFEST).evidence["manifests"]["M-1"]["handed_kg"] == 2.9
    assert len(live.ledger.chain(SITE, "W1")) == 3  # the repeated scan was recorded once
    assert live.alerts(custody.RULE_DUPLICATE) == []
    (dead,) = live.store.dead_letters()
    assert dead.reason.startswith("event: Input should be 'bag_collected'")
    # Overdue storage on the clock: no message arrives, only time passes.
    live.tick(now - 50 * MIN + 44 * HOUR)
    assert live.open(custody.RULE_STORAGE) is None
    live.tick(now - 50 * MIN + 48 * HOUR + 1)
    storage = live.open(custody.RULE_STORAGE)
    assert storage.severity == Severity.CRITICAL and list(storage.evidence["bags"]) == ["R1"]


def test_the_running_system_takes_bag_events_and_serves_the_chain(system, publisher) -> None:
    """The demo hospital through `landun run`'s own wiring: MQTT events topic, ledger, custody
    rule, alerts and the waste routes."""
    now = now_ms()
    scanner = "hosp-xh-01-scan"
    collected = {"category": "infectious", "weight_kg": 6.0, "department": "ICU"}
    publisher.publish(
        scanner,
        [
            wire(C, "D1", now - 6 * HOUR, **collected),
            wire(S, "D1", now - 5 * HOUR),
            wire(H, "D1", now - MIN, weight_kg=4.5, manifest_id="M-9", carrier="处置中心"),
        ],
        "events",
    )

    def diversion():
        alerts = system.http.get("/api/v1/alerts", params={"site": "hosp-xh-01"}).json()
        return [a for a in alerts if a["rule_id"] == custody.RULE_WEIGHT]

    (alert,) = wait_for(diversion, what="the weight-loss alert")
    assert alert["family"] == "custody" and alert["evidence"]["bags"]["D1"]["loss_kg"] == 1.5
    chain = system.http.get("/api/v1/waste/bags/D1").json()
    assert [e["event"] for e in chain["chain"]] == [
        "bag_collected",
        "bag_stored",
        "bag_handed_over",
    ]
    # A custody finding is not a limit exceeded: the hospital is 医废异常, not 超标.
    site = system.http.get("/api/v1/sites/hosp-xh-01").json()
    assert site["current"]["status"] == "custody_issue"
