"""Periodic reports (定期通报): computed from a real SQLite store on a fixed clock, drawn as PDF
(rendered back to pixels with pdfium to check it) and XLSX, served by the API within the
caller's jurisdictions, and mailed over STARTTLS to a real local SMTP server (aiosmtpd)."""

from __future__ import annotations

import io
from datetime import date
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from api.context import AppContext
from api.reports.compute import build_report, load_report_settings
from api.reports.mail import MailSettings, due_reports, mail_due_reports, parse_recipients
from api.reports.pdf import CjkFontMissing, render_pdf
from api.reports.xlsx import render_xlsx
from domain.model import Alert, AlertFamily, AlertStatus, Reading, Severity
from domain.registry import load_registry
from domain.timeutil import iso_to_ms
from landun.demo import demo_registry_path
from landun.system import Core
from store.base import AlertChange
from tests.conftest import RunningSystem
from tests.smtp_server import Inbox, make_cert, start_smtp
from tests.test_dashboard_browser import SHOTS

MIN = 60_000
# Monday 2026-11-23 00:00 in Shanghai: the week reported runs to Sunday 2026-11-29.
WEEK_START = iso_to_ms("2026-11-23T00:00:00+08:00")
NOW = iso_to_ms("2026-12-01T09:00:00+08:00")  # the clock of the whole test


def _have_cjk_font() -> bool:
    return any(Path(f).is_file() for f in load_report_settings().fonts)


# CI installs fonts-noto-cjk (.ci/run); elsewhere the PDF tests say what is missing.
needs_cjk = pytest.mark.skipif(
    not _have_cjk_font(), reason="no CJK font (install fonts-noto-cjk) to draw the PDF"
)


class FixedClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def _minutes(device: str, site: str, start: int, values: list[float]) -> list[Reading]:
    return [
        Reading(device, site, "free_chlorine", start + i * MIN, v, recv_ms=start + i * MIN)
        for i, v in enumerate(values)
    ]


def _alert(site: str, device: str, family: AlertFamily, opened: int) -> Alert:
    return Alert(
        site_id=site,
        device_id=device,
        rule_id="range:free_chlorine" if family is AlertFamily.COMPLIANCE else "offline",
        family=family,
        severity=Severity.WARNING,
        parameter="free_chlorine",
        message="test",
        first_ms=opened,
        last_ms=opened,
        opened_ms=opened,
    )


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Core wiring over a fresh SQLite store holding a known week in 310104 (and a distractor in
    310105); the store's audit trail stamps come from a fixed clock."""
    clock = FixedClock(WEEK_START)
    monkeypatch.setattr("store.sqlite.now_ms", clock)
    core = Core.build(load_registry(demo_registry_path()), tmp_path / "landun.db", clock=clock)
    store = core.store
    day2 = WEEK_START + 1440 * MIN
    # pool-xh-01: a day of minutes, the first 144 below the 0.3 mg/L limit: 90 % within.
    store.write_batch(_minutes("pool-xh-01-wq", "pool-xh-01", day2, [0.1] * 144 + [0.5] * 1296))
    # pool-xh-03: half a day, half of it low: 50 % within.
    store.write_batch(_minutes("pool-xh-03-wq", "pool-xh-03", day2, [0.1] * 360 + [0.5] * 360))
    store.write_batch(_minutes("pool-cn-01-wq", "pool-cn-01", day2, [0.1] * 60))

    over = _alert("pool-xh-03", "pool-xh-03-wq", AlertFamily.COMPLIANCE, day2 + 10 * MIN)
    offline = _alert("pool-xh-01", "pool-xh-01-wq", AlertFamily.INTEGRITY, day2 + 100 * MIN)
    other = _alert("pool-cn-01", "pool-cn-01-wq", AlertFamily.COMPLIANCE, day2)
    clock.ms = day2 + 10 * MIN
    store.save_alerts([AlertChange(over, "opened"), AlertChange(other, "opened")])
    clock.ms = day2 + 20 * MIN  # acknowledged after 10 min
    over.status = AlertStatus.ACKNOWLEDGED
    store.save_alerts([AlertChange(over, "acknowledged", "insp")])
    clock.ms = day2 + 50 * MIN  # resolved after 40 min
    over.status, over.resolved_ms = AlertStatus.RESOLVED, clock.ms
    store.save_alerts([AlertChange(over, "resolved", "insp")])
    clock.ms = day2 + 100 * MIN
    store.save_alerts([AlertChange(offline, "opened")])
    clock.ms = day2 + 130 * MIN  # acknowledged after 30 min, still open
    offline.status = AlertStatus.ACKNOWLEDGED
    store.save_alerts([AlertChange(offline, "acknowledged", "insp")])
    clock.ms = NOW
    yield AppContext(
        store=store,
        registry=core.registry,
        catalogue=core.catalogue,
        engine=core.engine,
        metrics=core.pipeline.metrics,
    )
    core.close()


