"""Tank cleaning and disinfection records: raw payload bytes on `.../events` of a `tank_log`
device -> validated tank events, or precise reasons. The same rules as every other payload
(ingest.decode): an object or an array of them, JSON and time checks shared, and a message with
any bad part refused whole."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from domain.model import Device
from domain.tanks import TANK_LOG, TankEvent, TankEventKind
from ingest.decode import DecodeLimits, _pydantic_reasons, parse_ts
from ingest.events import event_records

Text = Annotated[str, Field(min_length=1, max_length=128)]


class TankEventIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    ts: int | str
    event: Literal["tank_cleaned", "tank_disinfected"]
    tank_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:\-]+$")]
    operator: Text  # who did the job: the register must name them
    contractor: Text | None = None
    disinfectant: Text | None = None
    report_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None


_event_one = TypeAdapter(TankEventIn)


def decode_tank_events(
    payload: bytes, device: Device, site_id: str, recv_ms: int, limits: DecodeLimits
) -> tuple[list[TankEvent], list[str]]:
    """Tank events of one message, or every reason it is refused (then no events)."""
    if device.kind != TANK_LOG:
        return [], [f"device {device.id} is a {device.kind}, not a {TANK_LOG}: no tank records"]
    items, many, why = event_records(payload, limits)
    if why:
        return [], [why]
    events: list[TankEvent] = []
    reasons: list[str] = []
    for i, item in enumerate(items):
        prefix = f"[{i}] " if many else ""
        try:
            rec = _event_one.validate_python(item)
        except ValidationError as exc:
            reasons.extend(_pydantic_reasons(exc, prefix))
            continue
        ts_ms, why = parse_ts(rec.ts, recv_ms, limits)
        if ts_ms is None:
            reasons.append(prefix + (why or "no time"))
            continue
        events.append(
            TankEvent(
                device_id=device.id,
                site_id=site_id,
                event=TankEventKind(rec.event),
                tank_id=rec.tank_id,
                ts_ms=ts_ms,
                recv_ms=recv_ms,
                operator=rec.operator,
                contractor=rec.contractor,
                disinfectant=rec.disinfectant,
                report_id=rec.report_id,
            )
        )
    return ([], reasons) if reasons else (events, [])
