"""Webhook deliveries: what was sent to each receiver, and what could not be delivered."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.auth import Caller, Ctx, require_role
from api.schemas import error_responses
from domain.timeutil import ms_to_iso

router = APIRouter()


class DeliveryOut(BaseModel):
    target: str
    alert_id: int
    action: str
    ok: bool
    attempts: int
    error: str
    at: str


@router.get(
    "/api/v1/webhook-deliveries",
    response_model=list[DeliveryOut],
    tags=["operations"],
    responses=error_responses(401, 403, 422),
)
def deliveries(
    ctx: Ctx,
    who: Caller,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    failed: Annotated[bool, Query(description="only changes that could not be delivered")] = False,
) -> list[DeliveryOut]:
    """Alert changes sent to webhook receivers, newest first, with the attempts made and the
    last error of those given up on (admins only: the targets are configuration)."""
    require_role(who, "admin", doing="read webhook deliveries")
    rows = ctx.store.deliveries(1000 if failed else limit)
    if failed:
        rows = [d for d in rows if not d.ok][:limit]
    return [
        DeliveryOut(
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
