"""Disinfection-line event decoding: raw payload bytes on `.../events` of a line controller ->
validated cycle and batch events (domain.tableware), or precise reasons. Same rules as bag
events (ingest.events): an object or an array of them, JSON and time checks shared, and a message
with any bad part refused whole. The line is the registry's: a controller cannot speak for
another line or change its line's disinfection method."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from domain.model import Device
from domain.tableware import LineEvent, LineEventKind, Method, line_spec
from ingest.decode import DecodeLimits, parse_ts
from ingest.events import ItemKind

# The largest batch a packing line labels: a pallet of trays is a few thousand sets.
MAX_SETS = 100_000
# A batch's label states its production date; one further than this from the packing time is a
# keying or clock error.
MAX_DATE_SKEW_DAYS = 1

Ident = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]

REQUIRED: dict[LineEventKind, tuple[str, ...]] = {
    LineEventKind.CYCLE_START: ("cycle_id", "method"),
    LineEventKind.CYCLE_END: ("cycle_id",),
    LineEventKind.BATCH_PACKED: ("batch_id", "sets", "production_date"),
}
FORBIDDEN: dict[LineEventKind, tuple[str, ...]] = {
    LineEventKind.CYCLE_START: ("batch_id", "sets", "production_date"),
    LineEventKind.CYCLE_END: ("batch_id", "sets", "production_date"),
    LineEventKind.BATCH_PACKED: ("cycle_id", "method"),
}


class LineEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    ts: int | str
    event: Literal["cycle_start", "cycle_end", "batch_packed"]
    line_id: Ident
    cycle_id: Ident | None = None
    method: Literal["steam", "hot_water", "infrared", "chemical"] | None = None
    batch_id: Ident | None = None
    sets: Annotated[int, Field(ge=1, le=MAX_SETS)] | None = None
    production_date: Annotated[str, Field(min_length=10, max_length=10)] | None = None


line_event_one = TypeAdapter(LineEventIn)


def _date_reason(text: str, ts_ms: int | None, prefix: str) -> str | None:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        return f"{prefix}production_date {text!r} is not a date (YYYY-MM-DD)"
    if ts_ms is None:
        return None
    packed = datetime.fromtimestamp(ts_ms / 1000, UTC).date()
    if abs((day - packed).days) > MAX_DATE_SKEW_DAYS:
        return (
            f"{prefix}production_date {text} is {abs((day - packed).days)} days from the"
            f" packing time {packed.isoformat()} (at most {MAX_DATE_SKEW_DAYS})"
        )
    return None


def decode_line_record(
    rec: LineEventIn,
    device: Device,
    recv_ms: int,
    limits: DecodeLimits,
    reasons: list[str],
    prefix: str = "",
) -> LineEvent | None:
    before = len(reasons)
    spec = line_spec(device)
    assert spec is not None  # the decoder table sends only line controllers' events here
    ts_ms, why = parse_ts(rec.ts, recv_ms, limits)
    if why:
        reasons.append(prefix + why)
    kind = LineEventKind(rec.event)
    missing = [name for name in REQUIRED[kind] if getattr(rec, name) is None]
    if missing:
        reasons.append(f"{prefix}{kind} without {', '.join(missing)}")
    extra = [name for name in FORBIDDEN[kind] if getattr(rec, name) is not None]
    if extra:
        reasons.append(f"{prefix}{kind} does not take {', '.join(extra)}")
    if rec.line_id != spec.line_id:
        reasons.append(
            f"{prefix}line_id {rec.line_id!r} is not the line of device {device.id}"
            f" ({spec.line_id!r})"
        )
    if rec.method is not None and rec.method != spec.method:
        reasons.append(
            f"{prefix}method {rec.method} differs from line {spec.line_id}'s registered"
            f" {spec.method}"
        )
    if rec.production_date is not None:
        why = _date_reason(rec.production_date, ts_ms, prefix)
        if why:
            reasons.append(why)
    if ts_ms is None or len(reasons) > before:
        return None
    ref = rec.batch_id if kind is LineEventKind.BATCH_PACKED else rec.cycle_id
    assert ref is not None
    return LineEvent(
        device_id=device.id,
        site_id=device.site_id,
        line_id=rec.line_id,
        event=kind,
        ref_id=ref,
        ts_ms=ts_ms,
        recv_ms=recv_ms,
        method=Method(rec.method) if rec.method else None,
        sets=rec.sets,
        production_date=rec.production_date,
    )


decode_line_item = ItemKind(line_event_one, decode_line_record)
