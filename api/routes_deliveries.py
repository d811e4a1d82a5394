"""Notification deliveries: what was sent through each channel to each receiver, and what
could not be delivered. `/api/v1/webhook-deliveries` is the webhook channel's part of it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.auth import Caller, Ctx, require_role
from api.schemas import error_responses
from domain.timeutil import ms_to_iso

router = APIRouter()

SCAN_MAX = 1000  # rows read to find the failed ones


class DeliveryOut(BaseModel):
    channel: str
    target: str
    alert_id: int
    action: str
    ok: bool
    attempts: int
    error: str
    at: str


def _deliveries(ctx, limit: int, failed: bool, channel: str | None) -> list[DeliveryOut]:
    rows = ctx.store.deliveries(SCAN_MAX if failed else limit, channel)
    if failed:
        rows = [d for d in rows if not d.ok][:limit]
    return [
        DeliveryOut(
            channel=d.channel,
            target=d.target,
            alert_id=d.alert_id,
            action=d.action,
            ok=d.ok,
            attempts=d.attempts,
            error=d.error,
            at=ms_to_iso(d.at_ms),
        )
        for d in rows
    ]


Limit = Annotated[int, Query(ge=1, le=1000)]
Failed = Annotated[bool, Query(description="only notices that could not be delivered")]


@router.get(
    "/api/v1/notification-deliveries",
    response_model=list[DeliveryOut],
    tags=["operations"],
    responses=error_responses(401, 403, 422),
)
def notification_deliveries(
    ctx: Ctx,
    who: Caller,
    limit: Limit = 100,
    failed: Failed = False,
    channel: Annotated[
        str | None, Query(max_length=32, pattern=r"^[a-z0-9_]+$", description="one channel only")
    ] = None,
) -> list[DeliveryOut]:
    """Notices sent through every channel (WeCom, DingTalk, e-mail, SMS, webhook), newest
    first, with the attempts made and the last error of those given up on (admins only: the
    targets are configuration and contacts)."""
    require_role(who, "admin", doing="read notification deliveries")
    return _deliveries(ctx, limit, failed, channel)


@router.get(
    "/api/v1/webhook-deliveries",
    response_model=list[DeliveryOut],
    tags=["operations"],
    responses=error_responses(401, 403, 422),
)
def deliveries(ctx: Ctx, who: Caller, limit: Limit = 100, failed: Failed = False):
    """Alert changes sent to webhook receivers, newest first, with the attempts made and the
    last error of those given up on (admins only: the targets are configuration)."""
    require_role(who, "admin", doing="read webhook deliveries")
    return _deliveries(ctx, limit, failed, "webhook")
