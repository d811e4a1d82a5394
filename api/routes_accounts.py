"""Accounts for an admin: list users, disable, enable or delete them; list tokens and login
sessions and revoke them. (`landun users ...` and `landun tokens ...` do the same offline.)"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from fastapi.responses import Response
from pydantic import BaseModel

from api.auth import Caller, Ctx, require_role
from api.schemas import error_responses
from domain.timeutil import ms_to_iso, now_ms
from store.base import Principal

router = APIRouter(prefix="/api/v1", tags=["accounts"], responses=error_responses(401, 403, 422))

UserName = Annotated[str, Path(min_length=1, max_length=100)]
TokenId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="from GET /tokens")]


class UserOut(BaseModel):
    name: str
    role: str
    jurisdictions: list[str]
    disabled: bool
    created: str


class TokenInfoOut(BaseModel):
    id: str
    kind: str  # session (a login) | token (a machine's API token)
    name: str
    role: str
    jurisdictions: list[str]
    label: str
    created: str
    expires: str | None


def _admin(who: Principal, doing: str) -> None:
    require_role(who, "admin", doing=doing)


def _not_self(who: Principal, name: str, doing: str) -> None:
    if who.kind == "user" and who.name == name:
        raise HTTPException(409, f"an admin may not {doing} their own account; ask another admin")


@router.get("/users", response_model=list[UserOut])
async def list_users(ctx: Ctx, who: Caller) -> list[UserOut]:
    """Every user, with whether they are disabled (admin)."""
    _admin(who, "list users")
    users = await asyncio.to_thread(ctx.store.list_users)
    return [
        UserOut(
            name=u.user.name,
            role=u.user.role,
            jurisdictions=list(u.user.jurisdictions),
            disabled=u.disabled,
            created=ms_to_iso(u.created_ms),
        )
        for u in users
    ]


async def _set_disabled(ctx, who: Principal, name: str, disabled: bool) -> Response:
    doing = "disable" if disabled else "enable"
    _admin(who, f"{doing} users")
    _not_self(who, name, doing)
    if not await asyncio.to_thread(ctx.store.set_user_disabled, name, disabled):
        raise HTTPException(404, f"no user {name}")
    return Response(status_code=204)


@router.post("/users/{name}/disable", status_code=204, responses=error_responses(404, 409))
async def disable_user(ctx: Ctx, who: Caller, name: UserName) -> Response:
    """Refuse the user's logins and end their sessions now (admin)."""
    return await _set_disabled(ctx, who, name, True)


@router.post("/users/{name}/enable", status_code=204, responses=error_responses(404, 409))
async def enable_user(ctx: Ctx, who: Caller, name: UserName) -> Response:
    """Let a disabled user log in again (admin)."""
    return await _set_disabled(ctx, who, name, False)


@router.delete("/users/{name}", status_code=204, responses=error_responses(404, 409))
async def delete_user(ctx: Ctx, who: Caller, name: UserName) -> Response:
    """Delete the user and end their sessions (admin)."""
    _admin(who, "delete users")
    _not_self(who, name, "delete")
    if not await asyncio.to_thread(ctx.store.delete_user, name):
        raise HTTPException(404, f"no user {name}")
    return Response(status_code=204)


@router.get("/tokens", response_model=list[TokenInfoOut])
async def list_tokens(ctx: Ctx, who: Caller) -> list[TokenInfoOut]:
    """Valid API tokens and login sessions, newest first, without the tokens themselves
    (admin). `id` names one for revoking."""
    _admin(who, "list tokens")
    tokens = await asyncio.to_thread(ctx.store.list_tokens, now_ms())
    return [
        TokenInfoOut(
            id=t.id,
            kind="session" if t.kind == "user" else "token",
            name=t.name,
            role=t.role,
            jurisdictions=list(t.jurisdictions),
            label=t.label,
            created=ms_to_iso(t.created_ms),
            expires=ms_to_iso(t.expires_ms) if t.expires_ms else None,
        )
        for t in tokens
    ]


@router.delete("/tokens/{token_id}", status_code=204, responses=error_responses(404))
async def revoke_token(ctx: Ctx, who: Caller, token_id: TokenId) -> Response:
    """Revoke a token or login session (admin); it stops working at once."""
    _admin(who, "revoke tokens")
    if not await asyncio.to_thread(ctx.store.revoke_token, token_id):
        raise HTTPException(404, f"no token with id {token_id}")
    return Response(status_code=204)
