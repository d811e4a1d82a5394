"""Medical-waste custody: a site's bags, one bag's chain, daily totals (the 条例 art. 12
register), within the caller's jurisdictions."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel, Field

from api.auth import Caller, Ctx, in_scope, site_for
from api.context import AppContext
from api.routes_readings import Day, Instant, in_range, to_ms
from api.schemas import error_responses
from domain.timeutil import ms_to_iso, now_ms
from domain.waste import Bag, BagStatus, WasteCategory, WasteEvent
from store.ledger import BagQuery, WasteLedger

router = APIRouter(
    prefix="/api/v1", tags=["medical waste"], responses=error_responses(401, 403, 404, 422)
)

MAX_DAYS = 366


class BagOut(BaseModel):
    site_id: str
    bag_id: str
    status: BagStatus
    category: str | None
    department: str | None
    collected: str | None = Field(description="collection scan, UTC")
    collected_kg: float | None
    stored: str | None
    stored_kg: float | None
    handed_over: str | None
    handed_kg: float | None
    weight_loss_kg: float | None = Field(description="hospital weight minus handover weight")
    manifest_id: str | None = Field(description="transfer manifest (联单) of the handover")
    carrier: str | None
    categories: list[str] = Field(description="every category the chain states")
    duplicates: int = Field(description="scans of a step the bag had already passed")

    @classmethod
    def of(cls, b: Bag) -> BagOut:
        def iso(ms: int | None) -> str | None:
            return None if ms is None else ms_to_iso(ms)

        loss = b.weight_loss_kg
        return cls(
            site_id=b.site_id,
            bag_id=b.bag_id,
            status=b.status,
            category=b.category,
            department=b.department,
            collected=iso(b.collected_ms),
            collected_kg=b.collected_kg,
            stored=iso(b.stored_ms),
            stored_kg=b.stored_kg,
            handed_over=iso(b.handed_ms),
            handed_kg=b.handed_kg,
            weight_loss_kg=None if loss is None else round(loss, 3),
            manifest_id=b.manifest_id,
            carrier=b.carrier,
            categories=list(b.categories),
            duplicates=b.duplicates,
        )


class EventOut(BaseModel):
    event: str
    ts: str = Field(description="scanner time, UTC")
    received: str
    device_id: str
    category: str | None
    weight_kg: float | None
    department: str | None
    manifest_id: str | None
    carrier: str | None

    @classmethod
    def of(cls, e: WasteEvent) -> EventOut:
        return cls(
            event=e.event,
            ts=ms_to_iso(e.ts_ms),
            received=ms_to_iso(e.recv_ms),
            device_id=e.device_id,
            category=e.category,
            weight_kg=e.weight_kg,
            department=e.department,
            manifest_id=e.manifest_id,
            carrier=e.carrier,
        )


class BagChainOut(BaseModel):
    bag: BagOut
    chain: list[EventOut] = Field(description="every scan of the bag, in scanner-time order")


class TotalOut(BaseModel):
    bags: int
    weight_kg: float


class DayOut(BaseModel):
    day: str = Field(description="local date in the site's time zone")
    bags: int
    weight_kg: float
    by_department: dict[str, TotalOut]
    by_category: dict[str, TotalOut]


def _ledger(ctx: AppContext) -> WasteLedger:
    if ctx.ledger is None:
        raise HTTPException(404, "medical-waste tracking is not enabled on this server")
    return ctx.ledger


@router.get(
    "/sites/{site_id}/waste/bags", response_model=list[BagOut], responses=error_responses(400)
)
def site_bags(
    ctx: Ctx,
    who: Caller,
    site_id: str,
    status: Literal["collected", "stored", "handed_over"] | None = None,
    category: WasteCategory | None = None,
    department: Annotated[str | None, Query(max_length=64)] = None,
    manifest: Annotated[str | None, Query(max_length=64, description="manifest (联单) id")] = None,
    start: Annotated[Instant | None, Query(description="first scan at or after")] = None,
    end: Annotated[Instant | None, Query(description="first scan before")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[BagOut]:
    """A site's bags, newest first, with their custody state."""
    site_for(ctx, who, site_id)
    q = BagQuery(
        site_id=site_id,
        status=status,
        category=category,
        department=department,
        manifest_id=manifest,
        start_ms=to_ms(start, "start"),
        end_ms=to_ms(end, "end"),
        limit=limit,
    )
    return [BagOut.of(b) for b in _ledger(ctx).bags(q)]


@router.get("/waste/bags/{bag_id}", response_model=BagChainOut, responses=error_responses(409))
def bag_chain(
    ctx: Ctx,
    who: Caller,
    bag_id: str,
    site: Annotated[str | None, Query(description="site, when the id is used at several")] = None,
) -> BagChainOut:
    """One bag's custody chain: every scan with its time, weight and device."""
    ledger = _ledger(ctx)
    if site is not None:
        site_for(ctx, who, site)
        sites = [site] if ledger.bag(site, bag_id) else []
    else:
        known = (ctx.registry.sites.get(s) for s in ledger.sites_of_bag(bag_id))
        sites = [s.id for s in known if s is not None and in_scope(who, s)]
    if not sites:
        raise HTTPException(404, f"no bag {bag_id} in your jurisdictions")
    if len(sites) > 1:
        raise HTTPException(409, f"bag id {bag_id} is used at {', '.join(sites)}: add ?site=")
    bag = ledger.bag(sites[0], bag_id)
    assert bag is not None  # listed by the ledger a moment ago; bags are never deleted
    return BagChainOut(
        bag=BagOut.of(bag), chain=[EventOut.of(e) for e in ledger.chain(sites[0], bag_id)]
    )


@router.get(
    "/sites/{site_id}/waste/daily", response_model=list[DayOut], responses=error_responses(400)
)
def site_daily(
    ctx: Ctx,
    who: Caller,
    site_id: str,
    first: Annotated[Day | None, Query(alias="from", description="first local day")] = None,
    last: Annotated[Day | None, Query(alias="to", description="last local day")] = None,
) -> list[DayOut]:
    """Bags and kilograms collected per local day (the site's zone), by department and
    category; by default the last 7 days. Days without waste are listed with zeros."""
    site = site_for(ctx, who, site_id)
    today = datetime.fromtimestamp(now_ms() / 1000, ZoneInfo(site.timezone)).date()
    last = in_range(last, "to") or today
    first = in_range(first, "from") or last - timedelta(days=6)
    if first > last:
        raise HTTPException(400, "from must not be after to")
    if (last - first).days >= MAX_DAYS:
        raise HTTPException(400, f"at most {MAX_DAYS} days at once")
    days = {
        first + timedelta(days=i): DayOut(
            day=(first + timedelta(days=i)).isoformat(),
            bags=0,
            weight_kg=0.0,
            by_department={},
            by_category={},
        )
        for i in range((last - first).days + 1)
    }
    for t in _ledger(ctx).daily_totals(site_id, first, last, site.timezone):
        out = days[t.day]
        out.bags += t.bags
        out.weight_kg = round(out.weight_kg + t.weight_kg, 3)
        for group, name in ((out.by_department, t.department), (out.by_category, t.category)):
            total = group.setdefault(name, TotalOut(bags=0, weight_kg=0.0))
            total.bags += t.bags
            total.weight_kg = round(total.weight_kg + t.weight_kg, 3)
    return list(days.values())
