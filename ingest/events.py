"""Event decoding: raw payload bytes on `.../events` -> validated events, or precise reasons.
Here the part every kind of event shares (`decode_items`, `EventDecoder`) and a waste scanner's
bag events; a disinfection line's cycles and batches are in ingest.line_events, a tank log's
records in ingest.tank_events. Same rules as telemetry (ingest.decode): an object or an array of
them, JSON and time checks shared, and a message with any bad part refused whole."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from domain.model import Device
from domain.waste import WasteCategory, WasteEvent, WasteEventKind
from ingest.decode import DecodeLimits, _pydantic_reasons, parse_json, parse_ts
from ingest.decoders import Batch, EventLedger
from ingest.messages import Message

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

E = TypeVar("E")
R = TypeVar("R")

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
        site_id=device.site_id,
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


@dataclass(frozen=True, slots=True)
class ItemKind(Generic[R, E]):
    """One kind of event record: its model, and what makes an event of a record that fits it
    (None with the reasons it is refused added to `reasons`)."""

    model: TypeAdapter[R]
    event: Callable[[R, Device, int, DecodeLimits, list[str], str], E | None]


decode_waste_item = ItemKind(_event_one, decode_event_record)


def decode_items(
    payload: bytes, device: Device, recv_ms: int, limits: DecodeLimits, item: ItemKind[R, E]
) -> tuple[list[E], list[str]]:
    """The events of one message, or every reason it is refused (then no events)."""
    items, many, why = event_records(payload, limits)
    if why:
        return [], [why]
    events: list[E] = []
    reasons: list[str] = []
    for i, record in enumerate(items):
        prefix = f"[{i}] " if many else ""
        try:
            rec = item.model.validate_python(record)
        except ValidationError as exc:
            reasons.extend(_pydantic_reasons(exc, prefix))
            continue
        event = item.event(rec, device, recv_ms, limits, reasons, prefix)
        if event is not None:
            events.append(event)
    return ([], reasons) if reasons else (events, [])


class EventDecoder(Generic[R, E]):
    """`.../events` of one kind of device: its records, decoded by `item`, go to its ledger."""

    __slots__ = ("item", "ledger", "limits")

    def __init__(self, item: ItemKind[R, E], ledger: EventLedger[E], limits: DecodeLimits) -> None:
        self.item = item
        self.ledger = ledger
        self.limits = limits

    def decode(self, m: Message, device: Device, batch: Batch) -> str | None:
        events, reasons = decode_items(m.payload, device, m.recv_ms, self.limits, self.item)
        if reasons:
            return "; ".join(reasons)
        batch.add_events(self.ledger, events)
        return None
