"""Who is told about alerts: a site's contacts, a jurisdiction's contacts and on-call rota, the
escalation policy a jurisdiction follows, and each user's own addresses and preferences.

Edits are kept in the store and take the place of the contacts file's entries for that site or
jurisdiction (DELETE goes back to the file's). Admins change contacts; an inspector may read
those of their jurisdictions; every user may read and change their own notification settings."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import Response
from pydantic import BaseModel

from alerts.escalation.people import stored_contacts, stored_user_notify
from alerts.escalation.policy import EscalationSettings, Policy
from alerts.settings_files import SettingsError
from api.auth import Caller, Ctx, require_role, site_for
from api.schemas import error_responses
from domain.notify import (
    Contact,
    ContactList,
    UserNotify,
    jurisdiction_owner,
    site_owner,
    user_owner,
)
from domain.timeutil import now_ms
from store.base import Principal

router = APIRouter(
    prefix="/api/v1", tags=["contacts and escalation"], responses=error_responses(401, 403, 422)
)

SiteId = Annotated[str, Path(min_length=1, max_length=64)]
Code = Annotated[str, Path(pattern=r"^[0-9]{6}$", description="6-digit district code")]
UserName = Annotated[str, Path(min_length=1, max_length=100)]


class ContactsOut(BaseModel):
    owner: str
    source: Literal["store", "file", "none"]  # edited through the API, the file's, or none
    contacts: list[Contact]


class EscalationOut(BaseModel):
    jurisdiction: str
    timezone: str
    policy: dict
    contacts: ContactsOut


def _settings() -> EscalationSettings:
    try:
        return EscalationSettings.load()
    except SettingsError as exc:  # checked at start; a file changed under a running process
        raise HTTPException(503, f"escalation settings: {exc}") from None


def _jurisdiction(ctx, who: Principal, code: str, doing: str) -> None:
    if not any(s.jurisdiction == code for s in ctx.registry.sites.values()):
        raise HTTPException(404, f"no site is in jurisdiction {code}")
    if who.role != "admin" and (who.role != "inspector" or code not in who.jurisdictions):
        raise HTTPException(403, f"{who.role} {who.name!r} may not {doing} of jurisdiction {code}")


async def _contacts(ctx, owner: str) -> ContactsOut:
    contacts, source = await asyncio.to_thread(
        stored_contacts, ctx.store, _settings().contacts, owner
    )
    return ContactsOut(owner=owner, source=source, contacts=contacts)


async def _replace(ctx, who: Principal, owner: str, body: ContactList | None) -> None:
    problem = None if body is None else body.problem()
    if problem:
        raise HTTPException(400, problem)
    doc = None if body is None else body.model_dump_json()
    await asyncio.to_thread(ctx.store.save_notify_settings, owner, doc, who.name, now_ms())


@router.get("/sites/{site_id}/contacts", response_model=ContactsOut, responses=error_responses(404))
async def get_site_contacts(ctx: Ctx, who: Caller, site_id: SiteId) -> ContactsOut:
    """The site's contacts (admin, or an inspector of its jurisdiction)."""
    require_role(who, "admin", "inspector", doing="read contacts")
    site_for(ctx, who, site_id)
    return await _contacts(ctx, site_owner(site_id))


@router.put(
    "/sites/{site_id}/contacts", response_model=ContactsOut, responses=error_responses(400, 404)
)
async def put_site_contacts(
    ctx: Ctx, who: Caller, site_id: SiteId, body: ContactList
) -> ContactsOut:
    """Replace the site's contacts (admin), e.g. the venue's 负责人 or the hospital's 医废管理员."""
    require_role(who, "admin", doing="change contacts")
    site_for(ctx, who, site_id)
    await _replace(ctx, who, site_owner(site_id), body)
    return await _contacts(ctx, site_owner(site_id))


@router.delete("/sites/{site_id}/contacts", status_code=204, responses=error_responses(404))
async def delete_site_contacts(ctx: Ctx, who: Caller, site_id: SiteId) -> Response:
    """Forget the edited contacts: the contacts file's (if any) apply again (admin)."""
    require_role(who, "admin", doing="change contacts")
    site_for(ctx, who, site_id)
    await _replace(ctx, who, site_owner(site_id), None)
    return Response(status_code=204)


