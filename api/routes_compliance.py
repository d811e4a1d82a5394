"""Compliance over a period, per site and parameter: how much of the monitored time was within
the limits, how much over, how many alerts, and how complete the data is.

Each valid reading stands for one reporting interval of its device, so times are
readings x interval; completeness is readings received / readings expected, expected from the
later of the period's start and the device's first reading (a pool that came online yesterday
is not 14 % complete over a week)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import Caller, Ctx, scoped_site_ids, site_for
from api.context import AppContext
from api.routes_readings import Instant, period_ms
from api.schemas import ComplianceOut, error_responses
from domain.model import Site
from domain.timeutil import ms_to_iso
from store.base import AlertQuery, ReadingQuery

router = APIRouter(prefix="/api/v1", tags=["compliance"], responses=error_responses(401, 422))


@router.get(
    "/compliance",
    response_model=list[ComplianceOut],
    responses=error_responses(400, 403, 404),
)
def compliance(
    ctx: Ctx,
    who: Caller,
    site: str | None = None,
    start: Annotated[Instant | None, Query(description="default: 7 days before end")] = None,
    end: Annotated[Instant | None, Query(description="default: now")] = None,
) -> list[ComplianceOut]:
    start_ms, end_ms = period_ms(start, end)
    if site is not None:
        sites = [site_for(ctx, who, site)]
    else:
        ids = scoped_site_ids(ctx, who)
        sites = [s for s in ctx.registry.sites.values() if ids is None or s.id in ids]
    return compliance_rows(ctx, sites, start_ms, end_ms)


def compliance_rows(
    ctx: AppContext, sites: Iterable[Site], start_ms: int, end_ms: int
) -> list[ComplianceOut]:
    """One row per site, device and limited parameter (the public page and reports use it too)."""
    out = []
    for s in sorted(sites, key=lambda s: s.id):
        limits = ctx.engine.site_limits(s.id)
        for dev in ctx.registry.devices_of(s.id):
            since_ms = max(start_ms, _first_reading_ms(ctx, dev.id, dev.parameters, end_ms))
            for param in dev.parameters:
                limit = limits.get(param)
                if limit is None:
                    continue
                total, valid, over = ctx.store.reading_stats(
                    dev.id, param, start_ms, end_ms, limit.min, limit.max
                )
                alerts = ctx.store.list_alerts(
                    AlertQuery(
                        site_ids=(s.id,),
                        device_id=dev.id,
                        rule_id=f"range:{param}",
                        since_ms=start_ms,
                        until_ms=end_ms,
                        limit=10_000,
                    )
                )
                expected = max(1, (end_ms - since_ms) // (dev.interval_s * 1000))
                out.append(
                    ComplianceOut(
                        site_id=s.id,
                        device_id=dev.id,
                        parameter=param,
                        start=ms_to_iso(start_ms),
                        end=ms_to_iso(end_ms),
                        limit=limit.describe(),
                        clause=limit.clause,
                        monitored_s=valid * dev.interval_s,
                        over_limit_s=over * dev.interval_s,
                        within_share=None if valid == 0 else round(1 - over / valid, 4),
                        alerts=len(alerts),
                        readings=total,
                        excluded_flagged=total - valid,
                        completeness=round(min(1.0, total / expected), 4),
                    )
                )
    return out


def _first_reading_ms(ctx, device_id: str, parameters: tuple[str, ...], end_ms: int) -> int:
    """When the device first reported any of its parameters (end_ms if it never did), one
    indexed lookup per parameter."""
    firsts = [
        found[0].ts_ms
        for p in parameters
        if (
            found := ctx.store.query_readings(
                ReadingQuery(device_id=device_id, parameters=(p,), end_ms=end_ms, limit=1)
            )
        )
    ]
    return min(firsts, default=end_ms)