def test_weekly_report_figures(ctx):
    r = build_report(ctx, "310104", "week", date(2026, 11, 29), load_report_settings())
    assert (r.first, r.last) == (date(2026, 11, 23), date(2026, 11, 29))
    # pool-xh-02, the hospital, the water supply and the disinfection unit: nothing
    assert r.sites_total == 6 and r.sites_reporting == 2
    fc = next(p for p in r.parameters if p.parameter == "free_chlorine")
    assert fc.name_zh == "游离性余氯"
    assert fc.compliance == pytest.approx(1 - (144 + 360) / (1440 + 720))
    assert fc.over_h == pytest.approx(8.4)  # 504 minutes
    families = {f.family: f for f in r.families}
    assert families["compliance"].alerts == 1  # pool-cn-01's is another jurisdiction's
    assert families["compliance"].ack_median_min == 10.0
    assert families["compliance"].resolve_median_min == 40.0
    assert families["integrity"].alerts == 1 and families["integrity"].acknowledged == 1
    assert families["integrity"].ack_median_min == 30.0
    assert families["integrity"].resolved == 0 and families["integrity"].resolve_median_min is None
    # Worst first: no data at all, then the least time within limits.
    worst = ["hosp-xh-01", "pool-xh-02", "tw-xh-01", "water-xh-01", "pool-xh-03"]  # five at most
    assert [s.site_id for s in r.worst] == worst
    xh1 = next(s for s in r.sites if s.site_id == "pool-xh-01")
    assert xh1.compliance == pytest.approx(0.9) and xh1.alerts == 1
    # Completeness, counted from the device's first reading (six days before the week ends): a
    # day of minutes on the free-chlorine row of xh-01, none on its other five parameters.
    assert xh1.completeness == pytest.approx(1440 / 8640 / 6, abs=1e-4)


@needs_cjk
def test_monthly_report_pdf_renders_chinese_and_xlsx_holds_numbers(ctx, tmp_path):
    import pypdfium2
    from openpyxl import load_workbook

    settings = load_report_settings()
    r = build_report(ctx, "310104", "month", date(2026, 11, 30), settings)
    assert (r.first, r.last) == (date(2026, 11, 1), date(2026, 11, 30))
    pdf = render_pdf(r, settings)
    doc = pypdfium2.PdfDocument(pdf)
    assert len(doc) == 1
    page = doc[0]
    assert (round(page.get_width()), round(page.get_height())) == (595, 842)  # A4 in points
    text = page.get_textpage().get_text_range()
    for words in ("辖区 310104 在线监测月报", "游离性余氯", "康健社区游泳池", "确认用时中位数"):
        assert words in text.replace("\r\n", "\n"), words
    image = page.render(scale=1.5).to_pil()
    # Glyphs drawn, not empty boxes or a blank page: a good share of the page is ink.
    histogram = image.convert("L").histogram()
    assert sum(histogram[:128]) / sum(histogram) > 0.01
    if SHOTS:
        image.save(f"{SHOTS}/report.png")
    doc.close()

    book = load_workbook(io.BytesIO(render_xlsx(r)))
    assert book.sheetnames == ["概况", "各指标合规", "告警及处置", "场所"]
    rows = list(book["场所"].iter_rows(min_row=2, values_only=True))
    sites = ["hosp-xh-01", "pool-xh-02", "tw-xh-01", "water-xh-01", "pool-xh-03", "pool-xh-01"]
    assert [row[0] for row in rows] == sites
    alerts = {row[0]: row for row in book["告警及处置"].iter_rows(min_row=2, values_only=True)}
    assert alerts["超标"][1:4] == (1, 1, 10.0)


def test_pdf_without_a_cjk_font_says_what_to_install(ctx):
    settings = load_report_settings().model_copy(update={"fonts": ("/nonexistent/font.ttc",)})
    r = build_report(ctx, "310104", "week", date(2026, 11, 29), settings)
    with pytest.raises(CjkFontMissing, match="fonts-noto-cjk"):
        render_pdf(r, settings)


def _shanghai(text: str) -> int:
    return iso_to_ms(text + "+08:00")


def test_schedule_names_the_latest_week_and_month():
    s = load_report_settings().schedule  # Mondays and the 1st, at 08:00
    tz = "Asia/Shanghai"
    # Tuesday 2026-12-01 09:00: the week to Sunday 2026-11-29, the month of November.
    assert due_reports(_shanghai("2026-12-01T09:00:00"), s, tz) == [
        ("week", date(2026, 11, 29)),
        ("month", date(2026, 11, 30)),
    ]
    # Monday 2026-11-30 07:59, before the hour: the week before, and October.
    assert due_reports(_shanghai("2026-11-30T07:59:00"), s, tz) == [
        ("week", date(2026, 11, 22)),
        ("month", date(2026, 10, 31)),
    ]
    assert due_reports(_shanghai("2026-11-30T08:00:00"), s, tz)[0] == ("week", date(2026, 11, 29))


