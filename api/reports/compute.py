"""What a report says, computed from the store: sites, data completeness, compliance per
parameter (api.routes_compliance, the same computation as `/compliance`), alerts by family with
how fast they were acknowledged and resolved (from the audit trail), and the worst sites."""

from __future__ import annotations

import statistics
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from importlib import resources
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from api.context import AppContext
from api.routes_compliance import compliance_rows
from domain.model import AlertFamily
from store.base import AlertQuery

Period = Literal["week", "month"]
PERIOD_ZH = {"week": "周报", "month": "月报"}
FAMILY_ZH = {
    str(AlertFamily.COMPLIANCE): "超标",
    str(AlertFamily.INTEGRITY): "离线或故障",
    str(AlertFamily.QUALITY): "水质异常",
    str(AlertFamily.CUSTODY): "医废监管",
}

# The columns of the alerts-by-family table, in the PDF and the XLSX alike.
FAMILY_COLUMNS = (
    "告警类别",
    "告警数",
    "已确认",
    "确认用时中位数 (分钟)",
    "已办结",
    "办结用时中位数 (分钟)",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Schedule(_Strict):
    weekly_weekday: int = Field(ge=1, le=7)
    monthly_day: int = Field(ge=1, le=28)
    hour: int = Field(ge=0, le=23)


class ReportSettings(_Strict):
    timezone: str
    worst_sites: int = Field(ge=1, le=100)
    max_alerts: int = Field(ge=1)
    fonts: tuple[str, ...]
    font_family: str
    schedule: Schedule


def load_report_settings() -> ReportSettings:
    text = resources.files("api").joinpath("data/reports.toml").read_text("utf-8")
    return ReportSettings.model_validate(tomllib.loads(text))


def period_days(period: Period, end: date) -> tuple[date, date]:
    """(first, last) local day: a week is the seven days ending with `end`; a month runs from
    the first of `end`'s month to `end`."""
    first = end - timedelta(days=6) if period == "week" else end.replace(day=1)
    return first, end


@dataclass(frozen=True, slots=True)
class ParameterRow:
    parameter: str
    name_zh: str
    compliance: float | None  # share of monitored time within limits
    monitored_h: float
    over_h: float


@dataclass(frozen=True, slots=True)
class FamilyRow:
    family: str
    name_zh: str
    alerts: int
    acknowledged: int
    resolved: int
    ack_median_min: float | None
    resolve_median_min: float | None


@dataclass(frozen=True, slots=True)
class SiteRow:
    site_id: str
    name: str
    compliance: float | None
    completeness: float
    alerts: int


@dataclass(frozen=True, slots=True)
class Report:
    jurisdiction: str
    period: Period
    first: date
    last: date
    timezone: str
    sites_total: int
    sites_reporting: int
    completeness: float | None  # mean over the devices' limited parameters
    compliance: float | None
    parameters: list[ParameterRow]
    families: list[FamilyRow]
    sites: list[SiteRow]  # every site, worst first
    worst: list[SiteRow]
    alerts_cut: bool  # more alerts than max_alerts: the counts are a lower bound

    @property
    def title(self) -> str:
        return f"辖区 {self.jurisdiction} 在线监测{PERIOD_ZH[self.period]}"

    @property
    def span(self) -> str:
        return f"{self.first:%Y-%m-%d} 至 {self.last:%Y-%m-%d}"


def _share(over_s: float, monitored_s: float) -> float | None:
    return None if monitored_s == 0 else 1 - over_s / monitored_s


def _median_min(values: list[int]) -> float | None:
    return round(statistics.median(values) / 60_000, 1) if values else None


def build_report(
    ctx: AppContext, jurisdiction: str, period: Period, end: date, settings: ReportSettings
) -> Report:
    zone = ZoneInfo(settings.timezone)
    first, last = period_days(period, end)
    start_ms = int(datetime.combine(first, time(), zone).timestamp() * 1000)
    end_ms = int(datetime.combine(last + timedelta(days=1), time(), zone).timestamp() * 1000)
    sites = sorted(
        (s for s in ctx.registry.sites.values() if s.jurisdiction == jurisdiction),
        key=lambda s: s.id,
    )
    rows = compliance_rows(ctx, sites, start_ms, end_ms)

    by_param: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    by_site: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    for r in rows:
        by_param[r.parameter][0] += r.monitored_s
        by_param[r.parameter][1] += r.over_limit_s
        acc = by_site[r.site_id]
        acc[0] += r.monitored_s
        acc[1] += r.over_limit_s
        acc[2] += r.completeness
        acc[3] += 1
    parameters = [
        ParameterRow(
            parameter=p,
            name_zh=ctx.catalogue.parameters[p].name_zh if p in ctx.catalogue.parameters else p,
            compliance=_share(over, mon),
            monitored_h=round(mon / 3600, 1),
            over_h=round(over / 3600, 1),
        )
        for p, (mon, over) in sorted(by_param.items())
    ]

    alerts = ctx.store.list_alerts(
        AlertQuery(
            site_ids=tuple(s.id for s in sites) or ("",),
            since_ms=start_ms,
            until_ms=end_ms,
            limit=settings.max_alerts,
        )
    )
    per_site_alerts: dict[str, int] = defaultdict(int)
    ack: dict[str, list[int]] = defaultdict(list)
    resolved: dict[str, list[int]] = defaultdict(list)
    count: dict[str, int] = defaultdict(int)
    for a in alerts:
        fam = str(a.family)
        count[fam] += 1
        per_site_alerts[a.site_id] += 1
        opened = a.opened_ms or a.first_ms
        acked = next(
            (e.at_ms for e in ctx.store.audit_trail(a.id or 0) if e.action == "acknowledged"),
            None,
        )
        if acked is not None:
            ack[fam].append(max(0, acked - opened))
        if a.resolved_ms is not None:
            resolved[fam].append(max(0, a.resolved_ms - opened))
    families = [
        FamilyRow(
            family=fam,
            name_zh=FAMILY_ZH.get(fam, fam),
            alerts=count[fam],
            acknowledged=len(ack[fam]),
            resolved=len(resolved[fam]),
            ack_median_min=_median_min(ack[fam]),
            resolve_median_min=_median_min(resolved[fam]),
        )
        for fam in FAMILY_ZH
        if count[fam] or fam in (str(AlertFamily.COMPLIANCE), str(AlertFamily.INTEGRITY))
    ]

    site_rows = []
    for s in sites:
        mon, over, comp_sum, n = by_site.get(s.id, (0.0, 0.0, 0.0, 0.0))
        site_rows.append(
            SiteRow(
                site_id=s.id,
                name=s.name,
                compliance=_share(over, mon),
                completeness=comp_sum / n if n else 0.0,
                alerts=per_site_alerts[s.id],
            )
        )
    # Worst first: no data at all, then least time within limits, then most alerts.
    site_rows.sort(
        key=lambda r: (r.compliance is not None, r.compliance or 0.0, -r.alerts, r.site_id)
    )
    total_mon = sum(m for m, _ in by_param.values())
    total_over = sum(o for _, o in by_param.values())
    return Report(
        jurisdiction=jurisdiction,
        period=period,
        first=first,
        last=last,
        timezone=settings.timezone,
        sites_total=len(sites),
        sites_reporting=sum(1 for r in site_rows if r.compliance is not None),
        completeness=round(sum(r.completeness for r in rows) / len(rows), 4) if rows else None,
        compliance=_share(total_over, total_mon),
        parameters=parameters,
        families=families,
        sites=site_rows,
        worst=site_rows[: settings.worst_sites],
        alerts_cut=len(alerts) >= settings.max_alerts,
    )
