"""Alerts: list and filter, one alert with its audit trail, inspector actions, evidence, and the
live stream of changes (Server-Sent Events)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Header, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, StreamingResponse

from api.auth import Caller, Ctx, require_role, scoped_site_ids, site_for
from api.evidence import evidence_csv, evidence_html, evidence_record, record_hash
from api.routes_readings import Instant, to_ms
from api.schemas import (
    ActionIn,
    AlertDetail,
    AlertOut,
    AuditOut,
    CommentIn,
    EvidenceCheckOut,
    error_responses,
)
from domain import strict_json
from domain.alert_json import alert_to_dict
from domain.model import AlertFamily, AlertStatus, Severity
from domain.notify import ESCALATION_ACTOR
from domain.timeutil import ms_to_iso
from store.base import AlertQuery, Principal

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"], responses=error_responses(401, 422))

STREAM_POLL_S = 0.5
STREAM_HEARTBEAT_S = 15.0
# With a bell (store.bell) the stream looks when it rings, and at least this often.
STREAM_BELL_S = 2.0

# Ids are SQLite integers; a larger number cannot name an alert (and would overflow the driver).
MAX_ID = 2**63 - 1
AlertId = Annotated[int, Path(ge=1, le=MAX_ID, description="alert id")]
# 400: a body that is not UTF-8 JSON; 409: the alert's state does not allow the action;
# 503: the store could not take the change.
ACTION_ERRORS = error_responses(400, 403, 404, 409, 503)


def _visible(ctx, who: Principal, alert_id: int):
    alert = ctx.store.get_alert(alert_id)
    if alert is None:
        raise HTTPException(404, f"alert {alert_id} does not exist")
    site_for(ctx, who, alert.site_id)
    return alert


def _detail(ctx, alert_id: int) -> AlertDetail:
    alert = ctx.store.get_alert(alert_id)
    audit = [
        AuditOut(at=ms_to_iso(e.at_ms), actor=e.actor, action=e.action, comment=e.comment)
        for e in ctx.store.audit_trail(alert_id)
    ]
    return AlertDetail(**AlertOut.of(alert).model_dump(), audit=audit)


@router.get("", response_model=list[AlertOut], responses=error_responses(400, 403, 404))
def list_alerts(
    ctx: Ctx,
    who: Caller,
    site: str | None = None,
    jurisdiction: str | None = None,
    device: str | None = None,
    rule: str | None = None,
    family: AlertFamily | None = None,
    severity: Severity | None = None,
    status: Annotated[list[AlertStatus] | None, Query()] = None,
    since: Annotated[Instant | None, Query(description="last seen at or after")] = None,
    until: Annotated[Instant | None, Query(description="first seen before")] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> list[AlertOut]:
    """Newest change first, within the caller's jurisdictions."""
    sites = scoped_site_ids(ctx, who)
    if site is not None:
        site_for(ctx, who, site)
        sites = [site]
    if jurisdiction is not None:
        in_j = [s.id for s in ctx.registry.sites.values() if s.jurisdiction == jurisdiction]
        if who.role != "admin" and jurisdiction not in who.jurisdictions:
            raise HTTPException(403, f"jurisdiction {jurisdiction} is outside yours")
        sites = [s for s in (sites if sites is not None else in_j) if s in in_j]
    if sites is not None and not sites:
        return []
    q = AlertQuery(
        site_ids=tuple(sites or ()),
        device_id=device,
        rule_id=rule,
        family=family,
        severity=severity,
        statuses=tuple(status or ()),
        since_ms=to_ms(since, "since"),
        until_ms=to_ms(until, "until"),
        limit=limit,
    )
    return [AlertOut.of(a) for a in ctx.store.list_alerts(q)]


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "the event stream"},
        **error_responses(400),
    },
)
async def stream(
    request: Request,
    ctx: Ctx,
    who: Caller,
    last_event_id: Annotated[str | None, Header(description="resume after this event")] = None,
) -> StreamingResponse:
    """Server-Sent Events, one per alert change in the caller's jurisdictions (`event: alert`,
    data `{"action", "actor", "comment", "alert"}`). Reconnect with `Last-Event-ID` to get
    every change since; without it the stream starts with the next change."""
    sites = scoped_site_ids(ctx, who)
    if last_event_id is not None:
        # ASCII digits only (str.isdigit also takes "²"), and small enough to be an id.
        if not (last_event_id.isascii() and last_event_id.isdigit()) or len(last_event_id) > 18:
            raise HTTPException(400, "Last-Event-ID must be an event id from this stream")
        after = int(last_event_id)
    else:
        after = await asyncio.to_thread(ctx.store.last_audit_id)
    return StreamingResponse(
        _events(request, ctx, sites, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(request: Request, ctx, sites, after: int) -> AsyncIterator[str]:
    yield "retry: 2000\n\n"
    idle = 0.0
    while not ctx.stopping.is_set() and not await request.is_disconnected():
        events = await asyncio.to_thread(ctx.store.audit_events, after, sites, 200)
        for ev in events:
            after = ev.event_id
            if ev.actor == ESCALATION_ACTOR:
                continue  # a notification, not a change of the alert: on the alert's page
            data = {
                "action": ev.action,
                "actor": ev.actor,
                "comment": ev.comment,
                "at": ms_to_iso(ev.at_ms),
                "alert": alert_to_dict(ev.alert),
            }
            payload = strict_json.dumps(data)
            yield f"id: {ev.event_id}\nevent: alert\ndata: {payload}\n\n"
        if events:
            idle = 0.0
            continue
        if idle >= STREAM_HEARTBEAT_S:
            idle = 0.0
            yield ": keep-alive\n\n"
        started = time.monotonic()
        if ctx.bell is not None:
            await ctx.bell.wait(STREAM_BELL_S)  # at once on a committed change
        else:
            await asyncio.sleep(STREAM_POLL_S)
        idle += time.monotonic() - started


@router.get("/{alert_id}", response_model=AlertDetail, responses=error_responses(403, 404))
def get_alert(ctx: Ctx, who: Caller, alert_id: AlertId) -> AlertDetail:
    _visible(ctx, who, alert_id)
    return _detail(ctx, alert_id)


def _act(ctx, who: Principal, alert_id: int, doing: str, action: Callable[[], object]):
    _visible(ctx, who, alert_id)
    require_role(who, "admin", "inspector", doing=doing)
    try:
        action()
    except KeyError as exc:
        raise HTTPException(404, str(exc.args[0])) from None
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    except TimeoutError as exc:  # recorded for alert workers that did not answer in time
        raise HTTPException(503, str(exc)) from None
    return _detail(ctx, alert_id)


@router.post("/{alert_id}/acknowledge", response_model=AlertDetail, responses=ACTION_ERRORS)
def acknowledge(ctx: Ctx, who: Caller, alert_id: AlertId, body: ActionIn) -> AlertDetail:
    return _act(
        ctx, who, alert_id, "acknowledge alerts",
        lambda: ctx.engine.acknowledge(alert_id, who.name, body.comment),
    )  # fmt: skip


@router.post("/{alert_id}/resolve", response_model=AlertDetail, responses=ACTION_ERRORS)
def resolve(ctx: Ctx, who: Caller, alert_id: AlertId, body: ActionIn) -> AlertDetail:
    return _act(
        ctx, who, alert_id, "resolve alerts",
        lambda: ctx.engine.resolve(alert_id, who.name, body.comment),
    )  # fmt: skip


@router.post("/{alert_id}/comments", response_model=AlertDetail, responses=ACTION_ERRORS)
def comment(ctx: Ctx, who: Caller, alert_id: AlertId, body: CommentIn) -> AlertDetail:
    return _act(
        ctx, who, alert_id, "comment on alerts",
        lambda: ctx.engine.comment(alert_id, who.name, body.comment),
    )  # fmt: skip


@router.get(
    "/{alert_id}/evidence",
    responses={
        200: {
            "content": {"application/json": {}, "text/csv": {}, "text/html": {}},
            "description": "the evidence record",
        },
        **error_responses(403, 404),
    },
)
def evidence(
    ctx: Ctx,
    who: Caller,
    alert_id: AlertId,
    format: Annotated[Literal["json", "csv", "html"], Query()] = "json",
):
    """Site, device, rule, limit and its source, times, values, the raw readings from an hour
    before to an hour after the episode with their data flags, device status, audit trail."""
    alert = _visible(ctx, who, alert_id)
    record = evidence_record(ctx, alert)
    if format == "csv":
        return PlainTextResponse(
            evidence_csv(record),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="alert-{alert_id}.csv"'},
        )
    if format == "html":
        return HTMLResponse(evidence_html(record))
    return record


@router.post(
    "/{alert_id}/evidence/verify",
    response_model=EvidenceCheckOut,
    responses=error_responses(400, 403, 404, 413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "a JSON copy of this alert's evidence record, as it was downloaded",
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["sha256"],
                        "properties": {"sha256": {"type": "string"}},
                    }
                }
            },
        }
    },
)
async def verify_evidence(
    request: Request, ctx: Ctx, who: Caller, alert_id: AlertId
) -> EvidenceCheckOut:
    """Recompute the SHA-256 of a copy of the evidence record over its canonical content (the
    JSON without `generated`, `device_status_now` and `sha256`, keys sorted, no spaces, UTF-8),
    compare it with the hash the copy states (`valid`) and with the hash of the system's record
    of the alert now (`matches_system`)."""
    alert = await asyncio.to_thread(_visible, ctx, who, alert_id)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > ctx.limits.evidence_copy_bytes:
            limit = ctx.limits.evidence_copy_bytes
            raise HTTPException(413, f"an evidence copy is at most {limit} bytes")
    try:
        copy = orjson.loads(bytes(body))
    except orjson.JSONDecodeError:
        raise HTTPException(400, "the body is not a JSON evidence record") from None
    if not isinstance(copy, dict) or not isinstance(copy.get("sha256"), str):
        raise HTTPException(400, "the body is not an evidence record: it has no sha256 field")
    try:
        computed = await asyncio.to_thread(record_hash, copy)
    except (RecursionError, ValueError):
        raise HTTPException(400, "the body is not a JSON evidence record") from None
    about = copy.get("alert")
    same = isinstance(about, dict) and about.get("id") == alert_id
    valid = computed == copy["sha256"].lower()
    # A self-consistent hash only shows the copy was not changed by accident; whoever changes
    # it on purpose can recompute it. What the system holds now is the reference.
    now = (await asyncio.to_thread(evidence_record, ctx, alert))["sha256"]
    if not same:
        detail = f"this is not a record of alert {alert_id}"
    elif not valid:
        detail = "the copy was changed: its content does not have the hash it states"
    elif computed == now:
        detail = "the copy is unchanged and identical to the system's record of this alert"
    else:
        detail = (
            "the copy has the hash it states but differs from the system's record now: the"
            " alert changed since the copy was made (new readings, actions), or the copy was"
            " altered and hashed again"
        )
    return EvidenceCheckOut(
        alert_id=alert_id,
        valid=valid,
        same_alert=same,
        matches_system=computed == now,
        stated_sha256=copy["sha256"],
        computed_sha256=computed,
        system_sha256=now,
        detail=detail,
    )
