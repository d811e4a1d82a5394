"""The hospital simulator, and its scenarios driven through decoding, the ledger and the custody
rules on a real engine: each expected rule fires within its delay, nothing else fires, and a clean
run stays silent."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from domain.model import Device, Reading
from ingest.decode import DecodeLimits
from ingest.events import decode_items, decode_waste_item
from simulators.hospital_model import (
    HospitalFault,
    HospitalFaultKind,
    HospitalModel,
    list_hospital_scenarios,
    load_hospital_scenario,
)
from tests.test_waste import SCANNER, SENSOR, SITE, Rig

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
MONDAY = 1_795_363_200_000  # 2026-11-23 00:00 Asia/Shanghai
STEP = 5 * MIN
SCANNER_DEV = Device(SCANNER, SITE, "waste_scanner", ())


def week(model: HospitalModel, days: float = 7) -> tuple[list[dict], list]:
    end = MONDAY + int(days * DAY)
    samples = [model.sample(t) for t in range(MONDAY, end, MIN)]
    return model.events_until(end), samples


def local_minute(ms: int) -> int:
    t = datetime.fromtimestamp(ms / 1000, ZoneInfo("Asia/Shanghai"))
    return t.hour * 60 + t.minute


def test_model_is_deterministic_from_the_seed() -> None:
    a = week(HospitalModel(SITE, SCANNER, SENSOR, 5, MONDAY), 2)
    b = week(HospitalModel(SITE, SCANNER, SENSOR, 5, MONDAY), 2)
    c = week(HospitalModel(SITE, SCANNER, SENSOR, 6, MONDAY), 2)
    assert a == b and a[0] != c[0]


def test_clean_week_is_a_plausible_hospital() -> None:
    events, samples = week(HospitalModel(SITE, SCANNER, SENSOR, 3, MONDAY))
    chains: dict[str, dict[str, dict]] = defaultdict(dict)
    for e in events:
        assert e["bag_id"] not in chains or e["event"] not in chains[e["bag_id"]]
        chains[e["bag_id"]][e["event"]] = e
    per_day = defaultdict(float)
    for chain in chains.values():
        c, s = chain["bag_collected"], chain["bag_stored"]
        assert 0 < s["ts"] - c["ts"] < HOUR
        per_day[(c["ts"] - MONDAY) // DAY] += c["weight_kg"]
        if "bag_handed_over" in chain:
            h = chain["bag_handed_over"]
            assert h["ts"] - s["ts"] < 40 * HOUR  # never near the 44 h warning
            assert abs(h["weight_kg"] - c["weight_kg"]) < 0.2  # scales agree within tolerance
    assert all(60 < kg < 130 for kg in per_day.values())  # ~100 kg a day, less at weekends
    assert per_day[5] < per_day[1]  # Saturday
    temps = [s.values["room_temperature"] for s in samples]
    assert min(temps) > 10 and max(temps) < 20
    door_minutes = [local_minute(s.ts_ms) for s in samples if s.values["door_open"]]
    assert door_minutes and all(7 * 60 <= m < 19 * 60 for m in door_minutes)


def test_faults_change_what_the_devices_report() -> None:
    day1 = MONDAY + DAY
    cold = HospitalFault(HospitalFaultKind.COLD_ROOM_FAILURE, day1 + 13 * HOUR, day1 + 21 * HOUR)
    _, samples = week(HospitalModel(SITE, SCANNER, SENSOR, 3, MONDAY, faults=[cold]), 2)
    assert max(s.values["room_temperature"] for s in samples) > 22
    door = HospitalFault(HospitalFaultKind.DOOR_LEFT_OPEN, day1 + 15 * HOUR, day1 + 16 * HOUR)
    _, samples = week(HospitalModel(SITE, SCANNER, SENSOR, 3, MONDAY, faults=[door]), 2)
    assert all(
        s.values["door_open"] for s in samples if day1 + 15 * HOUR <= s.ts_ms < day1 + 16 * HOUR
    )
    with pytest.raises(ValueError):
        HospitalFault(HospitalFaultKind.WEIGHT_DIVERSION, 0, 1, {"shares": 0.5})


def drive(rig: Rig, model: HospitalModel, start: int, end: int) -> None:
    """Feed the simulator to the rig batch by batch: events decoded from their wire form, then
    telemetry, then the clock."""
    limits = DecodeLimits()
    t = start
    while t < end:
        nxt = t + STEP
        rig.now = nxt
        records = model.events_until(nxt)
        if records:
            events, reasons = decode_items(
                json.dumps(records).encode(), SCANNER_DEV, nxt, limits, decode_waste_item
            )
            assert reasons == []
            rig.events(*events)
        readings = [
            Reading(SENSOR, SITE, name, s.ts_ms, value, recv_ms=nxt)
            for s in (model.sample(x) for x in range(t, nxt, MIN))
            for name, value in s.values.items()
        ]
        rig.store.write_batch(readings)
        rig.engine.on_readings(readings)
        rig.tick(nxt)
        t = nxt


@pytest.mark.parametrize("name", list_hospital_scenarios())
def test_scenario_raises_exactly_its_expected_alerts(name: str, tmp_path: Path) -> None:
    scenario = load_hospital_scenario(name)
    faults = scenario.faults(MONDAY)
    model = HospitalModel(SITE, SCANNER, SENSOR, 11, MONDAY, faults=faults)
    rig = Rig(tmp_path / "landun.db")
    try:
        drive(rig, model, MONDAY, MONDAY + int(scenario.days * DAY))
        alerts = rig.alerts()
    finally:
        rig.close()
    assert {a.rule_id for a in alerts} == {e.rule_id for e in scenario.expected}
    for expected in scenario.expected:
        first = min(a.opened_ms for a in alerts if a.rule_id == expected.rule_id)
        assert faults[0].start_ms <= first <= faults[0].start_ms + expected.max_delay_min * MIN


def test_scenarios_cover_the_four_faults_and_a_clean_run() -> None:
    assert set(list_hospital_scenarios()) == {
        "hospital_clean",
        "hospital_overdue_storage",
        "hospital_weight_diversion",
        "hospital_cold_room_failure",
        "hospital_door_left_open",
    }
