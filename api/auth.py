"""Who is calling and what they may see: bearer tokens, roles and jurisdiction scope.

Roles: admin (everything), inspector (acts on alerts of their jurisdictions), viewer (reads
their jurisdictions). Tokens are random and only their SHA-256 is stored; passwords are PBKDF2
hashes (domain.credentials)."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from api.context import AppContext
from domain.model import Device, Site
from domain.timeutil import now_ms
from store.base import AccountStore, Principal

ROLES = ("admin", "inspector", "viewer")
_bearer = HTTPBearer(auto_error=False, description="a login session or an API token")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "ld_" + secrets.token_urlsafe(32)


def issue_token(
    store: AccountStore, principal: Principal, hours: float | None, label: str = ""
) -> tuple[str, int | None]:
    token = new_token()
    expires = now_ms() + int(hours * 3_600_000) if hours else None
    store.add_token(token_hash(token), principal, expires, label)
    return token, expires


def context(request: Request) -> AppContext:
    return request.app.state.ctx


Ctx = Annotated[AppContext, Depends(context)]


async def bearer_valid(ctx: AppContext, authorization: str | None) -> bool:
    """Whether an Authorization header carries a valid token (for the body guard, which must
    decide before the body is read; the route's own dependency still says who it is)."""
    scheme, token = get_authorization_scheme_param(authorization)
    if scheme.lower() != "bearer" or not token:
        return False
    found = await asyncio.to_thread(ctx.store.principal_for_token, token_hash(token), now_ms())
    return found is not None


def principal(
    ctx: Ctx, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if creds is None:
        raise HTTPException(
            401,
            "not logged in: send 'Authorization: Bearer <token>' "
            "(POST /api/v1/auth/login gives one)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    who = ctx.store.principal_for_token(token_hash(creds.credentials), now_ms())
    if who is None:
        raise HTTPException(
            401, "token unknown or expired: log in again", headers={"WWW-Authenticate": "Bearer"}
        )
    return who


Caller = Annotated[Principal, Depends(principal)]


def require_role(who: Principal, *roles: str, doing: str) -> None:
    if who.role not in roles:
        raise HTTPException(403, f"{who.role} {who.name!r} may not {doing}")


def in_scope(who: Principal, site: Site) -> bool:
    return who.role == "admin" or site.jurisdiction in who.jurisdictions


def scoped_site_ids(ctx: AppContext, who: Principal) -> list[str] | None:
    """Site ids the caller may see; None means all (admin)."""
    if who.role == "admin":
        return None
    return [s.id for s in ctx.registry.sites.values() if s.jurisdiction in who.jurisdictions]


def site_for(ctx: AppContext, who: Principal, site_id: str) -> Site:
    site = ctx.registry.sites.get(site_id)
    if site is None:
        raise HTTPException(404, f"unknown site {site_id}")
    if not in_scope(who, site):
        raise HTTPException(
            403,
            f"site {site_id} is in jurisdiction {site.jurisdiction},"
            f" outside yours ({', '.join(who.jurisdictions) or 'none'})",
        )
    return site


def device_for(ctx: AppContext, who: Principal, device_id: str) -> Device:
    device = ctx.registry.devices.get(device_id)
    if device is None:
        raise HTTPException(404, f"unknown device {device_id}")
    site_for(ctx, who, device.site_id)
    return device
