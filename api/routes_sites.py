"""Sites and devices: list with current status and last readings; create and update (admin).

Edits are kept in the store (store/site_edits.py) and laid over the registry file at startup,
so they survive a restart."""

from __future__ import annotations

import math

from fastapi import APIRouter, HTTPException

from api.auth import Caller, Ctx, device_for, require_role, scoped_site_ids, site_for
from api.schemas import (
    DeviceIn,
    DeviceOut,
    SiteIn,
    SiteOut,
    SiteStatus,
    SiteStatusOut,
    error_responses,
)
from domain.limits import Profile
from domain.model import AlertFamily, AlertStatus, Site
from domain.registry import device_from_dict, site_from_dict, site_to_dict
from domain.timeutil import ms_to_iso
from store.base import AlertQuery
from store.site_edits import save_device, save_site

router = APIRouter(
    prefix="/api/v1", tags=["sites and devices"], responses=error_responses(401, 422)
)


# What a site may override per parameter (fields of domain.limits.Limit that are numbers).
OVERRIDABLE = ("min", "max", "hysteresis", "critical_min", "critical_max")
OVERRIDABLE_TIMES = ("pending_s", "clear_s", "critical_after_s")


def site_status(ctx, site: Site) -> SiteStatusOut:
    """正常 normal / 超标 over_limit / 医废异常 custody_issue / 离线或故障 offline_or_fault, from
    the open alerts, or 暂无数据 no_data for a site none of whose devices has reported yet."""
    open_alerts = ctx.store.list_alerts(
        AlertQuery(
            site_ids=(site.id,),
            statuses=(str(AlertStatus.OPEN), str(AlertStatus.ACKNOWLEDGED)),
            limit=1000,
        )
    )
    families = {a.family for a in open_alerts}
    status: SiteStatus
    # 超标 means a measured value outside a standard's limit: only the compliance family.
    # Medical-waste record-keeping findings have a status of their own (医废异常).
    if AlertFamily.COMPLIANCE in families:
        status = "over_limit"
    elif AlertFamily.CUSTODY in families:
        status = "custody_issue"
    elif AlertFamily.INTEGRITY in families:
        status = "offline_or_fault"
    else:
        status = "normal"
    last: dict[str, dict] = {}
    last_ms = 0
    for dev in ctx.registry.devices_of(site.id):
        for r in ctx.store.latest_readings(dev.id):
            last[r.parameter] = {"value": r.value, "ts": ms_to_iso(r.ts_ms), "flag": r.flag}
            last_ms = max(last_ms, r.ts_ms)
    if status == "normal" and not last_ms:
        status = "no_data"
    return SiteStatusOut(
        status=status,
        open_alerts=len(open_alerts),
        last_data=ms_to_iso(last_ms) if last_ms else None,
        last_readings=last,
    )


def _site_out(ctx, site: Site) -> SiteOut:
    return SiteOut(**site_to_dict(site), current=site_status(ctx, site))


@router.get("/sites", response_model=list[SiteOut])
def list_sites(ctx: Ctx, who: Caller) -> list[SiteOut]:
    ids = scoped_site_ids(ctx, who)
    sites = [s for s in ctx.registry.sites.values() if ids is None or s.id in ids]
    return [_site_out(ctx, s) for s in sorted(sites, key=lambda s: s.id)]


@router.get("/sites/{site_id}", response_model=SiteOut, responses=error_responses(403, 404))
def get_site(ctx: Ctx, who: Caller, site_id: str) -> SiteOut:
    return _site_out(ctx, site_for(ctx, who, site_id))


@router.put("/sites/{site_id}", response_model=SiteOut, responses=error_responses(400, 403, 503))
def put_site(ctx: Ctx, who: Caller, site_id: str, body: SiteIn) -> SiteOut:
    """Create or replace a site (admin)."""
    require_role(who, "admin", doing="change sites")
    if body.profile not in ctx.engine.profiles:
        known = ", ".join(sorted(ctx.engine.profiles))
        raise HTTPException(400, f"unknown standards profile {body.profile!r} (known: {known})")
    _check_overrides(ctx.engine.profiles[body.profile], body.overrides)
    try:
        site = site_from_dict(body.model_dump() | {"id": site_id})
    except ValueError as exc:  # the time zone or subtype (the schema cannot list them)
        raise HTTPException(400, str(exc)) from None
    save_site(ctx.store, site)
    ctx.registry.add_site(site)
    ctx.engine.forget_limits(site_id)
    return _site_out(ctx, site)


def _check_overrides(profile: Profile, overrides: dict[str, dict[str, float]]) -> None:
    """Refuse overrides the alert engine could not apply: it judges every reading of the site
    against them, so a bad one would stop the site's evaluation, not just this request."""
    known = ", ".join(OVERRIDABLE + OVERRIDABLE_TIMES)
    for param, settings in overrides.items():
        if param not in profile.limits:
            has = ", ".join(sorted(profile.limits))
            raise HTTPException(
                400, f"overrides: profile {profile.id} sets no limit for {param!r} (it has: {has})"
            )
        for key, value in settings.items():
            if key not in OVERRIDABLE + OVERRIDABLE_TIMES:
                raise HTTPException(400, f"overrides.{param}: unknown setting {key!r} ({known})")
            if not math.isfinite(value) or (key in OVERRIDABLE_TIMES and value < 0):
                raise HTTPException(400, f"overrides.{param}.{key}: {value} is not a usable value")
        base = profile.limits[param]
        low, high = settings.get("min", base.min), settings.get("max", base.max)
        if low is not None and high is not None and low > high:
            raise HTTPException(400, f"overrides.{param}: min {low:g} is above max {high:g}")


@router.get("/devices", response_model=list[DeviceOut], responses=error_responses(403, 404))
def list_devices(ctx: Ctx, who: Caller, site: str | None = None) -> list[DeviceOut]:
    ids = scoped_site_ids(ctx, who)
    if site is not None:
        site_for(ctx, who, site)
        ids = [site]
    devices = [d for d in ctx.registry.devices.values() if ids is None or d.site_id in ids]
    return [DeviceOut.of(d) for d in sorted(devices, key=lambda d: d.id)]


@router.get("/devices/{device_id}", response_model=DeviceOut, responses=error_responses(403, 404))
def get_device(ctx: Ctx, who: Caller, device_id: str) -> DeviceOut:
    return DeviceOut.of(device_for(ctx, who, device_id))


@router.put(
    "/devices/{device_id}", response_model=DeviceOut, responses=error_responses(400, 403, 409, 503)
)
def put_device(ctx: Ctx, who: Caller, device_id: str, body: DeviceIn) -> DeviceOut:
    """Create or replace a device (admin). Its site must exist."""
    require_role(who, "admin", doing="change devices")
    if body.site not in ctx.registry.sites:
        raise HTTPException(400, f"unknown site {body.site}")
    for p in body.parameters:
        if p not in ctx.catalogue.parameters:
            raise HTTPException(400, f"unknown parameter {p!r}")
    old = ctx.registry.devices.get(device_id)
    keep_hash = old.credential_hash if old else ""
    device = device_from_dict(body.model_dump() | {"id": device_id, "credential_hash": keep_hash})
    try:
        ctx.registry.add_device(device)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    save_device(ctx.store, device)
    # With separate alert workers, the partitions of its sites are rebuilt with the device.
    for site_id in dict.fromkeys([device.site_id, *([old.site_id] if old else [])]):
        ctx.engine.forget_limits(site_id)
    return DeviceOut.of(device)
