"""Mailing the reports on a schedule over SMTP with STARTTLS (smtplib). Which report was mailed
is kept in the store (OperationsStore.mailed_reports), so a restart does not send it twice and a
failed send is tried again on the next tick."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from zoneinfo import ZoneInfo

from api.context import AppContext
from api.reports.compute import (
    PERIOD_ZH,
    Period,
    Report,
    ReportSettings,
    Schedule,
    build_report,
    load_report_settings,
)
from api.reports.pdf import render_pdf
from api.reports.xlsx import render_xlsx
from domain.smtp import SmtpServer, send_mail
from domain.timeutil import now_ms
from store.base import MailedReport

log = logging.getLogger("landun.reports")


@dataclass(frozen=True, slots=True)
class MailSettings:
    host: str
    port: int
    sender: str
    recipients: dict[str, tuple[str, ...]]  # jurisdiction -> addresses
    username: str | None = None
    password: str | None = None
    cafile: str | None = None  # None: the system's trusted CAs
    timeout_s: float = 30.0

    def server(self) -> SmtpServer:
        return SmtpServer(
            self.host, self.port, self.username, self.password, self.cafile, self.timeout_s
        )

    @classmethod
    def from_env(cls) -> MailSettings | None:
        """From LANDUN_SMTP_HOST, _PORT (587), _FROM, _USER, _PASSWORD, _CAFILE and
        LANDUN_REPORT_RECIPIENTS ("310104=a@x.cn,b@x.cn;310105=c@x.cn"); None without a host."""
        env = os.environ
        host = env.get("LANDUN_SMTP_HOST")
        if not host:
            return None
        return cls(
            host=host,
            port=int(env.get("LANDUN_SMTP_PORT", "587")),
            sender=env.get("LANDUN_SMTP_FROM", "landun@localhost"),
            recipients=parse_recipients(env.get("LANDUN_REPORT_RECIPIENTS", "")),
            username=env.get("LANDUN_SMTP_USER"),
            password=env.get("LANDUN_SMTP_PASSWORD"),
            cafile=env.get("LANDUN_SMTP_CAFILE"),
        )


def parse_recipients(text: str) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        jurisdiction, sep, addresses = part.partition("=")
        if not sep or not jurisdiction.strip():
            raise ValueError(f"LANDUN_REPORT_RECIPIENTS: {part!r} is not JURISDICTION=ADDR,ADDR")
        out[jurisdiction.strip()] = tuple(a.strip() for a in addresses.split(",") if a.strip())
    return out


def due_reports(now_ms: int, schedule: Schedule, timezone: str) -> list[tuple[Period, date]]:
    """The latest scheduled weekly and monthly report at `now_ms` as (period, last day): the
    week before the latest scheduled weekday, the whole month before the latest scheduled day."""
    now = datetime.fromtimestamp(now_ms / 1000, ZoneInfo(timezone))
    today = now.date() if now.hour >= schedule.hour else now.date() - timedelta(days=1)
    weekly = today - timedelta(days=(today.isoweekday() - schedule.weekly_weekday) % 7)
    monthly = today.replace(day=schedule.monthly_day)
    if monthly > today:
        monthly = (monthly.replace(day=1) - timedelta(days=1)).replace(day=schedule.monthly_day)
    return [("week", weekly - timedelta(days=1)), ("month", monthly.replace(day=1) - timedelta(1))]


def report_message(report: Report, pdf: bytes, xlsx: bytes, sender: str, to: tuple[str, ...]):
    msg = EmailMessage()
    msg["Subject"] = f"{report.title}（{report.span}）"
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg.set_content(
        f"{report.title}\n统计时段：{report.span}\n"
        f"监测场所 {report.sites_total} 家；详见附件（PDF 与 XLSX）。\n\n"
        "此邮件由蓝盾在线监测系统自动发送。"
    )
    stem = f"landun-report-{report.jurisdiction}-{report.period}-{report.last.isoformat()}"
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename=stem + ".pdf")
    msg.add_attachment(
        xlsx,
        maintype="application",
        subtype="vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        filename=stem + ".xlsx",
    )
    return msg


def mail_due_reports(
    ctx: AppContext, mail: MailSettings, settings: ReportSettings, now_ms: int
) -> list[str]:
    """Send every due report not sent yet and return their keys. A failed one does not hold
    back the others; the first failure is raised after all were tried."""
    mailed = {(m.jurisdiction, m.period, m.last_day) for m in ctx.store.mailed_reports()}
    sent: list[str] = []
    failures: list[Exception] = []
    for period, last in due_reports(now_ms, settings.schedule, settings.timezone):
        for jurisdiction, to in sorted(mail.recipients.items()):
            key = f"{jurisdiction}/{period}/{last.isoformat()}"
            if (jurisdiction, period, last.isoformat()) in mailed or not to:
                continue
            try:
                report = build_report(ctx, jurisdiction, period, last, settings)
                pdf, xlsx = render_pdf(report, settings), render_xlsx(report)
                send_mail(mail.server(), report_message(report, pdf, xlsx, mail.sender, to))
            except Exception as exc:  # smtplib, ssl, OSError, a missing font: try the others
                log.warning("the %s report %s was not mailed: %s", PERIOD_ZH[period], key, exc)
                failures.append(exc)
                continue
            ctx.store.record_mailed_report(
                MailedReport(jurisdiction, period, last.isoformat(), now_ms)
            )
            log.info("mailed the %s report %s to %s", PERIOD_ZH[period], key, ", ".join(to))
            sent.append(key)
    if failures:
        raise failures[0]
    return sent


class ReportMailer:
    """Checks every `every_s` seconds on its own thread whether a report is due."""

    def __init__(
        self,
        ctx: AppContext,
        mail: MailSettings,
        settings: ReportSettings,
        clock: Callable[[], int],
        every_s: float,
    ) -> None:
        self.args = (ctx, mail, settings)
        self.clock = clock
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="landun-reports", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            try:
                mail_due_reports(*self.args, self.clock())
            except Exception:
                log.exception("mailing the reports failed; trying again later")
            if self._stop.wait(self.every_s):
                return


def start_report_mailer(ctx: AppContext, mail: MailSettings | None) -> ReportMailer | None:
    """The scheduled mailing when SMTP is configured, checking once a minute."""
    if mail is None:
        return None
    mailer = ReportMailer(ctx, mail, load_report_settings(), now_ms, every_s=60.0)
    mailer.start()
    return mailer
