"""Standards: the profiles Landun knows, and the limits a site is judged against."""

from __future__ import annotations

from fastapi import APIRouter

from api.auth import Caller, Ctx, site_for
from api.schemas import LimitOut, ProfileOut, error_responses

router = APIRouter(prefix="/api/v1", tags=["standards"], responses=error_responses(401, 422))


@router.get("/profiles", response_model=list[ProfileOut])
def profiles(ctx: Ctx, who: Caller) -> list[ProfileOut]:
    return [
        ProfileOut(
            id=p.id,
            title_zh=p.title_zh,
            title_en=p.title_en,
            standard=p.standard,
            note=p.note,
            limits=[LimitOut(**lim.as_dict()) for lim in p.limits.values()],
        )
        for p in sorted(ctx.engine.profiles.values(), key=lambda p: p.id)
    ]


@router.get(
    "/sites/{site_id}/limits", response_model=list[LimitOut], responses=error_responses(403, 404)
)
def site_limits(ctx: Ctx, who: Caller, site_id: str) -> list[LimitOut]:
    """The site's profile with its overrides applied: what its readings are judged against."""
    site_for(ctx, who, site_id)
    return [LimitOut(**lim.as_dict()) for lim in ctx.engine.site_limits(site_id).values()]
