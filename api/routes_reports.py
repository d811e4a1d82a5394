"""Periodic reports (定期通报) per jurisdiction as PDF or XLSX: an admin for any jurisdiction,
inspectors and viewers for their own."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Path, Query
from fastapi.responses import Response

from api.auth import Caller, Ctx
from api.reports.compute import Period, build_report, load_report_settings
from api.reports.pdf import CjkFontMissing, render_pdf
from api.reports.xlsx import render_xlsx
from api.routes_readings import Day
from api.schemas import error_responses

router = APIRouter(prefix="/api/v1", tags=["reports"], responses=error_responses(401, 422))

MEDIA = {
    "pdf": "application/pdf",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
EARLIEST = date(2000, 1, 1)


@router.get(
    "/reports/{jurisdiction}",
    response_class=Response,
    responses={
        200: {"content": {m: {} for m in MEDIA.values()}, "description": "the report file"},
        **error_responses(400, 403, 404, 503),
    },
)
def report(
    ctx: Ctx,
    who: Caller,
    jurisdiction: Annotated[str, Path(max_length=64)],
    period: Period = "month",
    end: Annotated[Day | None, Query(description="last day (local); default: yesterday")] = None,
    format: Literal["pdf", "xlsx"] = "pdf",
) -> Response:
    """The weekly (the seven days ending with `end`) or monthly (from the first of `end`'s
    month to `end`) report: sites, data completeness, compliance per parameter, alerts by
    family with acknowledgement and resolution times, the worst sites, charts (PDF)."""
    if who.role != "admin" and jurisdiction not in who.jurisdictions:
        raise HTTPException(
            403, f"jurisdiction {jurisdiction} is outside yours ({', '.join(who.jurisdictions)})"
        )
    if not any(s.jurisdiction == jurisdiction for s in ctx.registry.sites.values()):
        raise HTTPException(404, f"no sites in jurisdiction {jurisdiction}")
    settings = load_report_settings()
    today = datetime.now(ZoneInfo(settings.timezone)).date()
    end = end or today - timedelta(days=1)
    if not EARLIEST <= end <= today:
        raise HTTPException(400, f"end must be a day from {EARLIEST} to today ({today})")
    built = build_report(ctx, jurisdiction, period, end, settings)
    if format == "pdf":
        try:
            body = render_pdf(built, settings)
        except CjkFontMissing as exc:
            raise HTTPException(503, str(exc)) from None
    else:
        body = render_xlsx(built)
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", jurisdiction)
    name = f"landun-report-{safe}-{period}-{end.isoformat()}.{format}"
    return Response(
        body,
        media_type=MEDIA[format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
