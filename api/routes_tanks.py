"""Drinking-water tank cleaning and disinfection register (二次供水设施清洗消毒记录): each tank of a
site with its records and when it is next due (alerts/data/tanks.toml)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from alerts.tanks import DAY_MS, TankSettings
from api.auth import Caller, Ctx, site_for
from api.schemas import error_responses
from domain.tanks import TankEvent
from domain.timeutil import ms_to_iso
from store.tank_log import TankLog

router = APIRouter(
    prefix="/api/v1", tags=["drinking water"], responses=error_responses(401, 403, 404, 422)
)


class TankRecordOut(BaseModel):
    event: str = Field(description="tank_cleaned or tank_disinfected")
    ts: str = Field(description="when the job was done, UTC")
    received: str
    device_id: str
    operator: str
    contractor: str | None
    disinfectant: str | None
    report_id: str | None

    @classmethod
    def of(cls, e: TankEvent) -> TankRecordOut:
        return cls(
            event=str(e.event),
            ts=ms_to_iso(e.ts_ms),
            received=ms_to_iso(e.recv_ms),
            device_id=e.device_id,
            operator=e.operator,
            contractor=e.contractor,
            disinfectant=e.disinfectant,
            report_id=e.report_id,
        )


class TankOut(BaseModel):
    tank_id: str
    cleaned: str | None = Field(description="newest cleaning, UTC")
    disinfected: str | None = Field(description="newest disinfection, UTC")
    due: str | None = Field(description="when the next cleaning and disinfection is due, UTC")
    interval_days: float
    records: list[TankRecordOut] = Field(description="oldest first")


@router.get("/sites/{site_id}/tanks", response_model=list[TankOut])
def site_tanks(ctx: Ctx, who: Caller, site_id: str) -> list[TankOut]:
    """A site's tanks with their cleaning and disinfection records."""
    site_for(ctx, who, site_id)
    days = TankSettings.load().interval_days
    out = []
    for tank, records in TankLog(ctx.store).tanks(site_id):
        serviced = tank.serviced_ms
        out.append(
            TankOut(
                tank_id=tank.tank_id,
                cleaned=None if tank.cleaned_ms is None else ms_to_iso(tank.cleaned_ms),
                disinfected=None if tank.disinfected_ms is None else ms_to_iso(tank.disinfected_ms),
                due=None if serviced is None else ms_to_iso(serviced + int(days * DAY_MS)),
                interval_days=days,
                records=[TankRecordOut.of(r) for r in records],
            )
        )
    return out
