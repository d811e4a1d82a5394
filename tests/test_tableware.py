"""Tableware disinfection lines: cycle and batch event decoding with precise refusals, the cycle
judgement (held for the whole dwell time), batch coverage and capacity, silent sensors, and the
whole chain over a real broker into SQLite or PostgreSQL with `landun run`'s own wiring."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from alerts import cycles
from alerts.cycles import batch_cover, default_cycle_settings, judge_cycle
from domain.model import Alert, Device, Reading, Site, SiteKind
from domain.registry import Registry, load_registry
from domain.tableware import Cycle, LineEvent, LineEventKind, Method, derive_cycles, line_spec
from domain.timeutil import iso_to_ms, ms_to_iso, now_ms
from ingest.decode import DecodeLimits
from ingest.events import decode_items
from ingest.line_events import decode_line_item
from ingest.mqtt import BrokerAddress, MqttSubscriber, SubscriberSettings
from landun.demo import FAILING_LINE, demo_lines, demo_registry_path, demo_settings
from landun.evaluate import RunSettings, aligned_end_ms, score
from landun.system import Core
from landun.tableware_eval import load_line_scenario, run_line_scenario
from store.base import AlertQuery
from tests.conftest import Publisher, wait_for
from tests.postgres import fresh_database
from tests.test_demo import ANCHORS

SEC = 1000
MIN = 60 * SEC
HOUR = 60 * MIN
T0 = 1_795_363_200_000 + 10 * HOUR  # Monday 2026-11-23 10:00 Asia/Shanghai
SITE = "tw-1"
LINE_DEV = "tw-1-line1"
PARAMS = (
    "wash_temperature",
    "rinse_temperature",
    "disinfection_temperature",
    "detergent_dosing",
    "conveyor_speed",
)
ATTRS = {"line_id": "L1", "method": "steam", "capacity_sets": 400}
LINE = Device(LINE_DEV, SITE, "disinfection_line", PARAMS, attributes=ATTRS)
LIMITS = DecodeLimits()


def registry() -> Registry:
    reg = Registry()
    reg.add_site(
        Site(
            SITE, "洁净餐具消毒中心", SiteKind.TABLEWARE, "310104", profile="tableware-disinfection"
        )
    )
    reg.add_device(LINE)
    return reg


def decode(doc: object, recv: int = T0):
    return decode_items(json.dumps(doc).encode(), LINE, recv, LIMITS, decode_line_item)


def start(cid: str, ts: int, **kw) -> dict:
    return {
        "ts": ts,
        "event": "cycle_start",
        "line_id": "L1",
        "cycle_id": cid,
        "method": "steam",
    } | kw


def end(cid: str, ts: int, **kw) -> dict:
    return {"ts": ts, "event": "cycle_end", "line_id": "L1", "cycle_id": cid} | kw


def batch(bid: str, ts: int, sets: int = 350, day: str | None = None, **kw) -> dict:
    doc = {"ts": ts, "event": "batch_packed", "line_id": "L1", "batch_id": bid, "sets": sets}
    return doc | {"production_date": day or ms_to_iso(ts)[:10]} | kw


# -- decoding -----------------------------------------------------------------------------------


def test_decode_cycle_and_batch_events() -> None:
    events, reasons = decode([start("C1", T0 - 20 * MIN), end("C1", T0 - 5 * MIN), batch("B1", T0)])
    assert reasons == []
    assert [(e.event, e.ref_id, e.line_id) for e in events] == [
        (LineEventKind.CYCLE_START, "C1", "L1"),
        (LineEventKind.CYCLE_END, "C1", "L1"),
        (LineEventKind.BATCH_PACKED, "B1", "L1"),
    ]
    assert events[0].method is Method.STEAM and events[2].sets == 350
    assert events[2].production_date == "2026-11-23" and events[0].site_id == SITE


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        (start("C1", T0, line_id="L2"), "line_id 'L2' is not the line of device tw-1-line1 ('L1')"),
        (start("C1", T0, method="infrared"), "method infrared differs from line L1's registered steam"),
        ({"ts": T0, "event": "cycle_start", "line_id": "L1", "method": "steam"}, "cycle_start without cycle_id"),
        (end("C1", T0, sets=5), "cycle_end does not take sets"),
        (batch("B1", T0, cycle_id="C1"), "batch_packed does not take cycle_id"),
        ({"ts": T0, "event": "batch_packed", "line_id": "L1", "batch_id": "B1"}, "batch_packed without sets, production_date"),
        (batch("B1", T0, sets=0), "sets: Input should be greater than or equal to 1"),
        (batch("B1", T0, sets=10**9), "sets: Input should be less than or equal to 100000"),
        (batch("B1", T0, sets=True), "sets: Input should be a valid integer"),
        (batch("B1", T0, sets=3.5), "sets: Input should be a valid integer"),
        (batch("B1", T0, day="2026-13-01"), "production_date '2026-13-01' is not a date (YYYY-MM-DD)"),
        (batch("B1", T0, day="2026-01-01"), "production_date 2026-01-01 is 326 days from the packing time 2026-11-23 (at most 1)"),
        (batch("B/1", T0), "batch_id: String should match pattern"),
        (start("C1", T0, method="uv"), "method: Input should be 'steam', 'hot_water', 'infrared' or 'chemical'"),
        ({"ts": T0, "event": "cycle_paused", "line_id": "L1"}, "event: Input should be 'cycle_start', 'cycle_end' or 'batch_packed'"),
        (start("C1", T0, temperature=101), "temperature: Extra inputs are not permitted"),
        (start("C1", T0 + HOUR), "more than 5 min in the future"),
        (start("C1", "2026-11-23T10:00:00"), "has no zone offset"),
        ("cycle", "payload is a JSON str, not an object or array"),
    ],
)  # fmt: skip
def test_decode_refuses_with_a_precise_reason(doc: object, reason: str) -> None:
    events, reasons = decode(doc)
    assert events == [] and any(reason in r for r in reasons), reasons


def test_a_bad_record_refuses_the_whole_message_naming_it() -> None:
    events, reasons = decode([start("C1", T0 - MIN), batch("B1", T0, sets=-1)])
    assert events == [] and reasons == ["[1] sets: Input should be greater than or equal to 1"]


def test_a_line_controller_without_its_line_data_is_refused_by_the_registry() -> None:
    reg = registry()
    with pytest.raises(ValueError, match="needs attributes line_id, method"):
        reg.add_device(Device("x", SITE, "disinfection_line", (), attributes={"line_id": "L9"}))


# -- judging a cycle ----------------------------------------------------------------------------

STEAM = default_cycle_settings().methods[Method.STEAM]


def cycle(start_ms: int, end_ms: int, cid: str = "C1") -> Cycle:
    return Cycle(SITE, LINE_DEV, "L1", cid, Method.STEAM, start_ms, end_ms, end_ms)


def temps(t0: int, values: list[float], every: int = MIN) -> list[Reading]:
    return [
        Reading(LINE_DEV, SITE, "disinfection_temperature", t0 + i * every, v)
        for i, v in enumerate(values)
    ]


def judge(c: Cycle, rs: list[Reading]):
    s = default_cycle_settings()
    return judge_cycle(c, rs, STEAM, s.max_gap_s, s.min_coverage)


def test_a_cycle_held_for_the_whole_dwell_is_compliant() -> None:
    v = judge(cycle(T0, T0 + 15 * MIN), temps(T0, [60, 95, *[101.0] * 12, 100.0]))
    assert v.compliant and v.held_s == 12 * 60 and v.reason.startswith("held at or above 100")


def test_a_dip_breaks_the_hold_even_when_the_total_time_above_is_enough() -> None:
    values = [101.0] * 7 + [98.5] + [101.0] * 8  # 14 min above in all, never 10 without a break
    v = judge(cycle(T0, T0 + 15 * MIN), temps(T0, values))
    assert not v.compliant and not v.silent
    assert v.held_s == 7 * 60 and v.lowest == 98.5
    assert v.evidence()["curve"][7] == [T0 + 7 * MIN, 98.5]


def test_a_short_cycle_is_a_violation_even_at_temperature() -> None:
    v = judge(cycle(T0, T0 + 8 * MIN), temps(T0, [102.0] * 9))
    assert not v.compliant and v.reason.startswith("short cycle: 480 s")


def test_a_cycle_without_readings_is_silent_not_judged() -> None:
    v = judge(cycle(T0, T0 + 15 * MIN), temps(T0, [101.0, 101.0]))
    assert v.silent and not v.compliant and "silent" in v.reason


def test_flagged_readings_do_not_show_a_hold() -> None:
    rs = [r._replace(flag="M") for r in temps(T0, [101.0] * 16)]
    assert judge(cycle(T0, T0 + 15 * MIN), rs).silent


# -- batch coverage -----------------------------------------------------------------------------


def ev(kind: LineEventKind, ref: str, ts: int, sets: int | None = None) -> LineEvent:
    return LineEvent(LINE_DEV, SITE, "L1", kind, ref, ts, ts, sets=sets)


def test_each_batch_draws_on_the_capacity_of_the_compliant_cycles_behind_it() -> None:
    es = [
        ev(LineEventKind.CYCLE_START, "C1", T0),
        ev(LineEventKind.CYCLE_END, "C1", T0 + 15 * MIN),
        ev(LineEventKind.BATCH_PACKED, "B1", T0 + 30 * MIN, 300),
        ev(LineEventKind.BATCH_PACKED, "B2", T0 + 40 * MIN, 300),
        ev(LineEventKind.BATCH_PACKED, "B3", T0 + 50 * MIN, 300),
    ]
    assert derive_cycles(es)[0].duration_s == 900
    cover = [batch_cover(b, es, {"C1"}, 400, 4 * HOUR) for b in es[2:]]
    assert [c.available for c in cover] == [400, 100, 0]
    assert batch_cover(es[2], es, set(), 400, 4 * HOUR).available == 0  # the cycle failed
    assert batch_cover(es[2], es, {"C1"}, 400, 10 * MIN).available == 0  # too long ago


# -- end to end: a real broker, the subscriber, `landun run`'s wiring, SQLite or PostgreSQL -----


@pytest.fixture(params=["sqlite", "postgres"])
def line(request, broker, tmp_path: Path) -> Iterator[Core]:
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(fresh_database()) if request.param == "postgres" else None
        core = Core.build(registry(), tmp_path / "landun.db", database_url=url)
        stack.callback(core.close)
        sub = MqttSubscriber(
            core.pipeline, BrokerAddress.parse(broker.url), SubscriberSettings("tw-e2e")
        )
        sub.start()
        stack.callback(sub.stop)
        yield core


def open_alert(core: Core, rule: str) -> Alert | None:
    found = [a for a in core.store.list_alerts(AlertQuery(rule_id=rule)) if a.status != "resolved"]
    return found[0] if found else None


def telemetry(t0: int, temperatures: list[float], conveyor: float = 1.5) -> list[dict]:
    return [
        {
            "ts": t0 + i * MIN,
            "values": {"disinfection_temperature": v, "conveyor_speed": conveyor},
        }
        for i, v in enumerate(temperatures)
    ]


def test_end_to_end_cycles_batches_and_hostile_events(line: Core, broker) -> None:
    now = now_ms()
    t = now - 3 * HOUR
    pub = Publisher(broker.url, LINE_DEV)
    try:
        # C1: a good cycle, then a batch that fits its capacity.
        pub.publish(LINE_DEV, telemetry(t, [70, 99, *[101.5] * 13]))
        pub.publish(LINE_DEV, [start("C1", t), end("C1", t + 14 * MIN)], "events")
        pub.publish(LINE_DEV, batch("B1", t + 25 * MIN, sets=380), "events")
        # C2: the steam cabinet sags below 100 °C mid-cycle; B2 is packed behind it.
        t2 = t + 40 * MIN
        sag = [70, 99, 100.5, 100.5, 100.2, 99.1, 97.8, 97.5, 98.4, 99.6, 100.3, 100.6, 100.4]
        pub.publish(LINE_DEV, telemetry(t2, sag))
        pub.publish(LINE_DEV, [start("C2", t2), end("C2", t2 + 12 * MIN)], "events")
        pub.publish(LINE_DEV, batch("B2", t2 + 25 * MIN, sets=390), "events")
        # C3 good, but B3 and B4 pack more than its 400 sets.
        t3 = t + 80 * MIN
        pub.publish(LINE_DEV, telemetry(t3, [70, 100.5, *[102.0] * 13]))
        pub.publish(LINE_DEV, [start("C3", t3), end("C3", t3 + 14 * MIN)], "events")
        pub.publish(
            LINE_DEV, [batch("B3", t3 + 20 * MIN, 300), batch("B4", t3 + 22 * MIN, 300)], "events"
        )
        # The conveyor runs on with the disinfection sensor silent.
        pub.publish(
            LINE_DEV,
            [{"ts": t + 110 * MIN + i * MIN, "values": {"conveyor_speed": 1.5}} for i in range(8)],
        )
        # A redelivery of C1's events.
        pub.publish(LINE_DEV, [start("C1", t), end("C1", t + 14 * MIN)], "events")
        # Hostile and malformed events.
        pub.publish(LINE_DEV, start("X1", now, line_id="L9"), "events")
        pub.publish(LINE_DEV, batch("X2", now, sets=-3), "events")
        pub.publish(LINE_DEV, b"\xff\xfe{", "events")
        pub.publish(LINE_DEV, b'{"ts": 1, "ts": 2}', "events")
        wait_for(lambda: len(line.store.dead_letters()) >= 4, what="the bad events dead-lettered")
        wait_for(lambda: open_alert(line, cycles.RULE_SILENT), what="the silent-sensor alert")
        wait_for(lambda: open_alert(line, cycles.RULE_CAPACITY), what="the capacity alert")
    finally:
        pub.close()
    reasons = sorted(d.reason for d in line.store.dead_letters())
    assert any("line_id 'L9' is not the line of device tw-1-line1" in r for r in reasons)
    assert any("sets: Input should be greater than or equal to 1" in r for r in reasons)
    assert any(r.startswith("not UTF-8: byte 0xff at offset 0") for r in reasons)
    assert any("duplicate key 'ts'" in r for r in reasons)
    # The failed cycle, with its curve against the limit.
    failed = open_alert(line, cycles.RULE_CYCLE)
    assert failed is not None and list(failed.evidence["cycles"]) == ["C2"]
    c2 = failed.evidence["cycles"]["C2"]
    assert c2["limit_min"] == 100.0 and c2["lowest"] == 97.5 and not c2["compliant"]
    assert [t2 + 6 * MIN, 97.8] in c2["curve"]
    assert failed.limit["min"] == 100.0 and "附录J" in failed.limit["clause"]
    assert failed.parameter == "disinfection_temperature"
    # B2 had no compliant cycle behind it: C1's capacity went to B1; C2's curve is the evidence.
    orphan = open_alert(line, cycles.RULE_BATCH)
    assert orphan is not None and orphan.severity == "critical"
    assert orphan.evidence["batch_ids"] == ["B2"] and "C2" in orphan.evidence["cycles"]
    assert orphan.evidence["batches"]["B2"]["sets"] == 390
    # B4: 300 sets, only 100 left of C3's 400.
    over = open_alert(line, cycles.RULE_CAPACITY)
    assert over.evidence["batch_ids"] == ["B4"] and over.last_value == 200
    assert over.evidence["batches"]["B4"]["capacity_available"] == 100
    assert open_alert(line, cycles.RULE_SILENT).family == "integrity"
    # B1 and B3 were covered: nothing else was raised.
    rules = sorted(a.rule_id for a in line.store.list_alerts(AlertQuery()))
    assert rules == sorted(
        [cycles.RULE_CYCLE, cycles.RULE_BATCH, cycles.RULE_CAPACITY, cycles.RULE_SILENT]
    )
    # Redelivered events are recorded once and raise nothing new.
    assert len(line.lines.events(LINE_DEV, t, now)) == 10


# -- the demo: the failing steam cabinet's cycle alert at any hour ------------------------------


@pytest.mark.parametrize("anchor", ANCHORS[::3], ids=lambda a: ms_to_iso(a))
def test_the_demo_backfill_holds_failed_cycles_on_line1_only_at_any_hour(anchor: int) -> None:
    registry = load_registry(demo_registry_path())
    settings = demo_settings(anchor, anchor, None)
    lines = {d.device_id: d.model for d in demo_lines(registry, settings.publish_from_ms)}
    assert set(lines) == {FAILING_LINE, "tw-xh-01-line2"}
    verdicts: dict[str, list[bool]] = {}
    for device_id, model in lines.items():
        spec = line_spec(registry.devices[device_id])
        limit = default_cycle_settings().methods[spec.method]
        readings, events = [], []
        t = settings.start_ms
        while t < anchor:
            sample = model.sample(t)
            published = t >= settings.publish_from_ms
            if published and limit.parameter in sample.values:
                value = sample.values[limit.parameter]
                readings.append(Reading(device_id, "tw-xh-01", limit.parameter, t, value))
            events += [e for e in model.events_until(t) if published]
            t += settings.interval_s * 1000
        decoded, reasons = decode_items(
            json.dumps(events).encode(),
            registry.devices[device_id],
            anchor,
            LIMITS,
            decode_line_item,
        )
        assert reasons == []
        s = default_cycle_settings()
        verdicts[device_id] = [
            judge_cycle(c, readings, limit, s.max_gap_s, s.min_coverage).compliant
            for c in derive_cycles(decoded)
            if c.start_ms is not None and c.end_ms is not None
        ]
    # Six hours of cycles every 30 min: the alert opens on the first batch the demo sends.
    assert len(verdicts[FAILING_LINE]) >= 10 and not any(verdicts[FAILING_LINE])
    assert len(verdicts["tw-xh-01-line2"]) >= 10 and all(verdicts["tw-xh-01-line2"])


# -- the API over a running system ---------------------------------------------------------------


def test_the_running_system_serves_a_lines_cycles_and_batches(system, publisher) -> None:
    """The demo unit's line L2 through `landun run`'s wiring: MQTT telemetry and events, the
    line ledger, the cycle rule and the lines routes, with bounded and checked queries."""
    device = "tw-xh-01-line2"  # infrared: 120 °C for 10 min
    t = now_ms() - 2 * HOUR
    line2 = {"line_id": "L2", "method": "infrared"}
    publisher.publish(device, telemetry(t, [80, 118, *[123.0] * 13]))
    publisher.publish(
        device,
        [
            start("I1", t) | line2,
            end("I1", t + 14 * MIN, line_id="L2"),
            batch("IB1", t + 20 * MIN, sets=280, line_id="L2"),
        ],
        "events",
    )
    url = "/api/v1/sites/tw-xh-01/lines"
    lines = system.http.get(url).json()
    assert [(x["line_id"], x["method"], x["limit_min"], x["unit"]) for x in lines] == [
        ("L1", "steam", 100.0, "°C"),
        ("L2", "infrared", 120.0, "°C"),
    ]
    window = {"start": ms_to_iso(t - HOUR), "end": ms_to_iso(t + HOUR)}
    got = wait_for(
        lambda: (r := system.http.get(f"{url}/L2/cycles", params=window).json())["batches"] and r,
        what="the line's cycle and batch",
    )
    (c,) = got["cycles"]
    assert c["cycle_id"] == "I1" and c["compliant"] is True and c["held_s"] == 12 * 60
    assert c["curve"][0] == [t, 80.0] and len(c["curve"]) == 15
    assert got["batches"] == [
        {
            "batch_id": "IB1",
            "packed": ms_to_iso(t + 20 * MIN),
            "sets": 280,
            "production_date": ms_to_iso(t + 20 * MIN)[:10],
            "received": got["batches"][0]["received"],
        }
    ]
    too_long = {"start": ms_to_iso(t - 72 * HOUR), "end": ms_to_iso(t)}
    assert system.http.get(f"{url}/L2/cycles", params=too_long).status_code == 400
    assert system.http.get(f"{url}/L9/cycles").status_code == 404
    assert system.http.get(f"{url}/{'L' * 65}/cycles").status_code == 422
    naive = {"start": "2026-12-01T00:00:00"}
    assert system.http.get(f"{url}/L2/cycles", params=naive).status_code == 400
    assert system.anon.get(f"{url}/L2/cycles").status_code == 401
    assert system.http.get("/api/v1/sites/nope/lines").status_code == 404
    # A line controller is registered with its line data, or refused with the reason.
    body = {"site": "tw-xh-01", "kind": "disinfection_line", "parameters": ["conveyor_speed"]}
    refused = system.http.put("/api/v1/devices/tw-xh-01-line3", json=body)
    assert refused.status_code == 409 and "needs attributes line_id, method" in refused.text
    attrs = {"line_id": "L3", "method": "chemical", "capacity_sets": 200}
    made = system.http.put("/api/v1/devices/tw-xh-01-line3", json=body | {"attributes": attrs})
    assert made.status_code == 200 and made.json()["attributes"] == attrs
    lines = system.http.get(url).json()
    assert lines[-1]["parameter"] == "available_chlorine" and lines[-1]["limit_min"] == 250.0
    too_many = {f"k{i}": i for i in range(17)}
    bad = system.http.put("/api/v1/devices/tw-xh-01-line3", json=body | {"attributes": too_many})
    assert bad.status_code == 422
    # The failing steam cabinet's cycle alert carries its evidence record, JSON and printable.
    t1 = now_ms() - HOUR
    sag = [70, 99, 100.5, 100.5, 100.2, 99.1, 97.8, 97.5, 98.4, 99.6, 100.3, 100.6, 100.4]
    publisher.publish("tw-xh-01-line1", telemetry(t1, sag))
    publisher.publish("tw-xh-01-line1", [start("S1", t1), end("S1", t1 + 12 * MIN)], "events")
    (alert,) = wait_for(
        lambda: system.http.get(
            "/api/v1/alerts", params={"site": "tw-xh-01", "rule": cycles.RULE_CYCLE}
        ).json(),
        what="the cycle alert",
    )
    record = system.http.get(f"/api/v1/alerts/{alert['id']}/evidence").json()
    assert record["alert"]["evidence"]["cycles"]["S1"]["lowest"] == 97.5
    assert record["rule"]["name_zh"] == "消毒周期温度或时间不达标"
    assert len(record["readings"]) >= 13  # the cycle's raw readings, with an hour around it
    page = system.http.get(f"/api/v1/alerts/{alert['id']}/evidence", params={"format": "html"})
    assert page.status_code == 200 and "消毒周期温度或时间不达标" in page.text


# -- scenarios through the real pipeline (small runs; `landun eval-scenarios --domain tableware`
# gives the full figures) ------------------------------------------------------------------------

END_MS = aligned_end_ms(iso_to_ms("2026-12-07T08:00:00+08:00"))


@pytest.mark.parametrize(
    ("scenario", "kind", "max_ttd"),
    [
        ("failing_steam_cabinet", "noncompliant", 30),
        ("short_cycle", "noncompliant", 30),
        ("batch_without_cycle", "uncovered_batch", 60),
        ("silent_sensors", "sensors_silent", 15),
    ],
)
def test_each_line_fault_is_found_in_time_and_nothing_else_raised(
    scenario: str, kind: str, max_ttd: float
) -> None:
    run = run_line_scenario(load_line_scenario(scenario), RunSettings(1, 2, 1, END_MS))
    figures = score(run)
    assert figures["kinds"][kind]["recall"] == 1.0
    assert figures["kinds"][kind]["median_ttd_min"] <= max_ttd
    assert figures["false_positives"] == 0


def test_clean_lines_raise_no_alert() -> None:
    run = run_line_scenario(load_line_scenario("tableware_clean"), RunSettings(3, 2, 2, END_MS))
    assert run.alerts == [] and run.dead_letters == []
    assert run.messages > 3 * 2 * 1440  # every minute's telemetry, and the events