@router.get(
    "/jurisdictions/{code}/contacts", response_model=ContactsOut, responses=error_responses(404)
)
async def get_jurisdiction_contacts(ctx: Ctx, who: Caller, code: Code) -> ContactsOut:
    """The jurisdiction's contacts (section chief, director, on-call staff with their duty
    days) (admin, or an inspector of the jurisdiction)."""
    _jurisdiction(ctx, who, code, "read the contacts")
    return await _contacts(ctx, jurisdiction_owner(code))


@router.put(
    "/jurisdictions/{code}/contacts",
    response_model=ContactsOut,
    responses=error_responses(400, 404),
)
async def put_jurisdiction_contacts(
    ctx: Ctx, who: Caller, code: Code, body: ContactList
) -> ContactsOut:
    """Replace the jurisdiction's contacts and on-call rota (admin)."""
    require_role(who, "admin", doing="change contacts")
    _jurisdiction(ctx, who, code, "change the contacts")
    await _replace(ctx, who, jurisdiction_owner(code), body)
    return await _contacts(ctx, jurisdiction_owner(code))


@router.delete("/jurisdictions/{code}/contacts", status_code=204, responses=error_responses(404))
async def delete_jurisdiction_contacts(ctx: Ctx, who: Caller, code: Code) -> Response:
    """Forget the edited contacts: the contacts file's (if any) apply again (admin)."""
    require_role(who, "admin", doing="change contacts")
    _jurisdiction(ctx, who, code, "change the contacts")
    await _replace(ctx, who, jurisdiction_owner(code), None)
    return Response(status_code=204)


@router.get(
    "/jurisdictions/{code}/escalation",
    response_model=EscalationOut,
    responses=error_responses(404, 503),
)
async def get_escalation(ctx: Ctx, who: Caller, code: Code) -> EscalationOut:
    """The escalation policy the jurisdiction follows (escalation.toml) with its contacts."""
    _jurisdiction(ctx, who, code, "read the escalation policy")
    settings = _settings()
    policy: Policy = settings.policy_for(code)
    return EscalationOut(
        jurisdiction=code,
        timezone=settings.file.timezone,
        policy=_policy_json(policy),
        contacts=await _contacts(ctx, jurisdiction_owner(code)),
    )


def _policy_json(policy: Policy) -> dict:
    hours = policy.working_hours
    return {
        "levels": [
            {
                "level": i,
                "after_min": lv.after_min,
                "after_min_critical": lv.after_min_critical,
                "notify": list(lv.notify),
                "notify_off_hours": list(lv.targets(False)),
            }
            for i, lv in enumerate(policy.levels)
        ],
        "working_hours": {"days": list(hours.days), "start": hours.start, "end": hours.end},
        "calendars": list(policy.calendars),
    }


async def _user(ctx, who: Principal, name: str) -> None:
    if who.role != "admin" and not (who.kind == "user" and who.name == name):
        raise HTTPException(
            403, f"{who.role} {who.name!r} may not read or change {name!r}'s settings"
        )
    users = await asyncio.to_thread(ctx.store.list_users)
    if not any(u.user.name == name for u in users):
        raise HTTPException(404, f"no user {name}")


@router.get(
    "/users/{name}/notifications", response_model=UserNotify, responses=error_responses(404)
)
async def get_user_notifications(ctx: Ctx, who: Caller, name: UserName) -> UserNotify:
    """A user's addresses and what they choose to receive (the user themselves, or admin)."""
    await _user(ctx, who, name)
    stored = await asyncio.to_thread(stored_user_notify, ctx.store, name)
    return stored or UserNotify()


@router.put(
    "/users/{name}/notifications", response_model=UserNotify, responses=error_responses(400, 404)
)
async def put_user_notifications(
    ctx: Ctx, who: Caller, name: UserName, body: UserNotify
) -> UserNotify:
    """Set a user's addresses per channel and preferences: alert families and severities (empty:
    all) and quiet hours, which hold back critical alerts only with `include_critical`."""
    await _user(ctx, who, name)
    doc = body.model_dump_json()
    await asyncio.to_thread(
        ctx.store.save_notify_settings, user_owner(name), doc, who.name, now_ms()
    )
    return body
