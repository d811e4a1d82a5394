"""A report as an XLSX workbook (openpyxl): one sheet per part, numbers as numbers. openpyxl is
imported on first use, as matplotlib is (api.reports.pdf): most processes never write one."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from api.reports.compute import FAMILY_COLUMNS, Report

if TYPE_CHECKING:
    from openpyxl import Workbook


def _sheet(wb: Workbook, title: str, header: list[str], rows: list[list]) -> None:
    from openpyxl.styles import Font

    ws = wb.create_sheet(title)
    ws.append(header)
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for row in rows:
        ws.append(row)
    for column in ws.columns:
        width = max(len(str(c.value or "")) for c in column)
        ws.column_dimensions[column[0].column_letter].width = min(60, 4 + 2 * width)


def render_xlsx(r: Report) -> bytes:
    from openpyxl import Workbook
    from openpyxl.worksheet.worksheet import Worksheet

    wb = Workbook()
    summary = wb.active
    assert isinstance(summary, Worksheet)  # a new workbook's one sheet
    summary.title = "概况"
    for row in (
        ["报告", r.title],
        ["统计时段", r.span],
        ["时区", r.timezone],
        ["监测场所数", r.sites_total],
        ["有数据场所数", r.sites_reporting],
        ["数据完整率", r.completeness],
        ["达标时长占比", r.compliance],
        ["告警数已截断", "是" if r.alerts_cut else "否"],
    ):
        summary.append(row)
    summary.column_dimensions["A"].width = 16
    summary.column_dimensions["B"].width = 40
    _sheet(
        wb,
        "各指标合规",
        ["指标", "代码", "达标时长占比", "监测时长 (h)", "超标时长 (h)"],
        [[p.name_zh, p.parameter, p.compliance, p.monitored_h, p.over_h] for p in r.parameters],
    )
    _sheet(
        wb,
        "告警及处置",
        list(FAMILY_COLUMNS),
        [
            [
                f.name_zh,
                f.alerts,
                f.acknowledged,
                f.ack_median_min,
                f.resolved,
                f.resolve_median_min,
            ]
            for f in r.families
        ],
    )
    _sheet(
        wb,
        "场所",
        ["场所编号", "场所", "达标时长占比", "数据完整率", "告警数"],
        [[s.site_id, s.name, s.compliance, s.completeness, s.alerts] for s in r.sites],
    )
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
