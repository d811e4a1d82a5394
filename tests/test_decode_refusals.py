"""Input that used to be stored and must be refused with a reason: text that is not Unicode,
duplicate keys, an alias beside its canonical name, numbers that overflow or underflow, a
battery outside 0-100. Status and events go the same way as telemetry."""

from __future__ import annotations

import json

import pytest

from domain.model import Device
from domain.params import default_catalogue
from ingest.decode import DecodeLimits, decode_status, decode_telemetry
from ingest.events import decode_items, decode_waste_item

NOW = 1_795_334_400_000
LIMITS = DecodeLimits()
POOL = Device("pool-1-wq", "pool-1", "pool_analyzer", ())
SCANNER = Device("h-1-scan", "h-1", "waste_scanner", ())


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"state": "online", "firmware": "\\ud800"}', "lone surrogate \\ud800"),
        (b'{"state": "online", "battery": -5}', "battery: Input should be greater than or equal"),
        (b'{"state": "online", "battery": 101}', "battery: Input should be less than or equal"),
        (b'{"state": "online", "battery": 1e-400}', "number 1e-400 underflows to 0"),
        (b'{"state": "online", "rssi": 1e999}', "number 1e999 overflows a double"),
        (b'{"state": "online", "state": "offline"}', "duplicate key 'state'"),
    ],
)
def test_status_refused(payload: bytes, reason: str) -> None:
    detail, reasons = decode_status(payload, NOW, LIMITS)
    assert detail is None
    assert any(reason in r for r in reasons), reasons


def test_status_in_range_is_kept() -> None:
    detail, reasons = decode_status(
        b'{"state": "online", "battery": 100, "firmware": "2.1"}', NOW, LIMITS
    )
    assert reasons == [] and detail is not None and detail["battery"] == 100


def test_events_with_lone_surrogate_refused() -> None:
    event = {"ts": NOW, "event": "bag_collected", "bag_id": "B\\udc00", "category": "sharps"}
    payload = json.dumps(event).replace("\\\\", "\\").encode()
    events, reasons = decode_items(payload, SCANNER, NOW, LIMITS, decode_waste_item)
    assert events == [] and reasons == ["text contains a lone surrogate \\udc00 (not Unicode)"]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"ts": 1795334400000, "values": {"ph": 99, "ph": 7.3}}', "duplicate key 'ph'"),
        (b'{"ts": 1795334400000, "values": {"ph":99,"ph":7.3}}', "duplicate key 'ph'"),
        (
            b'{"ts": 1795334400000, "ts": 1795334400000, "values": {"ph": 7.3}}',
            "duplicate key 'ts'",
        ),
        (b'{"ts": 1795334400000, "values": {"pH": 7.3, "ph": 7.2}}', "'pH' and 'ph' both give ph"),
        (b'{"ts": 1795334400000, "values": {"turbidity": 1e-400}}', "1e-400 underflows to 0"),
        (b'{"ts": 1795334400000, "values": {"turbidity": 0.0e5}}', None),
        (b'{"ts": 1795334400000, "values": {"turbidity": -0.0}}', None),
        (b'{"ts": 1795334400000, "values": {"turbidity": 0.3}}', None),
    ],
)
def test_telemetry_refusals(payload: bytes, reason: str | None) -> None:
    decoded = decode_telemetry(payload, POOL, "pool-1", default_catalogue(), NOW, LIMITS)
    if reason is None:
        assert decoded.reasons == [] and len(decoded.readings) == 1
    else:
        assert decoded.readings == []
        assert any(reason in r for r in decoded.reasons), decoded.reasons
