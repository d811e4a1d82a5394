"""The wire contract over a real broker: every kind of bad input is dead-lettered with a precise
reason while the good messages sent between them are all stored."""

from __future__ import annotations

import json

import pytest

from domain.timeutil import now_ms
from tests.conftest import wait_for

DEVICE = "pool-xh-01-wq"
MINUTE = 60_000


def good(ts: int, **values: float) -> dict:
    return {"ts": ts, "values": values or {"ph": 7.4}}


def nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


# (payload, device, expected reason fragment)
BAD_INPUTS: list[tuple[bytes | dict | list, str, str | None]] = [
    (b"\x00\x01 not json", DEVICE, "not JSON: Expecting value at line 1 column 1"),
    (b"", DEVICE, "empty payload"),
    (b"\xff\xfe{}", DEVICE, "not UTF-8: byte 0xff at offset 0"),
    ({"ts": "now", "values": {"ph": 7.4}}, DEVICE, "ts 'now' is not ISO 8601"),
    ({"values": {"ph": 7.4}}, DEVICE, "ts: Field required"),
    ({"ts": 1, "values": {"ph": "7.4"}}, DEVICE, "values.ph"),
    (b'{"ts": 1795334400000, "values": {"ph": NaN}}', DEVICE, "NaN is not a number JSON allows"),
    (b'{"ts": 1795334400000, "values": {"ph": Infinity}}', DEVICE, "Infinity is not a number"),
    (
        {"ts": "2026-11-22T08:00:00", "values": {"ph": 7.4}},
        DEVICE,
        "has no zone offset",
    ),
    ({"ts": 4102444800000, "values": {"ph": 7.4}}, DEVICE, "more than 5 min in the future"),
    ({"ts": 946684800000, "values": {"ph": 7.4}}, DEVICE, "ts 946684800000 (2000-01-01T00:00:00.000Z) older than 30 days"),
    ({"ts": "2000-01-01T08:00:00+08:00", "values": {"ph": 7.4}}, DEVICE, "ts 2000-01-01T08:00:00+08:00 (2000-01-01T00:00:00.000Z) older than 30 days"),
    ({"ts": "{now}", "values": {"ph": 7.4}}, "pool-9", "unknown device pool-9"),
    ({"ts": "{now}", "values": {"chlorine": 0.5}}, DEVICE, "unknown parameter 'chlorine'"),
    ({"ts": "{now}", "values": {"ph": 19.2}}, DEVICE, "ph=19.2 outside physical range 0–14 pH"),
    ({"ts": "{now}", "values": {"ph": 7.4}, "colour": "blue"}, DEVICE, "colour: Extra inputs"),
    (b'{"ts": 1, "values": {"ph": 7.4}, "pad": "' + b"x" * 300_000 + b'"}', DEVICE, "over the 256 KiB limit"),
    (nested(50), DEVICE, "nested deeper than 8 levels"),
    ([], DEVICE, "empty array"),
    ([{"ts": "{now}", "values": {"ph": 7.4}}] * 1001, DEVICE, "array of 1001 records over the 1000 limit"),
    (b"42", DEVICE, "payload is a JSON int, not an object or array"),
    ({"ts": "{now}", "values": {}}, DEVICE, "values: Dictionary should have at least 1 item"),
    ({"ts": "{now}", "values": {"ph": 7.4}, "flags": {"ph": "X"}}, DEVICE, "flags.ph: Input should be"),
    ({"ts": "{now}", "values": {"temperature": 81}, "units": {"temperature": "degF"}}, DEVICE, None),
    ({"ts": "{now}", "values": {"temperature": 20}, "units": {"temperature": "mmHg"}}, DEVICE, "unit 'mmHg' cannot be converted"),
    # Shapes next to the plain one, which the decoder's fast path must leave to the full path.
    ({"ts": "{now}", "values": {"ph": True}}, DEVICE, "values.ph: Input should be a valid number"),
    ({"ts": True, "values": {"ph": 7.4}}, DEVICE, "ts.int: Input should be a valid integer"),
    (b'{"ts": 1795334400000.0, "values": {"ph": 7.4}}', DEVICE, "ts.int: Input should be a valid integer"),
    ({"ts": "{now}", "seq": -1, "values": {"ph": 7.4}}, DEVICE, "seq: Input should be greater than or equal to 0"),
    ({"ts": "{now}", "seq": 2**63, "values": {"ph": 7.4}}, DEVICE, "seq: Input should be less than or equal to 9223372036854775807"),
    ({"ts": "{now}", "seq": 2**63 - 1, "values": {"ph": 7.4}}, DEVICE, None),
    ({"ts": "{now}", "values": {"ph": 7.4}, "flags": None}, DEVICE, "flags: Input should be a valid dictionary"),
    ({"ts": "{now}", "values": {"ph": 7.4}, "flags": {"ph": ["N"]}}, DEVICE, "flags.ph: Input should be"),
    ({"ts": "{now}", "values": {"temperature": 20}, "units": {"temperature": 1}}, DEVICE, "units.temperature: Input should be a valid string"),
    (b'{"ts": 100000000000000000000000, "values": {"ph": 7.4}}', DEVICE, "ts 100000000000000000000000 (outside the calendar) more than 5 min"),
    (b'{"ts": "{now}", "values": {"ph": 1e400}}', DEVICE, "not JSON: number 1e400 overflows a double"),
    (b'{"ts": "{now}", "values": {"ph": 1' + b"0" * 400 + b"}}", DEVICE, "overflows a double"),
    (b'\xef\xbb\xbf{"ts": "{now}", "values": {"ph": 7.4}}', DEVICE, "not JSON: Unexpected UTF-8 BOM"),
    (b'{"ts": "{now}", "values": {"\\ud800": 7.4}}', DEVICE, "text contains a lone surrogate \\ud800 (not Unicode)"),
    ([{"ts": "{now}", "values": {"ph": 7.4}}, {"ts": "{now}", "values": {"ph": "x"}}], DEVICE, "[1] values.ph: Input should be a valid number"),
    (b'{"ts": "{now}", "values": {"ph": 7.2}, "values": {"ph": 19.2}}', DEVICE, "duplicate key 'values'"),
    (b'{"ts": "{now}", "values": {"ph": 99, "ph": 7.3}}', DEVICE, "duplicate key 'ph'"),
    (b'{"ts": "{now}", "values": {"ph" :99, "ph":7.3}}', DEVICE, "duplicate key 'ph'"),
    ([{"ts": "{now}", "values": {"ph": 7.2}}, {"ts": "{now}", "values": {"pH": 7.3, "ph": 7.2}}], DEVICE, "[1] 'pH' and 'ph' both give ph"),
    (b'{"ts": "{now}", "values": {"turbidity": 1e-400}}', DEVICE, "not JSON: number 1e-400 underflows to 0"),
    ({"ts": "{now}", "values": {"turbidity": 0.0}}, DEVICE, None),
    (b'{"ts": "{now}", "values": {"ph": 7.4}, "units": {"ph": "\\udfff"}}', DEVICE, "lone surrogate \\udfff"),
]  # fmt: skip


