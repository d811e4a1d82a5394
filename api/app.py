"""FastAPI application: the inspectors' HTTP interface."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse

from alerts.engine import AlertEngine
from api.schemas import (
    ActionIn,
    AlertDetail,
    AlertOut,
    AuditOut,
    CommentIn,
    DeadLetterOut,
    DeadLettersOut,
    Health,
    ReadingOut,
)
from domain.params import Catalogue
from domain.registry import Registry
from domain.timeutil import ms_to_iso
from ingest.metrics import IngestMetrics
from store.base import AlertQuery, ReadingQuery, Store

# Until access control lands, inspector actions are recorded under this name.
ACTOR = "inspector"


@dataclass
class AppContext:
    store: Store
    registry: Registry
    catalogue: Catalogue
    engine: AlertEngine
    metrics: IngestMetrics
    broker_connected: Callable[[], bool] = field(default=lambda: True)


def _ms(value: datetime | None, name: str) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise HTTPException(400, f"{name} must state its zone, e.g. 2026-11-22T08:00:00+08:00")
    return int(value.timestamp() * 1000)


def create_app(ctx: AppContext) -> FastAPI:
    app = FastAPI(
        title="Landun API",
        version="1",
        description="Online monitoring for public-health supervision (非接触式监管).",
    )

    @app.get("/healthz", response_model=Health, tags=["operations"])
    def healthz() -> Health:
        return Health(
            status="ok",
            broker_connected=ctx.broker_connected(),
            readings_stored=ctx.metrics.readings_stored,
            dead_lettered=ctx.metrics.dead_lettered,
        )

    @app.get("/api/v1/readings", response_model=list[ReadingOut], tags=["readings"])
    def readings(
        device: Annotated[str | None, Query(description="device id")] = None,
        site: Annotated[str | None, Query(description="site id")] = None,
        parameter: Annotated[list[str] | None, Query(description="repeat for several")] = None,
        start: Annotated[datetime | None, Query(description="from (inclusive), ISO 8601")] = None,
        end: Annotated[datetime | None, Query(description="until (exclusive), ISO 8601")] = None,
        limit: Annotated[int, Query(ge=1, le=100_000)] = 10_000,
        newest_first: bool = False,
    ) -> list[ReadingOut]:
        if device is not None and device not in ctx.registry.devices:
            raise HTTPException(404, f"unknown device {device}")
        if site is not None and site not in ctx.registry.sites:
            raise HTTPException(404, f"unknown site {site}")
        for p in parameter or ():
            if p not in ctx.catalogue.parameters:
                raise HTTPException(400, f"unknown parameter {p!r}")
        q = ReadingQuery(
            device_id=device,
            site_id=site,
            parameters=tuple(parameter or ()),
            start_ms=_ms(start, "start"),
            end_ms=_ms(end, "end"),
            limit=limit,
            descending=newest_first,
        )
        return [ReadingOut.of(r) for r in ctx.store.query_readings(q)]

    @app.get("/api/v1/alerts", response_model=list[AlertOut], tags=["alerts"])
    def alerts(
        site: str | None = None,
        device: str | None = None,
        rule: str | None = None,
        family: str | None = None,
        severity: str | None = None,
        status: Annotated[list[str] | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 500,
    ) -> list[AlertOut]:
        q = AlertQuery(
            site_ids=(site,) if site else (),
            device_id=device,
            rule_id=rule,
            family=family,
            severity=severity,
            statuses=tuple(status or ()),
            limit=limit,
        )
        return [AlertOut.of(a) for a in ctx.store.list_alerts(q)]

    def _detail(alert_id: int) -> AlertDetail:
        alert = ctx.store.get_alert(alert_id)
        if alert is None:
            raise HTTPException(404, f"alert {alert_id} does not exist")
        audit = [
            AuditOut(at=ms_to_iso(e.at_ms), actor=e.actor, action=e.action, comment=e.comment)
            for e in ctx.store.audit_trail(alert_id)
        ]
        return AlertDetail(**AlertOut.of(alert).model_dump(), audit=audit)

    def _act(alert_id: int, action: Callable[[], object]) -> AlertDetail:
        try:
            action()
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0])) from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
        return _detail(alert_id)

    @app.get("/api/v1/alerts/{alert_id}", response_model=AlertDetail, tags=["alerts"])
    def alert(alert_id: int) -> AlertDetail:
        return _detail(alert_id)

    @app.post("/api/v1/alerts/{alert_id}/acknowledge", response_model=AlertDetail, tags=["alerts"])
    def acknowledge(alert_id: int, body: ActionIn) -> AlertDetail:
        return _act(alert_id, lambda: ctx.engine.acknowledge(alert_id, ACTOR, body.comment))

    @app.post("/api/v1/alerts/{alert_id}/resolve", response_model=AlertDetail, tags=["alerts"])
    def resolve(alert_id: int, body: ActionIn) -> AlertDetail:
        return _act(alert_id, lambda: ctx.engine.resolve(alert_id, ACTOR, body.comment))

    @app.post("/api/v1/alerts/{alert_id}/comments", response_model=AlertDetail, tags=["alerts"])
    def comment(alert_id: int, body: CommentIn) -> AlertDetail:
        return _act(alert_id, lambda: ctx.engine.comment(alert_id, ACTOR, body.comment))

    @app.get("/api/v1/dead-letters", response_model=DeadLettersOut, tags=["ingest"])
    def dead_letters(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> DeadLettersOut:
        return DeadLettersOut(
            items=[DeadLetterOut.of(d) for d in ctx.store.dead_letters(limit)],
            counts_by_reason=ctx.store.dead_letter_counts(),
        )

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    return app
