"""Event decoding: raw payload bytes on `.../events` -> validated bag events (or, from a
disinfection line's controller, its cycle and batch events: ingest.line_events), or precise
reasons. Same rules as telemetry (ingest.decode): an object or an array of them, JSON
and time checks shared, and a message with any bad part refused whole."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from domain.model import Device
from domain.tableware import LINE_CONTROLLER, LineEvent
from domain.waste import WASTE_SCANNER, WasteCategory, WasteEvent, WasteEventKind
from ingest.decode import DecodeLimits, _pydantic_reasons, parse_json, parse_ts
from ingest.line_events import decode_line_record, validate_line_event

# A full medical-waste bag or sharps box weighs a few kilograms; 100 kg is no single bag, so a
# larger value is a scale or keying error, refused like a physically impossible reading.
MAX_BAG_KG = 100.0

# What each event must state beyond ts, event and bag_id (the 条例 art. 12 register needs the
# category, weight and source at collection, and the weight and manifest at handover).
REQUIRED: dict[WasteEventKind, tuple[str, ...]] = {
    WasteEventKind.COLLECTED: ("category", "weight_kg", "department"),
    WasteEventKind.STORED: (),
    WasteEventKind.HANDED_OVER: ("weight_kg", "manifest_id"),
}

Text = Annotated[str, Field(min_length=1, max_length=64)]


class WasteEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    ts: int | str
    event: Literal["bag_collected", "bag_stored", "bag_handed_over"]
    bag_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
    category: (
        Literal["infectious", "sharps", "pathological", "pharmaceutical", "chemical"] | None
    ) = None
    weight_kg: float | None = None
    department: Text | None = None
    manifest_id: Text | None = None
    carrier: Annotated[str, Field(min_length=1, max_length=128)] | None = None


_event_one = TypeAdapter(WasteEventIn)


def decode_event_record(
    rec: WasteEventIn,
    device: Device,
    site_id: str,
    recv_ms: int,
    limits: DecodeLimits,
    reasons: list[str],
    prefix: str = "",
) -> WasteEvent | None:
    before = len(reasons)
    ts_ms, why = parse_ts(rec.ts, recv_ms, limits)
    if why:
        reasons.append(prefix + why)
    kind = WasteEventKind(rec.event)
    missing = [name for name in REQUIRED[kind] if getattr(rec, name) is None]
    if missing:
        reasons.append(f"{prefix}{kind} without {', '.join(missing)}")
    if rec.weight_kg is not None and not (
        math.isfinite(rec.weight_kg) and 0 < rec.weight_kg <= MAX_BAG_KG
    ):
        reasons.append(
            f"{prefix}weight_kg={rec.weight_kg:g} outside plausible range 0–{MAX_BAG_KG:g} kg"
        )
    if ts_ms is None or len(reasons) > before:
        return None
    return WasteEvent(
        device_id=device.id,
        site_id=site_id,
        event=kind,
        bag_id=rec.bag_id,
        ts_ms=ts_ms,
        recv_ms=recv_ms,
        category=WasteCategory(rec.category) if rec.category else None,
        weight_kg=None if rec.weight_kg is None else float(rec.weight_kg),
        department=rec.department,
        manifest_id=rec.manifest_id,
        carrier=rec.carrier,
    )


def event_records(payload: bytes, limits: DecodeLimits) -> tuple[list, bool, str | None]:
    """The records of an events message (an object, or an array of them), whether it was an
    array, or why it is refused."""
    doc, why = parse_json(payload, limits)
    if why:
        return [], False, why
    if isinstance(doc, list):
        if not doc:
            return [], True, "empty array"
        if len(doc) > limits.max_batch:
            return [], True, f"array of {len(doc)} records over the {limits.max_batch} limit"
        return doc, True, None
    if isinstance(doc, dict):
        return [doc], False, None
    return [], False, f"payload is a JSON {type(doc).__name__}, not an object or array"


def _decode_waste_item(
    item: object,
    device: Device,
    site_id: str,
    recv_ms: int,
    limits: DecodeLimits,
    reasons: list[str],
    prefix: str,
) -> WasteEvent | None:
    try:
        rec = _event_one.validate_python(item)
    except ValidationError as exc:
        reasons.extend(_pydantic_reasons(exc, prefix))
        return None
    return decode_event_record(rec, device, site_id, recv_ms, limits, reasons, prefix)


def _decode_line_item(
    item: object,
    device: Device,
    site_id: str,
    recv_ms: int,
    limits: DecodeLimits,
    reasons: list[str],
    prefix: str,
) -> LineEvent | None:
    rec = validate_line_event(item, prefix, reasons)
    if rec is None:
        return None
    return decode_line_record(rec, device, site_id, recv_ms, limits, reasons, prefix)


# The device kinds that send events, and how one record of each is decoded.
DECODERS = {WASTE_SCANNER: _decode_waste_item, LINE_CONTROLLER: _decode_line_item}


def decode_events(
    payload: bytes, device: Device, site_id: str, recv_ms: int, limits: DecodeLimits
) -> tuple[list[WasteEvent | LineEvent], list[str]]:
    """The events of one message (bag scans, or a line's cycles and batches, by the device's
    kind), or every reason it is refused (then no events)."""
    decode_item = DECODERS.get(device.kind)
    if decode_item is None:
        return [], [f"device {device.id} is a {device.kind}, not a {WASTE_SCANNER}: no events"]
    items, many, why = event_records(payload, limits)
    if why:
        return [], [why]
    events: list[WasteEvent | LineEvent] = []
    reasons: list[str] = []
    for i, item in enumerate(items):
        prefix = f"[{i}] " if many else ""
        event = decode_item(item, device, site_id, recv_ms, limits, reasons, prefix)
        if event is not None:
            events.append(event)
    return ([], reasons) if reasons else (events, [])