def _encode(payload: bytes | dict | list, now: int) -> bytes:
    if isinstance(payload, bytes):
        return payload.replace(b'"{now}"', str(now).encode())
    return json.dumps(payload).replace('"{now}"', str(now)).encode()


def test_every_bad_input_is_dead_lettered_with_its_reason_and_good_ones_are_stored(
    system, publisher
):
    now = now_ms() - 10 * MINUTE
    expected_readings = 0
    expected_dead = []
    for i, (payload, device, reason) in enumerate(BAD_INPUTS):
        publisher.publish(device, _encode(payload, now + i * 1000))
        if reason is None:
            expected_readings += 1  # good input (a converted unit, a repeated key) of one value
        else:
            expected_dead.append(reason)
        publisher.publish(DEVICE, good(now + i * 1000 + 500, ph=7.3, free_chlorine=0.5))
        expected_readings += 2

    def all_in():
        readings = system.http.get("/api/v1/readings", params={"device": DEVICE}).json()
        dead = system.http.get("/api/v1/dead-letters", params={"limit": 1000}).json()["items"]
        done = len(dead) == len(expected_dead) and len(readings) >= expected_readings
        return (readings, dead) if done else None

    readings, dead = wait_for(all_in, what="every message stored or dead-lettered")
    reasons = [d["reason"] for d in reversed(dead)]
    for want, got in zip(expected_dead, reasons, strict=True):
        assert want in got, f"expected {want!r} in {got!r}"
    # 81 °F is 27.2 °C: converted, not rejected.
    temps = [r for r in readings if r["parameter"] == "temperature"]
    assert [round(r["value"], 1) for r in temps] == [27.2]
    assert len(readings) == expected_readings
    assert len([r for r in readings if r["parameter"] == "free_chlorine"]) == len(BAD_INPUTS)
    oversized = next(d for d in dead if "over the 256 KiB" in d["reason"])
    assert oversized["raw_bytes"] == 64 * 1024  # raw kept, bounded
    counts = system.http.get("/api/v1/dead-letters").json()["counts_by_reason"]
    assert sum(counts.values()) == len(expected_dead)


