"""Tank cleaning and disinfection records: one record of a `tank_log` device's `.../events`
message -> a validated tank event, or precise reasons. The message around it follows the same
rules as every other payload (ingest.events.decode_items): an object or an array of them, JSON
and time checks shared, and a message with any bad part refused whole."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from domain.model import Device
from domain.tanks import TankEvent, TankEventKind
from ingest.decode import DecodeLimits, parse_ts
from ingest.events import ItemKind

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


def decode_tank_record(
    rec: TankEventIn,
    device: Device,
    recv_ms: int,
    limits: DecodeLimits,
    reasons: list[str],
    prefix: str = "",
) -> TankEvent | None:
    ts_ms, why = parse_ts(rec.ts, recv_ms, limits)
    if ts_ms is None:
        reasons.append(prefix + (why or "no time"))
        return None
    return TankEvent(
        device_id=device.id,
        site_id=device.site_id,
        event=TankEventKind(rec.event),
        tank_id=rec.tank_id,
        ts_ms=ts_ms,
        recv_ms=recv_ms,
        operator=rec.operator,
        contractor=rec.contractor,
        disinfectant=rec.disinfectant,
        report_id=rec.report_id,
    )


decode_tank_item = ItemKind(_event_one, decode_tank_record)
