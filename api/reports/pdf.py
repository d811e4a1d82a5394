"""A report as a one-page A4 PDF drawn with matplotlib (tables, charts) and a CJK font found on
the system, embedded so that the PDF reads the same anywhere.

matplotlib is imported when the first PDF is drawn: it would add about 60 MB and a second to
every process start, and most processes never draw a report."""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from api.reports.compute import FAMILY_COLUMNS, Report, ReportSettings

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_lock = threading.Lock()  # matplotlib's font manager and rcParams are process-wide


class CjkFontMissing(RuntimeError):
    """No configured CJK font exists here; Chinese text would print as empty boxes."""


def _pct(share: float | None) -> str:
    return "—" if share is None else f"{share * 100:.1f}%"


def _min(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


def cjk_family(settings: ReportSettings) -> str:
    """Register the first configured CJK font that exists and return the family to use."""
    from matplotlib import font_manager

    for path in settings.fonts:
        if Path(path).is_file():
            font_manager.fontManager.addfont(path)
            names = {f.name for f in font_manager.fontManager.ttflist if f.fname == path}
            return settings.font_family if settings.font_family in names else sorted(names)[0]
    raise CjkFontMissing(
        "no CJK font for the PDF report: install fonts-noto-cjk (Debian/Ubuntu) or list a font"
        " file under `fonts` in api/data/reports.toml; the XLSX report needs no font"
    )


def _table(ax, header: list[str], rows: list[list[str]], title: str, widths: list[float]) -> None:
    ax.axis("off")
    ax.set_title(title, loc="left", fontsize=11)
    if not rows:
        ax.text(0, 0.5, "无", fontsize=9)
        return
    table = ax.table(
        cellText=rows, colLabels=header, colWidths=widths, loc="upper left", cellLoc="left"
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8.5)
    table.scale(1, 1.3)
    for (row, _), cell in table.get_celld().items():
        cell.set_edgecolor("#d8dce3")
        if row == 0:
            cell.set_facecolor("#eef1f5")


def render_pdf(report: Report, settings: ReportSettings) -> bytes:
    import matplotlib
    from matplotlib.backends.backend_pdf import PdfPages

    with _lock:
        family = cjk_family(settings)
        # Type 3 glyphs: embedding the CJK font as Type 42 instead subsets a 20 MB collection
        # with fontTools on every PDF, several times slower; text stays searchable either way.
        with matplotlib.rc_context({"font.family": family, "pdf.fonttype": 3}):
            fig = _page(report)
            out = io.BytesIO()
            with PdfPages(out, metadata={"Title": report.title, "Creator": "Landun"}) as pdf:
                pdf.savefig(fig)
    return out.getvalue()


def _page(r: Report) -> Figure:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.27, 11.69))  # A4
    fig.text(0.07, 0.955, r.title, fontsize=17, color="#0d3b66")
    fig.text(0.07, 0.935, f"统计时段：{r.span}（{r.timezone}）", fontsize=10, color="#444")
    summary = (
        f"监测场所 {r.sites_total} 家，有数据 {r.sites_reporting} 家；"
        f"数据完整率 {_pct(r.completeness)}；达标时长占比 {_pct(r.compliance)}；"
        f"告警 {sum(f.alerts for f in r.families)} 起"
        + ("（超出上限，仅统计部分）" if r.alerts_cut else "")
    )
    fig.text(0.07, 0.91, summary, fontsize=10)

    chart = fig.add_axes((0.1, 0.70, 0.38, 0.17))
    names = [p.name_zh for p in r.parameters]
    values = [0.0 if p.compliance is None else p.compliance * 100 for p in r.parameters]
    chart.barh(names, values, color="#1b7f3b")
    chart.set_xlim(0, 100)
    chart.invert_yaxis()
    chart.set_title("各指标达标时长占比 (%)", fontsize=10)
    chart.tick_params(labelsize=8)

    fam = fig.add_axes((0.6, 0.70, 0.33, 0.17))
    fam.bar([f.name_zh for f in r.families], [f.alerts for f in r.families], color="#c0262d")
    fam.set_title("各类告警数", fontsize=10)
    fam.tick_params(labelsize=8)
    from matplotlib.ticker import MaxNLocator

    counts = fam.yaxis.get_major_locator()
    assert isinstance(counts, MaxNLocator)  # matplotlib's default, an AutoLocator
    counts.set_params(integer=True)

    _table(
        fig.add_axes((0.07, 0.50, 0.86, 0.15)),
        ["指标", "达标时长占比", "监测时长 (h)", "超标时长 (h)"],
        [
            [p.name_zh, _pct(p.compliance), f"{p.monitored_h:g}", f"{p.over_h:g}"]
            for p in r.parameters
        ],
        "一、各指标合规情况",
        [0.34, 0.22, 0.22, 0.22],
    )
    _table(
        fig.add_axes((0.07, 0.34, 0.86, 0.12)),
        list(FAMILY_COLUMNS),
        [
            [
                f.name_zh,
                str(f.alerts),
                str(f.acknowledged),
                _min(f.ack_median_min),
                str(f.resolved),
                _min(f.resolve_median_min),
            ]
            for f in r.families
        ],
        "二、告警及处置时效",
        [0.16, 0.1, 0.1, 0.24, 0.1, 0.24],
    )
    _table(
        fig.add_axes((0.07, 0.08, 0.86, 0.22)),
        ["场所", "达标时长占比", "数据完整率", "告警数"],
        [[s.name, _pct(s.compliance), _pct(s.completeness), str(s.alerts)] for s in r.worst],
        f"三、需关注场所（前 {len(r.worst)} 家，按达标时长占比由低到高）",
        [0.55, 0.15, 0.15, 0.15],
    )
    fig.text(
        0.07, 0.04, "由蓝盾在线监测系统生成；原始数据与告警证据见系统。", fontsize=8, color="#666"
    )
    return fig