def test_a_message_with_one_bad_value_is_rejected_whole_with_every_reason(system, publisher):
    ts = now_ms() - MINUTE
    publisher.publish(DEVICE, {"ts": ts, "values": {"ph": 19.2, "orp": 2000, "free_chlorine": 0.5}})
    dead = wait_for(
        lambda: system.http.get("/api/v1/dead-letters").json()["items"], what="a dead letter"
    )
    assert dead[0]["reason"] == (
        "ph=19.2 outside physical range 0–14 pH; orp=2000 outside physical range -1500–1500 mV"
    )
    assert system.http.get("/api/v1/readings", params={"device": DEVICE}).json() == []


def test_aliases_arrays_iso_times_and_duplicates(system, publisher):
    base = now_ms() - 20 * MINUTE
    batch = [
        {"ts": base + i * MINUTE, "seq": i, "values": {"pH": 7.4, "FCl": 0.6}} for i in range(10)
    ]
    publisher.publish(DEVICE, batch)
    publisher.publish(DEVICE, batch[:3])  # a device resending part of its buffer
    publisher.publish(
        DEVICE, {"ts": "2026-11-22T08:00:00+08:00", "values": {"ph": 7.2}, "flags": {"ph": "C"}}
    )

    def stored():
        rows = system.http.get("/api/v1/readings", params={"device": DEVICE}).json()
        return rows if len(rows) == 21 else None

    rows = wait_for(stored, what="21 distinct readings")
    assert {r["parameter"] for r in rows} == {"ph", "free_chlorine"}
    flagged = [r for r in rows if r["flag"] == "C"]
    assert len(flagged) == 1 and flagged[0]["ts"] == "2026-11-22T00:00:00.000Z"
    metrics = system.system.core.pipeline.metrics
    wait_for(lambda: metrics.readings_duplicate == 6, what="6 duplicates counted")


@pytest.mark.parametrize(
    ("payload", "state"),
    [({"state": "online", "firmware": "2.1.0", "battery": 87, "rssi": -71}, "online")],
)
def test_status_is_kept_as_last_known_state(system, publisher, payload, state):
    publisher.publish(DEVICE, payload, kind="status")
    publisher.publish(DEVICE, {"state": "flying"}, kind="status")
    core = system.system.core
    statuses = wait_for(lambda: core.store.device_statuses(), what="a device status")
    assert statuses[DEVICE].state == state
    assert statuses[DEVICE].detail["firmware"] == "2.1.0"
    dead = wait_for(
        lambda: system.http.get("/api/v1/dead-letters").json()["items"], what="a dead letter"
    )
    assert "state: Input should be 'online', 'offline' or 'maintenance'" in dead[0]["reason"]
