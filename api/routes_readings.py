"""Readings: raw (JSON pages or a CSV stream) and downsampled for charts."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BeforeValidator

from api.auth import Caller, Ctx, device_for, site_for
from api.schemas import BucketOut, ReadingOut, error_responses, reading_dict
from domain.timeutil import check_day, ms_to_iso, now_ms
from store.base import ReadingQuery

router = APIRouter(prefix="/api/v1", tags=["readings"], responses=error_responses(401, 422))

EVERY_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000, "1d": 86_400_000}
CSV_PAGE = 50_000
# JSON readings per request: a page is built in memory, so it is bounded; larger ranges page
# with X-Next-Start or stream as CSV.
JSON_PAGE_MAX = 10_000

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_only(value: object) -> object:
    """Pydantic also reads "0.5" as seconds since 1970; a time given here must be ISO 8601."""
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("expected an ISO 8601 time, e.g. 2026-11-22T08:00:00+08:00")
    return value


Instant = Annotated[datetime, BeforeValidator(_iso_only)]
# A calendar day, ISO only for the same reason ("0" would otherwise be 1970-01-01).
Day = Annotated[date, BeforeValidator(_iso_only)]


def in_range(day: date | None, name: str) -> date | None:
    """The day, or 400 when it is outside the days the API takes (400, not 422: the schema
    cannot state the bounds of a date)."""
    if day is not None:
        try:
            check_day(day)
        except ValueError as exc:
            raise HTTPException(400, f"{name}: {exc}") from None
    return day


def to_ms(value: datetime | None, name: str) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise HTTPException(400, f"{name} must state its zone, e.g. 2026-11-22T08:00:00+08:00")
    in_range(value.date(), name)
    return int(value.timestamp() * 1000)


def period_ms(start: datetime | None, end: datetime | None) -> tuple[int, int]:
    """(start, end) in epoch ms; end defaults to now, start to 7 days before end."""
    end_ms = to_ms(end, "end")
    if end_ms is None:
        end_ms = now_ms()
    start_ms = to_ms(start, "start")
    if start_ms is None:
        start_ms = end_ms - 7 * 86_400_000
    if end_ms <= start_ms:
        raise HTTPException(400, "end must be after start")
    return start_ms, end_ms


def _check_parameters(ctx, parameters: list[str] | None) -> tuple[str, ...]:
    for p in parameters or ():
        if p not in ctx.catalogue.parameters:
            known = ", ".join(sorted(ctx.catalogue.parameters))
            raise HTTPException(400, f"unknown parameter {p!r} (known: {known})")
    return tuple(parameters or ())


@router.get(
    "/readings",
    response_model=list[ReadingOut],
    responses={
        200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with format=csv"},
        **error_responses(400, 403, 404),
    },
)
def readings(
    ctx: Ctx,
    who: Caller,
    device: Annotated[str | None, Query(description="device id")] = None,
    site: Annotated[str | None, Query(description="site id")] = None,
    parameter: Annotated[list[str] | None, Query(description="repeat for several")] = None,
    start: Annotated[Instant | None, Query(description="from (inclusive), ISO 8601")] = None,
    end: Annotated[Instant | None, Query(description="until (exclusive), ISO 8601")] = None,
    limit: Annotated[
        int, Query(ge=1, le=JSON_PAGE_MAX, description="readings per page (JSON)")
    ] = JSON_PAGE_MAX,
    newest_first: bool = False,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
):
    """Readings of one device or one site, oldest first, at most 10000 a page. A full page sets
    `X-Next-Start`: ask again with `start` set to it for the next page. `format=csv` streams
    the whole range."""
    if device is None and site is None:
        raise HTTPException(400, "give device or site")
    if device is not None:
        device_for(ctx, who, device)
    if site is not None:
        site_for(ctx, who, site)
    q = ReadingQuery(
        device_id=device,
        site_id=site,
        parameters=_check_parameters(ctx, parameter),
        start_ms=to_ms(start, "start"),
        end_ms=to_ms(end, "end"),
        limit=limit,
        descending=newest_first,
    )
    if q.start_ms is not None and q.end_ms is not None and q.end_ms <= q.start_ms:
        raise HTTPException(400, "end must be after start")
    if format == "csv":
        name = f"landun-{device or site}-readings.csv"
        return StreamingResponse(
            _csv_rows(ctx, q),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    rows = ctx.store.query_readings(q)
    headers = {}
    if len(rows) == limit and not newest_first:
        # Same-millisecond readings of other parameters may straddle the page edge; the store's
        # idempotent key makes re-reading them harmless, so the next page starts at that time.
        headers["X-Next-Start"] = ms_to_iso(rows[-1].ts_ms + 1)
    return JSONResponse([reading_dict(r) for r in rows], headers=headers)


def _csv_rows(ctx, q: ReadingQuery) -> Iterator[str]:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["device_id", "site_id", "parameter", "ts", "received", "value", "flag", "seq"])
    start = q.start_ms
    while True:
        page = ctx.store.query_readings(
            ReadingQuery(q.device_id, q.site_id, q.parameters, start, q.end_ms, CSV_PAGE)
        )
        for r in page:
            w.writerow(
                [r.device_id, r.site_id, r.parameter, ms_to_iso(r.ts_ms), ms_to_iso(r.recv_ms),
                 r.value, r.flag, "" if r.seq is None else r.seq]
            )  # fmt: skip
        yield buf.getvalue()
        buf.seek(0)
        buf.truncate()
        if len(page) < CSV_PAGE:
            return
        start = page[-1].ts_ms + 1


@router.get(
    "/readings/downsampled",
    response_model=list[BucketOut],
    responses=error_responses(400, 403, 404),
)
def downsampled(
    ctx: Ctx,
    who: Caller,
    device: str,
    parameter: Annotated[list[str], Query(description="repeat for several")],
    every: Literal["1m", "5m", "15m", "1h", "1d"] = "1h",
    start: Annotated[Instant | None, Query(description="default: 7 days before end")] = None,
    end: Annotated[Instant | None, Query(description="default: now")] = None,
    include_flagged: bool = False,
) -> list[BucketOut]:
    """Mean, min and max per interval (UTC-aligned), for charts. Flagged readings are left out
    unless `include_flagged`."""
    device_for(ctx, who, device)
    params = _check_parameters(ctx, parameter)
    start_ms, end_ms = period_ms(start, end)
    step = EVERY_MS[every]
    if (end_ms - start_ms) // step > 100_000:
        raise HTTPException(400, f"{every} over this range gives more than 100000 buckets")
    buckets = ctx.store.downsample(device, params, start_ms, end_ms, step, not include_flagged)
    return [BucketOut.of(b) for b in buckets]
