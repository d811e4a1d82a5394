"""Sending one e-mail over SMTP with STARTTLS (smtplib), shared by the scheduled reports and the
e-mail notification channel. STARTTLS is required: the mails name venues and alerts, so a
server that cannot offer it gets nothing (smtplib raises SMTPNotSupportedError)."""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage


@dataclass(frozen=True, slots=True)
class SmtpServer:
    host: str
    port: int = 587  # submission (RFC 6409), upgraded with STARTTLS (RFC 3207)
    username: str | None = None
    password: str | None = None
    cafile: str | None = None  # None: the system's trusted CAs
    timeout_s: float = 30.0


def send_mail(server: SmtpServer, msg: EmailMessage) -> None:
    """Deliver `msg` to its recipients; smtplib's and ssl's errors propagate to the caller."""
    context = ssl.create_default_context(cafile=server.cafile)
    with smtplib.SMTP(server.host, server.port, timeout=server.timeout_s) as smtp:
        smtp.ehlo()
        smtp.starttls(context=context)  # raises SMTPNotSupportedError if the server cannot
        smtp.ehlo()
        if server.username:
            smtp.login(server.username, server.password or "")
        smtp.send_message(msg)