def test_recipients_parse_and_refuse_garbage():
    assert parse_recipients("310104=a@x.cn, b@x.cn;310105=c@x.cn;") == {
        "310104": ("a@x.cn", "b@x.cn"),
        "310105": ("c@x.cn",),
    }
    with pytest.raises(ValueError, match="JURISDICTION=ADDR"):
        parse_recipients("a@x.cn")


# --- the API ---------------------------------------------------------------------------------


@needs_cjk
def test_report_route_formats_and_scope(system: RunningSystem):
    from api.auth import token_hash
    from store.base import Principal

    store = system.system.core.store
    store.add_token(
        token_hash("cn-token"), Principal("cn", "inspector", ("310105",), "token"), None
    )
    cn = {"Authorization": "Bearer cn-token"}
    admin, anon = system.http, system.anon
    url = "/api/v1/reports/310104"
    pdf = admin.get(url, params={"period": "week", "end": "2026-11-29"})
    assert pdf.status_code == 200, pdf.text
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content[:5] == b"%PDF-"
    assert "landun-report-310104-week-2026-11-29.pdf" in pdf.headers["content-disposition"]
    xlsx = admin.get(url, params={"format": "xlsx", "end": "2026-11-30"})
    assert xlsx.status_code == 200 and xlsx.content[:2] == b"PK"
    assert anon.get(url).status_code == 401
    assert anon.get(url, headers=cn).status_code == 403  # another jurisdiction's inspector
    assert (
        anon.get("/api/v1/reports/310105", headers=cn, params={"format": "xlsx"}).status_code == 200
    )
    assert admin.get("/api/v1/reports/999999").status_code == 404
    assert admin.get("/api/v1/reports/" + "9" * 65).status_code == 422
    assert admin.get(url, params={"end": "2999-01-01"}).status_code == 400
    assert admin.get(url, params={"end": "1999-12-31"}).status_code == 400
    assert admin.get(url, params={"end": "yesterday"}).status_code == 422
    assert admin.get(url, params={"period": "year"}).status_code == 422
    assert admin.get(url, params={"format": "docx"}).status_code == 422


# --- mail ------------------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[str, str]:
    return make_cert(tmp_path)


@needs_cjk
def test_due_reports_are_mailed_once_over_starttls_with_attachments(ctx, tls_files):
    inbox = Inbox()
    server = start_smtp(inbox, tls_files)
    try:
        mail = MailSettings(
            host="127.0.0.1",
            port=server.port,
            sender="landun@example.cn",
            recipients={"310104": ("xuhui@example.cn",)},
            cafile=tls_files[0],
        )
        settings = load_report_settings()
        sent = mail_due_reports(ctx, mail, settings, NOW)
        assert sent == ["310104/week/2026-11-29", "310104/month/2026-11-30"]
        assert mail_due_reports(ctx, mail, settings, NOW + 3_600_000) == []  # not twice
    finally:
        server.stop()
    assert len(inbox.mails) == 2
    rcpt, raw, over_tls = inbox.mails[1]
    assert rcpt == ["xuhui@example.cn"] and over_tls
    msg = message_from_bytes(raw, policy=policy.default)
    assert msg["Subject"] == "辖区 310104 在线监测月报（2026-11-01 至 2026-11-30）"
    files = {p.get_filename(): p.get_content() for p in msg.iter_attachments()}
    assert set(files) == {
        "landun-report-310104-month-2026-11-30.pdf",
        "landun-report-310104-month-2026-11-30.xlsx",
    }
    assert files["landun-report-310104-month-2026-11-30.pdf"][:5] == b"%PDF-"
    assert files["landun-report-310104-month-2026-11-30.xlsx"][:2] == b"PK"


def test_no_mail_without_starttls(ctx):
    """A server that offers no STARTTLS gets nothing: reports are not sent in the clear."""
    import smtplib

    inbox = Inbox()
    server = start_smtp(inbox, None)
    try:
        mail = MailSettings("127.0.0.1", server.port, "landun@example.cn", {"310104": ("a@b.cn",)})
        with pytest.raises(smtplib.SMTPNotSupportedError):
            mail_due_reports(ctx, mail, load_report_settings(), NOW)
        assert ctx.store.mailed_reports() == []  # tried again next time
    finally:
        server.stop()
    assert inbox.mails == []
