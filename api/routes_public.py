"""The public status page `/p/{public_id}` (no login, rate-limited, cacheable) and the admin's
routes that give a site's public link and QR code (segno) and rotate it."""

from __future__ import annotations

import io
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

import segno
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel

from api import public_page
from api.auth import Caller, Ctx, require_role, site_for
from api.context import AppContext
from api.schemas import error_responses
from domain.model import Site
from domain.timeutil import now_ms

router = APIRouter(tags=["public status page"], responses=error_responses(401, 422))


class PublicLinkOut(BaseModel):
    url: str
    qr_svg: str
    qr_png: str


class RateLimiter:
    """A fixed window of requests per client address, remembering at most `max_clients`
    addresses (the least recently seen are forgotten first, so memory stays bounded)."""

    def __init__(self, requests: int, window_s: float, max_clients: int) -> None:
        self.requests = requests
        self.window_s = window_s
        self.max_clients = max_clients
        self._windows: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str, now: float) -> int | None:
        """None if the request may go ahead, else the seconds until the client's window ends."""
        with self._lock:
            start, count = self._windows.pop(client, (now, 0))
            if now - start >= self.window_s:
                start, count = now, 0
            self._windows[client] = (start, count + 1)
            while len(self._windows) > self.max_clients:
                self._windows.popitem(last=False)
            if count < self.requests:
                return None
            return max(1, math.ceil(start + self.window_s - now))


@dataclass
class PublicState:
    settings: public_page.PublicSettings
    limiter: RateLimiter
    pages: OrderedDict[str, tuple[float, str, str]]  # public id -> (expires, body, etag)
    lock: threading.Lock  # the routes run on the threadpool


_init = threading.Lock()


def _state(ctx: AppContext) -> PublicState:
    with _init:
        if ctx.public is None:
            settings = public_page.load_public_settings()
            s = settings.serving
            limiter = RateLimiter(s.requests_per_window, s.window_s, s.max_clients)
            ctx.public = PublicState(settings, limiter, OrderedDict(), threading.Lock())
    return ctx.public


@router.get("/p/{public_id}", include_in_schema=False)
def public_status(ctx: Ctx, request: Request, public_id: str) -> Response:
    """The venue's public page; an unknown or revoked id gets the same plain 404 whatever it is."""
    state = _state(ctx)
    client = request.client.host if request.client else "unknown"
    wait = state.limiter.retry_after(client, time.monotonic())
    if wait is not None:
        return HTMLResponse(
            "<!doctype html><title>请稍后再试</title><p>访问过于频繁，请稍后再试。</p>",
            status_code=429,
            headers={"Retry-After": str(wait), "Cache-Control": "no-store"},
        )
    site = public_page.site_of(ctx, public_id)
    view = None if site is None else _cached(ctx, state, public_id, site)
    if view is None:
        return HTMLResponse(public_page.NOT_FOUND, 404, headers={"Cache-Control": "no-store"})
    body, tag = view
    max_age = state.settings.serving.cache_max_age_s
    headers = {"Cache-Control": f"public, max-age={max_age}", "ETag": tag}
    if tag in request.headers.get("if-none-match", "")[:1000]:
        return Response(status_code=304, headers=headers)
    return HTMLResponse(body, headers=headers)


def _cached(
    ctx: AppContext, state: PublicState, public_id: str, site: Site
) -> tuple[str, str] | None:
    """The rendered page, computed at most once per max-age per id (a crowd scanning one code
    costs one computation)."""
    now = time.monotonic()
    with state.lock:
        hit = state.pages.get(public_id)
    if hit is not None and hit[0] > now:
        return hit[1], hit[2]
    view = public_page.public_view(ctx, site, state.settings, now_ms())
    if view is None:
        return None
    body = public_page.render(view)
    tag = public_page.etag(body)
    with state.lock:
        state.pages[public_id] = (now + state.settings.serving.cache_max_age_s, body, tag)
        state.pages.move_to_end(public_id)
        while len(state.pages) > state.settings.serving.max_cached_pages:
            state.pages.popitem(last=False)
    return body, tag


def _link(ctx: AppContext, request: Request, site_id: str, public_id: str) -> PublicLinkOut:
    base = ctx.public_url or str(request.base_url)
    qr = f"/api/v1/sites/{site_id}/public-link/qr"
    return PublicLinkOut(
        url=f"{base.rstrip('/')}/p/{public_id}", qr_svg=qr + ".svg", qr_png=qr + ".png"
    )


@router.get(
    "/api/v1/sites/{site_id}/public-link",
    response_model=PublicLinkOut,
    responses=error_responses(403, 404, 503),
)
def get_public_link(ctx: Ctx, who: Caller, request: Request, site_id: str) -> PublicLinkOut:
    """The site's public page address and where its QR code is (admin); issued on first use."""
    require_role(who, "admin", doing="hand out public links")
    site = site_for(ctx, who, site_id)
    return _link(ctx, request, site.id, public_page.public_id_of(ctx, site.id))


@router.post(
    "/api/v1/sites/{site_id}/public-link/rotate",
    response_model=PublicLinkOut,
    responses=error_responses(403, 404, 503),
)
def rotate_public_link(ctx: Ctx, who: Caller, request: Request, site_id: str) -> PublicLinkOut:
    """Issue a new public id (admin); the old one shows nothing from now on (printed codes
    carrying it stop working)."""
    require_role(who, "admin", doing="rotate public links")
    site = site_for(ctx, who, site_id)
    return _link(ctx, request, site.id, public_page.rotate(ctx, site.id))


@router.get(
    "/api/v1/sites/{site_id}/public-link/qr.{fmt}",
    response_class=Response,
    responses={
        200: {"content": {"image/svg+xml": {}, "image/png": {}}, "description": "the QR code"},
        **error_responses(403, 404, 503),
    },
)
def public_link_qr(
    ctx: Ctx, who: Caller, request: Request, site_id: str, fmt: Literal["svg", "png"]
) -> Response:
    """The QR code of the site's public page, as SVG or PNG (admin), for printing at the venue."""
    link = get_public_link(ctx, who, request, site_id)
    # Error correction Q (25 %): a printed code survives wear and a small logo sticker.
    code = segno.make(link.url, error="q", micro=False)
    out = io.BytesIO()
    if fmt == "svg":
        code.save(out, kind="svg", scale=8, border=4, xmldecl=False, title="扫码知卫生")
        media = "image/svg+xml"
    else:
        code.save(out, kind="png", scale=8, border=4)
        media = "image/png"
    return Response(out.getvalue(), media_type=media, headers={"Cache-Control": "no-store"})
