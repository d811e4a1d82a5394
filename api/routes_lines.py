"""Tableware disinfection lines: a site's lines, and one line's cycles (each with its curve
against the method's limit and its verdict) and packed batches over a bounded window, within the
caller's jurisdictions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from alerts.cycles import default_cycle_settings, judge_cycle
from api.auth import Caller, Ctx, site_for
from api.context import AppContext
from api.routes_readings import Instant, to_ms
from api.schemas import error_responses
from domain.model import Device
from domain.params import unit_label
from domain.tableware import Cycle, LineEvent, LineEventKind, derive_cycles, line_spec
from domain.timeutil import ms_to_iso, now_ms
from store.base import ReadingQuery
from store.lines import LineLedger

router = APIRouter(
    prefix="/api/v1",
    tags=["tableware disinfection"],
    responses=error_responses(401, 403, 404, 422),
)

HOUR_MS = 3_600_000
DEFAULT_HOURS = 12
MAX_HOURS = 48
MAX_EVENTS = 5_000  # a line runs ~50 cycles a day: two days are far below this
MAX_READINGS = 50_000


class LineOut(BaseModel):
    device_id: str
    line_id: str
    method: str = Field(description="steam, hot_water, infrared or chemical")
    capacity_sets: int = Field(description="sets one cycle can disinfect")
    parameter: str = Field(description="the parameter that shows the disinfection")
    limit_min: float = Field(description="the value it must hold at or above")
    min_dwell_s: float = Field(description="for at least this long without a break")
    unit: str
    source: str


class CycleOut(BaseModel):
    cycle_id: str
    start: str | None
    end: str | None
    duration_s: float | None
    compliant: bool | None = Field(description="None while the cycle lacks its start or end")
    held_s: float | None = Field(description="longest unbroken stretch at or above the limit")
    lowest: float | None = Field(description="the worst value once the limit was reached")
    reason: str
    curve: list[tuple[int, float]] = Field(description="[epoch ms, value] within the cycle")


class BatchOut(BaseModel):
    batch_id: str
    packed: str
    sets: int | None
    production_date: str | None
    received: str


class LineActivityOut(BaseModel):
    line: LineOut
    start: str
    end: str
    cycles: list[CycleOut]
    batches: list[BatchOut]
    truncated: bool = Field(description="more events in the window than one answer holds")


def _ledger(ctx: AppContext) -> LineLedger:
    if ctx.lines is None:
        raise HTTPException(404, "disinfection lines are not enabled on this server")
    return ctx.lines


def _line_out(d: Device) -> LineOut:
    spec = line_spec(d)
    assert spec is not None
    limit = default_cycle_settings().methods[spec.method]
    unit = limit.as_dict()["unit"]
    return LineOut(
        device_id=d.id,
        line_id=spec.line_id,
        method=str(spec.method),
        capacity_sets=spec.capacity_sets,
        parameter=limit.parameter,
        limit_min=limit.min,
        min_dwell_s=limit.min_dwell_s,
        unit=unit_label(unit),
        source=limit.source.text,
    )


def _lines(ctx: AppContext, site_id: str) -> list[Device]:
    devices = [d for d in ctx.registry.devices_of(site_id) if line_spec(d) is not None]
    return sorted(devices, key=lambda d: d.id)


@router.get("/sites/{site_id}/lines", response_model=list[LineOut])
def site_lines(ctx: Ctx, who: Caller, site_id: str) -> list[LineOut]:
    """A site's disinfection lines with the limit each line's method is judged against."""
    site_for(ctx, who, site_id)
    return [_line_out(d) for d in _lines(ctx, site_id)]


@router.get(
    "/sites/{site_id}/lines/{line_id}/cycles",
    response_model=LineActivityOut,
    responses=error_responses(400),
)
def line_cycles(
    ctx: Ctx,
    who: Caller,
    site_id: str,
    line_id: Annotated[str, Path(max_length=64)],
    start: Annotated[Instant | None, Query(description="controller time at or after")] = None,
    end: Annotated[Instant | None, Query(description="controller time before; default now")] = None,
) -> LineActivityOut:
    """One line's cycles and packed batches, oldest first, over at most 48 h (default the last
    12 h): each cycle with its curve against the limit and whether it held for the whole dwell."""
    site_for(ctx, who, site_id)
    by_line = {spec.line_id: d for d in _lines(ctx, site_id) if (spec := line_spec(d))}
    device = by_line.get(line_id)
    if device is None:
        raise HTTPException(404, f"no line {line_id} at site {site_id}")
    end_ms = to_ms(end, "end") or now_ms()
    start_ms = to_ms(start, "start") or end_ms - DEFAULT_HOURS * HOUR_MS
    if start_ms >= end_ms:
        raise HTTPException(400, "start must be before end")
    if end_ms - start_ms > MAX_HOURS * HOUR_MS:
        raise HTTPException(400, f"at most {MAX_HOURS} h at once")
    events = _ledger(ctx).events(device.id, start_ms, end_ms, MAX_EVENTS + 1)
    truncated = len(events) > MAX_EVENTS
    events = events[:MAX_EVENTS]
    line = _line_out(device)
    readings = ctx.store.query_readings(
        ReadingQuery(
            device_id=device.id,
            parameters=(line.parameter,),
            start_ms=start_ms,
            end_ms=end_ms,
            limit=MAX_READINGS,
        )
    )
    return LineActivityOut(
        line=line,
        start=ms_to_iso(start_ms),
        end=ms_to_iso(end_ms),
        cycles=[_cycle_out(c, readings, device) for c in derive_cycles(events)],
        batches=[_batch_out(e) for e in events if e.event is LineEventKind.BATCH_PACKED],
        truncated=truncated,
    )


def _cycle_out(c: Cycle, readings: list, device: Device) -> CycleOut:
    def iso(ms: int | None) -> str | None:
        return None if ms is None else ms_to_iso(ms)

    if c.start_ms is None or c.end_ms is None:
        missing = "start" if c.start_ms is None else "end"
        return CycleOut(
            cycle_id=c.cycle_id,
            start=iso(c.start_ms),
            end=iso(c.end_ms),
            duration_s=None,
            compliant=None,
            held_s=None,
            lowest=None,
            reason=f"no {missing} received in this window",
            curve=[],
        )
    spec = line_spec(device)
    assert spec is not None
    s = default_cycle_settings()
    v = judge_cycle(c, readings, s.methods[spec.method], s.max_gap_s, s.min_coverage)
    return CycleOut(
        cycle_id=c.cycle_id,
        start=iso(c.start_ms),
        end=iso(c.end_ms),
        duration_s=c.duration_s,
        compliant=v.compliant,
        held_s=v.held_s,
        lowest=v.lowest,
        reason=v.reason,
        curve=[(t, val) for t, val in v.curve],
    )


def _batch_out(e: LineEvent) -> BatchOut:
    return BatchOut(
        batch_id=e.ref_id,
        packed=ms_to_iso(e.ts_ms),
        sets=e.sets,
        production_date=e.production_date,
        received=ms_to_iso(e.recv_ms),
    )
