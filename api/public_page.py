"""The public status page (扫码知卫生): a venue's unguessable public id, what the public may see of
the venue, and the page itself, server-rendered HTML with no script and no inline style so that
a strict Content-Security-Policy holds.

Public ids live in the store (RegistryStore.public_links, site id -> public id), so every API
process sees a rotation at once and a revoked id stops working everywhere."""

from __future__ import annotations

import hashlib
import html
import re
import secrets
import tomllib
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from api.context import AppContext
from api.routes_compliance import compliance_rows
from api.routes_sites import site_status
from domain.model import Site

# secrets.token_urlsafe(18): 144 random bits, 24 URL-safe characters.
ID_BYTES = 18
PUBLIC_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
FIELDS = ("status", "last_report", "compliance", "address")
DAY_MS = 86_400_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Serving(_Strict):
    cache_max_age_s: int = Field(ge=0, le=86_400)
    compliance_days: int = Field(ge=1, le=366)
    requests_per_window: int = Field(ge=1)
    window_s: int = Field(ge=1)
    max_clients: int = Field(ge=1)
    max_cached_pages: int = Field(ge=1)


class KindPage(_Strict):
    title: str
    fields: tuple[str, ...]
    note: str = ""

    def model_post_init(self, _context: object) -> None:
        unknown = set(self.fields) - set(FIELDS)
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)}; known: {', '.join(FIELDS)}")


class PublicSettings(_Strict):
    serving: Serving
    status_labels: dict[str, str]
    kinds: dict[str, KindPage]


def load_public_settings(path: Path | None = None) -> PublicSettings:
    """The page settings from `api/data/public_page.toml` (or `path`)."""
    if path is None:
        text = resources.files("api").joinpath("data/public_page.toml").read_text("utf-8")
    else:
        text = path.read_text("utf-8")
    return PublicSettings.model_validate(tomllib.loads(text))


def public_id_of(ctx: AppContext, site_id: str) -> str:
    """The site's public id, issued on first use."""
    current = ctx.store.public_links().get(site_id)
    return current if current is not None else rotate(ctx, site_id)


def rotate(ctx: AppContext, site_id: str) -> str:
    """Issue a new public id for the site; the old one names nothing from now on."""
    public_id = secrets.token_urlsafe(ID_BYTES)
    ctx.store.save_public_link(site_id, public_id)
    return public_id


def site_of(ctx: AppContext, public_id: str) -> Site | None:
    """The site a public id names now, or None (unknown, revoked or malformed)."""
    if PUBLIC_ID.fullmatch(public_id) is None:
        return None
    for site_id, current in ctx.store.public_links().items():
        if secrets.compare_digest(current, public_id):
            return ctx.registry.sites.get(site_id)
    return None


@dataclass(frozen=True, slots=True)
class PublicView:
    """Everything the page shows; nothing else about the site reaches the renderer."""

    title: str
    name: str
    fields: tuple[str, ...]
    status: str  # the API's site status (normal, over_limit, offline_or_fault, no_data)
    status_label: str
    last_report: str | None
    compliance: float | None
    compliance_days: int
    address: str
    note: str


def public_view(
    ctx: AppContext, site: Site, settings: PublicSettings, now_ms: int
) -> PublicView | None:
    """The view of a site, or None when its kind has no public page configured."""
    page = settings.kinds.get(str(site.kind))
    if page is None:
        return None
    current = site_status(ctx, site)
    days = settings.serving.compliance_days
    compliance = None
    if "compliance" in page.fields:
        rows = compliance_rows(ctx, [site], now_ms - days * DAY_MS, now_ms)
        monitored = sum(r.monitored_s for r in rows)
        over = sum(r.over_limit_s for r in rows)
        compliance = None if monitored == 0 else 1 - over / monitored
    last = None
    if current.last_data is not None:
        at = datetime.fromisoformat(current.last_data).astimezone(ZoneInfo(site.timezone))
        last = at.strftime("%Y-%m-%d %H:%M")
    return PublicView(
        title=page.title,
        name=site.name,
        fields=page.fields,
        status=current.status,
        status_label=settings.status_labels.get(current.status, current.status),
        last_report=last,
        compliance=compliance,
        compliance_days=days,
        address=site.address,
        note=page.note,
    )


_HEAD = """<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<link rel="stylesheet" href="/static/public.css">
</head>
<body>
"""


def _row(label: str, value: str, cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<div><dt>{label}</dt><dd{attr}>{value}</dd></div>\n"


def render(view: PublicView) -> str:
    e = html.escape
    rows = []
    for name in view.fields:
        if name == "status":
            rows.append(_row("当前状态", e(view.status_label), f"status s-{e(view.status)}"))
        elif name == "last_report":
            rows.append(_row("最近上报", e(view.last_report or "暂无数据")))
        elif name == "compliance":
            share = "暂无数据" if view.compliance is None else f"{view.compliance * 100:.1f}%"
            rows.append(_row(f"近 {view.compliance_days} 天合格率", e(share)))
        elif name == "address" and view.address:
            rows.append(_row("地址", e(view.address)))
    return (
        _HEAD.format(title=e(view.name))
        + f'<main>\n<p class="kicker">{e(view.title)}</p>\n<h1>{e(view.name)}</h1>\n'
        + f"<dl>\n{''.join(rows)}</dl>\n"
        + (f'<p class="note">{e(view.note)}</p>\n' if view.note else "")
        + '<p class="note">时间为当地时间。</p>\n</main>\n</body>\n</html>\n'
    )


NOT_FOUND = (
    _HEAD.format(title="页面不存在")
    + "<main>\n<h1>页面不存在</h1>\n<p>此二维码无效或已停用。</p>\n</main>\n</body>\n</html>\n"
)


def etag(body: str) -> str:
    return '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
